"""The task dashboard's broker side: queue depths read from a real broker, the workers online
answering a real `celery -A shop worker`, and a page that still renders when the broker is down."""

import re
import time

import pytest
from kombu import Exchange, Queue

from shop.celery import app as celery_app
from tasks_admin.models import TaskRecord
from tests.support import wait_for

URL = "/admin/tasks/dashboard/"


def get_page(client) -> str:
    response = client.get(URL)
    assert response.status_code == 200
    return response.content.decode()


def queue_depth(page: str, queue: str, column: str = "depth") -> int:
    return int(re.search(rf'<tr data-queue="{queue}">.*?data-{column}="(\d+)"', page, re.S).group(1))


@pytest.mark.django_db
def test_queue_depth_is_read_from_the_broker(broker_url, admin_client, settings):
    # A queue of its own that no worker consumes: the session's worker, if an earlier test
    # started it, consumes every queue in the configuration it started with.
    queue = Queue("dashboard-test", Exchange("dashboard-test"), routing_key="dashboard-test")
    settings.CELERY_TASK_QUEUES = [*settings.CELERY_TASK_QUEUES, queue]
    try:
        for _ in range(3):
            celery_app.send_task("tasks_admin.nonexistent", queue=queue)

        page = get_page(admin_client)
        # The broker and the history agree: three waiting, three queued; the tile counts them too.
        assert queue_depth(page, "dashboard-test") == 3
        assert queue_depth(page, "dashboard-test", "recorded") == 3
        assert re.search(r'data-metric="queued"[^>]*>(\d+)<', page).group(1) == str(
            TaskRecord.objects.filter(state="PENDING").count()
        )

        with celery_app.connection_for_write() as conn:
            queue(conn.default_channel).purge()
        # The history still has the three tasks as queued; the page shows what the broker holds.
        assert TaskRecord.objects.filter(task_name="tasks_admin.nonexistent", queue="dashboard-test").count() == 3
        assert queue_depth(get_page(admin_client), "dashboard-test") == 0
    finally:
        with celery_app.connection_for_write() as conn:
            queue(conn.default_channel).delete()


def test_workers_online_show_their_pool_and_concurrency(worker, admin_client):
    log = worker.log()
    hostname = re.search(r"(\S+@\S+) v\d", log).group(1)
    concurrency, pool = re.search(r"concurrency: (\d+) \((\w+)\)", log).groups()
    assert pool == "prefork"
    worker_row = re.compile(rf'<tr data-worker="{re.escape(hostname)}"[^>]*>(.*?)</tr>', re.S)

    def page_with_the_worker() -> str | None:
        """The page waits 1 s for the workers' answers: under load it may render before this one's."""
        page = get_page(admin_client)
        return page if worker_row.search(page) else None

    page = wait_for(page_with_the_worker, message="the worker's row")

    row = worker_row.search(page)
    assert f'data-pool="prefork" data-concurrency="{concurrency}"' in row.group(0)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1))]
    assert cells == [hostname, "prefork", concurrency, "0"]  # idle: no active task
    assert "broker unreachable" not in page and "no worker answered" not in page


@pytest.mark.django_db
def test_page_renders_when_the_broker_is_unreachable(admin_client, monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")
    # Celery reads CELERY_BROKER_URL from the environment before its configuration (CI sets it);
    # patched second, so that the configuration's own value is the one restored.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")

    started = time.monotonic()
    page = get_page(admin_client)

    assert time.monotonic() - started < 5
    assert page.count("broker unreachable") == 2  # queues and workers
    assert 'data-metric="dead-letters"' in page  # the rest of the page is there
