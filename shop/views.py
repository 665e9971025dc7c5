"""Storefront pages: catalog and cart. Buying works with plain HTML forms."""

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from .cart import MAX_LINE_QUANTITY, Cart, CartError
from .models import Category, Product
from .selectors import product_listing, search_text

PRODUCTS_PER_PAGE = 12


class CartLineForm(forms.Form):
    sku = forms.CharField(max_length=32)
    quantity = forms.IntegerField(min_value=1, max_value=MAX_LINE_QUANTITY)


def product_list(request: HttpRequest) -> HttpResponse:
    query = search_text(request.GET.get("q"))
    categories = list(Category.objects.all())
    slug = search_text(request.GET.get("category"))
    category = next((c for c in categories if c.slug == slug), None)
    if slug and category is None:
        raise Http404("No such category.")
    page = Paginator(product_listing(query=query, category=category), PRODUCTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "shop/product_list.html",
        {"page": page, "categories": categories, "category": category, "query": query},
    )


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    product = get_object_or_404(Product.objects.select_related("category"), slug=slug, active=True)
    return render(request, "shop/product_detail.html", {"product": product, "max_quantity": MAX_LINE_QUANTITY})


def cart_detail(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    lines = Cart(request.session).lines()
    total = sum((line.total for line in lines), start=Decimal("0.00"))
    context = {"lines": lines, "total": total, "max_quantity": MAX_LINE_QUANTITY, "error": error}
    return render(request, "shop/cart.html", context, status=status)


@require_POST
def cart_add(request: HttpRequest) -> HttpResponse:
    return _change_cart(request, add=True)


@require_POST
def cart_update(request: HttpRequest) -> HttpResponse:
    return _change_cart(request, add=False)


@require_POST
def cart_remove(request: HttpRequest) -> HttpResponse:
    Cart(request.session).remove(request.POST.get("sku", ""))
    messages.info(request, "Removed from your cart.")
    return redirect("shop:cart")


def _change_cart(request: HttpRequest, *, add: bool) -> HttpResponse:
    """Add to or set a cart line. Bad input re-renders the page with the reason and a 4xx."""
    form = CartLineForm(request.POST)
    if not form.is_valid():
        error = " ".join(f"{FIELD_LABELS[field]}: {' '.join(errors)}" for field, errors in form.errors.items())
        return cart_detail(request, error=error, status=400)
    sku, quantity = form.cleaned_data["sku"], form.cleaned_data["quantity"]
    product = Product.objects.select_related("category").filter(sku=sku).first()
    if product is None:
        return cart_detail(request, error=f"There is no product {sku!r}.", status=404)
    try:
        if add:
            Cart(request.session).add(product, quantity)
        else:
            Cart(request.session).set(product, quantity)
    except CartError as exc:
        if add:
            context = {"product": product, "max_quantity": MAX_LINE_QUANTITY, "error": str(exc)}
            return render(request, "shop/product_detail.html", context, status=409)
        return cart_detail(request, error=str(exc), status=409)
    messages.success(request, f"{product.name} × {quantity} {'added to' if add else 'now in'} your cart.")
    return redirect("shop:cart")


FIELD_LABELS = {"sku": "Product", "quantity": "Quantity", "__all__": "Cart"}


# The API's errors are made JSON by shop.jsonapi.JsonErrorsMiddleware, with DEBUG on or off.
def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    return render(request, "500.html", status=500)
