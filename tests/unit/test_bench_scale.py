"""The scaling benchmark's layouts and output (benchmarks/scale.py): the same pool in total on one
worker host as on two, and a markdown table and JSON of each configuration's rounds."""

import json

from benchmarks import workflow
from benchmarks.scale import LAYOUTS, LOOPBACK, Result, describe, table, write_json

MACHINE = {"cores": 2, "database": "PostgreSQL 15"}
RESULTS = [
    Result("redis", "one host", [20.0, 24.0, 22.0], [0.98, 0.99, 0.97], [1.1, 1.2, 1.0]),
    Result("redis", "two hosts", [21.0, 20.0, 23.0], [0.99, 0.99, 0.98], [1.2, 1.1, 1.3]),
    Result("quorum", "one host", [11.0, 12.0, 13.0], [0.99, 1.0, 0.99], [0.9, 1.0, 1.0]),
]


def _pools(layout: str) -> dict[str, int]:
    """Pool size per queue set, summed over the layout's hosts."""
    totals: dict[str, int] = {}
    for workers in LAYOUTS[layout].values():
        for args in workers:
            queues = args[args.index("-Q") + 1]
            totals[queues] = totals.get(queues, 0) + int(args[args.index("--concurrency") + 1])
    return totals


def test_two_worker_hosts_share_the_production_pool_of_one_between_them():
    production = {
        args[args.index("-Q") + 1]: int(args[args.index("--concurrency") + 1]) for args in workflow.PRODUCTION_WORKERS
    }

    assert _pools("one host") == _pools("two hosts") == _pools(LOOPBACK) == production
    assert list(LAYOUTS["two hosts"]) == ["worker-a", "worker-b"]
    assert describe("two hosts") == "worker-a: orders ×2 + notifications ×10; worker-b: orders ×2 + notifications ×10"


def test_the_table_gives_each_configuration_its_median_spread_and_ratio_to_redis_on_one_host():
    lines = table(RESULTS, MACHINE).splitlines()

    assert lines[0].startswith("| broker | workers | order workflows/s, median (min–max) |")
    assert lines[2] == (
        "| Redis | worker-a: orders ×4 + notifications ×20 | 22.0 (20.0–24.0) | 1.00× | 98 (97–99) % "
        "| 1.10 (1.00–1.20) | 20.0 (18.2–22.0) |"
    )
    assert "| 21.0 (20.0–23.0) | 0.95× |" in lines[3]
    assert lines[4].startswith("| RabbitMQ quorum queues |") and "| 0.55× |" in lines[4]
    assert lines[-1] == "machine: cores 2, database PostgreSQL 15"


def test_the_json_keeps_every_round(tmp_path):
    path = tmp_path / "scaling.json"

    write_json(path, RESULTS, MACHINE)

    document = json.loads(path.read_text())
    assert document["machine"] == MACHINE
    first = document["results"][0]
    assert (first["orders_per_second"], first["min"], first["max"]) == (22.0, 20.0, 24.0)
    assert first["rounds"] == [20.0, 24.0, 22.0] and first["label"] == "Redis, one worker host"
    assert set(document["layouts"]) == set(LAYOUTS)
