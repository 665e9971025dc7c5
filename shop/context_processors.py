from django.conf import settings
from django.http import HttpRequest

from .cart import Cart


def storefront(request: HttpRequest) -> dict:
    """The cart's item count for the header, and the shop's name, on every page."""
    session = getattr(request, "session", None)
    return {"cart_count": Cart(session).count if session is not None else 0, "shop_name": settings.SHOP_NAME}
