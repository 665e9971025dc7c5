"""Traces and JSON logs from real processes: gunicorn and `celery -A shop worker` (prefork) with
tracing on by the standard OTEL_* variables, exporting OTLP/HTTP to a local receiver, and logging
with LOG_FORMAT=json.

Each order is one trace: the checkout request (web) → the charge → the chord's two header
steps → its callback (the confirmation) → the e-mail and the SMS (worker), every span with the
order's number, and each SQL statement a database span of the request or task that ran it; and
the worker's log lines for those tasks carry the task, the order, the checkout's request id and
the trace.
"""

import json
import urllib.request
from collections.abc import Iterator

import pytest

from orders.models import Order
from tests.factories import make_product, order_payload
from tests.fakes.otlp_receiver import OtlpReceiver, Span
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer
from tests.processes import test_database_url as database_url
from tests.reliability.harness import Stack
from tests.support import WORKFLOW_TASKS, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def stack(receiver, tmp_path, request) -> Iterator[Stack]:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds: export soon after each span ends
        "LOG_FORMAT": "json",
    }
    with FakeSmsGateway() as sms, FakeSmtpServer() as smtp:
        stack = Stack(tmp_path, database_url(), sms, smtp, env=env)
        try:
            yield stack
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(stack.logs())
            stack.stop()


