"""The Celery app: `celery -A shop worker` and `celery -A shop beat` load it from here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

app = Celery("shop")
# Every Celery setting lives in settings/celery.py as CELERY_<NAME>.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
