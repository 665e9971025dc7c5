"""Customer notifications (e-mail and SMS) with an idempotent delivery record."""
