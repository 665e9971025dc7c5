"""Slow providers for the checkout benchmark: an HTTP SMS gateway and an SMTP server that each
take a fixed time to accept a message, as a real provider under load might."""

import asyncio
import json
import logging
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .stack import free_port


class SlowSmsGateway:
    """POST a message, get {"id": ...} after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay, self.received = delay, 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(gateway.delay)
                gateway.received += 1
                body = json.dumps({"id": f"slow-{gateway.received}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/messages"

    def __enter__(self) -> "SlowSmsGateway":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class SlowSmtpServer:
    """Accepts every message `delay` seconds after its DATA."""

    def __init__(self, delay: float) -> None:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection
        self.delay, self.received = delay, 0
        self.port = free_port()
        server = self

        class Handler:
            async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
                await asyncio.sleep(server.delay)
                server.received += 1
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "SlowSmtpServer":
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()

    def env(self) -> dict[str, str]:
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(self.port),
            "EMAIL_TIMEOUT": str(int(self.delay) + 10),
        }


class SlowProviders:
    """Both slow providers in a process of their own, as real providers are: in the benchmark's
    process their threads (one per message being held for `delay`) took the GIL from the
    clients timing the checkouts, and the figure measured the benchmark, not the shop.

    `with SlowProviders(2.0) as env:` gives the settings that point the shop at them.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> dict[str, str]:
        ours, theirs = multiprocessing.get_context("fork").Pipe()
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(self.delay, theirs), name="slow-providers", daemon=True
        )
        self._process.start()
        if not ours.poll(30):
            raise RuntimeError("The slow providers did not start within 30 s.")
        return ours.recv()

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.join(10)


def _serve(delay: float, connection: Connection) -> None:
    with SlowSmsGateway(delay) as sms, SlowSmtpServer(delay) as smtp:
        env = {"SMS_PROVIDER": "http", "SMS_HTTP_URL": sms.url, "SMS_API_KEY": "bench", **smtp.env()}
        env["SMS_TIMEOUT"] = str(int(delay) + 10)
        connection.send(env)
        threading.Event().wait()  # until terminated
