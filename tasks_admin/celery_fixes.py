"""A workaround for the Celery worker lines that bypass logging, applied only to the Celery versions
checked to write them (`notices_as_json()`, called by the Celery app in shop/celery.py when
LOG_FORMAT=json).

A worker's shutdown notices ("worker: Warm shutdown (MainProcess)", "worker: Hitting Ctrl+C again
will terminate all running tasks!", ...) are written from its signal handlers by
`celery.apps.worker.safe_say`, a raw write to stdout, which no setting routes through logging
(celery/celery#8101, open). Under LOG_FORMAT=json they were the only lines of a worker that were
not JSON objects, and a log shipper that parses each line as one drops or mangles them. The
workaround replaces that module's `safe_say` with one that writes the same notice as a JSON object
of the shape of every other line (event, level, logger, timestamp), still in one raw `os.write`:
no logging lock is taken in a signal handler, which is why Celery writes raw (celery/celery#9222).
Proven by tests/integration/test_json_logs.py, which fails when the installed Celery is not listed
here and still writes them raw.
"""

import json
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

import celery
from celery.apps import worker as celery_worker

# Versions checked to print the notices raw (celery/apps/worker.py: safe_say).
RAW_NOTICES = frozenset({"5.7.0"})


def say_as_json(msg: str, f: TextIO = sys.__stderr__) -> None:
    """`safe_say`'s notice as one JSON log line, written as Celery writes it (best effort)."""
    record = {
        "event": msg.strip(),
        "level": "warning",
        "logger": celery_worker.__name__,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    try:
        os.write(f.fileno(), (json.dumps(record) + "\n").encode())
    except (AttributeError, OSError, ValueError):  # no stream, or a closed one: as safe_say, lose it
        pass


def notices_as_json() -> bool:
    """Write the worker's shutdown notices as JSON log lines; False on a Celery not known to need it."""
    if celery.__version__ not in RAW_NOTICES:
        return False
    celery_worker.safe_say = say_as_json
    return True
