"""Evaluate the alert rules once, here and now, and queue the notices of what changed: the
watchdog run from outside Celery (a systemd timer, cron, a Kubernetes CronJob), so that a dead
beat — which sends the every-minute evaluation itself — is still reported."""

from django.core.management.base import BaseCommand

from tasks_admin.models import Alert
from tasks_admin.tasks import evaluate_alerts


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        outcome = evaluate_alerts()  # the periodic job's body, run in this process
        for alert in Alert.objects.filter(resolved_at__isnull=True).select_related("rule"):
            self.stdout.write(f"open: {alert}: {alert.summary}")
        self.stdout.write(f"notices queued: {outcome['notices']}")
