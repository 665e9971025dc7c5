"""Errors raised by the adapters to outside providers (payment gateway, e-mail, SMS).

The split decides retries: a transient error is retried with backoff, a permanent
one fails the task at once.
"""


class ProviderError(Exception):
    """A call to an outside provider did not succeed."""


class TransientProviderError(ProviderError):
    """Worth retrying: timeouts, connection errors, 5xx, 429 rate limits."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying cannot help: the provider refused the request (4xx, declined card)."""
