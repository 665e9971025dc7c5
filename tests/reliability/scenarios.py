"""Orders for the scenarios."""
from shop.models import Product
from tests.factories import make_product

GOOD_CARD = "4242 4242 4242 4242"


def stock_up(units: int = 10_000) -> Product:
    return make_product(stock=units, price="9.90", name="Reliability Mug")


def payloads(product: Product, count: int, name: str = "Customer") -> list[dict]:
    return [
        {
            "customer": {"name": f"{name} {n}", "email": f"r{n}@example.com", "phone": f"+4479461{n:05d}"},
            "shipping_address": f"{n} Chaos Street",
            "items": [{"sku": product.sku, "quantity": 1}],
            "card_number": GOOD_CARD,
        }
        for n in range(count)
    ]
