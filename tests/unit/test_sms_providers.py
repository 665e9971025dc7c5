"""SMS providers: the HTTP gateway client against a real local HTTP server, and the file provider."""

import json
import socket
from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured

from notifications.sms import FileSmsProvider, HttpSmsProvider, get_sms_provider
from tasks_admin.errors import PermanentProviderError, TransientProviderError
from tests.fakes.sms_gateway import FakeSmsGateway, Reply


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[FakeSmsGateway]:
    with FakeSmsGateway() as server:
        yield server


@pytest.fixture
def gateway(gateway_server) -> FakeSmsGateway:
    gateway_server.reset()
    return gateway_server


def provider_for(url: str, *, timeout: float = 2.0, api_key: str = "sk-test-123") -> HttpSmsProvider:
    return HttpSmsProvider(url, api_key, timeout, "TestShop")


def send(provider: HttpSmsProvider, key: str = "order:1:confirmation:sms") -> str:
    return provider.send(to="+442079460958", body="Your order is confirmed", idempotency_key=key)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/messages"


def test_a_200_returns_the_gateways_message_id_and_sends_credentials_key_and_json(gateway):
    message_id = send(provider_for(gateway.url, api_key="sk-live-xyz"), key="order:42:confirmation:sms")

    (request,) = gateway.received()
    assert message_id == "fake-1"  # the id in the gateway's JSON reply
    assert request.authorization == "Bearer sk-live-xyz"
    assert request.idempotency_key == "order:42:confirmation:sms"
    # The fake parses the body as JSON: these came from the JSON payload.
    assert (request.to, request.body) == ("+442079460958", "Your order is confirmed")


def test_each_accepted_message_gets_its_own_id(gateway):
    provider = provider_for(gateway.url)

    ids = [send(provider, key=f"k{n}") for n in range(3)]

    assert len(set(ids)) == 3
    assert [r.idempotency_key for r in gateway.accepted()] == ["k0", "k1", "k2"]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_is_transient(gateway, status):
    gateway.script(status)

    with pytest.raises(TransientProviderError, match=str(status)) as excinfo:
        send(provider_for(gateway.url))

    assert excinfo.value.retry_after is None


def test_a_429_is_transient_and_carries_the_retry_after(gateway):
    gateway.script(Reply(status=429, headers={"Retry-After": "7"}))

    with pytest.raises(TransientProviderError, match="429") as excinfo:
        send(provider_for(gateway.url))

    assert excinfo.value.retry_after == 7.0


def test_a_429_without_retry_after_is_transient_with_no_delay_of_its_own(gateway):
    gateway.script(429)

    with pytest.raises(TransientProviderError) as excinfo:
        send(provider_for(gateway.url))

    assert excinfo.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_any_other_4xx_is_permanent(gateway, status):
    gateway.script(status)

    with pytest.raises(PermanentProviderError, match=f"\\({status}\\)"):
        send(provider_for(gateway.url))

    assert len(gateway.received()) == 1


def test_a_reply_slower_than_the_timeout_is_transient():
    # A server of its own: the slow reply is still being written after the client gave up.
    with FakeSmsGateway() as slow_gateway:
        slow_gateway.script(Reply(status=200, delay=1.5))

        with pytest.raises(TransientProviderError, match="timed out"):
            send(provider_for(slow_gateway.url, timeout=0.3))


def test_an_unreachable_gateway_is_transient():
    with pytest.raises(TransientProviderError, match="unreachable"):
        send(provider_for(closed_port_url()))


def test_the_http_provider_needs_a_url():
    with pytest.raises(ImproperlyConfigured, match="SMS_HTTP_URL"):
        provider_for("")


def test_get_sms_provider_builds_the_http_provider_from_settings(settings, gateway):
    settings.SMS_PROVIDER = "http"
    settings.SMS_HTTP_URL = gateway.url
    settings.SMS_API_KEY = "from-settings"

    send(get_sms_provider())

    assert [r.authorization for r in gateway.received()] == ["Bearer from-settings"]


def test_get_sms_provider_refuses_an_unknown_provider(settings):
    settings.SMS_PROVIDER = "carrier-pigeon"

    with pytest.raises(ImproperlyConfigured, match="carrier-pigeon"):
        get_sms_provider()


def test_the_file_provider_appends_one_json_line_per_message(tmp_path):
    path = tmp_path / "nested" / "sms.log"
    provider = FileSmsProvider(str(path))

    first = provider.send(to="+442079460958", body="Hello", idempotency_key="key-1")
    second = provider.send(to="+14155550100", body="Second", idempotency_key="key-2")

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["to"], r["body"], r["idempotency_key"]) for r in records] == [
        (first, "+442079460958", "Hello", "key-1"),
        (second, "+14155550100", "Second", "key-2"),
    ]
    assert first != second
    assert all(r["sent_at"] for r in records)


def test_get_sms_provider_builds_the_file_provider_from_settings(settings, tmp_path):
    settings.SMS_PROVIDER = "file"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.log")

    message_id = get_sms_provider().send(to="+442079460958", body="Hi", idempotency_key="k")

    assert json.loads((tmp_path / "sms.log").read_text())["id"] == message_id
