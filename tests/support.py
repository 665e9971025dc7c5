"""Helpers for tests: waiting on asynchronous outcomes, and skipping only where allowed."""

import os
import time
from collections.abc import Callable

import pytest
from celery import Celery
from django.db import close_old_connections
from kombu.exceptions import OperationalError as BrokerError

IN_CI = bool(os.environ.get("CI"))

# The order's fulfilment steps, in order: the contract the API, the page and the admin show.
WORKFLOW_STEPS = ["charge_payment", "create_shipment", "record_sales", "confirm_order"]
# ...and every task of its workflow: the steps, then the messages that follow the confirmation.
WORKFLOW_TASKS = [*WORKFLOW_STEPS, "send_confirmation_email", "send_confirmation_sms"]


def require(condition: bool, reason: str) -> None:
    """Skip when an optional service is missing on a laptop; in CI nothing skips."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} (CI is set: nothing may skip)")
        pytest.skip(reason)


def wait_for(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.1, message: str = "") -> object:
    """Poll until predicate() is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        close_old_connections()
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def mailbox(mail_dir, to: str | None = None) -> list:
    """Messages Django's file-based e-mail backend wrote to `mail_dir`, optionally for one recipient."""
    import email
    from pathlib import Path

    separator = b"\n" + b"-" * 79 + b"\n"
    messages = []
    for path in sorted(Path(mail_dir).glob("*.log")):
        for chunk in path.read_bytes().split(separator):
            if chunk.strip():
                message = email.message_from_bytes(chunk.strip())
                if to is None or message["To"] == to:
                    messages.append(message)
    return messages


def answers_ping(broker_url: str, node: str, timeout: float = 2) -> bool:
    """Whether worker `node` answers a remote-control ping through the broker at `broker_url`:
    its consumer is connected and serving. Asked by an app of its own, never made the current app
    (the shop's tasks would publish through it), and with CELERY_BROKER_URL out of the environment
    while it asks: Celery prefers that variable to any broker it is given."""
    saved = os.environ.pop("CELERY_BROKER_URL", None)
    probe = Celery(broker=broker_url, set_as_current=False)
    try:
        return bool(probe.control.ping(destination=[node], timeout=timeout))
    except (BrokerError, OSError):
        return False
    finally:
        probe.close()
        if saved is not None:
            os.environ["CELERY_BROKER_URL"] = saved
