"""Fixes for kombu bugs the shop's workers hit, each applied only to the versions that have it
(`apply()`, called by the Celery app in shop/celery.py). The first two follow a lost Redis
connection; the third is a cost paid on every message.

Redis: a channel closed after its connection was collected. On a lost broker connection
Celery 5.7 collects the connection and then closes it as well (celery/celery#10242, "close
broken connection in error handler", for GH-9705). The collect drops the transport's client
(kombu/connection.py, `_do_close_transport`); the close then reaches a Redis channel whose
unacknowledged messages kombu tries to hand back through a new connection pool, built from
that client: `Channel._connparams` raises AttributeError ('NoneType' object has no attribute
'hostname') — the same unguarded path as celery/kombu#582 — which Celery's error handler does
not catch, and the worker exits ("Unrecoverable error") instead of reconnecting. Found by the
failure-injection suite (tests/reliability/test_redis_restart.py); proved by
tests/integration/test_kombu_fixes.py. Such a channel cannot reach Redis any more: its messages
stay in Redis's unacked index, and the visibility timeout hands them out again.

Redis: the late acknowledgement of a message whose channel was closed. A task still running when
the connection was lost keeps its message, and Celery acknowledges it through that message's
channel once the task ends, i.e. after the worker has reconnected. The collect-then-close above
can close that channel for good (`close_channel` sets its `connection` to None, and it has
dropped its connection pools), and the acknowledgement then needs a new pool: `_connparams`
raises AttributeError ('NoneType' object has no attribute 'client', the unguarded path of
celery/kombu#582 again), which `Message.ack_log_error` does not catch, and the worker exits
("Unrecoverable error"). No upstream issue found names it, and kombu's main (read 2026-08) has
no guard in `QoS.ack` either; upstream's answer to acknowledgements lost with the connection is to cancel such tasks
(celery/celery#6654, worker_cancel_long_running_tasks_on_connection_loss), which the shop does not
want (settings/celery.py). The fix: `Channel._connparams` remembers the parameters it built while
the channel was open, and a closed channel builds its new pool from them, so the acknowledgement
reaches the same Redis: the message leaves the unacked index and runs once. If Redis is still
away, the acknowledgement fails with a connection error, which Celery logs ("Couldn't ack"), and
the visibility timeout hands the message out again. Found by tests/reliability/test_redis_restart.py
(a task ending after its worker reconnected to a restarted Redis); proved by
tests/integration/test_kombu_fixes.py.

Redis: a new redis-py client for every operation. kombu's Redis channel builds a client
(`Channel._create_client`, through `conn_or_acquire`) for each message it publishes, each message
it records as unacknowledged and each acknowledgement, and redis-py 8.1's `Redis.__init__` builds
its table of ~165 response callbacks afresh each time (redis/redis-py#3624, "Serious performance
issue with redis connection pooling due to CaseInsensitiveDict"; the fix, redis/redis-py#4124,
is not released). Half the CPU of a publish went there (benchmarks here, 2026-12-05: 510 µs a
publish, 255 µs with one client), and an order's workflow makes five publishes and about a dozen
acknowledgement and unacknowledged-record round trips in the workers. The fix: a channel keeps one
client over its connection pool and builds a new one only when kombu gives it a new pool (after
a lost connection). A redis-py client holds no connection of its own (each command takes one from
the pool), so sharing it is what redis-py documents for threads. Proved by
tests/integration/test_kombu_fixes.py (one client for many operations, a new one with a new pool).
"""

import logging

import kombu
import redis
from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

# Versions checked to need each fix. tests/integration/test_kombu_fixes.py proves the fixes on the
# installed kombu, and fails when that kombu is not listed here or no longer has the bug.
RESTORE_AFTER_COLLECT_BROKEN = frozenset({"5.7.0"})
ACK_AFTER_CLOSE_BROKEN = frozenset({"5.7.0"})
CLIENT_PER_OPERATION_SLOW = frozenset({("5.7.0", "8.1.0")})  # (kombu, redis-py)

_original_restore_unacked = kombu_redis.QoS.restore_unacked
_original_connparams = kombu_redis.Channel._connparams
_original_create_client = kombu_redis.Channel._create_client
_REMEMBERED = "_kombu_fixes_connparams"
_CLIENT = "_kombu_fixes_client"


def _restore_unacked(self: kombu_redis.QoS, client=None):
    """kombu's `QoS.restore_unacked`, except on a channel whose transport lost its client."""
    if client is None and self.channel.connection is not None and self.channel.connection.client is None:
        logger.info(
            "Broker connection collected: %d unacknowledged message(s) left to the visibility timeout",
            len(self._delivered),
        )
        return None
    return _original_restore_unacked(self, client)


def _connparams(self: kombu_redis.Channel, asynchronous: bool = False) -> dict:
    """kombu's `Channel._connparams`, remembered while the channel is open; on a closed channel (whose
    `connection` kombu set to None), the ones it had, for the pool a late acknowledgement needs."""
    if self.connection is None and not asynchronous and _REMEMBERED in self.__dict__:
        return dict(self.__dict__[_REMEMBERED])
    params = _original_connparams(self, asynchronous)
    if not asynchronous:
        self.__dict__[_REMEMBERED] = dict(params)
    return params


def _create_client(self: kombu_redis.Channel, asynchronous: bool = False):
    """kombu's `Channel._create_client`, except that a channel reuses its client while its
    connection pool is the same."""
    if asynchronous:
        return _original_create_client(self, asynchronous)
    pool = self.pool
    client = self.__dict__.get(_CLIENT)
    if client is None or client.connection_pool is not pool:
        client = self.__dict__[_CLIENT] = _original_create_client(self)
    return client


def apply(
    versions: frozenset[str] = RESTORE_AFTER_COLLECT_BROKEN,
    ack_versions: frozenset[str] = ACK_AFTER_CLOSE_BROKEN,
    client_versions: frozenset[tuple[str, str]] = CLIENT_PER_OPERATION_SLOW,
) -> bool:
    """Patch kombu for each fix whose versions list its version; whether it patched anything."""
    restore = kombu.__version__ in versions
    ack = kombu.__version__ in ack_versions
    client = (kombu.__version__, redis.__version__) in client_versions
    kombu_redis.QoS.restore_unacked = _restore_unacked if restore else _original_restore_unacked
    kombu_redis.Channel._connparams = _connparams if ack else _original_connparams
    kombu_redis.Channel._create_client = _create_client if client else _original_create_client
    return restore or ack or client
