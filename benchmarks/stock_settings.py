"""Django settings of the stock baseline: django-celery-results and nothing else of the shop.

None of the shop's apps, signal handlers or Celery settings are loaded, so the baseline pays
exactly what a stock django-celery-results setup pays. Same database, and the same
connection settings, as the shop's run.
"""

import os

import dj_database_url

INSTALLED_APPS = ["django_celery_results"]
# The shop's own connection settings (persistent connections): the baseline is not made slower
# by Django's default of a new database connection per task.
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60, conn_health_checks=True)}
USE_TZ = True
TIME_ZONE = "UTC"
