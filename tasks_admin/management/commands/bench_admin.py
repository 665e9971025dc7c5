"""Time the task console's changelist against the stock django-celery-results admin over a large
history on PostgreSQL (a scratch database, filled with COPY); the logic is tasks_admin.benchmark."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.benchmarks import database
from tasks_admin import benchmark


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=1_000_000, help="Task rows to load (default 1,000,000)")
        parser.add_argument("--runs", type=int, default=7, help="Timed runs per page, after 2 warm-ups (default 7)")
        parser.add_argument(
            "--database-url",
            help="The PostgreSQL server to use (default: DATABASE_URL if PostgreSQL, "
            f"else {database.FALLBACK_SERVER_URL}); its database name is not used",
        )
        parser.add_argument(
            "--database-name", default=benchmark.SCRATCH_DATABASE, help="The scratch database to create and drop"
        )
        parser.add_argument("--keep", action="store_true", help="Keep the scratch database: a re-run reuses its data")
        parser.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="Also write the figures here")

    def handle(
        self,
        *args,
        rows: int,
        runs: int,
        database_url: str | None,
        database_name: str,
        keep: bool,
        json_path: Path | None,
        **options,
    ) -> None:
        try:
            report = benchmark.run(
                rows=rows, runs=runs, database_url=database_url, name=database_name, keep=keep, log=self.stdout.write
            )
        except database.BenchmarkError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("\n" + report.table())
        if json_path:
            json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
            self.stdout.write(f"Wrote {json_path}")
