"""A message the provider took, whose sender then lost the database, is recorded by a worker
through the broker and never sent again (notifications/services.py, `_record_through_the_broker`;
on many hosts: tests/reliability/test_failover.py, scenario 20)."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import OperationalError

from notifications import services
from notifications.models import Notification
from tests.support import wait_for

KEY = "handoff:confirmation:email"


def test_a_sent_message_its_sender_could_not_record_is_recorded_by_a_worker_and_not_sent_again(
    worker, monkeypatch
) -> None:
    record_here = services._update

    def database_lost_after_sending(notification: Notification, **fields) -> None:
        if fields.get("status") == Notification.Status.SENT:
            raise OperationalError("could not receive data from server: Connection timed out")
        record_here(notification, **fields)

    monkeypatch.setattr(services, "_update", database_lost_after_sending)
    # A short lease: once it lapses, a retry would send the message again unless it is recorded.
    monkeypatch.setattr(services, "_lease", lambda: timedelta(seconds=1))
    with pytest.raises(OperationalError):  # this process never records it: its wait runs out
        services.send_email(key=KEY, to="ada@example.com", subject="Your order", body="Thank you.")
    assert len(mail.outbox) == 1

    sent = wait_for(
        lambda: Notification.objects.filter(idempotency_key=KEY, status=Notification.Status.SENT).first(),
        timeout=20,
        message="the worker recording the message",
    )
    assert sent.provider_message_id and sent.locked_until is None

    monkeypatch.setattr(services, "_update", record_here)
    again = services.send_email(key=KEY, to="ada@example.com", subject="Your order", body="Thank you.")
    assert again.status == Notification.Status.SENT
    assert len(mail.outbox) == 1  # the retry found it sent: the customer got it once


def test_a_record_that_hangs_on_a_lost_database_reaches_the_broker_before_the_sender_is_killed(
    worker, monkeypatch
) -> None:
    """A partition makes the UPDATE hang, not fail: libpq notices only after DB_NETWORK_TIMEOUT,
    about when the hard time limit kills the sender. The record must leave through the broker
    while the UPDATE still hangs (scenario 20 sent an e-mail twice when it left only on the error)."""
    record_here = services._update
    key = "handoff-hang:confirmation:email"

    def database_hangs_after_sending(notification: Notification, **fields) -> None:
        if fields.get("status") != Notification.Status.SENT:
            return record_here(notification, **fields)
        wait_for(  # the UPDATE hangs: meanwhile a worker that reaches the database records it
            lambda: Notification.objects.filter(idempotency_key=key, status=Notification.Status.SENT).exists(),
            timeout=10,
            message="the record handed to the broker while the UPDATE hangs",
        )
        raise OperationalError("could not receive data from server: Connection timed out")

    monkeypatch.setattr(services, "_update", database_hangs_after_sending)
    monkeypatch.setattr(services, "_lease", lambda: timedelta(seconds=1))
    with pytest.raises(OperationalError):
        services.send_email(key=key, to="ada@example.com", subject="Your order", body="Thank you.")

    monkeypatch.setattr(services, "_update", record_here)
    again = services.send_email(key=key, to="ada@example.com", subject="Your order", body="Thank you.")
    assert again.status == Notification.Status.SENT
    assert len(mail.outbox) == 1
