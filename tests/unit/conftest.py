"""Fixtures of the unit tests: no worker and no broker."""

import pytest

from notifications.tasks import deliver_message


@pytest.fixture
def deliveries(monkeypatch) -> list[str]:
    """The keys of the messages handed to their delivery task (notifications.tasks.deliver_message)
    instead of the broker. Run the code under django_capture_on_commit_callbacks(execute=True):
    a stop notice is handed over only once its transaction commits."""
    keys: list[str] = []
    monkeypatch.setattr(deliver_message, "delay", keys.append)
    return keys
