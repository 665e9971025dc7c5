"""The console's change lists' tags: `{% plain_result_list cl %}`, Django's `{% result_list cl %}`
with the rows' cells from the admin's PlainRowsMixin (tasks_admin/adminkit.py), in Django's own
results template; `{% nav_sidebar %}`, Django's navigation sidebar, written once for what it shows."""

from collections.abc import Sequence

from django import template
from django.contrib.admin.templatetags.admin_list import result_headers
from django.contrib.admin.views.main import ChangeList
from django.utils.safestring import SafeString
from django.utils.translation import get_language

register = template.Library()

# Sidebars written so far, by what they show (_sidebar_key); emptied when full: a page path each.
_SIDEBARS: dict[tuple, SafeString] = {}
SIDEBARS_KEPT = 512


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


@register.simple_tag(takes_context=True)
def nav_sidebar(context: template.Context) -> SafeString:
    """Django's admin/nav_sidebar.html, rendered once for each language, page path and list of the
    apps and models the user sees: all it reads. Rendering it was 1.3 ms of a 20 ms task list
    (docs/benchmarks.md, "The task list's sidebar"); a permission granted or taken away is another
    list, so another sidebar (test_console_hygiene.py::test_the_console_sidebar_is_djangos_own)."""
    request, apps = context["request"], context["available_apps"]
    key = (get_language(), request.path, _sidebar_key(apps))
    sidebar = _SIDEBARS.get(key)
    if sidebar is None:
        sidebar = context.template.engine.render_to_string(
            "admin/nav_sidebar.html", {"available_apps": apps, "request": request}
        )
        if len(_SIDEBARS) >= SIDEBARS_KEPT:
            _SIDEBARS.clear()
        _SIDEBARS[key] = sidebar
    return sidebar


def _sidebar_key(apps: Sequence[dict]) -> tuple:
    """What admin/app_list.html reads of the apps (the names as text: they may be lazy)."""
    return tuple(
        (
            app["app_label"],
            str(app["name"]),
            app["app_url"],
            tuple(
                (model["object_name"], str(model["name"]), model["admin_url"], model["add_url"], model.get("view_only"))
                for model in app["models"]
            ),
        )
        for app in apps
    )
