"""Daily sales reports in the admin: listed for staff, written only by the report job."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from orders.models import SalesReport

pytestmark = pytest.mark.django_db


@pytest.fixture
def report() -> SalesReport:
    return SalesReport.objects.create(
        day=date(2026, 3, 14),
        orders=3,
        units=10,
        revenue=Decimal("122.60"),
        top_products=[{"sku": "DEMO-001", "name": "Kettle", "units": 5}],
        generated_at=timezone.now(),
    )


def test_staff_see_the_reports(admin_client, report):
    response = admin_client.get(reverse("admin:orders_salesreport_changelist"))

    assert response.status_code == 200
    assert "122.60" in response.content.decode()
    detail = admin_client.get(reverse("admin:orders_salesreport_change", args=[report.pk])).content.decode()
    assert "DEMO-001" in detail


def test_reports_cannot_be_added_edited_or_deleted_in_the_admin(admin_client, report):
    assert admin_client.get(reverse("admin:orders_salesreport_add")).status_code == 403
    change = reverse("admin:orders_salesreport_change", args=[report.pk])
    assert admin_client.post(change, {"orders": 99}).status_code == 403
    assert admin_client.post(reverse("admin:orders_salesreport_delete", args=[report.pk])).status_code == 403
    report.refresh_from_db()
    assert report.orders == 3
