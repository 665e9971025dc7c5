"""Validation of checkout input, shared by the HTML checkout and the JSON API."""

import re

from django import forms

from .models import validate_e164
from .payments import InvalidCard, normalize_card_number

_PHONE_SEPARATORS = re.compile(r"[\s().-]")


def normalize_phone(value: str) -> str:
    """Accept '+44 20 7946 0958' or '+44 (20) 7946-0958'; return E.164: '+442079460958'."""
    phone = _PHONE_SEPARATORS.sub("", value)
    validate_e164(phone)
    return phone


class CheckoutForm(forms.Form):
    name = forms.CharField(max_length=200, label="Full name")
    email = forms.EmailField(max_length=254)
    phone = forms.CharField(max_length=32, help_text="International format, e.g. +44 20 7946 0958")
    shipping_address = forms.CharField(max_length=1000, widget=forms.Textarea(attrs={"rows": 3}))
    card_number = forms.CharField(
        max_length=30,
        label="Card number",
        help_text="Demo payments: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined.",
        widget=forms.TextInput(attrs={"autocomplete": "cc-number", "inputmode": "numeric"}),
    )

    def clean_phone(self) -> str:
        return normalize_phone(self.cleaned_data["phone"])

    def clean_card_number(self) -> str:
        try:
            return normalize_card_number(self.cleaned_data["card_number"])
        except InvalidCard as exc:
            raise forms.ValidationError(str(exc)) from None


class LookupForm(forms.Form):
    """ "Find my order": the order number and the e-mail address given at checkout."""

    number = forms.CharField(
        max_length=20,
        label="Order number",
        help_text="As in your confirmation, e.g. SO-7K2QH-X9M4D",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    email = forms.EmailField(
        max_length=254,
        label="E-mail address used at checkout",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    def clean_number(self) -> str:
        return self.cleaned_data["number"].strip().upper()


class CancelForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        required=False,
        label="Why are you cancelling? (optional)",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
