"""The Celery app: `celery -A shop worker` and `celery -A shop beat` load it from here."""

import os

from celery import Celery

from tasks_admin import kombu_fixes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")


# A kombu bug the workers hit on a lost Redis connection, fixed on the versions that have it.
kombu_fixes.apply()

# Every task inherits the retry policy and the revoke check (tasks_admin/base.py).
app = Celery("shop", task_cls="tasks_admin.base:RetryingTask")
# Every Celery setting lives in settings/celery.py as CELERY_<NAME>.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
