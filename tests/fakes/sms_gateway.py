"""A local HTTP SMS gateway for tests: records every request and answers as scripted."""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class SmsRequest:
    to: str
    body: str
    idempotency_key: str
    authorization: str
    status: int


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class FakeSmsGateway:
    """Answers 200 with a message id unless replies were scripted with `script()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self.requests: list[SmsRequest] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = gateway._next_reply()
                if reply.delay:
                    time.sleep(reply.delay)
                with gateway._lock:
                    gateway.requests.append(
                        SmsRequest(
                            to=payload["to"],
                            body=payload["body"],
                            idempotency_key=self.headers.get("Idempotency-Key", ""),
                            authorization=self.headers.get("Authorization", ""),
                            status=reply.status,
                        )
                    )
                    message_id = f"fake-{len(gateway.requests)}"
                body = json.dumps({"id": message_id} if reply.status < 300 else {"error": "scripted"}).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/messages"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeSmsGateway":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, *replies: Reply | int) -> None:
        """The next requests get these replies, in order; then 200s again."""
        with self._lock:
            self._script = [r if isinstance(r, Reply) else Reply(status=r) for r in replies]

    def reset(self) -> None:
        with self._lock:
            self._script, self.requests = [], []

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.pop(0) if self._script else Reply()

    def accepted(self, to: str | None = None) -> list[SmsRequest]:
        with self._lock:
            return [r for r in self.requests if r.status < 300 and (to is None or r.to == to)]

    def received(self, to: str | None = None) -> list[SmsRequest]:
        with self._lock:
            return [r for r in self.requests if to is None or r.to == to]
