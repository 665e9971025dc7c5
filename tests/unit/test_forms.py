"""Checkout input: phone numbers become E.164, cards must pass Luhn, e-mails must be e-mails."""

import pytest
from django import forms

from orders.forms import CheckoutForm, normalize_phone
from tests.factories import GOOD_CARD


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+442079460958", "+442079460958"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+44 (20) 7946-0958", "+442079460958"),
        ("+1-415-555-0100", "+14155550100"),
        ("+1.415.555.0100", "+14155550100"),
        ("  +49 30 1234567  ", "+49301234567"),
        ("+1234567", "+1234567"),  # shortest allowed: 7 digits
        ("+123456789012345", "+123456789012345"),  # longest E.164: 15 digits
    ],
)
def test_normalize_phone_accepts_common_separators_and_returns_e164(raw, e164):
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "44 20 7946 0958",  # no '+'
        "0044 20 7946 0958",  # trunk prefix instead of '+'
        "+44 20 7946 O958",  # letter O instead of zero
        "+44 20 CALL NOW",
        "+123456",  # too short
        "+1234567890123456",  # 16 digits: too long for E.164
        "+0 20 7946 0958",  # country codes never start with 0
        "+44 20 7946 0958 ext 12",
        "",
    ],
)
def test_normalize_phone_rejects_numbers_that_are_not_international(raw):
    with pytest.raises(forms.ValidationError) as excinfo:
        normalize_phone(raw)
    assert "international format" in excinfo.value.messages[0]


@pytest.mark.parametrize(
    "raw",
    [
        "+4\u0664\u0662\u0660\u0667\u0669\u0664\u0666\u0660\u0669\u0665\u0668",  # Arabic-Indic digits
        "+4\uff14\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff19\uff15\uff18",  # full-width digits
    ],
)
def test_normalize_phone_rejects_non_ascii_digits(raw):
    with pytest.raises(forms.ValidationError):
        normalize_phone(raw)


def checkout_data(**overrides) -> dict:
    data = {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 (20) 7946-0958",
        "shipping_address": "12 St James's Square\nLondon",
        "card_number": GOOD_CARD,
    }
    return data | overrides


def test_checkout_form_accepts_good_input_and_normalizes_phone_and_card():
    form = CheckoutForm(checkout_data(card_number="4242-4242 4242-4242"))

    assert form.is_valid(), form.errors
    assert form.cleaned_data["phone"] == "+442079460958"
    assert form.cleaned_data["card_number"] == "4242424242424242"
    assert form.cleaned_data["email"] == "ada@example.com"


@pytest.mark.parametrize("email", ["ada", "ada@", "ada@@example.com", "ada example@example.com"])
def test_checkout_form_rejects_a_bad_email(email):
    form = CheckoutForm(checkout_data(email=email))

    assert not form.is_valid()
    assert set(form.errors) == {"email"}


def test_checkout_form_rejects_a_card_failing_the_luhn_check():
    form = CheckoutForm(checkout_data(card_number="4242 4242 4242 4241"))

    assert not form.is_valid()
    assert set(form.errors) == {"card_number"}
    assert "checksum" in form.errors["card_number"][0]


@pytest.mark.parametrize("card", ["4242", "4242 4242 4242 4242 4242", "4242 4242 abcd 4242"])
def test_checkout_form_rejects_a_card_number_that_is_not_12_to_19_digits(card):
    form = CheckoutForm(checkout_data(card_number=card))

    assert not form.is_valid()
    assert "12 to 19 digits" in form.errors["card_number"][0]


def test_checkout_form_rejects_a_bad_phone():
    form = CheckoutForm(checkout_data(phone="020 7946 0958"))

    assert not form.is_valid()
    assert set(form.errors) == {"phone"}


def test_checkout_form_requires_every_field():
    form = CheckoutForm({})

    assert not form.is_valid()
    assert set(form.errors) == {"name", "email", "phone", "shipping_address", "card_number"}
