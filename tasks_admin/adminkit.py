"""What the project's admins share, on Django's public API: read-only admins and inlines for the
rows the system writes, admin views that change something (POST only, with a permission of their
own), bulk actions that are refused, not ignored, when the user may not run them, and the URLs and
cells of a list's rows at the price of a replace and a format.
"""

import datetime
from collections.abc import Callable
from functools import cache
from urllib.parse import quote

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import display_for_field, display_for_value
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.html import conditional_escape
from django.utils.http import RFC3986_SUBDELIMS
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

View = Callable[..., HttpResponse]
CONSOLE_CSS = "tasks_admin/console.css"
_PK = "__pk__"  # the key's place in a reversed URL (no URL name or prefix of the project holds it)
_PK_SAFE = RFC3986_SUBDELIMS + "/~:@"  # what reverse() leaves unquoted in a path


def pk_url(viewname: str, pk: object) -> str:
    """reverse(viewname, args=[pk]) for a URL whose one argument is an object's key, at the price
    of a replace: a list reverses two or three such URLs a row, 20 µs each, and the row is the
    admin's cost over a million tasks (docs/benchmarks.md, "The task list's cells"). Raises
    NoReverseMatch as reverse() does (tests/unit/test_pk_url.py)."""
    return pk_urls(viewname)(pk)


