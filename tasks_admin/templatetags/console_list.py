"""`{% plain_result_list cl %}`: Django's `{% result_list cl %}` with the rows' cells from the
admin's PlainRowsMixin (tasks_admin/adminkit.py), in Django's own results template."""

from django import template
from django.contrib.admin.templatetags.admin_list import result_headers
from django.contrib.admin.views.main import ChangeList
from django.utils.safestring import SafeString

register = template.Library()


@register.inclusion_tag("admin/change_list_results.html")
def plain_result_list(cl: ChangeList) -> dict:
    headers = list(result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": [],  # no editable fields: no formset
        "result_headers": headers,
        "num_sorted_fields": sum(1 for header in headers if header["sortable"] and header["sorted"]),
        # A row's cells as one item of the template's loop over them: each item is a variable the
        # template engine renders (its autoescape and localisation checks), 650 a 50-row page.
        "results": [[SafeString("".join(cells))] for cells in cl.model_admin.row_cells(cl)],
    }