def checkout(stack: Stack, payload: dict, request_id: str) -> str:
    request = urllib.request.Request(
        stack.web_url + "/api/orders/",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202 and response.headers["X-Request-ID"] == request_id
        return json.load(response)["id"]


def order_runs(receiver: OtlpReceiver, number: str) -> dict[str, Span]:
    """The run spans of the order's tasks, by step."""
    return {
        s.name.removeprefix("run/orders.tasks."): s
        for s in receiver.spans()
        if s.name.startswith("run/orders.tasks.") and s.attributes.get("shop.order_number") == number
    }


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def moves_the_order(sql: str) -> bool:
    """An UPDATE of the order's status: the ORM's, or a step's WITH clause (lifecycle.move_clause)."""
    return "UPDATE orders_order SET status" in sql.replace('"', "")


def statements(owner: Span, spans: list[Span]) -> list[str]:
    """The SQL the request or task of `owner` (its SERVER or CONSUMER span) ran itself, not in a
    task it sent: its database CLIENT spans' statements."""
    by_id = {s.span_id: s for s in spans}
    found = []
    for span in spans:
        if span.kind != "CLIENT":
            continue
        (system,) = {span.attributes.get("db.system"), span.attributes.get("db.system.name")} - {None}
        assert system == "postgresql", span
        runs = [s for s in ancestors(span, by_id) if s.kind in ("SERVER", "CONSUMER")]
        if runs and runs[0] == owner:
            assert span.service == owner.service, span
            found.append(span.attributes.get("db.statement") or span.attributes["db.query.text"])
    return found


def database_spans_outside_any(receiver: OtlpReceiver) -> list[Span]:
    """Database spans with no parent: a statement run outside any request or task."""
    return [s for s in receiver.spans() if s.kind == "CLIENT" and s.parent_id == ""]


def test_each_order_is_one_trace_from_checkout_through_chain_chord_and_callback(stack, receiver):
    stack.start(workers=1, web=True)  # gunicorn, and a prefork worker
    product = make_product(stock=10)
    order_ids = [checkout(stack, order_payload((product, 1)), f"checkout-{n}") for n in range(2)]
    stack.wait_until_final(order_ids)
    orders = list(Order.objects.filter(pk__in=order_ids).order_by("created_at"))
    assert [order.status for order in orders] == ["confirmed", "confirmed"]

    def runs(number: str) -> dict[str, Span]:
        return order_runs(receiver, number)

    for order in orders:
        wait_for(lambda order=order: len(runs(order.number)) == len(WORKFLOW_TASKS), message="the spans exported")

    traces = set()
    for n, order in enumerate(orders):
        steps = runs(order.number)
        (trace_id,) = {span.trace_id for span in steps.values()}
        traces.add(trace_id)
        in_trace = [s for s in receiver.spans() if s.trace_id == trace_id]
        by_id = {s.span_id: s for s in in_trace}
        # The checkout: the web's request span, the trace's root, with the order's number.
        (checkout_span,) = [s for s in in_trace if s.kind == "SERVER"]
        assert checkout_span.service == "shop-web" and checkout_span.parent_id == ""
        assert checkout_span.attributes["shop.order_number"] == order.number
        assert checkout_span.attributes["shop.request_id"] == f"checkout-{n}"
        attributes = checkout_span.attributes
        assert (attributes.get("http.method") or attributes.get("http.request.method")) == "POST", attributes
        # Every task ran in the worker, in this trace, under the checkout...
        for name, span in steps.items():
            assert span.service == "shop-worker" and span.kind == "CONSUMER", name
            assert checkout_span in ancestors(span, by_id), f"{name} is not under the checkout"
            assert span.attributes["celery.task_name"] == f"orders.tasks.{name}"
        # ...each under the task that sent it: the charge sends the chord's header, the last header
        # step to finish sends the callback (the confirmation), which sends the two messages.
        assert steps["charge_payment"] in ancestors(steps["create_shipment"], by_id)
        assert steps["charge_payment"] in ancestors(steps["record_sales"], by_id)
        header = {steps["create_shipment"].span_id, steps["record_sales"].span_id}
        assert header & {s.span_id for s in ancestors(steps["confirm_order"], by_id)}
        for message in ("send_confirmation_email", "send_confirmation_sms"):
            assert steps["confirm_order"] in ancestors(steps[message], by_id)
        # Each message to the broker is a PRODUCER span of the sender, parent of the task's run.
        assert all(by_id[s.parent_id].kind == "PRODUCER" for s in steps.values())
        # Each SQL statement is a database CLIENT span (psycopg2) of the request or task that ran
        # it: the checkout inserts the order, the charge updates its status.
        checkout_sql = statements(checkout_span, in_trace)
        assert any(sql.startswith('INSERT INTO "orders_order"') for sql in checkout_sql), checkout_sql
        charge_sql = statements(steps["charge_payment"], in_trace)
        assert any(moves_the_order(sql) for sql in charge_sql), charge_sql
        assert all(statements(span, in_trace) for span in steps.values())
    assert len(traces) == len(orders)  # one trace per order
    # A statement outside any request or task (the worker's write-behind flusher, which wrote these
    # tasks' history) is not traced: each of its flushes would be a trace of its own.
    assert not database_spans_outside_any(receiver)

    # The worker's JSON log line for each of the order's tasks: task, order, request and trace.
    lines = [json.loads(line) for line in stack.workers[0].log().splitlines() if line.startswith("{")]
    for n, order in enumerate(orders):
        trace_id = runs(order.number)["charge_payment"].trace_id
        for step in order.steps.all():
            (line,) = [entry for entry in lines if f"[{step.task_id}] succeeded" in entry["event"]]
            assert line["task_id"] == step.task_id
            assert line["task_name"] == f"orders.tasks.{step.name}"
            assert line["order_number"] == order.number
            assert line["request_id"] == f"checkout-{n}"
            assert line["trace_id"] == trace_id
            assert line["level"] == "info" and line["timestamp"]


def test_a_threads_pool_worker_traces_too(stack, receiver):
    # The production notifications worker runs a threads pool: tracing starts in its one process.
    stack.start(workers=0, web=True)
    stack.start_worker("--pool", "threads", "--concurrency", "4")
    order_id = checkout(stack, order_payload((make_product(stock=1), 1)), "checkout-threads")
    stack.wait_until_final([order_id])
    order = Order.objects.get(pk=order_id)
    assert order.status == "confirmed"

    wait_for(lambda: len(order_runs(receiver, order.number)) == len(WORKFLOW_TASKS), message="the spans exported")
    steps = order_runs(receiver, order.number)
    assert {span.service for span in steps.values()} == {"shop-worker"}
    (trace_id,) = {span.trace_id for span in steps.values()}
    in_trace = [s for s in receiver.spans() if s.trace_id == trace_id]
    (checkout_span,) = [s for s in in_trace if s.kind == "SERVER"]
    assert checkout_span.attributes["shop.order_number"] == order.number
    charge_sql = statements(steps["charge_payment"], in_trace)
    assert any(moves_the_order(sql) for sql in charge_sql), charge_sql
    assert not database_spans_outside_any(receiver)
