"""SMS providers: a file provider for development and an HTTP gateway client."""

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tasks_admin.errors import PermanentProviderError, TransientProviderError

logger = logging.getLogger(__name__)


class SmsProvider(Protocol):
    def send(self, *, to: str, body: str, idempotency_key: str) -> str:
        """Send one SMS; return the provider's message id."""


class FileSmsProvider:
    """Development provider: appends each message as a JSON line to a file (var/sms.log)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def send(self, *, to: str, body: str, idempotency_key: str) -> str:
        message_id = f"file-{uuid.uuid4().hex}"
        record = {
            "id": message_id,
            "to": to,
            "body": body,
            "idempotency_key": idempotency_key,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        logger.info("SMS to %s: %s", to, body)
        return message_id


class HttpSmsProvider:
    """POSTs {"to", "from", "body"} as JSON to an SMS gateway, the way real gateways take it.

    The API key goes in an Authorization header, the business key in Idempotency-Key so
    a gateway that supports it can drop a repeat. Timeouts, connection errors, 5xx and
    429 are transient (429's Retry-After is honoured); any other 4xx is permanent.
    """

    def __init__(self, url: str, api_key: str, timeout: float, sender: str) -> None:
        if not url:
            raise ImproperlyConfigured("SMS_PROVIDER=http needs SMS_HTTP_URL")
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        self.sender = sender

    def send(self, *, to: str, body: str, idempotency_key: str) -> str:
        try:
            response = requests.post(
                self.url,
                json={"to": to, "from": self.sender, "body": body},
                headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": idempotency_key},
                timeout=self.timeout,
            )
        except requests.Timeout as exc:
            raise TransientProviderError(f"SMS gateway timed out after {self.timeout}s") from exc
        except requests.ConnectionError as exc:
            raise TransientProviderError(f"SMS gateway unreachable: {exc}") from exc
        status = response.status_code
        if status == 429:
            raise TransientProviderError("SMS gateway rate limit (429)", _retry_after(response))
        if status >= 500:
            raise TransientProviderError(f"SMS gateway error {status}")
        if status >= 400:
            raise PermanentProviderError(f"SMS gateway refused the message ({status}): {response.text[:200]}")
        try:
            return str(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            return response.headers.get("X-Message-Id", "")


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def get_sms_provider() -> SmsProvider:
    if settings.SMS_PROVIDER == "file":
        return FileSmsProvider(settings.SMS_FILE_PATH)
    if settings.SMS_PROVIDER == "http":
        return HttpSmsProvider(settings.SMS_HTTP_URL, settings.SMS_API_KEY, settings.SMS_TIMEOUT, settings.SMS_SENDER)
    raise ImproperlyConfigured(f"Unknown SMS_PROVIDER {settings.SMS_PROVIDER!r}; supported: file, http")
