"""Whoever can write to the broker cannot run code in a worker: only JSON messages are accepted.
And what the shop writes on a parcel (the shipment reference) says nothing about the order.

A pickle (or YAML) task message is code execution the moment it is deserialized. These tests
push such messages straight into the real broker, for a task the real worker has registered,
and check that the worker refuses the content without deserializing it: the payload's marker
file never appears, the task never runs, and the worker's log says why.
"""

import base64
import os
import pickle
import re
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


# Shipment references travel to the warehouse and the carrier, and end up on parcels: none may
# lead back to the order (whose id is the key to its page and API).


def encodings_of(order_id: uuid.UUID, number: str) -> list[str]:
    """Every usual way of writing the order's id (or number) down."""
    raw = order_id.bytes
    encoded = [
        str(order_id),
        order_id.hex,
        str(order_id.int),
        number,
        number.replace("-", ""),
        raw.hex(),
        base64.b16encode(raw).decode(),
        base64.b32encode(raw).decode(),
        base64.b32hexencode(raw).decode(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b85encode(raw).decode(),
        base64.b64encode(str(order_id).encode()).decode(),
        base64.b32encode(str(order_id).encode()).decode(),
    ]
    return [text.rstrip("=").lower() for text in encoded]


@pytest.mark.django_db
def test_shipment_references_encode_nothing_of_the_order(settings) -> None:
    from orders import services
    from orders.checkout import Customer, place_order
    from tests.factories import GOOD_CARD, make_product

    settings.PAYMENT_DEMO_LATENCY = 0
    product = make_product(stock=100)
    references = {}
    for n in range(40):
        order = place_order(
            customer=Customer(name=f"Parcel {n}", email=f"parcel{n}@example.com", phone="+442079460000"),
            shipping_address="1 Depot Road",
            items=[(product.sku, 1)],
            card_number=GOOD_CARD,
        )
        services.charge_payment(str(order.pk))
        references[services.create_shipment(str(order.pk))] = order

    assert len(references) == 40  # one each, and no two alike
    for reference, order in references.items():
        assert re.fullmatch(r"SH-[0-9A-F]{12}", reference), reference
        body = reference.removeprefix("SH-").lower()
        windows = {body[i : i + 8] for i in range(len(body) - 7)}  # a part of the id is a leak too
        for encoding in encodings_of(order.pk, order.number):
            assert encoding not in reference.lower(), (reference, encoding)
            assert not any(window in encoding for window in windows), (reference, encoding)
