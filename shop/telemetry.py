"""OpenTelemetry tracing, off unless the standard OTEL_* variables ask for it.

Set OTEL_TRACES_EXPORTER (`otlp`, i.e. OTLP over HTTP; or `console`) or OTEL_SERVICE_NAME, and the
exporter's own variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*,
OTEL_TRACES_SAMPLER...). Unset, nothing is installed and not even the SDK is imported: no span,
no header, no cost. OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off too.

Each process starts it where it may: the web in shop/wsgi.py (gunicorn's workers import it after
the fork; runserver too), a prefork worker in each pool process (`worker_process_init`: the batch
span processor's thread does not survive a fork), a threads or solo worker in `worker_init`, beat
in `beat_init` (shop/celery.py connects them). The web traces requests (Django) and the tasks it
sends (Celery, which puts the trace context in each message); a worker continues that trace in
each task and every task it sends on, so an order's checkout, its chain, its chord and the
chord's callback are one trace. The fields tasks_admin/logcontext.py carries (the order number,
the request id) are set on every span as `shop.<field>`. Proven by tests/integration/test_tracing.py.

In the web and the workers every SQL statement run inside a request or a task is a CLIENT span of
it (psycopg2's instrumentation: `db.system` postgresql, the statement without its parameters, no
sqlcommenter comment added to the SQL). A statement run outside any span is not traced, or each
would be a trace of its own, every second or so: a worker's write-behind flusher
(tasks_admin/writebehind.py), the probes (/healthz, /readyz, not traced), beat's lease. Beat
traces no statement. The embedded default, SQLite, gets no database spans at all: only psycopg2's
connections are instrumented (Django's PostgreSQL backend uses psycopg2 here; it would prefer
psycopg 3 if that were installed, and psycopg 3 is not instrumented).
"""

import os
from contextlib import nullcontext
from importlib.metadata import entry_points

import structlog

from tasks_admin.logcontext import CARRIED

# The instrumentation reads these itself when set; else probes are not traced.
DEFAULT_EXCLUDED_URLS = "healthz,readyz"

_started = False


def enabled() -> bool:
    """Whether the OTEL_* variables ask for traces."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters or os.environ.get("OTEL_SERVICE_NAME"))


def start(role: str) -> bool:
    """Install tracing in this process if it is asked for (once); `role` names the service by default
    (shop-web, shop-worker, shop-beat) when OTEL_SERVICE_NAME does not."""
    global _started
    if _started or not enabled():
        return False
    _started = True
    _install(role)
    return True


def _install(role: str) -> None:
    # Imported here, not at the top: with tracing off the SDK and instrumentations are never loaded.
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class CarriedFields(SpanProcessor):
        """Every span gets the carried fields bound where it starts (the order number, the request id)."""

        def on_start(self, span, parent_context=None) -> None:
            bound = structlog.contextvars.get_contextvars()
            span.set_attributes({f"shop.{key}": str(bound[key]) for key in CARRIED if key in bound})

    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"shop-{role}"})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(CarriedFields())
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* tune it
    trace.set_tracer_provider(provider)

    CeleryInstrumentor().instrument(tracer_provider=provider)
    if role in ("web", "worker"):
        from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

        # Wraps psycopg2.connect: Django's connections stay psycopg2 connections (with a cursor
        # class that traces execute), so its register_type and jsonb set-up work as before.
        Psycopg2Instrumentor().instrument(tracer_provider=_inside_spans(provider), enable_commenter=False)
    if role == "web":
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
        DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=excluded or DEFAULT_EXCLUDED_URLS)


def _inside_spans(provider):
    """The database instrumentation's tracer provider: a statement run inside a span (a request's,
    a task's) is a child span of it; one run outside any is not traced (the non-recording
    INVALID_SPAN, which the instrumentation skips)."""
    from opentelemetry import trace

    def outside(context) -> bool:
        return not trace.get_current_span(context).get_span_context().is_valid

    class InsideSpansTracer(trace.Tracer):
        def __init__(self, tracer: trace.Tracer) -> None:
            self._tracer = tracer

        def start_span(self, name, context=None, *args, **kwargs) -> trace.Span:
            return trace.INVALID_SPAN if outside(context) else self._tracer.start_span(name, context, *args, **kwargs)

        def start_as_current_span(self, name, context=None, *args, **kwargs):
            if outside(context):
                return nullcontext(trace.INVALID_SPAN)
            return self._tracer.start_as_current_span(name, context, *args, **kwargs)

    class InsideSpans(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs) -> trace.Tracer:
            return InsideSpansTracer(provider.get_tracer(*args, **kwargs))

    return InsideSpans()


def _exporters() -> list:
    """The span exporters OTEL_TRACES_EXPORTER names (default otlp: OTLP over HTTP, configured by its
    own OTEL_EXPORTER_OTLP_* variables), by the SDK's entry points."""
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()]
    exporters = []
    for name in names:
        found = entry_points(group="opentelemetry_traces_exporter", name="otlp_proto_http" if name == "otlp" else name)
        if not found:
            raise RuntimeError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r} is installed")
        exporters.append(next(iter(found)).load()())
    return exporters
