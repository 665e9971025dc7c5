"""Notifications: at most one delivery per business key, and provider errors sorted for retries."""

import json
import smtplib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.db import OperationalError
from django.utils import timezone

from notifications import email, services
from notifications.models import Notification
from tasks_admin.errors import PermanentProviderError, TransientProviderError
from tests.fakes.sms_gateway import FakeSmsGateway, Reply

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"

# E-mail backends that fail as an SMTP server would. Each send attempt is counted in `backend_calls`.

backend_calls: list[list[str]] = []


class FailingBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        backend_calls.append([to for message in email_messages for to in message.to])
        raise self.error(email_messages[0].to[0])

    def error(self, to: str) -> Exception:
        raise NotImplementedError


class RefusingBackend(FailingBackend):
    def error(self, to):
        return smtplib.SMTPRecipientsRefused({to: (550, b"5.1.1 No such user")})


class DeferringBackend(FailingBackend):
    def error(self, to):
        return smtplib.SMTPRecipientsRefused({to: (450, b"4.2.1 Mailbox busy, try later")})


class DisconnectedBackend(FailingBackend):
    def error(self, to):
        return smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


class ConnectionRefusedBackend(FailingBackend):
    def error(self, to):
        return ConnectionRefusedError(111, "Connection refused")


class RejectedDataBackend(FailingBackend):
    def error(self, to):
        return smtplib.SMTPDataError(554, b"5.7.1 Message rejected as spam")


class DeferredDataBackend(FailingBackend):
    def error(self, to):
        return smtplib.SMTPDataError(451, b"4.3.0 Temporary local problem")


def backend(cls: type) -> str:
    return f"{__name__}.{cls.__name__}"


@pytest.fixture(autouse=True)
def providers(settings, tmp_path):
    backend_calls.clear()
    settings.EMAIL_BACKEND = LOCMEM
    settings.DEFAULT_FROM_EMAIL = "Test Shop <orders@shop.test>"
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")
    return settings


def send_email(key: str = "order:1:confirmation:email", to: str = "ada@example.com") -> Notification:
    return services.send_email(key=key, to=to, subject="Your order", body="Thank you", html_body="<p>Thank you</p>")


def stored(key: str) -> Notification:
    return Notification.objects.get(idempotency_key=key)


# notifications.email.send_email: Django's mail framework, SMTP errors sorted


def test_email_is_sent_with_text_and_html_and_the_message_id_is_returned():
    message_id = email.send_email(
        to="ada@example.com", subject="Hello", body="Text", html_body="<p>HTML</p>", idempotency_key="k1"
    )

    (message,) = mail.outbox
    assert message.to == ["ada@example.com"]
    assert (message.subject, message.body) == ("Hello", "Text")
    assert [(content, mimetype) for content, mimetype in message.alternatives] == [("<p>HTML</p>", "text/html")]
    assert message.message()["Message-ID"] == message_id


def test_email_without_html_is_plain_text():
    email.send_email(to="ada@example.com", subject="Hello", body="Text", html_body="", idempotency_key="k1")

    assert mail.outbox[0].alternatives == []


def test_message_id_is_derived_from_the_idempotency_key():
    def sent_message_id(key: str) -> str:
        email.send_email(to="ada@example.com", subject="S", body="B", html_body="", idempotency_key=key)
        return mail.outbox[-1].message()["Message-ID"]

    first, repeat, other = sent_message_id("order:1:email"), sent_message_id("order:1:email"), sent_message_id("x")

    assert repeat == first
    assert other != first
    assert first.startswith("<") and first.endswith("@shop.test>")  # the shop's own domain
    assert first == email.message_id_for("order:1:email")


@pytest.mark.parametrize(
    ("failing_backend", "expected"),
    [
        (RefusingBackend, PermanentProviderError),
        (RejectedDataBackend, PermanentProviderError),
        (DeferringBackend, TransientProviderError),
        (DeferredDataBackend, TransientProviderError),
        (DisconnectedBackend, TransientProviderError),
        (ConnectionRefusedBackend, TransientProviderError),
    ],
)
def test_smtp_errors_are_sorted_into_permanent_and_transient(providers, failing_backend, expected):
    providers.EMAIL_BACKEND = backend(failing_backend)

    with pytest.raises(expected):
        email.send_email(to="ada@example.com", subject="S", body="B", html_body="", idempotency_key="k")

    assert backend_calls == [["ada@example.com"]]


def test_a_refused_recipient_is_named_in_the_error(providers):
    providers.EMAIL_BACKEND = backend(RefusingBackend)

    with pytest.raises(PermanentProviderError, match="ada@example.com"):
        email.send_email(to="ada@example.com", subject="S", body="B", html_body="", idempotency_key="k")


