"""Fixtures shared by the suite. Workflow tests run a real `celery -A shop worker` on a real broker."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from shop import embedded_redis
from shop.celery import app as celery_app
from tests.fakes import switches
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.processes import WorkerProcess, test_database_url


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory) -> Iterator[str]:
    """CELERY_BROKER_URL if set (CI: the machine's Redis or RabbitMQ), else a private embedded Redis."""
    url = os.environ.get("CELERY_BROKER_URL")
    server = None
    if not url:
        socket = tmp_path_factory.mktemp("redis") / "redis.sock"
        server = embedded_redis.start(socket, socket.parent / "data")
        url = embedded_redis.broker_url(socket)
    celery_app.conf.broker_url = url
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
    celery_app.control.purge()  # nothing left over from an earlier run
    yield url
    if server is not None:
        server.terminate()
        server.wait()


@pytest.fixture(scope="session")
def sms_gateway() -> Iterator[FakeSmsGateway]:
    with FakeSmsGateway() as gateway:
        yield gateway


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
def fake_tasks_dir(tmp_path_factory) -> Path:
    """Where tests/fakes/tasks.py tasks write what they received (shared with the worker)."""
    path = tmp_path_factory.mktemp("fake-tasks")
    os.environ["FAKE_TASKS_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def worker_process(
    django_db_setup, django_db_blocker, broker_url, sms_gateway, mail_dir, fake_tasks_dir, tmp_path_factory
) -> Iterator[WorkerProcess]:
    with django_db_blocker.unblock():
        database_url = test_database_url()
    env = {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "SMS_PROVIDER": "http",
        "SMS_HTTP_URL": sms_gateway.url,
        "SMS_API_KEY": "test-key",
        "SMS_TIMEOUT": "2",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "PAYMENT_DEMO_LATENCY": "0",
        # Fast retries: the policy is the same, the seconds are shorter.
        "TASK_RETRY_BACKOFF": "0.1",
        "TASK_RETRY_BACKOFF_MAX": "0.5",
        "CELERY_EXTRA_IMPORTS": "tests.fakes.tasks,tests.fakes.faults",
        "FAKE_TASKS_DIR": str(fake_tasks_dir),
        # Switches a test flips to make a step fail or hang (tests/fakes/switches.py).
        "FAULT_DIR": str(fake_tasks_dir),
        "FAULT_SWITCHES": ",".join(switches.SWITCHES),
    }
    worker = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def worker(worker_process, transactional_db, sms_gateway, request) -> Iterator[WorkerProcess]:
    """A running worker for a test whose data the worker must see (committed, not in a test transaction)."""
    sms_gateway.reset()
    yield worker_process
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("---- worker log ----\n" + worker_process.log()[-6000:])
    wait_until_quiet(worker_process)


def wait_until_quiet(worker_process: WorkerProcess, bound: float = 15) -> None:
    """Until the worker has logged nothing for a write-behind interval and a second: its last
    task ended and its batch is flushed. The test database is emptied next (TRUNCATE), and a
    worker still writing deadlocks with it, failing the test's teardown and leaving its rows to
    the next test (seen with the messages of tests/integration/test_cancellation.py)."""
    quiet = django_settings.WRITE_BEHIND_SECONDS + 1
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        idle = time.time() - worker_process.log_path.stat().st_mtime
        if idle >= quiet:
            return
        time.sleep(quiet - idle)


@pytest.fixture(autouse=True)
def no_rate_limits(request, settings) -> None:
    """The suite checks out and looks up far more often than a customer: the abuse limits
    (orders/ratelimit.py) are off except in tests marked `rate_limits` (tests/functional/test_rate_limits.py)."""
    if request.node.get_closest_marker("rate_limits") is None:
        settings.RATE_LIMITS_ENABLED = False


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
