"""pk_url (tasks_admin/adminkit.py) gives what reverse() gives, for the console's lists' rows."""

import uuid

import pytest
from django.test import override_settings
from django.urls import NoReverseMatch, clear_script_prefix, reverse, set_script_prefix

from benchmarks import stock_admin
from tasks_admin.adminkit import pk_url

VIEWS = ["admin:tasks_admin_taskrecord_change", "admin:tasks_admin_taskrecord_retry", "admin:orders_order_change"]


@pytest.mark.parametrize("pk", [7, uuid.UUID("6f1e2a34-1c2d-4e5f-8a9b-0c1d2e3f4a5b"), "a b/c%d?e#f_pk__"])
@pytest.mark.parametrize("viewname", VIEWS)
def test_it_is_reverse_with_the_key_as_its_argument(viewname, pk):
    assert pk_url(viewname, pk) == reverse(viewname, args=[pk])


def test_it_follows_the_script_prefix_a_deployment_under_a_path_has():
    set_script_prefix("/shop/")
    try:
        assert pk_url("admin:tasks_admin_taskrecord_change", 3) == "/shop/admin/tasks_admin/taskrecord/3/change/"
    finally:
        clear_script_prefix()
    assert pk_url("admin:tasks_admin_taskrecord_change", 3) == "/admin/tasks_admin/taskrecord/3/change/"


def test_it_follows_the_urlconf_and_fails_as_reverse_does():
    stock = f"{stock_admin.site.name}:django_celery_results_taskresult_change"
    with override_settings(ROOT_URLCONF=stock_admin.__name__):
        assert pk_url(stock, 3) == reverse(stock, args=[3]) == "/stock-admin/django_celery_results/taskresult/3/change/"

    with pytest.raises(NoReverseMatch):  # the shop's URLconf has no stock task list
        pk_url(stock, 3)
