"""Logging filters (settings/core.py LOGGING)."""

import logging

from django.core.exceptions import PermissionDenied


class RefusalWithoutTraceback(logging.Filter):
    """A PermissionDenied on django.request (a 403) is logged as one line naming the user, without a traceback.

    A refusal is an expected outcome (staff who may only view, a forbidden admin action): the
    traceback of the view that raised it says nothing an operator needs, who was refused what does.
    Proven by tests/functional/test_forbidden_logging.py.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PermissionDenied):
            record.exc_info = record.exc_text = None
            if user := getattr(getattr(record, "request", None), "user", None):
                record.msg = f"{record.msg} (user %s)"
                record.args = (*record.args, user.get_username() or "anonymous")
        return True
