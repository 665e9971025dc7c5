"""A refused admin action (403) is an expected outcome: the log says once, in one WARNING line without
a traceback, who was refused what, with DEBUG on (make run) or off."""

import io
import logging
import uuid
from collections.abc import Iterator

import pytest
from celery import states
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from tasks_admin.models import TaskRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the console handlers that settings.LOGGING leaves on django.request's way up write for it."""
    stream = io.StringIO()
    handlers, logger = [], logging.getLogger("django.request")
    while logger:
        # The configured console handlers only: pytest's capture handlers subclass StreamHandler.
        handlers += [handler for handler in logger.handlers if type(handler) is logging.StreamHandler]
        logger = logger.parent if logger.propagate else None
    assert handlers, "no console handler on the way: nothing to check"
    previous = [handler.setStream(stream) for handler in handlers]
    yield stream
    for handler, old in zip(handlers, previous, strict=True):
        handler.setStream(old)


@pytest.mark.parametrize("debug", [True, False], ids=["DEBUG", "no DEBUG"])
def test_a_refused_retry_is_one_warning_line_naming_the_user_without_a_traceback(
    client, settings, caplog, log_output, debug
):
    settings.DEBUG = debug
    task = TaskRecord.objects.create(
        task_id=str(uuid.uuid4()), task_name="orders.tasks.send_confirmation_sms", state=states.FAILURE,
        sent_at=timezone.now(), args=["x"],
    )  # fmt: skip
    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_taskrecord", "view_deadletter"]))
    client.force_login(viewer)
    url = reverse("admin:tasks_admin_taskrecord_retry", args=[task.pk])

    response = client.post(url, {"reason": "let me"})

    assert response.status_code == 403
    output = log_output.getvalue()
    assert "Traceback" not in output, output
    [line] = output.splitlines()
    assert line.endswith(f"WARNING django.request: Forbidden (Permission denied): {url} (user viewer)")
    [record] = [record for record in caplog.records if record.name == "django.request"]
    assert (record.levelname, record.status_code, record.exc_info) == ("WARNING", 403, None)
