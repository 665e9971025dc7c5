"""The health probes: /healthz, /readyz (database, migrations, broker) and `manage.py probe worker|beat|ready`,
the last run as an orchestrator would, a process whose exit code is the answer."""

import json
import os
import subprocess
import sys

import pytest
from django.db.migrations.recorder import MigrationRecorder
from django.test import override_settings

from shop import embedded_redis
from shop.celery import app as celery_app
from tasks_admin import health
from tasks_admin.beat import acquire_lease
from tasks_admin.models import SchedulerLock
from tests.fakes.smtp_server import free_port
from tests.processes import ROOT
from tests.processes import test_database_url as database_url

pytestmark = pytest.mark.django_db(transaction=True)


def answer(client, path: str, **extra) -> tuple[int, dict]:
    response = client.get(path, **extra)
    return response.status_code, json.loads(response.content)


@override_settings(SECURE_SSL_REDIRECT=True, ALLOWED_HOSTS=["shop.example.com"])
def test_healthz_answers_a_probe_by_address_over_plain_http(client):
    # A Kubernetes probe asks by the pod's address over HTTP: no redirect, no DisallowedHost.
    assert answer(client, "/healthz", HTTP_HOST="10.1.2.3:8000") == (200, {"status": "ok"})
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000")["Cache-Control"] == "no-store"
    assert client.post("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 400  # only GET/HEAD are probes


def test_readyz_is_ready_with_database_migrations_and_broker(client, broker_url):
    assert answer(client, "/readyz") == (
        200,
        {"status": "ok", "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}},
    )


def test_readyz_fails_while_the_broker_is_down_and_says_nothing_of_it(client, broker_url, tmp_path, monkeypatch):
    port = free_port()
    redis = embedded_redis.start_on_port(port, tmp_path / "redis")
    # Celery reads CELERY_BROKER_URL from the environment before its configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    celery_app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    try:
        assert answer(client, "/readyz")[0] == 200
        redis.kill()
        redis.wait()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert json.loads(response.content) == {
            "status": "unavailable",
            "checks": {"database": "ok", "migrations": "ok", "broker": "unavailable"},
        }
        assert str(port) not in response.content.decode() and "127.0.0.1" not in response.content.decode()
    finally:
        celery_app.conf.broker_url = broker_url
        if redis.poll() is None:
            redis.kill()
            redis.wait()


def test_readyz_fails_while_a_migration_is_not_applied(client, broker_url, monkeypatch):
    monkeypatch.setattr(health, "_migrated", set())
    latest = MigrationRecorder.Migration.objects.filter(app="tasks_admin").latest("id")
    latest.delete()
    try:
        status, body = answer(client, "/readyz")
        assert (status, body["checks"]["migrations"]) == (503, "unavailable")
    finally:
        MigrationRecorder.Migration.objects.create(app=latest.app, name=latest.name)
    assert answer(client, "/readyz")[0] == 200


def probe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "probe", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_probe_worker_exits_0_while_a_worker_of_this_host_answers_and_1_for_none(worker, broker_url):
    env = {"DATABASE_URL": database_url(), "CELERY_BROKER_URL": broker_url}
    alive = probe("worker", env=env)
    assert (alive.returncode, alive.stdout.strip()) == (0, "ok"), alive.stderr
    missing = probe("worker", "--hostname", "nobody@nowhere", "--timeout", "1", env=env)
    assert missing.returncode == 1 and "no answer from nobody@nowhere" in missing.stderr


def test_probe_beat_exits_0_only_while_the_lease_is_renewed(broker_url):
    env = {"DATABASE_URL": database_url(), "CELERY_BROKER_URL": broker_url}
    assert probe("beat", env=env).returncode == 1  # no beat ever held it
    assert acquire_lease("beat-on-host-a", 30)
    assert probe("beat", env=env).returncode == 0
    SchedulerLock.objects.update(expires_at="2000-01-01T00:00:00Z")  # its beat stopped renewing it
    lapsed = probe("beat", env=env)
    assert lapsed.returncode == 1 and "no beat holds the scheduler lease" in lapsed.stderr


def test_probe_ready_fails_while_the_broker_is_down():
    env = {"DATABASE_URL": database_url(), "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    down = probe("ready", env=env)
    assert down.returncode == 1 and "not ready: broker" in down.stderr


def test_probe_beat_says_so_in_one_line_when_the_database_is_unreachable(broker_url):
    down = probe("beat", env={"DATABASE_URL": "postgres://postgres@127.0.0.1:1/shop", "CELERY_BROKER_URL": broker_url})
    assert down.returncode == 1
    assert down.stderr.strip() == "CommandError: database unreachable: cannot tell whether a beat holds the lease"
