"""Deliver a message at most once per business key, recording every attempt.

A message is either sent on the spot (`send_email`, `send_sms`: recorded and sent by one
call), or queued with the business transaction that calls for it (`queue`, as the checkout
queues an order's confirmations) and sent later by its key (`deliver`, from a task).
"""

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from tasks_admin.errors import PermanentProviderError, TransientProviderError
from tasks_admin.history import RECORDED_HEADER
from tasks_admin.sql import db_value

from .email import send_email as send_with_django_mail
from .models import Notification
from .sms import get_sms_provider

logger = logging.getLogger(__name__)

RECORD_SENT_TASK = "notifications.tasks.record_sent"
# How long recording a sent message may take before its record also goes through the broker.
HANDOFF_AFTER_SECONDS = 0.5

_TABLE = Notification._meta.db_table
_QUEUED_COLUMNS = ("id", "order_id", "channel", "recipient", "subject", "body", "html_body", "attempts")
# Take the lease on a queued message if it is pending and unleased (the last %s: now).
_CLAIM_QUEUED = (
    f"UPDATE {_TABLE} SET locked_until = %s, attempts = attempts + 1 WHERE idempotency_key = %s "
    "AND status = 'pending' AND (locked_until IS NULL OR locked_until < %s) "
    f"RETURNING {', '.join(_QUEUED_COLUMNS)}"
)
_CLAIM_COLUMNS = ("idempotency_key", "order_id", "channel", "recipient", "subject", "body", "html_body", "locked_until")
# Insert the message, or take the lease on it if it is pending and unleased (now: the last %s).
_CLAIM = (
    f"INSERT INTO {_TABLE} ({', '.join(_CLAIM_COLUMNS)}, status, attempts, provider_message_id, error, created_at) "
    f"VALUES ({', '.join(['%s'] * len(_CLAIM_COLUMNS))}, 'pending', 1, '', '', %s) "
    "ON CONFLICT (idempotency_key) DO UPDATE "
    f"SET locked_until = EXCLUDED.locked_until, attempts = {_TABLE}.attempts + 1 "
    f"WHERE {_TABLE}.status = 'pending' AND ({_TABLE}.locked_until IS NULL OR {_TABLE}.locked_until < %s) "
    "RETURNING id"
)


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


def queue(messages: Iterable[Notification]) -> None:
    """Record messages for `deliver` to send, in the caller's transaction (an outbox)."""
    Notification.objects.bulk_create(messages, ignore_conflicts=True)


def deliver(key: str) -> Notification:
    """Send the message queued under `key`, once."""
    lease_until = db_value(Notification, "locked_until", timezone.now() + _lease())
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_QUEUED, [lease_until, key, db_value(Notification, "locked_until", timezone.now())])
        row = cursor.fetchone()
    if row is None:  # sent, refused, cancelled, or being sent by another worker right now
        return _deliver(Notification.objects.get(idempotency_key=key), None)
    notification = Notification(idempotency_key=key, **dict(zip(_QUEUED_COLUMNS, row, strict=True)))
    notification.claimed = True
    if notification.channel == Notification.Channel.EMAIL:
        n = notification
        return _deliver(
            n,
            lambda: send_with_django_mail(
                to=n.recipient, subject=n.subject, body=n.body, html_body=n.html_body, idempotency_key=key
            ),
        )
    return _deliver(
        notification,
        lambda: get_sms_provider().send(to=notification.recipient, body=notification.body, idempotency_key=key),
    )


def cancel(key: str, *, force: bool = False) -> bool:
    """A queued message is not to be sent after all. One being sent right now still goes, unless
    `force` (its sender is being stopped): then it is not sent again either."""
    pending = Notification.objects.filter(idempotency_key=key, status=Notification.Status.PENDING)
    if not force:
        pending = pending.exclude(locked_until__gte=timezone.now())
    return bool(pending.update(status=Notification.Status.CANCELLED, locked_until=None))


def reopen(key: str, *, recipient: str) -> Notification:
    """Let a message that was refused or cancelled be sent again — to `recipient`, which staff
    may have corrected — so that the next delivery calls the provider afresh instead of
    repeating the stored refusal. A message that was sent stays sent."""
    Notification.objects.filter(
        idempotency_key=key, status__in=(Notification.Status.FAILED, Notification.Status.CANCELLED)
    ).update(status=Notification.Status.PENDING, recipient=recipient, error="", locked_until=None)
    return Notification.objects.get(idempotency_key=key)


def give_up(key: str, error: str) -> bool:
    """The task delivering the message failed for good (retries exhausted, its process killed):
    the message is failed, for staff to send again, not left pending for the recovery job."""
    pending = Notification.objects.filter(idempotency_key=key, status=Notification.Status.PENDING)
    return bool(pending.update(status=Notification.Status.FAILED, error=error[:2000], locked_until=None))


def stuck(older_than: timedelta) -> list[str]:
    """Keys of messages queued before `older_than` ago that nobody is sending: their delivery
    task was lost (a broker restarted without its messages). The recovery job sends them."""
    now = timezone.now()
    rows = Notification.objects.filter(status=Notification.Status.PENDING, created_at__lt=now - older_than).exclude(
        locked_until__gte=now
    )
    return list(rows.values_list("idempotency_key", flat=True)[:1000])


