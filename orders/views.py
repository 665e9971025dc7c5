"""Checkout, the order page, "Find my order" and cancelling an order."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from shop.cart import Cart
from shop.views import cart_detail

from . import cancellation, lookup
from .checkout import Customer, place_order
from .errors import CheckoutError, InsufficientStock, OrderActionRefused
from .forms import CancelForm, CheckoutForm, LookupForm
from .models import Order
from .ratelimit import limited
from .selectors import order_status


@limited("checkout")
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
    context = {"order": order, "status": order_status(order), "can_cancel": cancellation.offered(order)}
    return render(request, "orders/order_detail.html", context)


@require_http_methods(["GET", "POST"])
@limited("lookup")
def order_lookup(request: HttpRequest) -> HttpResponse:
    """Order number + checkout e-mail → the order page; one answer for every mismatch."""
    if request.method == "POST":
        form, status = LookupForm(request.POST), 400
        if form.is_valid():
            order = lookup.find(form.cleaned_data["number"], form.cleaned_data["email"])
            if order is not None:
                return redirect(order)
            form.add_error(None, lookup.NOT_FOUND)
            status = 404
    else:
        form = LookupForm(initial={"number": request.GET.get("number", "")[:20]})
        status = 200
    return render(request, "orders/lookup.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
@limited("cancel")
def order_cancel(request: HttpRequest, pk) -> HttpResponse:
    """Ask before cancelling (GET); cancel (POST): the cancellation workflow refunds, releases the
    stock and tells the customer; the order page follows it."""
    order = get_object_or_404(Order, pk=pk)
    form = CancelForm(request.POST or None)
    refused = cancellation.refusal(order)
    if request.method == "POST" and refused is None and form.is_valid():
        try:
            cancellation.request(order.pk, actor="customer", note=form.cleaned_data["reason"])
        except OrderActionRefused as exc:
            refused = exc
        else:
            messages.success(
                request,
                f"Order {order.number} is being cancelled: any payment is refunded and the items released; "
                "an e-mail and a text confirm it when done.",
            )
            return redirect(order)
    status = 409 if refused is not None and request.method == "POST" else 200
    context = {"order": order, "form": form, "refused": refused, "already": order.status in cancellation.UNDER_WAY}
    return render(request, "orders/cancel.html", context, status=status)
