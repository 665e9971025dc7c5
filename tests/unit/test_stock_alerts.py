"""The low-stock alert: staff hear about a set of products running out once a day."""

from datetime import date

import pytest
from django.core import mail

from shop.models import Product
from shop.stock_alerts import low_stock_products, send_low_stock_alert
from tests.factories import make_product

pytestmark = pytest.mark.django_db

TODAY = date(2026, 5, 4)


@pytest.fixture(autouse=True)
def staff(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SHOP_STAFF_EMAILS = ["stock@example.com", "boss@example.com"]
    settings.LOW_STOCK_THRESHOLD = 5


def test_active_products_at_or_below_the_threshold_are_low():
    two = make_product(stock=2)
    five = make_product(stock=5)
    make_product(stock=6)
    Product.objects.filter(pk=make_product(stock=0).pk).update(active=False)

    assert list(low_stock_products()) == sorted([two, five], key=lambda p: p.sku)


def test_each_staff_address_gets_one_alert_listing_the_low_products():
    low = make_product(stock=1, name="Grinder")
    make_product(stock=40)

    assert send_low_stock_alert(TODAY) == 1

    assert sorted(m.to[0] for m in mail.outbox) == ["boss@example.com", "stock@example.com"]
    message = mail.outbox[0]
    assert message.subject == "1 product low on stock"
    assert low.sku in message.body and "Grinder: 1 left" in message.body
    assert low.sku in message.alternatives[0][0]  # the HTML part


def test_the_same_set_is_not_sent_again_the_same_day_but_a_new_set_or_day_is():
    product = make_product(stock=3)
    send_low_stock_alert(TODAY)
    Product.objects.filter(pk=product.pk).update(stock=2)  # fewer left, same products: no news
    send_low_stock_alert(TODAY)
    assert len(mail.outbox) == 2

    another = make_product(stock=0)
    send_low_stock_alert(TODAY)
    assert len(mail.outbox) == 4
    assert another.sku in mail.outbox[-1].body

    send_low_stock_alert(date(2026, 5, 5))
    assert len(mail.outbox) == 6


def test_nothing_is_sent_when_no_product_is_low():
    make_product(stock=6)

    assert send_low_stock_alert(TODAY) == 0
    assert mail.outbox == []
