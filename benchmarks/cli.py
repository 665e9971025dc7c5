"""The options of `python -m benchmarks` (Django is set up by __main__.py before this is imported).

    python -m benchmarks [--quick] [--only PARTS] [--database-url URL] [--json PATH] [--chart PATH]
    python -m benchmarks admin [--rows N] [--runs N] [--rounds N] [--database-name NAME] [--keep] [--json PATH]
    python -m benchmarks scale [--orders N] [--rounds N] [--database-url URL] [--json PATH] [--markdown PATH]

The first is the whole suite (suite.py: each figure next to its baseline, `make bench`); `admin`
is the task console's pages alone, with the sizes and the scratch database in the caller's hands
(`--keep` reuses a loaded million rows); `scale` is order throughput on one worker host against
two, and on Redis against RabbitMQ classic and quorum queues (scale.py, `make bench-scale`).
"""

import argparse
import json
import signal
import sys
import time
from functools import partial
from pathlib import Path

from . import admin_pages, report, suite
from .database import FALLBACK_SERVER_URL, BenchmarkError

log = partial(print, flush=True)
DATABASE_URL_HELP = (
    f"The PostgreSQL server for the scratch databases (default: DATABASE_URL if PostgreSQL, else "
    f"{FALLBACK_SERVER_URL}); they are named after its database: <name>_bench, <name>_bench_admin"
)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the shop's performance, each figure next to its baseline in the same run: order "
        "throughput and latency against a stock Celery setup, SQL per order, checkout with slow providers, the "
        "storefront with 10,000 products, the task console over a million task rows.",
    )
    main.add_argument("--quick", action="store_true", help="Small sizes: under 2 minutes (CI, checking a change)")
    main.add_argument(
        "--only",
        default=",".join(suite.PARTS),
        help=f"Comma-separated parts to run (default all): {', '.join(suite.PARTS)}",
    )
    main.add_argument("--database-url", help=DATABASE_URL_HELP)
    main.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="Also write the figures here")
    main.add_argument("--chart", type=Path, metavar="PATH", help="Also draw them as an SVG chart here")

    commands = main.add_subparsers(dest="command", metavar="{admin,scale}")
    admin = commands.add_parser(
        "admin",
        help="Only the task console against the stock django-celery-results admin, with its own sizes",
        description="Time the task console's changelist against the stock django-celery-results admin over a "
        "large history on PostgreSQL (a scratch database, filled with COPY).",
    )
    admin.add_argument("--rows", type=int, default=1_000_000, help="Task rows to load (default 1,000,000)")
    admin.add_argument("--runs", type=int, default=7, help="Timed runs per page a round, after 2 warm-ups (default 7)")
    admin.add_argument(
        "--rounds", type=int, default=3, help="Rounds per page: its figure, their medians' median (default 3)"
    )
    admin.add_argument("--database-url", help=DATABASE_URL_HELP)
    admin.add_argument("--database-name", help="The scratch database to create and drop (default: <name>_bench_admin)")
    admin.add_argument("--keep", action="store_true", help="Keep the scratch database: a re-run reuses its data")
    admin.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="Also write the figures here")

    scale = commands.add_parser(
        "scale",
        help="Only order throughput over worker hosts (network namespaces) and brokers; needs root",
        description="Order throughput with the workers on one host against two (Linux network namespaces on a "
        "bridge), and on Redis against RabbitMQ classic and quorum queues, in one run (scale.py).",
    )
    scale.add_argument("--orders", type=int, default=200, help="Orders per measurement (default 200)")
    scale.add_argument("--rounds", type=int, default=3, help="Rounds over the configurations (default 3)")
    scale.add_argument("--database-url", help=DATABASE_URL_HELP.replace("<name>_bench_admin", "<name>_bench_scale"))
    scale.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="Also write the figures here")
    scale.add_argument("--markdown", type=Path, metavar="PATH", help="Also write the table here")
    return main


def main(argv: list[str] | None = None) -> int:
    """Exit status 1 when a figure cannot be trusted (a measured run failed): CI fails with it."""
    arguments = parser()
    options = arguments.parse_args(argv)
    parts = tuple(part.strip() for part in options.only.split(",") if part.strip())
    if unknown := set(parts) - set(suite.PARTS):
        arguments.error(f"unknown parts: {', '.join(sorted(unknown))}; choose from {', '.join(suite.PARTS)}")
    try:
        if options.command == "admin":
            _admin(options)
        elif options.command == "scale":
            _scale(options)
        else:
            _suite(options, parts)
    except BenchmarkError as exc:
        print(f"Benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _suite(options: argparse.Namespace, parts: tuple[str, ...]) -> None:
    figures, machine = suite.run(quick=options.quick, parts=parts, database_url=options.database_url, log=log)
    log("\n" + report.table(figures, machine))
    if options.json_path:
        report.write_json(options.json_path, figures, machine)
        log(f"Wrote {options.json_path}")
    if options.chart:
        report.write_chart(options.chart, figures, machine)
        log(f"Wrote {options.chart}")


def _admin(options: argparse.Namespace) -> None:
    result = admin_pages.run(
        rows=options.rows,
        runs=options.runs,
        rounds=options.rounds,
        database_url=options.database_url,
        name=options.database_name,
        keep=options.keep,
        log=log,
    )
    log("\n" + result.table())
    if options.json_path:
        options.json_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        log(f"Wrote {options.json_path}")


def _scale(options: argparse.Namespace) -> None:
    from . import scale  # imports the failover tests' network harness: only for this command

    # A SIGTERM unwinds like an error: the hosts, the vhosts and the scratch database go with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    results, machine = scale.run(
        orders=options.orders, rounds=options.rounds, database_url=options.database_url, log=log
    )
    machine["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    text = scale.table(results, machine)
    log("\n" + text)
    if options.json_path:
        scale.write_json(options.json_path, results, machine)
        log(f"Wrote {options.json_path}")
    if options.markdown:
        options.markdown.parent.mkdir(parents=True, exist_ok=True)
        options.markdown.write_text(text + "\n")
        log(f"Wrote {options.markdown}")
