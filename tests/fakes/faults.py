"""Fault injection for the reliability suite, loaded by workers with
CELERY_EXTRA_IMPORTS=tests.fakes.faults. Nothing here runs in the shop itself.

FAULT_PAUSE_AFTER="module:attr.path,..."  the first call (cluster-wide) of each target
    pauses after it returned — its effect is done, the task not yet acknowledged — and
    leaves FAULT_DIR/paused-<target> so the test knows when to act. It goes on only when
    the test leaves FAULT_DIR/release-<target> (a worker killed meanwhile never does), and
    then leaves FAULT_DIR/resumed-<target>, so a test can tell that a kill came in time.
FAULT_KILL_CHILD="module:attr.path"  the pool process running the target kills itself with
    SIGKILL (as the OOM killer would) when the order's customer name contains POISON (every
    time) or KILLONCE (the first time for that order), after adding a line to
    FAULT_DIR/kills-<order id>: the runs that died, counted where they died.
FAULT_DUPLICATE_PUBLISH="task.name,..."  every message published for these tasks is
    published a second time, byte for byte (a duplicate delivery).
FAULT_SWITCHES="module:attr.path,..."  switches a test flips while the worker runs: while
    FAULT_DIR/fail-<target> exists, a call of the target raises RuntimeError (a permanent
    error); while FAULT_DIR/slow-<target> exists, a call first sleeps as many seconds as the
    file says, leaving FAULT_DIR/running-<target> meanwhile (tests/fakes/switches.py flips them).
"""

import os
import signal
import time
from functools import wraps
from importlib import import_module
from pathlib import Path

from celery import current_app, current_task, signals


def _dir() -> Path:
    return Path(os.environ["FAULT_DIR"])


def _claim(name: str) -> bool:
    """True once per name across every process: the first to create the marker file."""
    try:
        fd = os.open(_dir() / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _patch(target: str, make_wrapper) -> None:
    module_name, _, path = target.partition(":")
    owner = import_module(module_name)
    *parents, attr = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, attr, make_wrapper(getattr(owner, attr)))


def _pause_after(target: str):
    def make_wrapper(original):
        @wraps(original)
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if _claim(f"paused-{target}"):
                try:
                    while not (_dir() / f"release-{target}").exists():
                        time.sleep(0.05)
                finally:  # released, or cut short (a time limit): either way no longer paused
                    (_dir() / f"resumed-{target}").touch()
            return result

        return wrapper

    return make_wrapper


def _kill_child(original):
    @wraps(original)
    def wrapper(order_id, *args, **kwargs):
        from orders.models import Order

        name = Order.objects.values_list("customer_name", flat=True).get(pk=order_id)
        if "POISON" in name or ("KILLONCE" in name and _claim(f"killed-{order_id}")):
            with open(_dir() / f"kills-{order_id}", "a") as kills:  # the process, and the delivery's retry number
                kills.write(f"{os.getpid()} {current_task.request.retries}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return original(order_id, *args, **kwargs)

    return wrapper


def _switchable(target: str):
    def make_wrapper(original):
        @wraps(original)
        def wrapper(*args, **kwargs):
            slow = _dir() / f"slow-{target}"
            if slow.exists():
                running = _dir() / f"running-{target}"
                running.touch()
                try:
                    time.sleep(float(slow.read_text() or "5"))
                finally:
                    running.unlink(missing_ok=True)
            if (_dir() / f"fail-{target}").exists():
                raise RuntimeError(f"injected fault: {target}")
            return original(*args, **kwargs)

        return wrapper

    return make_wrapper


for _target in filter(None, os.environ.get("FAULT_SWITCHES", "").split(",")):
    _patch(_target, _switchable(_target))
for _target in filter(None, os.environ.get("FAULT_PAUSE_AFTER", "").split(",")):
    _patch(_target, _pause_after(_target))
for _target in filter(None, os.environ.get("FAULT_KILL_CHILD", "").split(",")):
    _patch(_target, _kill_child)


_DUPLICATED = set(filter(None, os.environ.get("FAULT_DUPLICATE_PUBLISH", "").split(",")))
_outgoing: dict[str, dict] = {}


@signals.before_task_publish.connect
def _remember(sender, headers, properties, **kwargs):
    if sender in _DUPLICATED and not headers.get("retries"):
        _outgoing[headers["id"]] = properties


@signals.after_task_publish.connect
def _publish_again(sender, body, exchange, routing_key, headers, **kwargs):
    properties = _outgoing.pop(headers["id"], None)
    if properties is None:
        return
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            body, exchange=exchange, routing_key=routing_key, headers=headers, serializer="json", **properties
        )
