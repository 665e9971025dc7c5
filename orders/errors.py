"""Errors of the order domain whose messages are meant for the person who asked."""

from tasks_admin.errors import TransientError


class CheckoutError(Exception):
    """The order cannot be placed as asked."""


class UnknownProduct(CheckoutError):
    def __init__(self, skus) -> None:
        self.skus = sorted(skus)
        super().__init__(f"Unknown or unavailable product: {', '.join(self.skus)}.")


class InsufficientStock(CheckoutError):
    def __init__(self, product, requested: int, available: int) -> None:
        self.sku, self.requested, self.available = product.sku, requested, available
        super().__init__(f"Only {available} of {product.name} ({product.sku}) left; you asked for {requested}.")


class OrderActionRefused(Exception):
    """What staff (or a job) asked of an order is not allowed in its state; the message says why."""


class StepNotAllowed(Exception):
    """A workflow step found its order in a state that forbids it (cancelled, held, not paid):
    the step does nothing and is recorded as not run (orders/steps.py)."""


class MessageCancelled(Exception):
    """Staff cancelled the order's message (revoked its task): its task sends nothing and is
    recorded as not run (orders/steps.py: ConfirmationTask)."""


class NoFailedStep(TransientError):
    """The workflow's error callback ran, but no step is recorded as failed: either the record
    of a lost worker's failure is still on its way (retry shortly), or the error was outside
    any step (a broker that could not take the next message): the order is not stopped, and
    the stuck-workflow recovery carries it on."""
