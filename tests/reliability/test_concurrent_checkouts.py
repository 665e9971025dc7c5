"""10. 200 checkouts released at the same instant, through the real HTTP server, for 20 units.

Exactly 20 may reserve stock; the others get a 409 that says how many are left. Stock is
reserved by conditional UPDATEs in primary-key order, so a second round — two products,
listed in opposite orders by alternate customers, the classic lock-order deadlock — must
not show a single deadlock (or any 5xx) to a customer.
"""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import close_old_connections, connections

from shop.models import Product
from tests.factories import make_product

from .harness import Stack
from .scenarios import GOOD_CARD

CHECKOUTS = 200
UNITS = 20


@dataclass
class StockSampler:
    """Reads the products' stock over and over from its own connection while checkouts run."""

    product_ids: list[int]
    lowest: int | None = None
    samples: int = 0
    _sampled: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                for stock in Product.objects.filter(pk__in=self.product_ids).values_list("stock", flat=True):
                    self.lowest = stock if self.lowest is None else min(self.lowest, stock)
                self.samples += 1
                self._sampled.set()
                time.sleep(0.005)
        finally:
            connections.close_all()

    @contextmanager
    def running(self) -> Iterator["StockSampler"]:
        """Sampling from before the checkouts start (one sample taken) until they are all answered."""
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            assert self._sampled.wait(30), "the stock sampler took no sample"
            yield self
        finally:
            self._stop.set()
            thread.join()


@dataclass
class Round:
    answers: list[tuple[int, dict]]
    lowest_stock: int
    samples: int
    seconds: float

    @property
    def codes(self) -> Counter:
        return Counter(code for code, _ in self.answers)

    @property
    def accepted(self) -> list[str]:
        return [body["id"] for code, body in self.answers if code == 202]


def payload(n: int, items: list[Product]) -> dict:
    return {
        "customer": {"name": f"Rush {n}", "email": f"rush{n}@example.com", "phone": f"+4479463{n:05d}"},
        "shipping_address": f"{n} Rush Street",
        "items": [{"sku": product.sku, "quantity": 1} for product in items],
        "card_number": GOOD_CARD,
    }


def rush(stack: Stack, payloads: list[dict], products: list[Product]) -> Round:
    """Release every checkout at once (a barrier), sampling the stock meanwhile."""
    barrier = threading.Barrier(len(payloads))
    answers: list[tuple[int, dict] | None] = [None] * len(payloads)

    def checkout(index: int) -> None:
        barrier.wait()
        answers[index] = stack.checkout(payloads[index])

    threads = [threading.Thread(target=checkout, args=(i,)) for i in range(len(payloads))]
    with StockSampler([p.pk for p in products]).running() as sampler:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
    close_old_connections()
    return Round([a for a in answers if a is not None], sampler.lowest, sampler.samples, seconds)


def describe(name: str, result: Round) -> str:
    codes = ", ".join(f"{n} × {code}" for code, n in sorted(result.codes.items()))
    return (
        f"{name}: {codes} in {result.seconds:.1f} s; lowest stock seen {result.lowest_stock} ({result.samples} samples)"
    )


def test_200_concurrent_checkouts_sell_exactly_the_20_units_there_are(make_stack, record):
    stack = make_stack()
    stack.start(workers=1, web=False)
    stack.start_web(workers=2, threads=16)  # 32 checkouts in flight at once, the rest queued by the server

    mug = make_product(stock=UNITS, name="Limited Mug")
    single = rush(stack, [payload(n, [mug]) for n in range(CHECKOUTS)], [mug])

    # Two products, listed A, B by half the customers and B, A by the other half.
    saucer, cup = make_product(stock=UNITS, name="Limited Saucer"), make_product(stock=UNITS, name="Limited Cup")
    crossed = rush(
        stack,
        [payload(CHECKOUTS + n, [saucer, cup] if n % 2 else [cup, saucer]) for n in range(CHECKOUTS)],
        [saucer, cup],
    )

    order_ids = single.accepted + crossed.accepted
    stack.wait_until_final(order_ids, timeout=60)
    audit = stack.audit(order_ids)
    stock = dict(Product.objects.filter(pk__in=[mug.pk, saucer.pk, cup.pk]).values_list("name", "stock"))
    web_log = stack.web.log()
    record(
        "10. 200 concurrent checkouts",
        audit.figures(),
        faults=f"2 rounds of {CHECKOUTS} checkouts released together (a barrier) through gunicorn (2 × 16 threads) "
        f"for {UNITS} units: 1 product; 2 products listed in opposite orders",
        notes=f"{describe('1 product', single)}; {describe('2 products crossed', crossed)}; "
        f"stock at the end: {', '.join(f'{name} {units}' for name, units in stock.items())}; "
        f"{web_log.lower().count('deadlock')} deadlocks logged",
    )

    for result in (single, crossed):
        assert len(result.answers) == CHECKOUTS
        assert result.codes == {202: UNITS, 409: CHECKOUTS - UNITS}, result.codes
        for code, body in result.answers:
            if code == 409:  # says what is left, in the shape of every API error
                assert body["available"] == 0 and body["requested"] == 1, body
                assert "left" in body["message"] and body["errors"]["items"], body
        assert result.samples > 0 and result.lowest_stock >= 0
    assert set(stock.values()) == {0}, stock
    assert "deadlock" not in web_log.lower()
    assert audit.placed == audit.confirmed == 2 * UNITS, audit
    assert (audit.charges_duplicated, audit.emails_duplicated, audit.sms_delivered_twice, audit.lost) == (0, 0, 0, 0)
