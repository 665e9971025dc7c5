"""`manage.py bench_admin` end to end on a tiny history: it loads, times both admins, cleans up after itself."""

import io
import json
import os
import re

import pytest
from django.core.management import call_command

from shop.benchmarks import database
from tests.support import require

pytestmark = pytest.mark.postgres

PAGES = ("unfiltered", "state = FAILURE", "search: task id", "search: order number")


def test_bench_admin_times_the_stock_admin_and_ours_then_drops_its_database(django_db_blocker, tmp_path) -> None:
    server = database.server_settings()
    try:
        database.server_version(server)
    except database.ServerUnavailable as exc:
        require(False, str(exc))
    name = f"shop_bench_admin_test_{os.getpid()}"  # never the scratch database a developer kept
    out, json_path = io.StringIO(), tmp_path / "bench.json"

    with django_db_blocker.unblock():
        call_command("bench_admin", rows=2000, runs=1, database_name=name, json_path=json_path, stdout=out)

    output = out.getvalue()
    assert f"Created the scratch database {name}." in output
    assert "Loaded 2,000 task history rows" in output and "Loaded 2,000 stock results rows" in output
    assert f"Dropped the scratch database {name}." in output
    figure = r"(\d+\.\d) / (\d+\.\d)"
    for page in PAGES[:3]:  # stock and ours side by side
        assert re.search(rf"^{re.escape(page)}\s+{figure}\s+{figure}\s+\d+×\s+\d+ / \d+\s*$", output, re.M), output
    assert re.search(rf"^search: order number\s+n/a\s+{figure}\s+n/a\s+n/a / \d+\s*$", output, re.M), output
    assert "2,000 task rows" in output

    figures = json.loads(json_path.read_text())
    pages = {page["page"]: page for page in figures["pages"]}
    assert list(pages) == list(PAGES)
    assert all(pages[page]["stock"]["median_ms"] > 0 and pages[page]["stock"]["queries"] > 0 for page in PAGES[:3])
    assert pages["search: order number"]["stock"] is None
    assert all(page["ours"]["median_ms"] > 0 and page["ours"]["queries"] > 0 for page in pages.values())
    assert figures["machine"]["rows"] == 2000

    with database.maintenance_cursor(server) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        assert cursor.fetchone() is None
