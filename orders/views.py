"""Checkout and the order page."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from shop.cart import Cart
from shop.views import cart_detail

from .checkout import Customer, place_order
from .errors import CheckoutError, InsufficientStock
from .forms import CheckoutForm
from .models import Order
from .selectors import order_status


def checkout(request: HttpRequest) -> HttpResponse:
    cart = Cart(request.session)
    lines = cart.lines()
    if not lines:
        status = 400 if request.method == "POST" else 200
        return cart_detail(request, error="Your cart is empty: add a product before checking out.", status=status)
    # Bound on every POST, even an empty one: it must come back with "This field is required".
    form = CheckoutForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                order = place_order(
                    customer=Customer(name=data["name"], email=data["email"], phone=data["phone"]),
                    shipping_address=data["shipping_address"],
                    items=cart.items(),
                    card_number=data["card_number"],
                )
            except CheckoutError as exc:
                status = 409 if isinstance(exc, InsufficientStock) else 400
                form.add_error(None, str(exc))
                lines = cart.lines()
            else:
                cart.clear()
                return redirect(order)
    total = sum(line.total for line in lines)
    return render(request, "orders/checkout.html", {"form": form, "lines": lines, "total": total}, status=status)


def order_detail(request: HttpRequest, pk) -> HttpResponse:
    order = get_object_or_404(Order, pk=pk)
    return render(request, "orders/order_detail.html", {"order": order, "status": order_status(order)})
