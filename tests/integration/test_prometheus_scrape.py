"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a running shop — gunicorn with two
workers in prometheus-client's multiprocess mode, a prefork `celery worker` and `celery beat` —
and its HTTP query API shows the series move as orders run (tasks_admin/prometheus.py)."""

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer, free_port
from tests.reliability.harness import Stack
from tests.reliability.scenarios import payloads, stock_up
from tests.support import require, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TOKEN = "scrape-test-token"
ORDERS = 4
SCRAPE_SECONDS = 3


class Prometheus:
    """A private Prometheus server: its config, data and log in a temporary folder."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "rule_files": [str(processes.ROOT / "docs/prometheus/alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "shop",
                    "scrape_timeout": f"{SCRAPE_SECONDS}s",
                    "authorization": {"credentials": TOKEN},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log_path = tmp / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=60, message=f"Prometheus ready ({self.log_path})")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as error:  # a bad query: say which, and why
            raise AssertionError(f"{expr}: {error.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def scraped_after(self, moment: float) -> bool:
        """True once a scrape that began after `moment` has been stored."""
        result = self.query('timestamp(up{job="shop"})')
        return bool(result) and float(result[0]["value"][1]) > moment and self.scalar('up{job="shop"}') == 1

    def wait_scraped_after(self, moment: float, what: str) -> None:
        try:
            wait_for(lambda: self.scraped_after(moment), timeout=60, message=what)
        except AssertionError as error:
            with urllib.request.urlopen(self.url + "/api/v1/targets", timeout=10) as response:
                targets = json.load(response)["data"]["activeTargets"]
            raise AssertionError(f"{error}; targets: {targets}") from None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


@pytest.fixture
def shop(tmp_path) -> Iterator[Stack]:
    multiproc = tmp_path / "prometheus-multiproc"  # made, empty, by gunicorn.conf.py
    with FakeSmsGateway() as sms, FakeSmtpServer() as smtp:
        stack = Stack(
            tmp_path / "stack",
            processes.test_database_url(),
            sms,
            smtp,
            env={"METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "LOG_LEVEL": "INFO"},
        )
        try:
            stack.start(workers=1, web=True)
            stack.start_beat()
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def prometheus(shop, tmp_path) -> Iterator[Prometheus]:
    require(Path(PROMETHEUS).exists(), "Debian's prometheus is not installed (apt-get install prometheus)")
    server = Prometheus(tmp_path, shop.web_url.removeprefix("http://"))
    yield server
    server.stop()


def test_prometheus_scrapes_the_shop_and_the_series_move_as_orders_run(shop, prometheus):
    confirmed = 'shop_order_steps_total{step="confirm_order",state="SUCCESS"}'
    checkouts = 'http_request_duration_seconds_count{method="POST",route="/api/orders/",status="202"}'
    confirm_runs = 'celery_tasks_total{task="orders.tasks.confirm_order",state="SUCCESS"}'
    runtime_count = 'celery_task_runtime_seconds_count{task="orders.tasks.charge_payment"}'

    product = stock_up()
    # A checkout first (answered by either gunicorn worker), so the HTTP series exists before.
    shop.wait_until_final(shop.place_orders(payloads(product, 1, name="Warm-up")))
    prometheus.wait_scraped_after(time.time(), "a scrape of the shop")
    before = time.time()
    prometheus.wait_scraped_after(before, "a scrape before the orders")
    baseline = {expr: prometheus.scalar(f"sum({expr})") for expr in (confirmed, checkouts, confirm_runs, runtime_count)}
    assert baseline[confirmed] == 1 and baseline[checkouts] == 1, baseline

    order_ids = shop.place_orders(payloads(product, ORDERS), concurrency=4)
    shop.wait_until_final(order_ids)
    after = time.time()
    prometheus.wait_scraped_after(after, "a scrape after the orders")

    # Exactly: each series now minus itself at the baseline scrape, in one PromQL query.
    def moved(selector: str) -> float:
        return prometheus.scalar(f"sum({selector}) - sum({selector} @ {before:.3f})")

    assert moved(confirmed) == ORDERS
    assert moved(confirm_runs) == ORDERS
    assert moved(runtime_count) == ORDERS
    # Counted by both gunicorn workers, added up from their files (multiprocess mode).
    assert moved(checkouts) == ORDERS
    # increase() over a window from just before the baseline scrape: Prometheus extrapolates the
    # samples' span to the window's edges (up to 1.1 scrape intervals each side), so over 15
    # intervals or more it reads the orders placed and less than one more.
    prometheus.wait_scraped_after(before + 15 * SCRAPE_SECONDS, "fifteen scrape intervals")
    window = int(time.time() - before) + 1
    increase = prometheus.scalar(f"sum(increase({confirmed}[{window}s]))")
    assert ORDERS <= increase < ORDERS + 1, increase
    print(f"sum(increase({confirmed}[{window}s])) = {increase}")  # shown with -s: a real run's figure

    assert prometheus.scalar('shop_orders{status="confirmed"}') == ORDERS + 1
    assert prometheus.scalar("celery_workers_up") >= 1
    assert prometheus.scalar("celery_broker_up") == 1
    assert prometheus.scalar("celery_beat_lease_up") == 1
    assert prometheus.query("celery_beat_lease_owner == 1")
    assert prometheus.scalar('celery_queue_messages{queue="orders"}') == 0
    # The shipped alerting rules loaded in the real server, and none of them fires.
    with urllib.request.urlopen(prometheus.url + "/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    assert {group["name"] for group in groups} == {"celery-tasks", "shop-orders"}
    assert prometheus.query('ALERTS{alertstate="firing"}') == []
