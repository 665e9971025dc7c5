"""Fixes for kombu bugs the shop's workers hit, each applied only to the kombu versions that
have it (`apply()`, called by the Celery app in shop/celery.py).

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
"""

import logging

import kombu
from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

# Versions checked to need the fix. tests/integration/test_kombu_fixes.py proves the fix on the
# installed kombu, and fails when that kombu is not listed here or no longer has the bug.
RESTORE_AFTER_COLLECT_BROKEN = frozenset({"5.7.0"})

_original_restore_unacked = kombu_redis.QoS.restore_unacked


def _restore_unacked(self: kombu_redis.QoS, client=None):
    """kombu's `QoS.restore_unacked`, except on a channel whose transport lost its client."""
    if client is None and self.channel.connection is not None and self.channel.connection.client is None:
        logger.info(
            "Broker connection collected: %d unacknowledged message(s) left to the visibility timeout",
            len(self._delivered),
        )
        return None
    return _original_restore_unacked(self, client)


def apply(versions: frozenset[str] = RESTORE_AFTER_COLLECT_BROKEN) -> bool:
    """Patch kombu if its version is one of `versions`; whether it did."""
    if kombu.__version__ not in versions:
        kombu_redis.QoS.restore_unacked = _original_restore_unacked
        return False
    kombu_redis.QoS.restore_unacked = _restore_unacked
    return True
