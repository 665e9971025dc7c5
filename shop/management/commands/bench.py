"""Measure the shop's performance, each figure next to its baseline in the same run
(shop/benchmarks/suite.py): order throughput and latency against a stock Celery setup, SQL per
order, checkout with slow providers, the storefront with 10,000 products, the task console
over a million task rows."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.benchmarks import report, suite
from shop.benchmarks.database import BenchmarkError


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quick", action="store_true", help="Small sizes: under 2 minutes (CI, checking a change)")
        parser.add_argument(
            "--only",
            default=",".join(suite.PARTS),
            help=f"Comma-separated parts to run (default all): {', '.join(suite.PARTS)}",
        )
        parser.add_argument(
            "--database-url", help="The PostgreSQL server for the scratch databases (default: DATABASE_URL, else local)"
        )
        parser.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="Also write the figures here")
        parser.add_argument("--chart", type=Path, metavar="PATH", help="Also draw them as an SVG chart here")

    def handle(self, *args, quick: bool, only: str, database_url, json_path, chart, **options) -> None:
        parts = tuple(part.strip() for part in only.split(",") if part.strip())
        if unknown := set(parts) - set(suite.PARTS):
            raise CommandError(f"Unknown parts: {', '.join(sorted(unknown))}. Choose from {', '.join(suite.PARTS)}.")
        try:
            figures, machine = suite.run(quick=quick, parts=parts, database_url=database_url, log=self.stdout.write)
        except BenchmarkError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("\n" + report.table(figures, machine))
        if json_path:
            report.write_json(json_path, figures, machine)
            self.stdout.write(f"Wrote {json_path}")
        if chart:
            report.write_chart(chart, figures, machine)
            self.stdout.write(f"Wrote {chart}")
