"""Fixtures for the failure-injection suite: every scenario runs the shop as real
processes against PostgreSQL, its own Redis, a local SMS gateway and SMTP server."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.smtp_server import FakeSmtpServer
from tests.processes import test_database_url
from tests.support import require

from . import report as reliability_report
from .harness import Stack


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def database_url(transactional_db) -> str:
    require(connection.vendor == "postgresql", "the reliability suite needs PostgreSQL (set DATABASE_URL)")
    return test_database_url()


@pytest.fixture
def sms() -> Iterator[FakeSmsGateway]:
    with FakeSmsGateway() as gateway:
        yield gateway


@pytest.fixture
def smtp() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer() as server:
        yield server


@pytest.fixture
def make_stack(database_url, sms, smtp, tmp_path: Path, request) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**kwargs) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", database_url, sms, smtp, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    report = getattr(request.node, "rep_call", None)
    for stack in stacks:
        if report is not None and report.failed:
            print(stack.logs())
        stack.stop()


@pytest.fixture
def record() -> Callable[..., None]:
    return reliability_report.record
