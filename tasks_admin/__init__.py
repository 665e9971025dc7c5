"""The task console in the Django admin."""
