"""A step waiting for row locks that a lost session holds gives up and is retried, rather than
waiting in libpq past its hard time limit (settings/core.py, DB_LOCK_TIMEOUT; on many hosts:
tests/reliability/test_failover.py, scenario 20). PostgreSQL only: .ci/run runs it there."""

import threading
import time

import psycopg2
import pytest
from django.conf import settings
from django.db import OperationalError, connection

from shop.models import Product
from tests import processes
from tests.factories import make_product
from tests.support import require

pytestmark = pytest.mark.django_db(transaction=True)
HOLD_SECONDS = 25  # longer than DB_LOCK_TIMEOUT (10 s by default), bounded for the old code's sake


def test_a_step_waiting_on_locks_a_lost_session_holds_gives_up_within_the_lock_timeout() -> None:
    require(connection.vendor == "postgresql", "lock_timeout is PostgreSQL's (DATABASE_URL=postgres://…)")
    assert 0 < settings.DB_LOCK_TIMEOUT < settings.CELERY_TASK_SOFT_TIME_LIMIT
    product = make_product(stock=5)
    # The session of a worker host that fell off the network mid-transaction: it holds the row.
    lost = psycopg2.connect(processes.test_database_url())
    lost.cursor().execute("SELECT 1 FROM shop_product WHERE id = %s FOR UPDATE", [product.pk])
    released = threading.Timer(HOLD_SECONDS, lost.rollback)  # as PostgreSQL's idle timeout would
    released.start()
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):  # transient: the task retries it
            Product.objects.filter(pk=product.pk).update(stock=4)
        waited = time.monotonic() - started
    finally:
        released.cancel()
        lost.close()
    assert settings.DB_LOCK_TIMEOUT - 0.5 <= waited < settings.DB_LOCK_TIMEOUT + 3, waited
