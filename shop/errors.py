"""Errors raised by the adapters to outside providers (payment gateway, e-mail, SMS).

The split decides retries: a transient error is retried with backoff, a permanent
one fails the task at once.
"""

from tasks_admin.errors import TransientError


class ProviderError(Exception):
    """A call to an outside provider did not succeed."""


class TransientProviderError(ProviderError, TransientError):
    """Worth retrying: timeouts, connection errors, 5xx, 429 rate limits."""


class PermanentProviderError(ProviderError):
    """Retrying cannot help: the provider refused the request (4xx, declined card)."""
