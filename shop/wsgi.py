"""WSGI entry point for gunicorn (`gunicorn shop.wsgi`)."""

import os

from django.core.wsgi import get_wsgi_application

from . import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
telemetry.start("web")  # before the application loads its middleware (tracing adds one)

application = get_wsgi_application()
