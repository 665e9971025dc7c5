"""Sending an alert's transition: an e-mail to ALERT_EMAILS, a JSON POST to ALERT_WEBHOOK_URL.

Each notice is sent by a task of its own (tasks_admin/tasks.py), retried with backoff while the
other side fails transiently. A notice sent is marked so; a repeat of its task sends nothing. The
webhook carries `Idempotency-Key: alert-<id>-<transition>` for the receiver to drop the repeat
that at-least-once delivery may still make (a worker dying between the POST and the mark), and
`X-Alert-Signature: sha256=<hex HMAC-SHA256 of the body with ALERT_WEBHOOK_SECRET>` to prove
it came from the shop (tests/integration/test_business_alerts.py, tests/unit/test_alerts.py).
"""

import hashlib
import hmac
import json
import smtplib

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from . import alerts
from .errors import PermanentProviderError, TransientProviderError
from .models import Alert, AlertNotice

SIGNATURE_HEADER = "X-Alert-Signature"


def absolute(path: str) -> str:
    return settings.ALERT_LINK_BASE_URL.rstrip("/") + path if path else ""


def payload(alert: Alert, transition: str) -> dict:
    """What the webhook receives, and what the e-mail says."""
    subjects = [
        {**ref, "name": name, "url": absolute(url)}
        for ref, (name, url) in zip(alert.subjects, alerts.concerned(alert), strict=True)
    ]
    return {
        "id": alert.pk,
        "transition": transition,
        "rule": alert.rule.key,
        "title": alerts.title(alert),
        "subject_key": alert.subject_key,
        "summary": alert.summary,
        "value": alert.value,
        "threshold": alert.rule.threshold,
        "opened_at": alert.opened_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "url": absolute(reverse("admin:tasks_admin_alert_change", args=[alert.pk])),
        "link": absolute(alert.link),
        "subjects": subjects,
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(notice_id: int) -> bool:
    """Send the notice unless it was sent; True if this call sent it."""
    notice = AlertNotice.objects.select_related("alert__rule").get(pk=notice_id)
    if notice.sent_at:
        return False
    AlertNotice.objects.filter(pk=notice.pk).update(attempts=F("attempts") + 1)
    data = payload(notice.alert, notice.transition)
    try:
        if notice.channel == AlertNotice.Channel.EMAIL:
            _email(data)
        else:
            _post(data, notice.idempotency_key)
    except (TransientProviderError, PermanentProviderError) as exc:
        AlertNotice.objects.filter(pk=notice.pk).update(error=str(exc)[:500])
        raise
    return bool(AlertNotice.objects.filter(pk=notice.pk, sent_at__isnull=True).update(sent_at=timezone.now(), error=""))


def _email(data: dict) -> None:
    lines = [data["summary"], "", f"Alert: {data['url']}"]
    if data["link"]:
        lines.append(f"Cause: {data['link']}")
    lines += [f"- {subject['name']}: {subject['url']}" for subject in data["subjects"]]
    message = EmailMessage(
        subject=f"[{settings.ALERT_SUBJECT_PREFIX} {data['transition']}] {data['title']}"
        + (f": {data['subject_key']}" if data["subject_key"] else ""),
        body="\n".join(lines),
        to=settings.ALERT_EMAILS,
    )
    try:
        message.send()
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise TransientProviderError(f"SMTP server unreachable: {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        error = TransientProviderError if exc.smtp_code < 500 else PermanentProviderError
        raise error(f"SMTP server refused the alert: {exc.smtp_code} {exc.smtp_error!r}") from exc


def _post(data: dict, idempotency_key: str) -> None:
    body = json.dumps(data).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        SIGNATURE_HEADER: sign(body, settings.ALERT_WEBHOOK_SECRET),
    }
    try:
        response = requests.post(
            settings.ALERT_WEBHOOK_URL, data=body, headers=headers, timeout=settings.ALERT_WEBHOOK_TIMEOUT
        )
    except requests.RequestException as exc:
        raise TransientProviderError(f"Alert webhook unreachable: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientProviderError(f"Alert webhook answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentProviderError(f"Alert webhook refused it ({response.status_code}): {response.text[:200]}")
