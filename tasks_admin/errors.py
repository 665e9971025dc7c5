"""Errors the task layer understands, for apps to raise or subclass."""


class TransientError(Exception):
    """Worth another try later (tasks_admin/base.py retries it with backoff): a provider timing
    out, failing with a 5xx, or asking us to slow down (`retry_after`, in seconds)."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
