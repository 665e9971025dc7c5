"""Health probes for orchestrators (Kubernetes, systemd, a load balancer).

`/healthz` says the web process answers; `/readyz` that it can serve: the database answers, every
migration is applied, the broker accepts a connection. Both are answered by `ProbesMiddleware`,
first in the chain, before host validation and the HTTPS redirect (a probe asks by the pod's
address, over plain HTTP), and say nothing but each check's name and "ok" or "unavailable": no
versions, hosts or error text (those go to the log). `manage.py probe worker|beat` are the
worker's and beat's liveness (tasks_admin/management/commands/probe.py).

The checks are django-health-check's (its `Database`, and two of ours on its `HealthCheck` base,
which bounds each with a timeout and logs the failure). Proven by tests/integration/test_health.py.
"""

import asyncio
import dataclasses
import datetime
from collections.abc import Callable

from celery import current_app
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse, JsonResponse
from health_check.base import HealthCheck
from health_check.checks import Database
from health_check.exceptions import ServiceUnavailable

from .beat import LOCK_NAME
from .models import SchedulerLock

BROKER_TIMEOUT_SECONDS = 2


@dataclasses.dataclass
class Broker(HealthCheck):
    """The broker accepts a new connection (Redis: and answers a PING; RabbitMQ: the AMQP handshake)."""

    timeout = datetime.timedelta(seconds=BROKER_TIMEOUT_SECONDS)

    def run(self) -> None:
        try:
            with current_app.connection_for_write(connect_timeout=BROKER_TIMEOUT_SECONDS) as connection:
                connection.connect()  # kombu's Redis channel PINGs the server on connecting
        except Exception as exc:  # any transport's error: the broker is not there for us
            raise ServiceUnavailable("broker unreachable") from exc


_migrated: set[str] = set()  # databases found fully migrated: code and schema only change together on a deploy


@dataclasses.dataclass
class Migrations(HealthCheck):
    """Every migration this code knows is applied (once true, remembered for the process's life)."""

    alias: str = DEFAULT_DB_ALIAS

    def run(self) -> None:
        if self.alias in _migrated:
            return
        connection = connections[self.alias]
        try:
            with connection.temporary_connection():
                executor = MigrationExecutor(connection)
                plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        except Exception as exc:
            raise ServiceUnavailable("migrations unknown") from exc
        if plan:
            raise ServiceUnavailable(f"{len(plan)} migrations not applied")
        _migrated.add(self.alias)


READINESS: dict[str, Callable[[], HealthCheck]] = {"database": Database, "migrations": Migrations, "broker": Broker}


async def _run_checks(checks: dict[str, HealthCheck]) -> dict[str, bool]:
    results = await asyncio.gather(*(check.get_result() for check in checks.values()))
    return {name: result.error is None for name, result in zip(checks, results, strict=True)}


def readiness() -> dict[str, bool]:
    """Each readiness check by name: passed or not (run side by side, each within its timeout)."""
    return asyncio.run(_run_checks({name: make() for name, make in READINESS.items()}))


def beat_lease_held() -> bool:
    """A beat holds the scheduler lease and renewed it within the lease's length (database clock)."""
    return SchedulerLock.objects.filter(name=LOCK_NAME, expires_at__gt=Now()).exists()


def _answer(ok: bool, checks: dict[str, bool]) -> HttpResponse:
    body = {"status": "ok" if ok else "unavailable"}
    if checks:
        body["checks"] = {name: "ok" if passed else "unavailable" for name, passed in checks.items()}
    response = JsonResponse(body, status=200 if ok else 503)
    response["Cache-Control"] = "no-store"
    return response


class ProbesMiddleware:
    """Answers GET/HEAD /healthz and /readyz before anything else runs (sessions, host checks, redirects)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in ("/healthz", "/readyz") and request.method in ("GET", "HEAD"):
            if request.path_info == "/healthz":
                return _answer(True, {})
            checks = readiness()
            return _answer(all(checks.values()), checks)
        return self.get_response(request)
