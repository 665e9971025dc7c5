"""POST /api/orders/, GET /api/orders/<id>/, POST /api/orders/lookup/ and POST /api/orders/<id>/cancel/."""

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse

from shop.cart import MAX_LINE_QUANTITY
from shop.jsonapi import ApiError, api_view, read_json_object

from . import cancellation, lookup
from .checkout import Customer, place_order
from .errors import CheckoutError, InsufficientStock, OrderActionRefused
from .forms import CancelForm, CheckoutForm, LookupForm
from .models import Order
from .ratelimit import limited
from .selectors import order_status

MAX_ITEMS = 50
_CUSTOMER_FIELDS = ("name", "email", "phone")


@limited("checkout")
@api_view(("POST",))
def order_create(request: HttpRequest) -> JsonResponse:
    data = read_json_object(request)
    customer = data.get("customer")
    errors: dict[str, list[str]] = {}
    if not isinstance(customer, dict):
        errors["customer"] = ["Give an object with name, email and phone."]
        customer = {}
    values = {field: customer.get(field) for field in _CUSTOMER_FIELDS}
    values |= {"shipping_address": data.get("shipping_address"), "card_number": data.get("card_number")}
    not_text = {field for field, value in values.items() if value is not None and not isinstance(value, str)}
    form = CheckoutForm({field: None if field in not_text else value for field, value in values.items()})
    if not form.is_valid():
        for field, messages in form.errors.items():
            errors[_path(field)] = ["Give a string."] if field in not_text else list(messages)
    items = _items(data.get("items"), errors)
    if errors:
        raise ApiError(400, errors)

    cleaned = form.cleaned_data
    try:
        order = place_order(
            customer=Customer(name=cleaned["name"], email=cleaned["email"], phone=cleaned["phone"]),
            shipping_address=cleaned["shipping_address"],
            items=items,
            card_number=cleaned["card_number"],
        )
    except InsufficientStock as exc:
        return JsonResponse(
            {
                "message": str(exc),
                "errors": {"items": [str(exc)]},  # the shape of every API error, for generic clients
                "sku": exc.sku,
                "requested": exc.requested,
                "available": exc.available,
            },
            status=409,
        )
    except CheckoutError as exc:
        raise ApiError(400, {"items": [str(exc)]}) from None
    return JsonResponse(
        {
            "id": str(order.pk),
            "number": order.number,
            "status": order.status,
            "status_url": request.build_absolute_uri(reverse("api:order_detail", args=[order.pk])),
        },
        status=202,
    )


@api_view(("GET",))
def order_detail(request: HttpRequest, pk) -> JsonResponse:
    order = get_object_or_404(Order, pk=pk)
    return JsonResponse(order_status(order) | {"cancellable": cancellation.offered(order)})


@limited("lookup")
@api_view(("POST",))
def order_lookup(request: HttpRequest) -> JsonResponse:
    """{"number", "email"} → the order's id and links; 404 with one message for any mismatch."""
    data = read_json_object(request)
    form = LookupForm(_strings(data, ("number", "email")))
    if not form.is_valid():
        raise ApiError(400, {field: list(errors) for field, errors in form.errors.items()})
    order = lookup.find(form.cleaned_data["number"], form.cleaned_data["email"])
    if order is None:
        raise ApiError(404, {"__all__": [lookup.NOT_FOUND]}, lookup.NOT_FOUND)
    return JsonResponse(
        {
            "id": str(order.pk),
            "number": order.number,
            "url": request.build_absolute_uri(order.get_absolute_url()),
            "status_url": request.build_absolute_uri(reverse("api:order_detail", args=[order.pk])),
        }
    )


@limited("cancel")
@api_view(("POST",))
def order_cancel(request: HttpRequest, pk) -> JsonResponse:
    """Cancel the order (whoever holds its id): 202 while the cancellation workflow runs, 409 with
    the reason when it cannot be (already shipped)."""
    order = get_object_or_404(Order, pk=pk)
    data = read_json_object(request) if request.body else {}
    form = CancelForm(_strings(data, ("reason",)))
    if not form.is_valid():
        raise ApiError(400, {field: list(errors) for field, errors in form.errors.items()})
    try:
        started = cancellation.request(order.pk, actor="customer", note=form.cleaned_data["reason"])
    except OrderActionRefused as exc:
        raise ApiError(409, {"__all__": [str(exc)]}, str(exc)) from None
    order.refresh_from_db()
    body = {"id": str(order.pk), "number": order.number, "status": order.status, "started": started}
    return JsonResponse(body | {"status_url": reverse("api:order_detail", args=[order.pk])}, status=202)


def _strings(data: dict, fields: tuple[str, ...]) -> dict:
    """The form's data from a JSON object: 400 naming any field that is not a string."""
    not_text = [field for field in fields if data.get(field) is not None and not isinstance(data[field], str)]
    if not_text:
        raise ApiError(400, {field: ["Give a string."] for field in not_text})
    return {field: data.get(field) for field in fields}


def _path(field: str) -> str:
    """The error's key names the field where the client sent it: customer.email, card_number."""
    return f"customer.{field}" if field in _CUSTOMER_FIELDS else field


def _items(raw, errors: dict[str, list[str]]) -> list[tuple[str, int]]:
    if not isinstance(raw, list) or not raw:
        errors["items"] = ['Give a non-empty list of {"sku", "quantity"} objects.']
        return []
    if len(raw) > MAX_ITEMS:
        errors["items"] = [f"At most {MAX_ITEMS} items per order."]
        return []
    items = []
    for index, item in enumerate(raw):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            errors[where] = ["Each item must be an object with sku and quantity."]
            continue
        sku, quantity = item.get("sku"), item.get("quantity")
        if not isinstance(sku, str) or not 0 < len(sku) <= 32 or "\x00" in sku:
            errors[f"{where}.sku"] = ["Give the product's SKU as a string."]
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            errors[f"{where}.quantity"] = ["Give the quantity as a whole number."]
        elif not 1 <= quantity <= MAX_LINE_QUANTITY:
            errors[f"{where}.quantity"] = [f"Quantity must be between 1 and {MAX_LINE_QUANTITY}."]
        else:
            items.append((sku, quantity))
    return items
