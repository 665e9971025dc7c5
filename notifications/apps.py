from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # Its series on /metrics, through the task layer's extension point.
        from tasks_admin import prometheus

        from .metrics import NotificationCollector

        prometheus.register_collector("notifications", NotificationCollector())
