"""A local SMTP server for tests: records every message it accepts, and can be made slow."""

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes

from aiosmtpd.controller import Controller


@dataclass
class Received:
    to: list[str]
    subject: str
    message_id: str
    at: float = field(default_factory=time.time)  # when the server accepted it


class FakeSmtpServer:
    """aiosmtpd on 127.0.0.1 (a free port); `slow_rcpt(seconds, count)` delays the RCPT reply
    of the next `count` messages, so a test can kill a worker in the middle of sending."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self._slow: list[float] = []
        self.rcpt_waiting = threading.Event()
        server = self

        class Handler:
            async def handle_RCPT(self, srv, session, envelope, address, rcpt_options):
                delay = server._next_delay()
                if delay:
                    server.rcpt_waiting.set()
                    await asyncio.sleep(delay)
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, srv, session, envelope):
                message = message_from_bytes(envelope.original_content or envelope.content)
                with server._lock:
                    server.messages.append(
                        Received(list(envelope.rcpt_tos), message["Subject"] or "", message["Message-ID"] or "")
                    )
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "FakeSmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def slow_rcpt(self, seconds: float, count: int = 1) -> None:
        with self._lock:
            self._slow = [seconds] * count
        self.rcpt_waiting.clear()

    def _next_delay(self) -> float:
        with self._lock:
            return self._slow.pop(0) if self._slow else 0.0

    def received(self, to: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if to is None or to in m.to]

    def reset(self) -> None:
        with self._lock:
            self.messages, self._slow = [], []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
