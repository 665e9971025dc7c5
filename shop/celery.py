"""The Celery app: `celery -A shop worker` and `celery -A shop beat` load it from here."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

app = Celery("shop")
# Every Celery setting lives in settings/celery.py as CELERY_<NAME>.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_postrun.connect(dispatch_uid="shop.celery.close_old_connections", weak=False)
def close_old_connections(**kwargs) -> None:
    """After each task, what Django does after each request: drop connections that are past
    CONN_MAX_AGE or broke (settings/celery.py: CELERY_DB_REUSE_MAX keeps the rest open)."""
    from django.db import close_old_connections

    close_old_connections()
