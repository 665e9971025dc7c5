"""The order workflow drawn for the admin: laid out from its definition (orders/workflow.py),
each node coloured by the step's recorded outcome or, until it has one, its current run; and,
once the order is being cancelled, its cancellation workflow (orders/cancellation_workflow.py)
after it, coloured by its runs (tests/unit/test_order_graph.py)."""

from celery import states

from tasks_admin.graph import Graph, node
from tasks_admin.models import TaskRecord

from . import cancellation_workflow, workflow
from .models import Order, WorkflowStep


def order_graph(order: Order) -> Graph:
    steps = {step.name: step for step in order.steps.all()}
    records = {record.task_id: record for record in TaskRecord.objects.about(order).order_by("id")}
    latest = {record.task_name: record for record in records.values()}  # a message's current run

    def step_node(name: str):
        step = steps.get(name)
        record = records.get(step.task_id) if step else latest.get(workflow.task_name(name))
        result = node(name, name, record)
        if step is not None:
            if step.state != WorkflowStep.State.PENDING:
                result.state = step.state  # the outcome, written with the step's effect
            elif record is None:  # not recorded, or the history was cleaned up: the step row knows its id
                result.task_id, result.state = step.task_id, states.PENDING
        return result

    columns = [
        [step_node(workflow.CHARGE)],
        [step_node(step) for step in workflow.FULFIL],
        [step_node(workflow.CONFIRM)],
        [step_node(message) for message in workflow.MESSAGES],
    ]
    chords = [list(workflow.FULFIL)]
    edges = _edges(columns)
    cancelling = cancellation_workflow
    if any(cancelling.task_name(step) in latest for step in cancelling.STEPS):

        def run_node(step: str):
            return node(step, step, latest.get(cancelling.task_name(step)))

        more = [
            [run_node(cancelling.REFUND)],
            [run_node(cancelling.RELEASE)],
            [run_node(step) for step in cancelling.TELL_AND_COUNT],
            [run_node(cancelling.FINISH)],
        ]
        columns += more
        edges += _edges(more)
        chords.append(list(cancelling.TELL_AND_COUNT))
    return Graph(columns=columns, edges=edges, chords=chords)


def _edges(columns) -> list[tuple[str, str]]:
    return [(a.key, b.key) for left, right in zip(columns, columns[1:], strict=False) for a in left for b in right]
