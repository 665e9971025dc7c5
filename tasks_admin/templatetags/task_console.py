"""`{% task_result_list cl %}`: Django's `{% result_list cl %}` with rows rendered in one pass
(tasks_admin/changelist.py)."""

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode

from ..changelist import rows_context

register = template.Library()


@register.tag(name="task_result_list")
def task_result_list_tag(parser, token):
    return InclusionAdminNode(
        parser, token, func=rows_context, template_name="change_list_results.html", takes_context=False
    )
