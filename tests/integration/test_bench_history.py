"""The history-size benchmark alternates empty and loaded rounds by swapping a loaded task history
in and out (benchmarks/workflow.py, `loaded_history`): each round must see the tables it claims to.
PostgreSQL only (LIKE ... INCLUDING ALL, the benchmark's database): .ci/run runs it there."""

from collections.abc import Iterator

import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from benchmarks import workflow
from tasks_admin.models import TaskRecord
from tests.support import require

pytestmark = pytest.mark.django_db(transaction=True)
ROWS = 300


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    require(
        connection.vendor == "postgresql", "the benchmark's history swap is PostgreSQL's (DATABASE_URL=postgres://…)"
    )
    monkeypatch.setattr(workflow, "_kept_before", None)
    workflow.load_history(ROWS, lambda line: None)
    yield
    with connection.cursor() as cursor:  # the loaded tables back under their names, for the flush
        for table in workflow.HISTORY_TABLES:
            cursor.execute(f"DROP TABLE {table}")
            cursor.execute(f"ALTER TABLE {table}_loaded RENAME TO {table}")


def test_rounds_see_an_empty_history_outside_and_the_loaded_one_inside(loaded: None) -> None:
    assert (TaskRecord.objects.count(), TaskResult.objects.count()) == (0, 0)
    TaskResult.objects.create(task_id="written-on-the-empty-history")

    with workflow.loaded_history():
        assert (TaskRecord.objects.count(), TaskResult.objects.count()) == (ROWS, ROWS)
        assert not TaskResult.objects.filter(task_id="written-on-the-empty-history").exists()

    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["written-on-the-empty-history"]
    with workflow.loaded_history():  # and again: rounds alternate
        assert TaskRecord.objects.count() == ROWS
