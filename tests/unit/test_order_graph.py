"""The order's workflow as the admin draws it (orders/graph.py): each step coloured by its recorded
outcome, or until it has one by its current run; the messages by their latest run."""

import pytest
from celery import states

from orders import cancellation, services
from orders.checkout import Customer, place_order
from orders.graph import order_graph
from orders.models import Order, WorkflowStep
from orders.payments import PaymentDeclined
from tasks_admin.models import PLANNED, SKIPPED, TaskRecord
from tests.factories import DECLINED_CARD, GOOD_CARD, make_product
from tests.support import WORKFLOW_STEPS, WORKFLOW_TASKS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_gateway_latency(settings):
    settings.PAYMENT_DEMO_LATENCY = 0


def place(card_number: str = GOOD_CARD) -> Order:
    return place_order(
        customer=Customer(name="Ada", email="ada@example.com", phone="+442079460000"),
        shipping_address="London",
        items=[(make_product(stock=5).sku, 1)],
        card_number=card_number,
    )


def drawn(order: Order) -> dict[str, str]:
    return {node.key: node.state for node in order_graph(order).nodes}


def test_a_new_order_shows_its_charge_queued_and_the_rest_waiting():
    order = place()

    graph = order_graph(order)

    assert [[node.key for node in column] for column in graph.columns] == [
        ["charge_payment"],
        ["create_shipment", "record_sales"],
        ["confirm_order"],
        ["send_confirmation_email", "send_confirmation_sms"],
    ]
    assert graph.chords == [["create_shipment", "record_sales"]]
    assert drawn(order) == {name: states.PENDING if name == "charge_payment" else PLANNED for name in WORKFLOW_TASKS}
    assert {node.task_id for node in graph.nodes} == set(
        TaskRecord.objects.about(order).values_list("task_id", flat=True)
    )


def test_a_declined_order_shows_the_charge_failed_and_everything_after_it_not_run():
    order = place(DECLINED_CARD)
    with pytest.raises(PaymentDeclined):
        services.charge_payment(str(order.pk))
    services.settle_step(order.pk, "charge_payment", WorkflowStep.State.FAILURE, error="PaymentDeclined")

    assert drawn(order) == {name: SKIPPED for name in WORKFLOW_TASKS} | {"charge_payment": states.FAILURE}


def test_a_steps_recorded_outcome_wins_over_a_run_record_a_dead_worker_left_running():
    order = place()
    for step in (services.charge_payment, services.create_shipment, services.record_sales, services.confirm_order):
        step(str(order.pk))
    TaskRecord.objects.about(order).update(state=states.STARTED)

    states_drawn = drawn(order)

    assert {name: states_drawn[name] for name in WORKFLOW_STEPS} == dict.fromkeys(WORKFLOW_STEPS, states.SUCCESS)
    assert states_drawn["send_confirmation_sms"] == states.STARTED  # a message's state is its run's


def test_a_cancelled_order_shows_its_cancellation_workflow_after_its_own():
    order = place()
    assert len(order_graph(order).columns) == 4  # no cancellation: nothing more drawn

    cancellation.request(order.pk, actor="customer")
    TaskRecord.objects.about(order).filter(task_name="orders.tasks.refund_payment").update(state=states.SUCCESS)

    graph = order_graph(order)
    assert [[node.key for node in column] for column in graph.columns[4:]] == [
        ["refund_payment"],
        ["release_stock"],
        ["send_cancellation_email", "send_cancellation_sms", "record_cancellation_sales"],
        ["finish_cancellation"],
    ]
    assert graph.chords[1] == ["send_cancellation_email", "send_cancellation_sms", "record_cancellation_sales"]
    assert ("release_stock", "record_cancellation_sales") in graph.edges
    assert drawn(order)["refund_payment"] == states.SUCCESS and drawn(order)["release_stock"] == PLANNED
    assert drawn(order)["charge_payment"] == SKIPPED
