from django.apps import AppConfig


class TasksAdminConfig(AppConfig):
    name = "tasks_admin"
    verbose_name = "Task console"

    def ready(self) -> None:
        from . import (
            admin_site,  # noqa: F401  (takes django-celery-results' Task results out of the admin)
            alert_rules,  # noqa: F401  (registers the task layer's alert rules)
            alerts_admin,  # noqa: F401  (alerts and their rules in the admin)
            periodic_admin,  # noqa: F401  (replaces django-celery-beat's PeriodicTask admin)
            signals,  # noqa: F401  (what the task layer does around every task)
        )
