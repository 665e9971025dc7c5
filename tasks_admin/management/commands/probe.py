"""Liveness probes for systemd or Kubernetes: exit 0 when alive, 1 when not.

    manage.py probe worker [--hostname NAME]   a worker of this host (or NAME) answers a ping
    manage.py probe beat                        a beat holds the scheduler lease, renewed in time
    manage.py probe ready                       what /readyz checks: database, migrations, broker

Proven by tests/integration/test_health.py.
"""

import socket

from celery import current_app
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from tasks_admin import health


class Command(BaseCommand):
    help = "Exit 0 if the worker, beat or readiness probe passes, 1 if not."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("target", choices=("worker", "beat", "ready"))
        parser.add_argument(
            "--hostname", default="", help="the worker's node name (celery@host); default: any worker of this host"
        )
        parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a worker's answer")

    def handle(self, *args, target: str, hostname: str, timeout: float, **options) -> None:
        if target == "worker":
            self._worker(hostname, timeout)
        elif target == "beat":
            try:
                held = health.beat_lease_held()
            except DatabaseError as exc:
                raise CommandError("database unreachable: cannot tell whether a beat holds the lease") from exc
            if not held:
                raise CommandError("no beat holds the scheduler lease")
        else:
            failing = [name for name, passed in health.readiness().items() if not passed]
            if failing:
                raise CommandError(f"not ready: {', '.join(failing)}")
        self.stdout.write("ok")

    def _worker(self, hostname: str, timeout: float) -> None:
        try:
            replies = current_app.control.ping(destination=[hostname] if hostname else None, timeout=timeout)
        except OSError as exc:
            raise CommandError("broker unreachable") from exc
        names = {name for reply in replies for name, answer in reply.items() if answer == {"ok": "pong"}}
        suffix = f"@{socket.gethostname()}"
        if not (hostname in names if hostname else any(name.endswith(suffix) for name in names)):
            raise CommandError(f"no answer from {hostname or 'a worker of this host'}")
