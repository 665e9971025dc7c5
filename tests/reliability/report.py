"""Figures of the failure-injection scenarios: recorded by each test, rendered to docs/reliability.md.

`python -m tests.reliability.report` writes the table from var/reliability/results.json.
"""

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "var" / "reliability" / "results.json"
DOC = ROOT / "docs" / "reliability.md"
COLUMNS = ("orders placed", "faults injected", "confirmed", "duplicates", "lost")


def record(scenario: str, figures: dict, faults: str, notes: str = "") -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[scenario] = {**figures, "faults injected": faults, "notes": notes, "at": datetime.now(UTC).isoformat()}
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True))


def _duplicates(row: dict) -> str:
    parts = [
        f"{row.get(k, 0)} {label}"
        for k, label in (("duplicate charges", "charges"), ("duplicate e-mails", "e-mails"), ("duplicate SMS", "SMS"))
    ]
    return ", ".join(parts)


def render(results: dict) -> str:
    def order(name: str) -> int:
        head = name.split(".", 1)[0]
        return int(head) if head.isdigit() else 99

    lines = [
        "| scenario | orders placed | faults injected | confirmed | duplicates | lost | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(results, key=order):
        row = results[name]
        confirmed = str(row.get("confirmed", "—"))
        if row.get("failed / cancelled"):
            confirmed += f" (+{row['failed / cancelled']} failed/cancelled as intended)"
        lines.append(
            f"| {name} | {row.get('orders placed', '—')} | {row['faults injected']} | {confirmed} | "
            f"{_duplicates(row)} | {row.get('lost', '—')} | {row.get('notes', '')} |"
        )
    return "\n".join(lines)


def _merge(rendered: str, previous: str) -> str:
    """The rendered rows, plus the previous table's rows of scenarios not run this time (running
    one scenario must not drop the others' figures), in the scenarios' order."""
    header, rows = rendered.splitlines()[:2], dict(_rows(rendered))
    for name, line in _rows(previous):
        rows.setdefault(name, line)

    def order(name: str) -> int:
        head = name.split(".", 1)[0]
        return int(head) if head.isdigit() else 99

    return "\n".join([*header, *(rows[name] for name in sorted(rows, key=order))])


def _rows(table: str) -> list[tuple[str, str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| scenario |")]
    return [(line.split(" | ", 1)[0].removeprefix("| "), line) for line in lines if not line.startswith("| ---")]


def main() -> None:
    results = json.loads(RESULTS.read_text())
    text = DOC.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    head, _, rest = text.partition(start)
    table, _, tail = rest.partition(end)
    DOC.write_text(f"{head}{start}\n{_merge(render(results), table)}\n{end}{tail}")
    print(f"Wrote {len(results)} scenarios to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
