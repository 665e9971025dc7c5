"""Flip the fault switches of a running worker (tests/fakes/faults.py, FAULT_SWITCHES) from a test."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHIPMENT = "orders.services:create_shipment"
CHARGE = "orders.payments:DemoGateway.charge"
SMS = "notifications.sms:HttpSmsProvider.send"
REFUND = "orders.payments:DemoGateway.refund"
SWITCHES = (SHIPMENT, CHARGE, SMS, REFUND)


@contextmanager
def failing(fault_dir: Path, target: str) -> Iterator[None]:
    """Every call of `target` in the worker raises a permanent error while this is open."""
    switch = fault_dir / f"fail-{target}"
    switch.touch()
    try:
        yield
    finally:
        switch.unlink(missing_ok=True)


@contextmanager
def slow(fault_dir: Path, target: str, seconds: float) -> Iterator[Path]:
    """Every call of `target` first sleeps `seconds` while this is open; yields the file that
    exists while a call is sleeping (the test's sign that the step is running)."""
    switch = fault_dir / f"slow-{target}"
    switch.write_text(str(seconds))
    try:
        yield fault_dir / f"running-{target}"
    finally:
        switch.unlink(missing_ok=True)
