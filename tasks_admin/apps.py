from django.apps import AppConfig


class TasksAdminConfig(AppConfig):
    name = "tasks_admin"
    verbose_name = "Task console"

    def ready(self) -> None:
        from . import (
            history,  # noqa: F401  (connects the task history signal handlers)
            periodic_admin,  # noqa: F401  (replaces django-celery-beat's PeriodicTask admin)
        )
