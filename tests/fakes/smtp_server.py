"""A local SMTP server for tests: records every message it accepts, and can hold one mid-conversation."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tests.support import wait_for

from .hold import Hold


@dataclass
class Received:
    to: list[str]
    subject: str
    message_id: str
    at: float = field(default_factory=time.time)  # when the server accepted it


class FakeSmtpServer:
    """aiosmtpd on `host` (127.0.0.1; a free port); `hold_next()` keeps the next message's RCPT
    unanswered until the test releases it, so a test can act in the middle of a sending;
    `paused()` keeps every RCPT unanswered while it lasts."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self._holds: list[Hold] = []
        self._open = threading.Event()
        self._open.set()
        # Sessions whose RCPT was answered and whose message is not yet accepted (nor abandoned).
        self._mid_message: set = set()
        server = self

        class Handler:
            async def handle_RCPT(self, srv, session, envelope, address, rcpt_options):
                hold = server._next_hold()
                if hold:
                    hold.arrive(address)
                    while not hold.released.is_set():  # polled: the event loop serves other sessions meanwhile
                        await asyncio.sleep(0.01)
                while not server._pass_rcpt(session):
                    await asyncio.sleep(0.01)
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, srv, session, envelope):
                message = message_from_bytes(envelope.original_content or envelope.content)
                with server._lock:
                    server.messages.append(
                        Received(list(envelope.rcpt_tos), message["Subject"] or "", message["Message-ID"] or "")
                    )
                    server._mid_message.discard(session)
                return "250 Message accepted for delivery"

        class Smtp(SMTP):
            def connection_lost(self, error: Exception | None) -> None:
                with server._lock:  # a client that gave up after RCPT is no longer mid-message
                    server._mid_message.discard(self.session)
                super().connection_lost(error)

        class SmtpController(Controller):
            def factory(self) -> SMTP:  # aiosmtpd's documented hook for a custom SMTP class
                return Smtp(self.handler, **self.SMTP_kwargs)

        self.host, self.port = host, free_port(host)
        self.controller = SmtpController(Handler(), hostname=host, port=self.port)

    def __enter__(self) -> "FakeSmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def hold_next(self) -> Hold:
        """Hold the RCPT of the next message (after those already held) until released."""
        hold = Hold()
        with self._lock:
            self._holds.append(hold)
        return hold

    @contextmanager
    def paused(self, timeout: float = 30) -> Iterator[None]:
        """Accept no message while the block runs: each new one waits at RCPT until it ends. The
        block starts once the messages already past RCPT are accepted (or abandoned), so that
        `received()` inside it is final: none is accepted a moment after it was read (the race
        that let scenario 19 send an e-mail twice, tests/reliability/scenarios.py)."""
        with self._lock:
            self._open.clear()
        try:
            wait_for(lambda: not self._mid_message, timeout, interval=0.01, message="SMTP sessions mid-message")
            yield
        finally:
            self._open.set()

    def _pass_rcpt(self, session) -> bool:
        """Answer this RCPT unless paused; checked and counted under the lock `paused()` takes."""
        with self._lock:
            if not self._open.is_set():
                return False
            self._mid_message.add(session)
            return True

    def _next_hold(self) -> Hold | None:
        with self._lock:
            return self._holds.pop(0) if self._holds else None

    def received(self, to: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if to is None or to in m.to]

    def reset(self) -> None:
        with self._lock:
            self.messages, self._holds = [], []


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
