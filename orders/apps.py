from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self) -> None:
        # The order's meaning of the task console's actions on its workflow's tasks.
        from . import console  # noqa: F401
