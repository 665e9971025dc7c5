"""Whoever can write to the broker cannot run code in a worker: only JSON messages are accepted.

A pickle (or YAML) task message is code execution the moment it is deserialized. These tests
push such messages straight into the real broker, for a task the real worker has registered,
and check that the worker refuses the content without deserializing it: the payload's marker
file never appears, the task never runs, and the worker's log says why.
"""

import os
import pickle
import uuid
from pathlib import Path

import pytest
from celery import states
from django_celery_results.models import TaskResult

from shop.celery import app
from tasks_admin.models import TaskRecord
from tests.fakes import tasks as fake_tasks
from tests.processes import WorkerProcess
from tests.support import wait_for

TASK = "tests.fakes.tasks.record_arguments"


class TouchFile:
    """Unpickling this runs a shell command that creates `marker`: what an attacker would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch '{self.marker}'",)


def pickle_body(tag: str, marker: Path) -> bytes:
    # Task message protocol 2: (args, kwargs, embed).
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return pickle.dumps(((tag, TouchFile(marker)), {}, embed))


def yaml_body(tag: str, marker: Path) -> bytes:
    # What PyYAML's unsafe loader would turn into os.system("touch ...").
    return (
        f"- ['{tag}', !!python/object/apply:os.system [\"touch '{marker}'\"]]\n"
        "- {}\n- {callbacks: null, errbacks: null, chain: null, chord: null}\n"
    ).encode()


def msgpack_body(tag: str, marker: Path) -> bytes:
    # A msgpack array [[tag], {}, {}]: harmless in itself, but not a content type the shop accepts.
    encoded_tag = tag.encode()
    return b"\x93\x91\xd9" + bytes([len(encoded_tag)]) + encoded_tag + b"\x80\x80"


CONTENT = {
    "pickle": ("application/x-python-serialize", "binary", pickle_body),
    "yaml": ("application/x-yaml", "utf-8", yaml_body),
    "msgpack": ("application/x-msgpack", "binary", msgpack_body),
}


def publish_raw(body: bytes, *, task_id: str, content_type: str, content_encoding: str, queue: str) -> None:
    """Publish a task message as any client of the broker could, bypassing Celery's own serializer."""
    headers = {
        "lang": "py",
        "task": TASK,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "shadow": None,
        "eta": None,
        "expires": None,
        "retries": 0,
        "timelimit": [None, None],
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "attacker@example",
        "ignore_result": False,
    }
    declared = app.amqp.queues[queue]
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        producer.publish(
            body,
            exchange=declared.exchange,
            routing_key=declared.routing_key,
            declare=[declared],
            headers=headers,
            content_type=content_type,
            content_encoding=content_encoding,
            correlation_id=task_id,
            retry=True,
        )


def test_the_pickle_payload_is_live(tmp_path: Path) -> None:
    """Control: unpickled anywhere, the message body really runs the command (so its absence below means something)."""
    marker = tmp_path / "control-marker"

    pickle.loads(pickle_body("control", marker))

    assert marker.exists()


@pytest.mark.parametrize("kind", list(CONTENT))
def test_a_message_in_another_format_than_json_is_refused_unread(
    worker: WorkerProcess, fake_tasks_dir: Path, tmp_path: Path, kind: str
) -> None:
    """A pickle/YAML/msgpack message for a registered task is discarded by the worker before decoding."""
    content_type, content_encoding, make_body = CONTENT[kind]
    marker = tmp_path / f"{kind}-marker"
    tag, task_id = f"hostile-{kind}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    log_start = len(worker.log())

    publish_raw(
        make_body(tag, marker),
        task_id=task_id,
        content_type=content_type,
        content_encoding=content_encoding,
        queue="celery",
    )
    # A JSON message for the same task on the same queue, sent after it: once the worker has
    # run this one, it has already taken (and refused) the hostile message before it.
    sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
    fake_tasks.record_arguments.apply_async((sentinel,), queue="celery")
    wait_for(lambda: fake_tasks.received(sentinel), timeout=30, message="the sentinel task to run")

    def refusal_logged() -> str:
        log = worker.log()[log_start:]
        return log if "Refusing to deserialize" in log else ""

    log = wait_for(refusal_logged, timeout=10, message="the worker to log the refusal")

    assert f"Refusing to deserialize untrusted content of type {kind} ({content_type})" in log
    assert "ContentDisallowed" in log
    assert not marker.exists(), "the worker deserialized the message: code from the broker ran"
    assert fake_tasks.received(tag) is None, "the hostile message's task ran"
    assert not TaskRecord.objects.filter(task_id=task_id, state__in=[states.STARTED, states.SUCCESS]).exists()
    assert not TaskRecord.objects.filter(task_id=task_id, started_at__isnull=False).exists()
    assert not TaskResult.objects.filter(task_id=task_id).exists()
