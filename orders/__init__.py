"""The order: checkout, stock reservation, payment and the Celery workflow that completes it."""
