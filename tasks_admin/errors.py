"""Errors the task layer sorts for its retry policy (tasks_admin/base.py): a transient error is
retried with backoff, any other fails the task at once. Apps raise them from their adapters to
outside providers (payment gateway, e-mail, SMS)."""


class TransientError(Exception):
    """Worth another try later (`retry_after`, in seconds, when the other side said so)."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderError(Exception):
    """A call to an outside provider did not succeed."""


class TransientProviderError(ProviderError, TransientError):
    """Worth retrying: timeouts, connection errors, 5xx, 429 rate limits."""


class PermanentProviderError(ProviderError):
    """Retrying cannot help: the provider refused the request (4xx, declined card)."""