# services.send_email: once per key


@pytest.mark.django_db
def test_send_email_delivers_once_per_key():
    first = send_email(key="order:1:confirmation:email")
    second = send_email(key="order:1:confirmation:email")

    assert len(mail.outbox) == 1
    assert second.pk == first.pk
    notification = stored("order:1:confirmation:email")
    assert (notification.status, notification.attempts, notification.error) == (Notification.Status.SENT, 1, "")
    assert notification.channel == Notification.Channel.EMAIL
    assert notification.recipient == "ada@example.com"
    assert notification.provider_message_id == mail.outbox[0].message()["Message-ID"]
    assert notification.sent_at is not None
    assert notification.locked_until is None


@pytest.mark.django_db
def test_send_email_with_different_keys_sends_each():
    send_email(key="order:1:confirmation:email")
    send_email(key="order:1:failure:email")

    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_a_permanent_email_error_fails_the_notification_and_is_not_tried_again(providers):
    providers.EMAIL_BACKEND = backend(RefusingBackend)
    with pytest.raises(PermanentProviderError):
        send_email(key="k")
    notification = stored("k")
    assert notification.status == Notification.Status.FAILED
    assert "550" in notification.error
    assert notification.locked_until is None

    providers.EMAIL_BACKEND = LOCMEM  # even a working server gets no second attempt
    with pytest.raises(PermanentProviderError, match="550"):
        send_email(key="k")

    assert mail.outbox == []
    assert len(backend_calls) == 1
    assert stored("k").attempts == 1


@pytest.mark.parametrize("failing_backend", [DeferringBackend, DisconnectedBackend, ConnectionRefusedBackend])
@pytest.mark.django_db
def test_a_transient_email_error_leaves_it_pending_and_a_retry_sends_it(providers, failing_backend):
    providers.EMAIL_BACKEND = backend(failing_backend)
    with pytest.raises(TransientProviderError):
        send_email(key="k")
    notification = stored("k")
    assert notification.status == Notification.Status.PENDING
    assert notification.error
    assert notification.locked_until is None  # the lease is released for the retry
    assert notification.attempts == 1

    providers.EMAIL_BACKEND = LOCMEM
    send_email(key="k")

    assert len(mail.outbox) == 1
    notification = stored("k")
    assert (notification.status, notification.attempts, notification.error) == (Notification.Status.SENT, 2, "")


@pytest.mark.django_db(transaction=True)
def test_an_email_the_server_took_is_recorded_as_sent_through_a_database_blip(monkeypatch):
    # Raising instead would retry the task, and the retry would send it again once the lease lapsed.
    update, failed = services._update, []

    def unreachable_twice(notification: Notification, **fields) -> None:
        if fields.get("status") == Notification.Status.SENT and len(failed) < 2:
            failed.append(fields)
            raise OperationalError("server closed the connection unexpectedly")
        update(notification, **fields)

    monkeypatch.setattr(services, "_update", unreachable_twice)
    send_email(key="k")
    send_email(key="k")  # the task delivered again

    assert len(failed) == 2
    assert len(mail.outbox) == 1
    assert stored("k").status == Notification.Status.SENT


def held_lease(key: str, channel: str, recipient: str, *, until) -> Notification:
    """A notification another worker is sending right now (its lease runs until `until`)."""
    return Notification.objects.create(
        idempotency_key=key, channel=channel, recipient=recipient, body="...", attempts=1, locked_until=until
    )


@pytest.mark.django_db
def test_send_email_does_not_send_while_another_worker_holds_the_lease():
    held_lease("k", Notification.Channel.EMAIL, "ada@example.com", until=timezone.now() + timedelta(seconds=60))

    with pytest.raises(TransientProviderError) as excinfo:
        send_email(key="k")

    assert excinfo.value.retry_after and excinfo.value.retry_after > 0
    assert mail.outbox == []
    assert stored("k").attempts == 1


@pytest.mark.django_db
def test_send_email_takes_over_an_expired_lease():
    held_lease("k", Notification.Channel.EMAIL, "ada@example.com", until=timezone.now() - timedelta(seconds=1))

    send_email(key="k")

    assert len(mail.outbox) == 1
    assert stored("k").status == Notification.Status.SENT


# services.send_sms


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[FakeSmsGateway]:
    with FakeSmsGateway() as server:
        yield server


