"""LOG_FORMAT=json as production runs the shop: the Procfile's processes, started by honcho as
`make run` starts Procfile.dev. Every line web (gunicorn's own log and its access log), the two
workers and beat write is one JSON object, so that a log shipper reads one format; an order
placed through the web shows in the access log, and beat's lease in beat's. The fields each
line carries (request id, task, order, trace): tests/functional/test_json_logs.py and
tests/integration/test_tracing.py."""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orders.models import Order
from tests.factories import make_product, order_payload
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer, free_port
from tests.processes import ROOT
from tests.processes import test_database_url as database_url
from tests.reliability.harness import Stack
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BIN = Path(sys.executable).parent
PROCESSES = ("web", "worker_orders", "worker_notifications", "beat")


def lines_by_process(output: str) -> dict[str, list[str]]:
    """honcho's output, "HH:MM:SS name.1 | line", as each process's lines (honcho's own left out)."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        prefix, bar, text = line.partition(" | ")
        name = prefix.split()[-1].rpartition(".")[0] if bar else ""
        if name in PROCESSES and text.strip():
            found.setdefault(name, []).append(text)
    return found


# What Celery writes outside logging before any logging is set up, to a worker started as root (as
# CI runs it): a warning spanning several lines, which a worker run as its own user, as in
# production, never prints. Its shutdown notices, printed by its signal handlers outside logging
# too (celery/celery#8101), are JSON lines (tasks_admin/celery_fixes.py).
SHUTDOWN_NOTICES = {  # SIGTERM's, and SIGINT's (what honcho forwards)
    "worker: Warm shutdown (MainProcess)",
    "worker: Hitting Ctrl+C again will terminate all running tasks!",
}
AS_ROOT = ("SecurityWarning: You're running the worker with superuser privileges", "_warn_or_raise_security_error(")


def not_json(lines: list[str]) -> list[str]:
    """The lines that are not a JSON object of a log record, but for Celery's warning to root (above)."""
    odd, in_root_warning = [], False
    for line in lines:
        if os.geteuid() == 0 and (in_root_warning or AS_ROOT[0] in line):
            in_root_warning = AS_ROOT[1] not in line
            continue
        try:
            record = json.loads(line)
        except ValueError:
            odd.append(line)
            continue
        if not (isinstance(record, dict) and {"event", "level", "logger", "timestamp"} <= record.keys()):
            odd.append(line)
    return odd


def test_every_line_the_procfile_processes_write_is_a_json_object(tmp_path):
    product = make_product(stock=5)
    with FakeSmsGateway() as sms, FakeSmtpServer() as smtp:
        stack = Stack(tmp_path, database_url(), sms, smtp)
        stack.redis.start()
        port = free_port()
        env = stack.env(
            PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", WEB_CONCURRENCY="1", NOTIFICATIONS_CONCURRENCY="2"
        )
        env.pop("LOG_FORMAT", None)  # the Procfile's default
        env["ORDERS_CONCURRENCY"] = "1"
        output = tmp_path / "honcho.log"
        with output.open("wb") as log:
            honcho = subprocess.Popen(
                [str(BIN / "honcho"), "-f", "Procfile", "start", "--no-colour", "-p", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            stack.web_url = f"http://127.0.0.1:{port}"

            def web_answers() -> bool:
                try:
                    urllib.request.urlopen(stack.web_url + "/api/products/", timeout=2).close()
                    return True
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    return False

            wait_for(web_answers, timeout=60, message=output.read_text(errors="replace")[-3000:])
            status, body = stack.checkout(order_payload((product, 1)))
            assert status == 202, body
            wait_for(
                lambda: Order.objects.get(pk=body["id"]).status == Order.Status.CONFIRMED,
                timeout=60,
                message=output.read_text(errors="replace")[-3000:],
            )
            wait_for(lambda: "holding the scheduler lease" in output.read_text(errors="replace"), timeout=30)
            # The confirmation's messages, sent after the order is confirmed, whatever they log.
            order = Order.objects.get(pk=body["id"])
            wait_for(lambda: sms.delivered(to=order.phone) and smtp.received(to=order.email), message="the messages")
        finally:
            os.killpg(honcho.pid, signal.SIGTERM)
            try:
                honcho.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait()
            stack.stop()

    found = lines_by_process(output.read_text(errors="replace"))
    assert set(found) == set(PROCESSES), output.read_text(errors="replace")[-3000:]
    assert {name: not_json(lines) for name, lines in found.items()} == {name: [] for name in PROCESSES}
    access = [json.loads(line) for line in found["web"] if json.loads(line)["logger"] == "gunicorn.access"]
    assert any("POST /api/orders/" in line["event"] and " 202 " in line["event"] for line in access), access
    for worker in ("worker_orders", "worker_notifications"):  # stopped by honcho
        events = {json.loads(line)["event"] for line in found[worker] if line.startswith("{")}
        assert SHUTDOWN_NOTICES & events, found[worker][-20:]
    beat = [json.loads(line)["event"] for line in found["beat"]]
    assert any("holding the scheduler lease" in event for event in beat), beat
