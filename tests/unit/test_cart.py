"""The session cart: what a shopper can put in it, and what it shows them."""

from decimal import Decimal

import pytest
from django.contrib.sessions.backends.db import SessionStore

from shop.cart import MAX_LINE_QUANTITY, Cart, CartError
from shop.models import Product
from tests.factories import make_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def session() -> SessionStore:
    return SessionStore()


def test_adding_the_same_product_twice_accumulates_the_quantity(session):
    product = make_product(stock=10)
    cart = Cart(session)

    cart.add(product, 2)
    cart.add(product, 3)

    assert cart.items() == [(product.sku, 5)]
    assert cart.count == 5


def test_set_replaces_the_quantity_instead_of_adding(session):
    product = make_product(stock=10)
    cart = Cart(session)
    cart.add(product, 4)

    cart.set(product, 1)

    assert cart.items() == [(product.sku, 1)]


def test_the_cart_is_kept_in_the_session_across_requests(session):
    first, second = make_product(stock=5), make_product(stock=5)
    cart = Cart(session)
    cart.add(first, 2)
    cart.add(second, 1)
    session.save()

    reloaded = Cart(SessionStore(session_key=session.session_key))

    assert dict(reloaded.items()) == {first.sku: 2, second.sku: 1}
    assert reloaded.count == 3


@pytest.mark.parametrize("quantity", [0, -1])
def test_a_quantity_below_one_is_refused(session, quantity):
    product = make_product(stock=10)
    cart = Cart(session)
    cart.add(product, 2)

    with pytest.raises(CartError, match="at least 1"):
        cart.set(product, quantity)

    assert cart.items() == [(product.sku, 2)]


def test_more_than_the_stock_is_refused_with_the_limit_in_the_message(session):
    product = make_product(stock=3, name="Teapot")
    cart = Cart(session)

    with pytest.raises(CartError, match="at most 3 of Teapot"):
        cart.set(product, 4)

    assert cart.items() == []


def test_adding_past_the_stock_keeps_the_earlier_quantity(session):
    product = make_product(stock=3)
    cart = Cart(session)
    cart.add(product, 2)

    with pytest.raises(CartError):
        cart.add(product, 2)

    assert cart.items() == [(product.sku, 2)]


def test_an_out_of_stock_product_cannot_be_added(session):
    product = make_product(stock=0, name="Kettle")
    cart = Cart(session)

    with pytest.raises(CartError, match="Kettle is out of stock"):
        cart.add(product, 1)

    assert cart.count == 0


def test_a_line_cannot_exceed_the_maximum_quantity_even_with_more_stock(session):
    product = make_product(stock=MAX_LINE_QUANTITY * 5, name="Spoon")
    cart = Cart(session)

    cart.set(product, MAX_LINE_QUANTITY)
    with pytest.raises(CartError, match=f"at most {MAX_LINE_QUANTITY} of Spoon"):
        cart.set(product, MAX_LINE_QUANTITY + 1)

    assert cart.items() == [(product.sku, MAX_LINE_QUANTITY)]


def test_an_inactive_product_cannot_be_added(session):
    product = make_product(stock=10, name="Old mug")
    Product.objects.filter(pk=product.pk).update(active=False)
    product.refresh_from_db()
    cart = Cart(session)

    with pytest.raises(CartError, match="Old mug is no longer available"):
        cart.add(product, 1)

    assert cart.items() == []


def test_remove_drops_only_that_line(session):
    kept, removed = make_product(stock=5), make_product(stock=5)
    cart = Cart(session)
    cart.add(kept, 1)
    cart.add(removed, 2)

    cart.remove(removed.sku)
    cart.remove("NO-SUCH-SKU")  # removing what is not there is harmless

    assert cart.items() == [(kept.sku, 1)]
    assert cart.count == 1
    session.save()
    assert Cart(SessionStore(session_key=session.session_key)).items() == [(kept.sku, 1)]


def test_clear_empties_the_cart(session):
    cart = Cart(session)
    cart.add(make_product(stock=5), 1)

    cart.clear()

    assert cart.items() == []
    assert cart.count == 0


def test_lines_show_current_database_prices_and_line_totals(session):
    product = make_product(stock=10, price="4.00")
    cart = Cart(session)
    cart.add(product, 3)
    Product.objects.filter(pk=product.pk).update(price=Decimal("5.25"))

    (line,) = cart.lines()

    assert line.product.pk == product.pk
    assert line.quantity == 3
    assert line.product.price == Decimal("5.25")
    assert line.total == Decimal("5.25") * 3


def test_lines_drop_products_deleted_from_the_catalog(session):
    kept, deleted = make_product(stock=5), make_product(stock=5)
    cart = Cart(session)
    cart.add(kept, 1)
    cart.add(deleted, 2)
    deleted_sku = deleted.sku
    deleted.delete()

    lines = cart.lines()

    assert [line.product.sku for line in lines] == [kept.sku]
    assert cart.items() == [(kept.sku, 1)]
    assert cart.count == 1
    session.save()
    assert deleted_sku not in dict(Cart(SessionStore(session_key=session.session_key)).items())


def test_lines_flag_products_that_became_unavailable_or_short(session):
    gone, short, fine = make_product(stock=5), make_product(stock=5), make_product(stock=5)
    cart = Cart(session)
    cart.add(gone, 1)
    cart.add(short, 4)
    cart.add(fine, 2)
    Product.objects.filter(pk=gone.pk).update(active=False)
    Product.objects.filter(pk=short.pk).update(stock=2)

    problems = {line.product.sku: line.problem for line in cart.lines()}

    assert problems == {gone.sku: "No longer available.", short.sku: "Only 2 left.", fine.sku: ""}


def test_count_sums_quantities_across_lines(session):
    cart = Cart(session)
    assert cart.count == 0
    cart.add(make_product(stock=5), 2)
    cart.add(make_product(stock=5), 3)

    assert cart.count == 5
