"""LOG_FORMAT=json: a web request's log lines are JSON objects carrying its request id, the one the
response names (the caller's X-Request-ID when it is a plain token). A worker's lines, with the task
and the order: tests/integration/test_tracing.py."""

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from tasks_admin import logcontext

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict]]]:
    """What a root handler with the "json" formatter of settings.LOGGING writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logcontext.json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


def test_a_request_logs_json_lines_with_its_request_id(client, json_lines):
    response = client.get("/no-such-page/", HTTP_X_REQUEST_ID="edge-7f3a.1")
    assert response.status_code == 404 and response["X-Request-ID"] == "edge-7f3a.1"
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["event"] == "Not Found: /no-such-page/"
    assert (line["level"], line["request_id"]) == ("warning", "edge-7f3a.1")
    assert "trace_id" not in line  # tracing is off here: no trace to name


@pytest.mark.parametrize("given", ["", "two words", "x" * 65, "<script>"])
def test_a_missing_or_odd_request_id_is_replaced_by_a_new_one(client, json_lines, given):
    response = client.get("/no-such-page/", HTTP_X_REQUEST_ID=given)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["request_id"] == response["X-Request-ID"]


def test_nothing_of_a_request_is_left_for_the_next_log_line(client, json_lines):
    client.get("/no-such-page/")
    logging.getLogger("after").warning("outside any request")
    assert "request_id" not in json_lines()[-1]
