"""Fixes for kombu bugs the shop's workers hit, each applied only to the kombu versions that
have it (`apply()`, called by the Celery app in shop/celery.py). Both follow a lost Redis connection.

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
"""

import logging

import kombu
from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

# Versions checked to need each fix. tests/integration/test_kombu_fixes.py proves the fixes on the
# installed kombu, and fails when that kombu is not listed here or no longer has the bug.
RESTORE_AFTER_COLLECT_BROKEN = frozenset({"5.7.0"})
ACK_AFTER_CLOSE_BROKEN = frozenset({"5.7.0"})

_original_restore_unacked = kombu_redis.QoS.restore_unacked
_original_connparams = kombu_redis.Channel._connparams
_REMEMBERED = "_kombu_fixes_connparams"


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


def apply(
    versions: frozenset[str] = RESTORE_AFTER_COLLECT_BROKEN, ack_versions: frozenset[str] = ACK_AFTER_CLOSE_BROKEN
) -> bool:
    """Patch kombu for each fix whose versions list its version; whether it patched anything."""
    restore = kombu.__version__ in versions
    ack = kombu.__version__ in ack_versions
    kombu_redis.QoS.restore_unacked = _restore_unacked if restore else _original_restore_unacked
    kombu_redis.Channel._connparams = _connparams if ack else _original_connparams
    return restore or ack
