"""The task console's changelist timed against django-celery-results' stock admin over a large history.

The claim to prove is "fast with a million task rows on PostgreSQL", so the benchmark builds
exactly that: a scratch database on a PostgreSQL server, migrated and filled (admin_data.py);
then it renders both admins' pages in-process with the test client, the stock page (served by
stock_admin.py, on a site of its own: the shop's admin has no stock task list) and ours in the
same run, and reports median and p95 side by side. The same database holds as many orders as
task rows (order_data.py), for /metrics' order series.

`run()` is the whole benchmark; `python -m benchmarks admin` only parses options and prints.
"""

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import django
from celery import states
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Count
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_results.models import TaskResult
from psycopg2 import sql

from notifications import metrics as notification_metrics
from notifications.metrics import NotificationCollector
from notifications.models import Notification
from orders import metrics as order_metrics
from orders import tally as step_tally
from orders.metrics import OrderCollector
from orders.models import Order, WorkflowStep
from tasks_admin import collectors, tally
from tasks_admin.models import FINAL_STATES, TaskRecord

from . import admin_data, order_data, stock_admin
from .database import (
    BenchmarkError,
    default_database,
    drop_database,
    maintenance_cursor,
    scratch_name,
    server_settings,
    server_version,
)
from .stats import percentiles

MIN_ROWS = 1000  # fewer, and a state or a workflow the pages are checked against may be missing
WARMUPS = 2

Log = Callable[[str], None]


@dataclass(frozen=True)
class Timing:
    median_ms: float  # the median of the rounds' medians
    p95_ms: float  # of every timed run
    min_ms: float  # the fastest and the slowest timed run: the spread on a noisy machine
    max_ms: float
    queries: int
    rounds: tuple[float, ...] = ()  # each round's median

    def text(self) -> str:
        """ "median / p95", the median with its rounds' min–max when there are several."""
        spread = f" ({min(self.rounds):.1f}–{max(self.rounds):.1f})" if len(self.rounds) > 1 else ""
        return f"{self.median_ms:.1f}{spread} / {self.p95_ms:.1f}"


@dataclass(frozen=True)
class PageResult:
    page: str
    stock: Timing | None  # None: the stock admin cannot do it at all
    ours: Timing

    @property
    def speedup(self) -> float | None:
        return self.stock.median_ms / self.ours.median_ms if self.stock else None


@dataclass(frozen=True)
class Report:
    machine: dict[str, object]
    load_seconds: dict[str, float]
    pages: list[PageResult]

    def as_dict(self) -> dict:
        return {
            "machine": self.machine,
            "load_seconds": self.load_seconds,
            "pages": [
                {
                    "page": page.page,
                    "stock": asdict(page.stock) if page.stock else None,
                    "ours": asdict(page.ours),
                    "speedup": round(page.speedup, 1) if page.speedup else None,
                }
                for page in self.pages
            ],
        }

    def table(self) -> str:
        header = (
            "page",
            "stock median (rounds) / p95 ms",
            "ours median (rounds) / p95 ms",
            "speed-up",
            "queries stock / ours",
        )
        rows = [header] + [
            (
                page.page,
                page.stock.text() if page.stock else "n/a",
                page.ours.text(),
                f"{page.speedup:.0f}×" if page.speedup else "n/a",
                f"{page.stock.queries if page.stock else 'n/a'} / {page.ours.queries}",
            )
            for page in self.pages
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        m = self.machine
        lines.append(
            f"machine: {m['cores']} cores, PostgreSQL {m['postgresql']}, Python {m['python']}, "
            f"Django {m['django']}, {m['rows']:,} task rows (and as many stock results and orders), "
            f"the median of {m['rounds']} rounds' medians of {m['runs']} runs, after {WARMUPS} warm-ups"
        )
        return "\n".join(lines)


def run(
    *,
    rows: int = 1_000_000,
    runs: int = 7,
    rounds: int = 3,
    database_url: str | None = None,
    name: str | None = None,
    keep: bool = False,
    log: Log = print,
) -> Report:
    """Create (or reuse, if kept with the same rows) the scratch database `name` (by default
    scratch_name("bench_admin")), fill it, time the pages: `rounds` rounds of `runs` runs each."""
    if rows < MIN_ROWS or runs < 1 or rounds < 1:
        raise BenchmarkError(f"Need at least {MIN_ROWS} rows, one run and one round.")
    name = name or scratch_name("bench_admin", database_url)
    server = server_settings(database_url)
    version = server_version(server)
    needs_load = _prepare_database(server, name, rows, log)
    try:
        with default_database({**connections.settings[DEFAULT_DB_ALIAS], **server, "NAME": name}):
            call_command("migrate", interactive=False, verbosity=0)
            load_seconds = {**admin_data.load(rows, log), **order_data.load(rows, log)} if needs_load else {}
            with connection.cursor() as cursor:
                cursor.execute(f"COMMENT ON DATABASE {connection.ops.quote_name(name)} IS %s", [_marker(rows)])
            timing = Rounds(runs, rounds)
            pages = [*measure_pages(timing, log), measure_scrape(timing, log), *measure_order_series(timing, log)]
    finally:
        if not keep:
            drop_database(server, name)
            log(f"Dropped the scratch database {name}.")
    machine = {
        "cores": os.cpu_count(),
        "postgresql": version,
        "python": platform.python_version(),
        "django": django.get_version(),
        "rows": rows,
        "runs": runs,
        "rounds": rounds,
    }
    return Report(machine, load_seconds, pages)


# The server and the scratch database


def _marker(rows: int) -> str:
    return f"bench_admin: {rows} rows loaded"


def _prepare_database(server: dict, name: str, rows: int, log: Log) -> bool:
    """Reuse a database a --keep run filled with the same rows; otherwise create it afresh.
    True when it must be loaded."""
    with maintenance_cursor(server) as cursor:
        cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name])
        found = cursor.fetchone()
        if found and found[0] == _marker(rows):
            log(f"Reusing the scratch database {name} ({rows:,} rows, kept by an earlier --keep run).")
            return False
        if found:
            cursor.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log(f"Created the scratch database {name}.")
    return True


