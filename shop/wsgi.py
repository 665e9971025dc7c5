"""WSGI entry point for gunicorn (`gunicorn shop.wsgi`)."""

import os

from django.core.wsgi import get_wsgi_application

from tasks_admin import gcfreeze

from . import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
telemetry.start("web")  # before the application loads its middleware (tracing adds one)

application = get_wsgi_application()
gcfreeze.freeze_start_up_objects()  # as the workers do: a full collection then walks about a quarter as much
