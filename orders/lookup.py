"""Finding an order without an account: its number and the e-mail address given at checkout.

No enumeration: a wrong number and a wrong e-mail get the same answer, after the same work — the
addresses are compared with `hmac.compare_digest` whether the number exists or not (against a
stand-in when it does not), and both the client and the order number are rate-limited
(orders/ratelimit.py). tests/functional/test_lookup.py proves it.
"""

import hmac

from . import ratelimit
from .models import Order

NOT_FOUND = "We found no order with this number and e-mail address. Check both and try again."
_STAND_IN = "no-order@invalid"


def find(number: str, email: str) -> Order | None:
    """The order with this number whose checkout e-mail is `email` (case-insensitive), else None.
    RateLimited when the number has been tried too often (the client's limit is the view's)."""
    ratelimit.hit("lookup_order", number)
    order = Order.objects.filter(number=number).only("pk", "email", "number").first()
    expected = order.email if order is not None else _STAND_IN
    matches = hmac.compare_digest(_normal(expected), _normal(email))
    return order if order is not None and matches else None


def _normal(email: str) -> bytes:
    return email.strip().casefold().encode()
