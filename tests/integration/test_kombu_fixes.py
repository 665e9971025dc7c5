"""tasks_admin/kombu_fixes.py on a real Redis: a channel closed after Celery 5.7 collected its
connection keeps the worker alive and loses no message, a message of that channel acknowledged
afterwards (a task that ended after its worker reconnected) leaves Redis, without an error, and a
channel publishes, records and acknowledges messages through one redis-py client, not one each."""

from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
import redis
from kombu import Connection, Consumer, Exchange, Queue
from kombu.message import Message

from shop import embedded_redis
from tasks_admin import kombu_fixes
from tests.fakes.smtp_server import free_port

QUEUE = Queue("kombu-fixes", Exchange("kombu-fixes"), "kombu-fixes")


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = embedded_redis.start_on_port(port, tmp_path / "redis")
    yield port
    server.kill()
    server.wait()


def close_after_collect(port: int) -> tuple[Exception | None, int, Message]:
    """A consumer holds a message unacknowledged; its connection is collected, which drops the
    transport's client (kombu/connection.py, `_do_close_transport`) before a channel of it is
    closed, as Celery 5.7 does on a lost broker (collect, then close). What the close raised,
    and how many messages Redis still holds unacknowledged."""
    url = f"redis://127.0.0.1:{port}/0"
    with Connection(url) as producer:
        producer.Producer().publish({"n": 1}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE])
    connection = Connection(url)
    channel = connection.channel()
    held = []
    Consumer(channel, [QUEUE], callbacks=[lambda body, message: held.append(message)], accept=["json"]).consume()
    connection.drain_events(timeout=5)
    assert held, "no message delivered"
    connection.transport.client = None  # what collect() leaves behind, on the channel it did not close
    raised = None
    try:
        channel.close()
    except Exception as exc:
        raised = exc
    return raised, redis.Redis(port=port).hlen("unacked"), held[0]


def ack_after_close(port: int) -> tuple[Exception | None, int]:
    """The message of a channel closed for good after its connection was collected (with the first
    fix: kombu dropped the channel's pools and its connection) is acknowledged, as Celery does when
    the task ends after the worker reconnected. What the acknowledgement raised, and how many
    messages Redis still holds unacknowledged."""
    raised, _, message = close_after_collect(port)
    assert raised is None and message.channel.connection is None, "the channel must be closed for good"
    try:
        message.ack()
    except Exception as exc:
        return exc, redis.Redis(port=port).hlen("unacked")
    return None, redis.Redis(port=port).hlen("unacked")


def test_a_channel_closed_after_its_connection_was_collected_raises_nothing_and_keeps_its_messages(
    redis_port: int,
) -> None:
    assert kombu_fixes.apply(), f"kombu {kombu.__version__}: check whether it still needs the fix, then list it"
    raised, unacked, _ = close_after_collect(redis_port)
    assert raised is None, f"the close raised {raised!r}: the worker would exit"
    assert unacked == 1, "the unacknowledged message must stay in Redis for the visibility timeout to restore"


def test_without_the_fix_the_close_raises_attribute_error(redis_port: int) -> None:
    """The bug is still there in this kombu: drop the fix (and the version) once this fails."""
    kombu_fixes.apply(versions=frozenset())
    try:
        raised, _, _ = close_after_collect(redis_port)
    finally:
        kombu_fixes.apply()
    assert isinstance(raised, AttributeError), raised


def test_a_message_of_a_closed_channel_is_acknowledged_in_redis_without_an_error(redis_port: int) -> None:
    assert kombu_fixes.apply(), f"kombu {kombu.__version__}: check whether it still needs the fix, then list it"
    raised, unacked = ack_after_close(redis_port)
    assert raised is None, f"the acknowledgement raised {raised!r}: the worker would exit"
    assert unacked == 0, "the acknowledgement must reach Redis, or the message would be delivered again"


def test_without_the_fix_the_acknowledgement_raises_attribute_error(redis_port: int) -> None:
    """The bug is still there in this kombu: drop the fix (and the version) once this fails."""
    kombu_fixes.apply(ack_versions=frozenset())
    try:
        raised, unacked = ack_after_close(redis_port)
    finally:
        kombu_fixes.apply()
    assert isinstance(raised, AttributeError), raised
    assert unacked == 1


@pytest.fixture
def clients_built(monkeypatch: pytest.MonkeyPatch) -> list[redis.Redis]:
    """Every redis-py client built from now on."""
    built: list[redis.Redis] = []
    original = redis.Redis.__init__

    def counted(self: redis.Redis, *args, **kwargs) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counted)
    return built


def round_trip(port: int, messages: int) -> tuple[list[int], int, int]:
    """`messages` published, consumed and acknowledged on one connection, as a worker does: the
    numbers received, and the messages Redis still holds queued and unacknowledged."""
    received: list[int] = []

    def on_message(body: dict, message: Message) -> None:
        received.append(body["n"])
        message.ack()

    with Connection(f"redis://127.0.0.1:{port}/0") as connection:
        producer = connection.Producer()
        for n in range(messages):
            producer.publish({"n": n}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE])
        with Consumer(connection, [QUEUE], callbacks=[on_message], accept=["json"]):
            while len(received) < messages:
                connection.drain_events(timeout=5)
    server = redis.Redis(port=port)
    return received, server.llen(QUEUE.name), server.hlen("unacked")


def test_a_channel_publishes_and_acknowledges_through_one_client(
    redis_port: int, clients_built: list[redis.Redis]
) -> None:
    assert kombu_fixes.apply(), f"kombu {kombu.__version__}: check whether it still needs the fix, then list it"
    received, queued, unacked = round_trip(redis_port, 20)
    assert received == list(range(20)) and queued == 0 and unacked == 0, (received, queued, unacked)
    # The channel's client for its commands and the one for its blocking reads (3 here, 85
    # without the fix), whatever the number of messages.
    assert len(clients_built) <= 4, f"{len(clients_built)} redis-py clients for 20 messages"


def test_without_the_fix_each_operation_builds_a_client(redis_port: int, clients_built: list[redis.Redis]) -> None:
    """kombu still builds a client per operation: drop the fix (and the versions) once this fails."""
    kombu_fixes.apply(client_versions=frozenset())
    try:
        received, _, _ = round_trip(redis_port, 20)
    finally:
        kombu_fixes.apply()
    assert received == list(range(20))
    assert len(clients_built) >= 3 * 20, f"{len(clients_built)} clients: publish, unacked record and ack, each"


def test_a_channel_with_a_new_pool_builds_a_client_on_it(redis_port: int) -> None:
    """kombu drops a channel's pools when it closes it (`_disconnect_pools`); a later operation,
    such as a late acknowledgement, must go through the new pool, not the one dropped."""
    assert kombu_fixes.apply()
    with Connection(f"redis://127.0.0.1:{redis_port}/0") as connection:
        channel = connection.channel()
        first = channel._create_client()
        assert channel._create_client() is first
        channel._disconnect_pools()
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert second.ping()