def _record(key: str, channel: str, recipient: str, body: str, **fields) -> Notification:
    """The message under `key`, created if new and leased for sending if it may be sent now
    (pending, and no lease held): one statement, the one a delivery always makes."""
    now = timezone.now()
    notification = Notification(
        idempotency_key=key, channel=channel, recipient=recipient, body=body, attempts=1, **fields
    )
    notification.locked_until = now + _lease()
    values = [db_value(Notification, name, getattr(notification, name)) for name in _CLAIM_COLUMNS]
    with connection.cursor() as cursor:
        at = db_value(Notification, "created_at", now)
        cursor.execute(_CLAIM, [*values, at, at])
        row = cursor.fetchone()
    if row is None:  # sent, refused, or being sent by another worker right now
        return Notification.objects.get(idempotency_key=key)
    notification.pk, notification.claimed = row[0], True
    return notification


def _deliver(notification: Notification, send) -> Notification:
    if not getattr(notification, "claimed", False):
        if notification.status in (Notification.Status.SENT, Notification.Status.CANCELLED):
            return notification
        if notification.status == Notification.Status.FAILED:
            raise PermanentProviderError(notification.error or "The provider refused this message.")
        raise TransientProviderError("Another worker is sending this message.", retry_after=_lease().total_seconds())

    try:
        provider_message_id = send()
    except PermanentProviderError as exc:
        _update(notification, status=Notification.Status.FAILED, error=str(exc), locked_until=None)
        raise
    except Exception as exc:  # transient, or a bug: release the lease so a retry can send
        _update(notification, error=str(exc), locked_until=None)
        raise
    _record_sent(notification, provider_message_id, wait=2 * _lease().total_seconds())
    return notification


def _lease() -> timedelta:
    """How long a delivery holds a message: past the task's hard time limit, so a duplicate
    delivery of the task waits rather than sending while the first may still be sending."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)


def record_sent(key: str, provider_message_id: str) -> bool:
    """The provider took the message under `key` (its sender could not record it): sent it is."""
    unrecorded = Notification.objects.filter(idempotency_key=key).exclude(status=Notification.Status.SENT)
    return bool(
        unrecorded.update(
            status=Notification.Status.SENT,
            provider_message_id=provider_message_id,
            sent_at=timezone.now(),
            error="",
            locked_until=None,
        )
    )


def _record_through_the_broker(key: str, provider_message_id: str) -> None:
    """Hand the record to whichever worker reaches the database (notifications.tasks.record_sent):
    this host may have lost the database alone, and its sender may be killed at its time limit
    before it can write; the lease would then lapse and another worker send the message again
    (tests/reliability/test_failover.py, scenario 20). Sent by name: the task module imports this one.
    Its task history is left to the worker that runs it (RECORDED_HEADER): recording it here would
    wait on the database this host cannot reach."""
    try:
        current_app.send_task(RECORD_SENT_TASK, args=[key, provider_message_id], headers={RECORDED_HEADER: True})
    except BrokerError as exc:  # both away: the wait below is all there is
        logger.warning("%s was sent; the broker could not take its record either: %s", key, exc)


def _record_sent(notification: Notification, provider_message_id: str, wait: float) -> None:
    """Record that the provider took the message, riding out up to `wait` seconds of database
    outage (a soft time limit ends it sooner). Raising instead would retry the task, and the retry
    would send the message again once the lease lapsed: an SMTP server, unlike the SMS gateway,
    has no idempotency key to drop the repeat (tests/reliability/test_database_outage.py).
    A record not written within HANDOFF_AFTER_SECONDS also goes through the broker, from a timer:
    on a partition the UPDATE hangs until libpq gives up, about when the hard time limit kills
    this process (tests/integration/test_sent_but_not_recorded.py, the hanging case)."""
    handoff = _Handoff(notification.idempotency_key, provider_message_id)
    handoff.start()
    try:
        _record_until(notification, provider_message_id, wait, handoff)
    finally:
        handoff.cancel()


class _Handoff(threading.Timer):
    """Sends the record through the broker once, when the timer fires or the first write fails."""

    def __init__(self, key: str, provider_message_id: str) -> None:
        super().__init__(HANDOFF_AFTER_SECONDS, self.now)
        self.daemon = True
        self.key, self.provider_message_id = key, provider_message_id
        self._lock, self._done = threading.Lock(), False

    def now(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        logger.warning(
            "%s was sent; its record goes through the broker too (the database is slow to take it)", self.key
        )
        _record_through_the_broker(self.key, self.provider_message_id)


def _record_until(notification: Notification, provider_message_id: str, wait: float, handoff: _Handoff) -> None:
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
            connection.close()  # the outage broke it: reconnect on the next attempt
            if pause == 0.05:
                logger.warning(
                    "%s was sent; recording it waits for the database: %s", notification.idempotency_key, exc
                )
                handoff.now()
            time.sleep(pause)
            pause = min(2 * pause, 0.5)


def _update(notification: Notification, **fields) -> None:
    Notification.objects.filter(pk=notification.pk).update(**fields)
    for name, value in fields.items():
        setattr(notification, name, value)