# The pages


@dataclass(frozen=True)
class _Page:
    label: str
    stock_url: str | None
    stock_expects: str
    ours_url: str
    ours_expects: str


def _pages() -> list[_Page]:
    """Each page with a string its response must contain: a benchmark of a broken page proves nothing."""
    stock = reverse(f"{stock_admin.site.name}:django_celery_results_taskresult_changelist")
    ours = reverse("admin:tasks_admin_taskrecord_changelist")

    def change_url(record: TaskRecord) -> str:
        return reverse("admin:tasks_admin_taskrecord_change", args=[record.pk])

    newest = TaskRecord.objects.first()
    failed = TaskRecord.objects.filter(state=states.FAILURE).first()
    middle = TaskRecord.objects.filter(pk__gte=newest.pk // 2).order_by("pk").first()
    ordered = TaskRecord.objects.filter(pk__gte=newest.pk // 2).exclude(subject_id="").order_by("pk").first()
    return [
        _Page("unfiltered", stock, TaskResult.objects.first().task_id, ours, change_url(newest)),
        _Page(
            "state = FAILURE",
            f"{stock}?status__exact={states.FAILURE}",
            TaskResult.objects.filter(status=states.FAILURE).first().task_id,
            f"{ours}?state__exact={states.FAILURE}",
            change_url(failed),
        ),
        _Page(
            "search: task id",
            f"{stock}?q={middle.task_id}",
            middle.task_id,
            f"{ours}?q={middle.task_id}",
            change_url(middle),
        ),
        _Page("search: order number", None, "", f"{ours}?q={ordered.subject.number}", change_url(ordered)),
        _Page(
            "dead letters",
            None,
            "",
            reverse("admin:tasks_admin_deadletter_changelist"),
            change_url(TaskRecord.objects.dead_letters().first()),
        ),
    ]


def _page_call(client: Client, url: str, expects: str) -> Callable[[], None]:
    def get() -> None:
        response = client.get(url)
        if response.status_code != 200 or expects not in response.content.decode():
            raise BenchmarkError(f"{url} answered {response.status_code} without {expects!r}: not a page to time.")

    return get


@dataclass(frozen=True)
class Rounds:
    """How each page is timed: `rounds` rounds of `runs` runs, after WARMUPS."""

    runs: int
    rounds: int


def _time_call(call: Callable[[], object], timing: Rounds) -> Timing:
    return _time_side_by_side([call], timing)[0]


def _time_side_by_side(calls: Sequence[Callable[[], object]], timing: Rounds) -> list[Timing]:
    """Each call timed in rounds of `runs` times after WARMUPS, the calls taking turns (the stock
    page, ours, the stock page, ...). These machines run faster and slower by turns for seconds
    at a time (docs/benchmarks.md, "The machine"): timed one after the other, a fast page's nine
    requests fit in a fraction of a second and fell in one such stretch, fast or slow, while the
    stock page's spanned several; taking turns, both sides see the same stretches. Each figure is
    the median of its rounds' medians, as the suite's other figures are: one median of 7 moved
    our failed-tasks page between 26 and 40 ms from one run to the next."""
    query_counts = []
    for call in calls:
        with CaptureQueriesContext(connection) as queries:  # a warm-up: capturing costs time
            call()
        query_counts.append(len(queries))  # now: a request clears the connection's query log
    for _ in range(WARMUPS - 1):
        for call in calls:
            call()
    rounds: list[list[list[float]]] = [[] for _ in calls]  # per call, per round, the runs
    for _ in range(timing.rounds):
        samples: list[list[float]] = [[] for _ in calls]
        for _ in range(timing.runs):
            for call, timed in zip(calls, samples, strict=True):
                start = time.perf_counter()
                call()
                timed.append((time.perf_counter() - start) * 1000)
        for call_rounds, timed in zip(rounds, samples, strict=True):
            call_rounds.append(timed)
    return [_timing(call_rounds, count) for call_rounds, count in zip(rounds, query_counts, strict=True)]


def _timing(rounds: list[list[float]], query_count: int) -> Timing:
    samples = [sample for runs in rounds for sample in runs]
    medians = [percentiles(runs)["p50"] for runs in rounds]
    return Timing(
        round(percentiles(medians)["p50"], 1),
        round(percentiles(samples)["p95"], 1),
        round(min(samples), 1),
        round(max(samples), 1),
        query_count,
        tuple(round(median, 1) for median in medians),
    )


def _figures(counts: dict[tally.Outcome, tally.Sums]) -> dict:
    """What a scrape shows, sums rounded (the tally adds them up in another order)."""
    return {
        outcome: (
            s.runs,
            s.runtime_count,
            s.runtime_buckets,
            s.wait_count,
            s.wait_buckets,
            round(s.runtime_sum, 3),
            round(s.wait_sum, 3),
        )
        for outcome, s in counts.items()
    }


def measure_scrape(timing: Rounds, log: Log) -> PageResult:
    """/metrics' task series (tasks_admin/collectors.py) from the tally, as every scrape reads them,
    against what each scrape did before the tally: the same figures aggregated over the whole history."""
    log("Timing the /metrics task series ...")
    whole = TaskRecord.objects.filter(state__in=FINAL_STATES)
    if _figures(tally.aggregate(whole)) != _figures(tally.counts(settle_first=None)):
        raise BenchmarkError("The tally and the history disagree: not a scrape to time.")
    before, ours = _time_side_by_side([lambda: tally.aggregate(whole), lambda: list(collectors.task_series())], timing)
    return PageResult("/metrics task series", before, ours)


def _count_statuses() -> list[dict]:
    """Orders by status and messages by channel and status counted from their tables, as the
    collectors did at each scrape before their tally."""
    orders = Order.objects.order_by().values_list("status").annotate(n=Count("pk"))
    messages = Notification.objects.order_by().values_list("channel", "status").annotate(n=Count("pk"))
    return [dict(orders), {(channel, status): n for channel, status, n in messages}]


def _tallied_statuses() -> list[dict]:
    orders, messages = order_metrics.BY_STATUS.counts(), notification_metrics.BY_STATUS.counts()
    return [{status: n for (status,), n in orders.items() if n}, {labels: n for labels, n in messages.items() if n}]


def measure_order_series(timing: Rounds, log: Log) -> list[PageResult]:
    """/metrics' workflow steps by outcome from their tally (orders/tally.py), and the orders by
    status and messages by channel and status from theirs (tasks_admin/rowcounts.py), each against
    the same counts taken from the tables at each scrape, as the collectors did before; and the
    orders' and messages' collectors whole (with the stuck orders: no baseline)."""
    log("Timing the /metrics order series ...")
    settled = WorkflowStep.objects.exclude(state=WorkflowStep.State.PENDING)
    if step_tally.counts(settle_first=None) != step_tally.by_outcome(settled):
        raise BenchmarkError("The step tally and the steps disagree: not a scrape to time.")
    if _tallied_statuses() != _count_statuses():
        raise BenchmarkError("The status tallies and the tables disagree: not a scrape to time.")
    return [
        PageResult(
            "/metrics order steps",
            *_time_side_by_side([lambda: step_tally.by_outcome(settled), step_tally.counts], timing),
        ),
        PageResult(
            "/metrics orders, messages by status", *_time_side_by_side([_count_statuses, _tallied_statuses], timing)
        ),
        PageResult(
            "/metrics orders and messages",
            None,
            _time_call(lambda: [*OrderCollector().collect(), *NotificationCollector().collect()], timing),
        ),
    ]


def measure_pages(timing: Rounds, log: Log) -> list[PageResult]:
    """Render each page as a logged-in superuser, through the whole request handler and template."""
    user, _ = User.objects.update_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True, "password": "!"}
    )
    results = []
    # As in production (DEBUG off: no query log, no template debug); the test client's host allowed;
    # the shop's URLs and the stock admin's.
    with override_settings(
        DEBUG=False, ALLOWED_HOSTS=["testserver"], SECURE_SSL_REDIRECT=False, ROOT_URLCONF=stock_admin.__name__
    ):
        client = Client()
        client.force_login(user)
        for page in _pages():
            log(f"Timing {page.label} ...")
            ours = _page_call(client, page.ours_url, page.ours_expects)
            if page.stock_url:
                stock = _page_call(client, page.stock_url, page.stock_expects)
                results.append(PageResult(page.label, *_time_side_by_side([stock, ours], timing)))
            else:
                results.append(PageResult(page.label, None, _time_call(ours, timing)))
    return results
