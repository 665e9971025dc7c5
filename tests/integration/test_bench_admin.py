"""`python -m benchmarks admin` end to end on a tiny history: it loads, times both admins (the stock
one on the benchmark's own admin site), cleans up after itself."""

import json
import os
import re

import pytest

from benchmarks import cli, database
from tests.support import require

pytestmark = pytest.mark.postgres

PAGES = ("unfiltered", "state = FAILURE", "search: task id", "search: order number", "dead letters")
# Against the same figures from the whole table, as scrapes did before the tallies.
SCRAPES = ("/metrics task series", "/metrics order steps", "/metrics orders, messages by status")
WHOLE = "/metrics orders and messages"  # no baseline


def test_bench_admin_times_the_stock_admin_and_ours_then_drops_its_database(
    django_db_blocker, tmp_path, capsys
) -> None:
    server = database.server_settings()
    try:
        database.server_version(server)
    except database.ServerUnavailable as exc:
        require(False, str(exc))
    # After this run's test database, and never the scratch database a developer kept.
    name = f"{database.scratch_name('bench_admin')}_test_{os.getpid()}"
    json_path = tmp_path / "bench.json"

    with django_db_blocker.unblock():
        argv = [
            "admin",
            "--rows",
            "2000",
            "--runs",
            "1",
            "--rounds",
            "2",
            "--database-name",
            name,
            "--json",
            str(json_path),
        ]
        assert cli.main(argv) == 0

    output = capsys.readouterr().out
    assert f"Created the scratch database {name}." in output
    assert "Loaded 2,000 task history rows" in output and "Loaded 2,000 stock results rows" in output
    assert "Generated 2,000 orders" in output and "Generated 8,000 workflow steps" in output
    assert f"Dropped the scratch database {name}." in output
    figure = r"\d+\.\d \(\d+\.\d–\d+\.\d\) / \d+\.\d"  # the median (its rounds' min–max) / p95
    for page in PAGES[:3]:  # stock and ours side by side
        assert re.search(rf"^{re.escape(page)}\s+{figure}\s+{figure}\s+\d+×\s+\d+ / \d+\s*$", output, re.M), output
    for page in PAGES[3:]:  # nothing to compare with
        assert re.search(rf"^{re.escape(page)}\s+n/a\s+{figure}\s+n/a\s+n/a / \d+\s*$", output, re.M), output
    for page in SCRAPES:
        assert re.search(rf"^{re.escape(page)}\s+{figure}\s+{figure}\s+\d+×\s+\d+ / \d+\s*$", output, re.M), output
    assert re.search(rf"^{re.escape(WHOLE)}\s+n/a\s+{figure}\s+n/a\s+n/a / \d+\s*$", output, re.M), output
    assert "2,000 task rows" in output

    figures = json.loads(json_path.read_text())
    pages = {page["page"]: page for page in figures["pages"]}
    assert list(pages) == [*PAGES, *SCRAPES, WHOLE]
    assert all(
        pages[page]["stock"]["median_ms"] > 0 and pages[page]["stock"]["queries"] > 0 for page in (*PAGES[:3], *SCRAPES)
    )
    assert all(pages[page]["stock"] is None for page in (*PAGES[3:], WHOLE))
    assert all(page["ours"]["median_ms"] > 0 and page["ours"]["queries"] > 0 for page in pages.values())
    assert all(page["ours"]["min_ms"] <= page["ours"]["median_ms"] <= page["ours"]["max_ms"] for page in pages.values())
    # Each figure is the median of its two rounds' medians: of one run each, here.
    timings = [page[side] for page in pages.values() for side in ("stock", "ours") if page[side]]
    assert all(len(timing["rounds"]) == 2 for timing in timings)
    assert all(min(timing["rounds"]) <= timing["median_ms"] <= max(timing["rounds"]) for timing in timings)
    assert "the median of 2 rounds' medians of 1 runs" in output
    assert figures["machine"]["rows"] == 2000

    with database.maintenance_cursor(server) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        assert cursor.fetchone() is None
