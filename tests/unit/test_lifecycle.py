"""The order's state machine (orders/lifecycle.py) and the database trigger that enforces it
(orders/migrations/0005): every pair of statuses, through `move()` and through raw SQL."""

import importlib
import itertools
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import Q

from orders import lifecycle
from orders.errors import OrderActionRefused
from orders.models import Order, OrderEvent
from tests.factories import reach

pytestmark = pytest.mark.django_db

Status = Order.Status
STATUSES = list(Status.values)
ALLOWED = set(lifecycle.ALLOWED_PAIRS)
PAIRS = [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if a != b]
LEGAL = [pair for pair in PAIRS if pair in ALLOWED]
ILLEGAL = [pair for pair in PAIRS if pair not in ALLOWED]
TRIGGER = importlib.import_module("orders.migrations.0007_cancel_failed_orders")  # the latest trigger
STATE_MACHINE = importlib.import_module("orders.migrations.0006_cancellation")  # the latest constraint


def new_order(status: str = Status.PENDING) -> Order:
    order = Order.objects.create(
        customer_name="Ada", email="ada@example.com", phone="+442079460000", shipping_address="x", total=Decimal("1")
    )
    return reach(order, status)


def status_of(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


def raw_update(order: Order, status: str) -> None:
    """A status change that bypasses the state machine, as any other code or a SQL console would."""
    with transaction.atomic():  # a savepoint: the refused statement leaves the test's transaction usable
        Order.objects.filter(pk=order.pk).update(status=status)


def transitions_to(target: str) -> list[lifecycle.Transition]:
    return [t for t in lifecycle.TRANSITIONS if t.target == target]


def test_the_pairs_cover_the_eight_statuses():
    expected = ["pending", "processing", "paid", "confirmed", "on_hold", "cancelling", "cancelled", "failed"]
    assert sorted(STATUSES) == sorted(expected)
    assert len(LEGAL) == 16 and len(LEGAL) + len(ILLEGAL) == 8 * 7


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
def test_a_legal_transition_succeeds_through_move(source, target):
    order = new_order(source)
    [transition] = [t for t in transitions_to(target) if source in t.sources]

    assert lifecycle.move(order, transition) is True

    assert status_of(order) == target == order.status


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
def test_a_legal_transition_is_accepted_by_the_database(source, target):
    order = new_order(source)

    raw_update(order, target)

    assert status_of(order) == target


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_an_illegal_transition_is_refused_by_move(source, target):
    order = new_order(source)
    assert transitions_to(target), f"nothing ever moves an order to {target}"

    for transition in transitions_to(target):
        assert lifecycle.move(order, transition, actor="staff:ada") is False

    assert status_of(order) == source == order.status
    assert not OrderEvent.objects.filter(order=order, to_status=target).exists()


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_an_illegal_transition_is_refused_by_the_database(source, target):
    order = new_order(source)

    with pytest.raises(DatabaseError, match="illegal order transition"):
        raw_update(order, target)

    assert status_of(order) == source


@pytest.mark.parametrize("status", STATUSES)
def test_writing_a_status_unchanged_is_allowed(status):
    # Saving an order (a contact edit in the admin) writes its status as it is.
    order = new_order(status)
    order.email = "ada.lovelace@example.com"

    order.save()
    raw_update(order, status)

    assert status_of(order) == status


def test_an_unknown_status_is_refused_by_the_database():
    order = new_order()

    with pytest.raises(DatabaseError):
        raw_update(order, "shipped")

    assert status_of(order) == Status.PENDING


def test_the_trigger_allows_exactly_the_state_machines_pairs():
    assert sorted(TRIGGER.ALLOWED) == lifecycle.ALLOWED_PAIRS
    assert all(source != target for source, target in TRIGGER.ALLOWED)


def test_the_check_constraint_knows_exactly_the_statuses():
    def values(constraints) -> list[str]:
        [constraint] = [c for c in constraints if c.name == "order_status_known"]
        return sorted(constraint.condition.children[0][1])

    migrated = [op.constraint for op in STATE_MACHINE.Migration.operations if hasattr(op, "constraint")]
    assert values(Order._meta.constraints) == sorted(Status.values)
    assert values(migrated) == sorted(Status.values)


def test_the_trigger_is_installed_in_this_database():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'orders_order_transition'")
        else:
            cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'orders_order_transition'")
        assert cursor.fetchone() is not None


# What a move does besides the status


def test_of_two_writers_racing_for_an_order_only_the_first_wins():
    order = new_order(Status.PENDING)

    assert lifecycle.move(order.pk, lifecycle.CANCEL, actor="staff:ada") is True
    assert lifecycle.move(order.pk, lifecycle.START_CHARGE) is False  # the charge task, a moment later

    assert status_of(order) == Status.CANCELLED
    assert OrderEvent.objects.filter(order=order).count() == 1


def test_a_move_with_an_actor_is_recorded_in_the_audit_trail(django_user_model):
    ada = django_user_model.objects.create_user("ada")
    order = new_order(Status.PAID)

    assert lifecycle.move(order, lifecycle.HOLD, actor=lifecycle.staff(ada), user=ada, note="address check")

    event = OrderEvent.objects.get(order=order)
    assert (event.kind, event.from_status, event.to_status, event.actor, event.user, event.note) == (
        "hold",
        Status.PAID,
        Status.ON_HOLD,
        "staff:ada",
        ada,
        "address check",
    )


def test_a_move_without_an_actor_is_the_workflows_own_and_not_audited():
    order = new_order()

    assert lifecycle.move(order, lifecycle.START_CHARGE)

    assert not OrderEvent.objects.exists()


def test_a_move_writes_its_fields_with_the_status_and_only_when_it_moves():
    order = new_order(Status.PENDING)

    assert lifecycle.move(order, lifecycle.FAIL_PAYMENT, failure_reason="gateway down") is True
    assert lifecycle.move(order, lifecycle.FAIL_PAYMENT, failure_reason="overwritten") is False

    order.refresh_from_db()
    assert (order.status, order.failure_reason) == (Status.FAILED, "gateway down")


def test_a_move_under_a_condition_that_no_longer_holds_does_nothing():
    order = new_order(Status.PENDING)

    assert lifecycle.move(order, lifecycle.CANCEL, condition=Q(total__gt=100), actor="job:test") is False

    assert status_of(order) == Status.PENDING
    assert not OrderEvent.objects.exists()


def test_require_says_which_status_forbids_the_transition():
    order = new_order(Status.CONFIRMED)

    with pytest.raises(OrderActionRefused) as refused:
        lifecycle.require(order, lifecycle.CANCEL, actor="staff:ada")

    assert str(refused.value) == (f"Order {order.number} is Confirmed: it cannot cancel (only when Pending or Failed).")
    assert status_of(order) == Status.CONFIRMED
