"""Tracing is off unless the OTEL_* variables ask for it, and then costs nothing: no instrumentation
loaded, no middleware added, the API's no-op tracer (shop/telemetry.py). On, it traces:
tests/integration/test_tracing.py."""

import os
import subprocess
import sys

import pytest

from tests.processes import ROOT

# The web process's start (shop/wsgi.py), then what it loaded, its middleware and its tracer provider.
PROBE = (
    "import sys, shop.wsgi; from django.conf import settings; from opentelemetry import trace; "
    "print(any(m.startswith('opentelemetry.instrumentation.') for m in sys.modules), "
    "any('opentelemetry' in m for m in settings.MIDDLEWARE), type(trace.get_tracer_provider()).__name__)"
)
OTEL = ("OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED")


def web_start(**env: str) -> str:
    clean = {key: value for key, value in os.environ.items() if key not in OTEL}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": "shop"}, {"OTEL_SDK_DISABLED": "true"}],
    ids=["unset", "exporter none", "sdk disabled"],
)
def test_tracing_off_loads_nothing(env):
    assert web_start(**env) == "False False ProxyTracerProvider"


def test_tracing_on_instruments_the_web():
    assert web_start(OTEL_TRACES_EXPORTER="console") == "True True TracerProvider"


def test_an_unknown_exporter_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-c", "import shop.wsgi"],
        cwd=ROOT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "jaegerr"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "no span exporter named 'jaegerr' is installed" in done.stderr


def test_an_unknown_log_format_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "LOG_FORMAT must be plain or json, got 'xml'" in done.stderr
