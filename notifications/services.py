"""Deliver a message at most once per business key, recording every attempt."""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F, Q
from django.utils import timezone

from shop.errors import PermanentProviderError, TransientProviderError

from .email import send_email as send_with_django_mail
from .models import Notification
from .sms import get_sms_provider

logger = logging.getLogger(__name__)


def send_email(
    *, key: str, to: str, subject: str, body: str, html_body: str = "", order_id: str | None = None
) -> Notification:
    notification = _record(
        key, Notification.Channel.EMAIL, to, body, subject=subject, html_body=html_body, order_id=order_id
    )
    return _deliver(
        notification,
        lambda: send_with_django_mail(to=to, subject=subject, body=body, html_body=html_body, idempotency_key=key),
    )


def send_sms(*, key: str, to: str, body: str, order_id: str | None = None) -> Notification:
    notification = _record(key, Notification.Channel.SMS, to, body, order_id=order_id)
    return _deliver(notification, lambda: get_sms_provider().send(to=to, body=body, idempotency_key=key))


def reopen_failed(order_id: str) -> int:
    """Let an order's refused messages be tried again (staff continue its workflow after a fix)."""
    return Notification.objects.filter(order_id=order_id, status=Notification.Status.FAILED).update(
        status=Notification.Status.PENDING
    )


def _record(key: str, channel: str, recipient: str, body: str, **fields) -> Notification:
    notification, _ = Notification.objects.get_or_create(
        idempotency_key=key, defaults={"channel": channel, "recipient": recipient, "body": body, **fields}
    )
    return notification


def _deliver(notification: Notification, send) -> Notification:
    if notification.status == Notification.Status.SENT:
        return notification
    if notification.status == Notification.Status.FAILED:
        raise PermanentProviderError(notification.error or "The provider refused this message.")

    now = timezone.now()
    lease = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)
    claimed = (
        Notification.objects.filter(pk=notification.pk, status=Notification.Status.PENDING)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=now + lease, attempts=F("attempts") + 1)
    )
    if not claimed:
        notification.refresh_from_db()
        if notification.status == Notification.Status.SENT:
            return notification
        if notification.status == Notification.Status.FAILED:
            raise PermanentProviderError(notification.error or "The provider refused this message.")
        raise TransientProviderError("Another worker is sending this message.", retry_after=lease.total_seconds())

    try:
        provider_message_id = send()
    except PermanentProviderError as exc:
        _update(notification, status=Notification.Status.FAILED, error=str(exc), locked_until=None)
        raise
    except Exception as exc:  # transient, or a bug: release the lease so a retry can send
        _update(notification, error=str(exc), locked_until=None)
        raise
    _record_sent(notification, provider_message_id, wait=2 * lease.total_seconds())
    return notification


def _record_sent(notification: Notification, provider_message_id: str, wait: float) -> None:
    """Record that the provider took the message, riding out up to `wait` seconds of database
    outage (a soft time limit ends it sooner). Raising instead would retry the task, and the
    retry would send the message again once the lease lapsed: an SMTP server, unlike the SMS
    gateway, has no idempotency key to drop the repeat (failure-injection scenario 5)."""
    deadline, pause = time.monotonic() + wait, 0.05
    while True:
        try:
            _update(
                notification,
                status=Notification.Status.SENT,
                provider_message_id=provider_message_id,
                sent_at=timezone.now(),
                error="",
                locked_until=None,
            )
            return
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block or time.monotonic() + pause > deadline:
                raise
            if pause == 0.05:
                key = notification.idempotency_key
                logger.warning("%s was sent; recording it waits for the database: %s", key, exc)
            connection.close()  # the outage broke it: reconnect on the next attempt
            time.sleep(pause)
            pause = min(2 * pause, 0.5)


def _update(notification: Notification, **fields) -> None:
    Notification.objects.filter(pk=notification.pk).update(**fields)
    for name, value in fields.items():
        setattr(notification, name, value)