@pytest.fixture
def gateway(gateway_server, providers) -> FakeSmsGateway:
    gateway_server.reset()
    providers.SMS_PROVIDER = "http"
    providers.SMS_HTTP_URL = gateway_server.url
    providers.SMS_API_KEY = "sms-key"
    providers.SMS_TIMEOUT = 2.0
    return gateway_server


def send_sms(key: str = "order:1:confirmation:sms") -> Notification:
    return services.send_sms(key=key, to="+442079460958", body="Order SO-1 confirmed")


@pytest.mark.django_db
def test_send_sms_delivers_once_per_key(gateway):
    send_sms(key="k")
    send_sms(key="k")

    (request,) = gateway.received()
    assert (request.to, request.body, request.idempotency_key) == ("+442079460958", "Order SO-1 confirmed", "k")
    notification = stored("k")
    assert (notification.status, notification.attempts) == (Notification.Status.SENT, 1)
    assert notification.channel == Notification.Channel.SMS
    assert notification.provider_message_id == "fake-1"  # the gateway's id for its first message


@pytest.mark.django_db
def test_a_permanent_sms_error_fails_the_notification_and_is_not_tried_again(gateway):
    gateway.script(400)
    with pytest.raises(PermanentProviderError):
        send_sms(key="k")
    assert stored("k").status == Notification.Status.FAILED
    assert "400" in stored("k").error

    with pytest.raises(PermanentProviderError, match="400"):
        send_sms(key="k")

    assert [r.status for r in gateway.received()] == [400]


@pytest.mark.django_db
def test_a_transient_sms_error_leaves_it_pending_and_a_retry_sends_it(gateway):
    gateway.script(503)
    with pytest.raises(TransientProviderError):
        send_sms(key="k")
    notification = stored("k")
    assert (notification.status, notification.locked_until) == (Notification.Status.PENDING, None)
    assert "503" in notification.error

    send_sms(key="k")

    assert [r.status for r in gateway.received()] == [503, 200]
    assert len(gateway.accepted()) == 1
    notification = stored("k")
    assert (notification.status, notification.attempts, notification.error) == (Notification.Status.SENT, 2, "")


@pytest.mark.django_db
def test_a_rate_limited_sms_passes_the_gateways_retry_after_on(gateway):
    gateway.script(Reply(status=429, headers={"Retry-After": "12"}))

    with pytest.raises(TransientProviderError) as excinfo:
        send_sms(key="k")

    assert excinfo.value.retry_after == 12.0
    assert stored("k").status == Notification.Status.PENDING


@pytest.mark.django_db
def test_send_sms_does_not_send_while_another_worker_holds_the_lease(gateway):
    held_lease("k", Notification.Channel.SMS, "+442079460958", until=timezone.now() + timedelta(seconds=60))

    with pytest.raises(TransientProviderError):
        send_sms(key="k")

    assert gateway.received() == []
    assert stored("k").status == Notification.Status.PENDING


@pytest.mark.django_db
def test_send_sms_with_the_file_provider_writes_one_line_per_key(providers):
    send_sms(key="k")
    send_sms(key="k")

    with open(providers.SMS_FILE_PATH, encoding="utf-8") as log:
        (record,) = [json.loads(line) for line in log]
    assert (record["to"], record["body"], record["idempotency_key"]) == ("+442079460958", "Order SO-1 confirmed", "k")
    assert stored("k").provider_message_id == record["id"]


def queue(key: str, channel: str = "email") -> None:
    recipient = "ada@example.com" if channel == "email" else "+442079460000"
    services.queue(
        [Notification(idempotency_key=key, channel=channel, recipient=recipient, subject="Queued", body="Queued body")]
    )


@pytest.mark.django_db
def test_a_queued_message_is_delivered_once_by_its_key(gateway):
    queue("outbox:email")
    queue("outbox:sms", channel="sms")

    for _ in range(2):  # the task delivered twice
        services.deliver("outbox:email")
        services.deliver("outbox:sms")

    assert [(m.subject, m.to) for m in mail.outbox] == [("Queued", ["ada@example.com"])]
    assert [(r.to, r.body) for r in gateway.accepted()] == [("+442079460000", "Queued body")]
    assert {stored(key).status for key in ("outbox:email", "outbox:sms")} == {Notification.Status.SENT}
    assert stored("outbox:email").attempts == 1


@pytest.mark.django_db
def test_a_message_queued_for_a_cancelled_order_is_not_sent():
    queue("outbox:cancelled")
    Notification.objects.filter(idempotency_key="outbox:cancelled").update(status=Notification.Status.CANCELLED)

    services.deliver("outbox:cancelled")

    assert mail.outbox == []
    assert stored("outbox:cancelled").status == Notification.Status.CANCELLED
