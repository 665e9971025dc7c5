"""docs/reliability.md's table (tests/reliability/report.py): running one scenario rewrites its
row and keeps the others' figures as they were."""

from tests.reliability import report

OLD = """
| scenario | orders placed | faults injected | confirmed | duplicates | lost | notes |
| --- | --- | --- | --- | --- | --- | --- |
| 1. worker SIGKILL mid-step | 50 | kills | 50 | 0 charges, 0 e-mails, 0 SMS | 0 | old one |
| 2. pool child killed (OOM) | 50 | kills | 50 | 0 charges, 0 e-mails, 0 SMS | 0 | kept |
"""


def test_one_scenario_run_replaces_its_row_and_keeps_the_rest_in_order():
    results = {
        "1. worker SIGKILL mid-step": {
            "orders placed": 60,
            "confirmed": 60,
            "faults injected": "kills",
            "notes": "new",
        },
        "14. worker SIGKILL mid-cancellation": {"orders placed": 20, "faults injected": "6 kills", "notes": "added"},
    }

    table = report._merge(report.render(results), OLD).splitlines()

    assert table[0].startswith("| scenario |") and table[1].startswith("| --- |")
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| 1. worker SIGKILL mid-step",
        "| 2. pool child killed (OOM)",
        "| 14. worker SIGKILL mid-cancellation",
    ]
    assert table[2].endswith("| new |") and table[3].endswith("| kept |") and "added" in table[4]
