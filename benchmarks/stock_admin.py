"""The admin benchmark's baseline: django-celery-results' stock TaskResult admin, on an admin site
of its own, and the URLconf that serves it (at /stock-admin/) beside the shop's URLs.

The shop's admin has the task console instead (tasks_admin/admin_site.py takes the stock list
out), so the stock page exists only while the benchmark renders it (ROOT_URLCONF = this module).
"""

from django.contrib.admin import AdminSite
from django.urls import include, path
from django_celery_results.admin import TaskResultAdmin
from django_celery_results.models import TaskResult

from tasks_admin.admin import TaskConsoleMixin


class SamePageTaskResultAdmin(TaskResultAdmin):
    """The stock admin as it ships, on pages of as many rows as the console's (Django's default
    is 100, the console's 50): both sides render the same number of rows."""

    list_per_page = TaskConsoleMixin.list_per_page


site = AdminSite(name="stock_admin")
site.register(TaskResult, SamePageTaskResultAdmin)

urlpatterns = [
    path("stock-admin/", site.urls),
    path("", include("shop.urls")),  # the shop's own ROOT_URLCONF: ours, and the pages' links
]
