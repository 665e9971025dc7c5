"""The order's state machine: its states (Order.Status), the transitions between them, and who
may make each. `move()` is the only code that writes Order.status.

Each transition is one conditional UPDATE (`WHERE status IN <its sources>`), so two writers
racing for an order — a worker charging it, staff cancelling it, a periodic job — cannot both
win: the loser's UPDATE matches no row and it is told so. The database itself refuses any
other change of status (a trigger built from TRANSITIONS, migration 0004), whoever sends the
SQL. tests/unit/test_lifecycle.py tries every pair of states against both. `move_clause()` is
the same UPDATE as a clause of a step's statement on PostgreSQL.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone

from tasks_admin.sql import db_value

from .errors import OrderActionRefused
from .models import Order, OrderEvent

Status = Order.Status


@dataclass(frozen=True)
class Transition:
    name: str
    sources: tuple[str, ...]
    target: str
    who: str  # who makes it: the README's table of states is built from this

    def __str__(self) -> str:
        return self.name.replace("_", " ")


START_CHARGE = Transition("start_charge", (Status.PENDING, Status.PROCESSING), Status.PROCESSING, "charge_payment task")
CAPTURE = Transition("capture", (Status.PROCESSING,), Status.PAID, "charge_payment task")
DECLINE = Transition("decline", (Status.PROCESSING,), Status.CANCELLED, "charge_payment task")
FAIL_PAYMENT = Transition(
    "fail_payment", (Status.PENDING, Status.PROCESSING), Status.FAILED, "error callback (charge failed for good)"
)
CONFIRM = Transition("confirm", (Status.PAID,), Status.CONFIRMED, "confirm_order task")
HOLD = Transition("hold", (Status.PAID,), Status.ON_HOLD, "error callback (a step failed for good); staff")
RESUME = Transition("resume", (Status.ON_HOLD,), Status.PAID, "staff (continue, retry)")
RETRY_PAYMENT = Transition("retry_payment", (Status.FAILED,), Status.PENDING, "staff (continue, retry)")
CANCEL = Transition("cancel", (Status.PENDING, Status.FAILED), Status.CANCELLED, "staff; stale-order job")
# Cancelling an order that may be paid: allowed only while nothing is shipped (orders/cancellation.py
# checks that under the order's row lock); the cancellation workflow refunds, releases, tells.
REQUEST_CANCEL = Transition("request_cancel", Order.CANCELLABLE, Status.CANCELLING, "customer (order page); staff")
FINISH_CANCEL = Transition(
    "finish_cancel", (Status.CANCELLING,), Status.CANCELLED, "finish_cancellation task (the chord's callback)"
)

TRANSITIONS = (
    START_CHARGE,
    CAPTURE,
    DECLINE,
    FAIL_PAYMENT,
    CONFIRM,
    HOLD,
    RESUME,
    RETRY_PAYMENT,
    CANCEL,
    REQUEST_CANCEL,
    FINISH_CANCEL,
)
# Every (from, to) the database accepts; a status may also be written unchanged.
ALLOWED_PAIRS = sorted({(source, t.target) for t in TRANSITIONS for source in t.sources if source != t.target})


def move(
    order: Order | str,
    transition: Transition,
    *,
    actor: str = "",
    user: AbstractBaseUser | None = None,
    note: str = "",
    condition: Q | None = None,
    **fields,
) -> bool:
    """Move the order along `transition` if its status is one of the transition's sources (and
    `condition` holds); write `fields` with it. Returns whether it moved.

    With an `actor` (a person or a job: "staff:ada", "job:cancel_stale_orders"), the move is
    recorded in the order's audit trail (OrderEvent), in the same transaction when called in one.
    """
    order_id = getattr(order, "pk", order)
    rows = Order.objects.filter(pk=order_id, status__in=transition.sources)
    if condition is not None:
        rows = rows.filter(condition)
    if actor:  # the status it moves from, for the audit trail (the UPDATE below locks the row)
        before = rows.select_for_update().values_list("status", flat=True).first()
    moved = bool(rows.update(status=transition.target, updated_at=timezone.now(), **fields))
    if moved and actor:
        OrderEvent.objects.create(
            order_id=order_id,
            kind=transition.name,
            from_status=before or "",
            to_status=transition.target,
            user=user,
            actor=actor,
            note=note,
        )
    if moved and isinstance(order, Order):
        order.status = transition.target
        for name, value in fields.items():
            setattr(order, name, value)
    return moved


def move_clause(order_id, transition: Transition, condition: str = "", params: tuple = ()) -> tuple[str, list]:
    """`move()` as a data-modifying WITH clause named `moved` (PostgreSQL), returning the moved
    order's row, for the statement of a step's effect to make the move in the same round trip;
    `condition`: more SQL on the order's row, with its `params`. Unaudited (no actor), as the
    workflow's own moves are. tests/unit/test_steps.py::test_each_step_settles_itself_in_the_statement_of_its_effect
    counts the statements; the trigger of migration 0004 still guards the status."""
    table = Order._meta.db_table
    sources = ", ".join(["%s"] * len(transition.sources))
    sql = (
        f"moved AS (UPDATE {table} SET status = %s, updated_at = %s WHERE id = %s AND status IN ({sources})"
        f"{f' AND {condition}' if condition else ''} RETURNING *)"
    )
    now = db_value(Order, "updated_at", timezone.now())
    return sql, [transition.target, now, db_value(Order, "id", order_id), *transition.sources, *params]


def require(order: Order | str, transition: Transition, **kwargs) -> None:
    """`move()`, or OrderActionRefused saying which status forbids it."""
    if not move(order, transition, **kwargs):
        raise refusal(order, transition)


def refusal(order: Order | str, transition: Transition) -> OrderActionRefused:
    """The error telling staff why the order cannot make this transition now."""
    number, status = Order.objects.values_list("number", "status").get(pk=getattr(order, "pk", order))
    return OrderActionRefused(
        f"Order {number} is {Status(status).label}: it cannot {transition} "
        f"(only when {' or '.join(Status(s).label for s in transition.sources)})."
    )


def staff(user: AbstractBaseUser) -> str:
    return f"staff:{user.get_username()}"
