"""A pytest plugin for Celery's own test suite (tests/celery_canvas.py): Django set up at
start, so that the database result backends (Django models) work in its worker and tests."""

import django


def pytest_configure(config) -> None:
    django.setup()
