"""What a log line (and a trace's span) says about the work in hand: the request id, the task's id
and name, the business key an app binds (an order's number), and the trace id.

The fields live in structlog's context variables, so every record of the standard `logging`
module carries them once `json_formatter` formats it (settings/core.py, LOG_FORMAT=json):

    web      RequestContextMiddleware   request_id (the caller's X-Request-ID, or a new one), until
                                        Django's request_finished
    an app   bound(order_number=...)    around what it does for one object (orders/workflow.py)
    publish  carry                      request_id and the app's keys ride in a message header...
    prerun   bind_task                  ...and are bound again in the worker with task_id, task_name
    postrun  clear                      nothing leaks into the process's next task

`tasks_admin/signals.py` connects the receivers. The trace id is OpenTelemetry's current span's,
when tracing is on (shop/telemetry.py, which also copies the carried keys onto every span).
Proven by tests/integration/test_json_logs.py.
"""

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse
from opentelemetry import trace

HEADER = "shop_log_context"
# The fields that follow the work from the request into its tasks, and from a task to the next.
CARRIED = ("request_id", "order_number")
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def carried() -> dict[str, Any]:
    """The carried fields bound in this context."""
    bound = structlog.contextvars.get_contextvars()
    return {key: bound[key] for key in CARRIED if key in bound}


def _mark_span(fields: dict[str, Any]) -> None:
    """Put the carried fields on the current span too (a no-op when tracing is off)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"shop.{key}": str(value) for key, value in fields.items() if key in CARRIED})


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind `fields` to the log context for the duration of the block (and mark the current span)."""
    _mark_span(fields)
    with structlog.contextvars.bound_contextvars(**fields):
        yield


# Celery signal receivers (tasks_admin/signals.py)


def carry(headers: dict | None = None, **kwargs) -> None:
    """before_task_publish: the carried fields go with the message."""
    if headers is not None and (fields := carried()):
        headers[HEADER] = fields


def bind_task(task_id: str | None = None, task=None, **kwargs) -> None:
    """task_prerun: a fresh context for this run, with what its sender carried."""
    structlog.contextvars.clear_contextvars()
    received = getattr(task.request, HEADER, None) if task is not None else None
    fields = {key: value for key, value in (received or {}).items() if key in CARRIED}
    structlog.contextvars.bind_contextvars(task_id=task_id, task_name=getattr(task, "name", None), **fields)


def clear(**kwargs) -> None:
    """task_postrun."""
    structlog.contextvars.clear_contextvars()


class RequestContextMiddleware:
    """Binds a request id for the request's log lines (and the tasks it sends), and answers with it.

    A caller's X-Request-ID (a proxy's) is kept if it is a plain token; anything else gets a new one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        _mark_span({"request_id": request_id})
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _request_finished(**kwargs) -> None:
    """Django logs a 4xx after the middleware returned: the request's context lasts until it is finished."""
    structlog.contextvars.clear_contextvars()


request_finished.connect(_request_finished, weak=False, dispatch_uid="tasks_admin.logcontext")


# Formatting


def add_trace_id(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The current span's trace and span ids, when a trace is being recorded."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def json_formatter() -> logging.Formatter:
    """One JSON object a line for every record of the standard logging module (LOGGING's "json" formatter)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_id,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