def pk_urls(viewname: str) -> Callable[[object], str]:
    """pk_url for one view and many keys (a column of row buttons): the script prefix and URLconf
    are read once, not for every row (each read is a lookup in asgiref's Local, 3-5 µs)."""
    template = _pk_url_template(viewname, get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
    return lambda pk: template.replace(_PK, quote(str(pk), safe=_PK_SAFE))


@cache
def _pk_url_template(viewname: str, prefix: str, urlconf: str) -> str:
    """The URL with _PK for the key, for a script prefix and URLconf (both part of what reverse()
    returns: a deployment under a path, a test's ROOT_URLCONF)."""
    return reverse(viewname, urlconf=urlconf, args=[_PK])


Cell = Callable[[models.Model], SafeString]


class PlainRowsMixin:
    """A change list's rows written cell by cell, as Django's `items_for_result` writes them for a
    list with no links to change pages and no editable fields (the console's). Django resolves
    each cell's column again (a field lookup that raises for a method, a lazy empty value, a
    format); resolved once a page, a 50-row page over a million tasks takes about 4 ms (13-17 %)
    less (docs/benchmarks.md, "The task list's rows"). Rendered by `{% plain_result_list cl %}`
    (templatetags/console_list.py); tests/functional/test_console_hygiene.py::
    test_the_console_rows_are_djangos_own compares every cell with Django's."""

    # Each row links to its object from a column of its own: no link Django would reverse, then
    # resolve again to carry the filters, for every row.
    list_display_links = None

    def row_cells(self, changelist: ChangeList) -> list[list[SafeString]]:
        columns = [self._cell(name, index) for index, name in enumerate(changelist.list_display)]
        return [[cell(record) for cell in columns] for record in changelist.result_list]

    def _cell(self, name: str | Callable, index: int) -> Cell:
        empty = self.get_empty_value_display()
        if name == "action_checkbox":
            return lambda record: SafeString(f'<td class="action-checkbox">{self.action_checkbox(record)}</td>')
        field = None
        if isinstance(name, str):
            try:
                field = self.opts.get_field(name)
            except FieldDoesNotExist:
                pass
        if field is not None:
            nowrap = " nowrap" if isinstance(field, (models.DateField, models.TimeField, models.ForeignKey)) else ""

            def field_td(value: object) -> SafeString:
                if field.many_to_one:  # the related object, as Django shows it
                    return _td(f"field-{name}{nowrap}", empty if value is None else value)
                if isinstance(value, str) and not value.strip():
                    value = ""
                return _td(f"field-{name}{nowrap}", display_for_field(value, field, empty))

            # A page's cells by value: a queue, a worker or a count repeats down the page, and
            # display_for_field formats a number in 17 µs (the active language, then three of its
            # formats, looked up each time; docs/benchmarks.md, "a page's repeated values").
            shown: dict[object, SafeString] = {}

            def field_cell(record: models.Model) -> SafeString:
                value = getattr(record, field.name)
                try:
                    return shown[value]
                except KeyError:
                    cell = shown[value] = field_td(value)
                    return cell
                except TypeError:  # a value that cannot be a key (a JSON list): written each time
                    return field_td(value)

            return field_cell
        if callable(name):
            show, css = name, f"lambda{index}" if name.__name__ == "<lambda>" else name.__name__
        else:
            show, css = getattr(self, name), name
        empty = getattr(show, "empty_value_display", empty)
        boolean = getattr(show, "boolean", False)

        def method_cell(record: models.Model) -> SafeString:
            value = show(record)
            if isinstance(value, str) and not boolean:
                # What display_for_value makes of a string (itself; a blank one, the empty value),
                # without its nine checks: 4 µs a cell, and most of a page's 400 are strings.
                return _td(f"field-{css}", value if value.strip() else empty)
            dated = " nowrap" if isinstance(value, (datetime.date, datetime.time)) else ""
            return _td(f"field-{css}{dated}", display_for_value(value, empty, boolean))

        return method_cell


def _td(css: str, text: str) -> SafeString:
    return SafeString(f'<td class="{css}">{conditional_escape(text)}</td>')


class ReadOnlyAdminMixin:
    """Rows the system writes (task history, audit trails, messages, charges, reports): staff see
    them, nobody adds, changes or deletes one from the admin
    (tests/functional/test_admin.py::test_records_of_what_was_sent_and_charged_are_read_only)."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AccessibleAdminMixin:
    """What Django's stock admin pages need to pass the WCAG 2.2 AA audit, on its public API: the
    console's stylesheet (24 px targets, underlined links in text) and a name for each half of a
    date-and-time field (tests/functional/test_accessibility.py; README, "Accessibility")."""

    @property
    def media(self) -> forms.Media:
        return super().media + forms.Media(css={"all": [CONSOLE_CSS]})

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        widget = getattr(formfield, "widget", None)
        if isinstance(widget, forms.SplitDateTimeWidget):  # "Date: [ ] Time: [ ]" as text, no <label>
            for part, name in zip(widget.widgets, ("date", "time"), strict=True):
                part.attrs.setdefault("aria-label", f"{formfield.label}: {name}")
        return formfield

    def get_changelist_form(self, request: HttpRequest, **kwargs):
        """The change list's editable cells (`list_editable`) have no <label> and point at help text
        the list does not show: each gets a name saying which row it edits."""
        base = super().get_changelist_form(request, **kwargs)

        class LabelledRowForm(base):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                for field in self.fields.values():
                    field.help_text = ""
                    field.widget.attrs.setdefault("aria-label", f"{field.label}: {self.instance}")

        return LabelledRowForm


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """An object's rows the system writes (an order's lines, steps, payment, messages, audit trail),
    shown on its page as text, none added, changed or deleted there: the form of a row has no field
    (tests/functional/test_admin.py::test_order_page_shows_its_lines_workflow_steps_payment_and_messages)."""

    extra = 0
    # The stock table in a region that scrolls sideways on a phone and can be focused to scroll it.
    template = "admin/tasks_admin/readonly_tabular.html"

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.fields


def post_action(permission: str) -> Callable[[View], View]:
    """An admin view that changes something: POST only (405 otherwise, so a link or a prefetch never
    acts), and only for a user with `permission` (403). Wrap the result in `admin_site.admin_view`
    for the staff login and the CSRF check
    (tests/functional/test_task_console_admin.py::test_action_views_take_post_only_with_a_csrf_token)."""

    def decorate(view: View) -> View:
        return require_POST(permission_required(permission, raise_exception=True)(view))

    return decorate


class ActionPermissionMixin:
    """A bulk action the user may not run, posted anyway (a forged form), is a 403: Django would
    answer "no action selected" and the attempt would pass for a slip
    (tests/functional/test_task_console_admin.py::test_a_forged_bulk_action_the_user_may_not_run_is_forbidden)."""

    def changelist_view(self, request: HttpRequest, extra_context=None):
        name = request.POST.get("action", "") if request.method == "POST" else ""
        if name in self._action_names() and name not in self.get_actions(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)

    def _action_names(self) -> set[str]:
        """The actions this admin and its site define, whoever may run them."""
        own = {action if isinstance(action, str) else action.__name__ for action in self.actions or ()}
        return own | {name for name, _ in self.admin_site.actions}
