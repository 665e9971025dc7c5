"""The task list's rows, rendered in one pass.

Django's admin renders each cell through `items_for_result` (a field lookup, a display
formatter and a format_html per cell) and the template then loops over every cell: for fifty
rows of a dozen columns that was half of the page's time. Here each row's cells are joined in
Python and the stock `admin/change_list_results.html` template loops over rows only; the
markup (classes, headers, sorting links) is Django's. The page also loads only the columns
its rows show.
"""

import html

from django.contrib.admin.templatetags.admin_list import result_list
from django.contrib.admin.views.main import ChangeList
from django.utils.safestring import SafeString, mark_safe

from . import subjects


class TaskChangeList(ChangeList):
    """Selects the columns named by the admin's `list_columns`: a failed task's traceback,
    arguments and result stay in the database until its page is opened."""

    def get_results(self, request) -> None:
        self.queryset = self.queryset.only(*self.model_admin.list_columns)
        super().get_results(request)
        subjects.attach(self.result_list)  # what each task is about, one query per kind


def _cell(cl: ChangeList, record, name: str) -> str:
    """A column's text: the admin's display method, or the model field's value."""
    admin = cl.model_admin
    if hasattr(admin, name):
        value = getattr(admin, name)(record)
    else:
        value = getattr(record, name)
    if value is None:
        return admin.get_empty_value_display()
    return value if isinstance(value, SafeString) else html.escape(str(value))


def row(cl: ChangeList, record) -> SafeString:
    cells = []
    for name in cl.list_display:
        css = "action-checkbox" if name == "action_checkbox" else f"field-{name}"
        cells.append(f'<td class="{css}">{_cell(cl, record, name)}</td>')
    return mark_safe("".join(cells))


def rows_context(cl: ChangeList) -> dict:
    """The context of Django's result_list tag, each row one pre-rendered item."""
    records = cl.result_list
    try:
        cl.result_list = []  # Django's headers and hidden fields, without its cell rendering
        context = result_list(cl)
    finally:
        cl.result_list = records
    context["results"] = [[row(cl, record)] for record in records]
    return context
