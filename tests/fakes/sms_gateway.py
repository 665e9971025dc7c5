"""A local HTTP SMS gateway for tests: records every request and answers as scripted.

Like a real gateway it honours Idempotency-Key: a key it already delivered is answered
200 with the first message id and is not delivered again (recorded with `repeat=True`).
Besides `script()`, it can hold a request until the test releases it (`hold_next()`), be put
in a mode — random 5xx, replies after the client's timeout, rate limiting — and refuse given
numbers, for the failure-injection suite.
"""

import json
import random
import select
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .hold import Hold


@dataclass
class SmsRequest:
    to: str
    body: str
    idempotency_key: str
    authorization: str
    status: int
    at: float = field(default_factory=time.time)  # when the gateway received it
    repeat: bool = False  # an Idempotency-Key already delivered: answered, not delivered again
    message_id: str = ""
    retry_after: float | None = None  # the Retry-After it was answered with


@dataclass(frozen=True)
class Mode:
    """How the gateway answers requests nothing was scripted for."""

    kind: str = "healthy"  # healthy | random | late | rate_limit
    rate: float = 0.0
    status: int = 200
    delay: float = 0.0
    retry_after: float = 0.0
    limit: int = 0


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    hold: Hold | None = None  # answered (and recorded) only once the test releases it
    until_hangup: bool = False  # answered only once the client closed the connection (`delay` at most)


class FakeSmsGateway:
    """Answers 200 with a message id unless replies were scripted with `script()`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self.requests: list[SmsRequest] = []
        self._mode = Mode()
        self._random = random.Random(0)
        self._delivered: dict[str, str] = {}  # Idempotency-Key → the message id it was delivered as
        self._refused: dict[str, int] = {}  # number → the 4xx it gets
        self._window: tuple[float, int] = (0.0, 0)  # rate limit: window start, deliveries in it
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = SmsRequest(
                    to=payload["to"],
                    body=payload["body"],
                    idempotency_key=self.headers.get("Idempotency-Key", ""),
                    authorization=self.headers.get("Authorization", ""),
                    status=200,
                )
                reply, recorded = gateway._answer(request)
                if reply.hold:
                    reply.hold.arrive(request.to)
                    reply.hold.released.wait()
                if reply.until_hangup:
                    self._wait_for_hangup(reply.delay)
                elif reply.delay:
                    time.sleep(reply.delay)
                if not recorded:  # scripted: recorded once its delay or hold is over
                    with gateway._lock:
                        gateway._record_locked(request, reply)
                message_id = request.message_id
                error = "scripted" if not recorded else f"error {reply.status}"
                body = json.dumps({"id": message_id} if reply.status < 300 else {"error": error}).encode()
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

            def _wait_for_hangup(self, at_most: float) -> None:
                """Until the client closes the connection (it gave up waiting), `at_most` seconds."""
                select.select([self.connection], [], [], at_most)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/messages"
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

    def hold_next(self) -> Hold:
        """Hold the next request (after any scripted replies) until the test releases it; it is
        delivered when released, whether or not its client is still waiting for the answer."""
        hold = Hold()
        with self._lock:
            self._script.append(Reply(hold=hold))
        return hold

    def reset(self) -> None:
        with self._lock:
            self._script, self.requests = [], []
            self._mode, self._delivered, self._refused = Mode(), {}, {}

    def healthy(self) -> None:
        """Answer 200 again (scripted replies and refused numbers still apply)."""
        self._set_mode(Mode())

    def fail_randomly(self, rate: float, status: int = 503, seed: int = 0) -> None:
        """Answer `status` to a share `rate` of requests, chosen by a generator seeded with `seed`."""
        with self._lock:
            self._random = random.Random(seed)
        self._set_mode(Mode("random", rate=rate, status=status))

    def late(self, at_most: float) -> None:
        """Deliver each message on receipt but answer only once its client has given up waiting
        (or after `at_most` seconds): the client times out on a message that was sent."""
        self._set_mode(Mode("late", delay=at_most))

    def rate_limit(self, retry_after: float, limit: int = 1) -> None:
        """Deliver at most `limit` messages per `retry_after` seconds; answer the others 429 with
        Retry-After: `retry_after`."""
        self._set_mode(Mode("rate_limit", retry_after=retry_after, limit=limit))

    def refuse(self, to: str, status: int = 400) -> None:
        """Answer every message to `to` with `status` (an invalid number, a blocked recipient)."""
        with self._lock:
            self._refused[to] = status

    def _set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode, self._window = mode, (0.0, 0)

    def _answer(self, request: SmsRequest) -> tuple[Reply, bool]:
        """The reply to `request`, and whether it was recorded on receipt (else: after its delay)."""
        with self._lock:
            if self._script:
                return self._script.pop(0), False
            reply = self._mode_reply(request)
            self._record_locked(request, reply)
            return reply, True

    def _mode_reply(self, request: SmsRequest) -> Reply:
        """(Holding the lock.)"""
        if request.idempotency_key in self._delivered:
            request.repeat = True
            return Reply()
        if request.to in self._refused:
            return Reply(status=self._refused[request.to])
        mode = self._mode
        if mode.kind == "random" and self._random.random() < mode.rate:
            return Reply(status=mode.status)
        if mode.kind == "late":
            return Reply(delay=mode.delay, until_hangup=True)
        if mode.kind == "rate_limit":
            started, sent = self._window
            if time.monotonic() - started >= mode.retry_after:
                started, sent = time.monotonic(), 0
            if sent >= mode.limit:
                self._window = (started, sent)
                return Reply(status=429, headers={"Retry-After": f"{mode.retry_after:g}"})
            self._window = (started, sent + 1)
        return Reply()

    def _record_locked(self, request: SmsRequest, reply: Reply) -> None:
        """(Holding the lock.) A key is delivered once: only its first 2xx counts."""
        request.status = reply.status
        if request.repeat:
            request.message_id = self._delivered[request.idempotency_key]
        else:
            request.message_id = f"fake-{len(self.requests) + 1}"
            if reply.status < 300 and request.idempotency_key:
                self._delivered.setdefault(request.idempotency_key, request.message_id)
        if reply.status == 429 and "Retry-After" in reply.headers:
            request.retry_after = float(reply.headers["Retry-After"])
        self.requests.append(request)

    def accepted(self, to: str | None = None) -> list[SmsRequest]:
        with self._lock:
            return [r for r in self.requests if r.status < 300 and (to is None or r.to == to)]

    def received(self, to: str | None = None) -> list[SmsRequest]:
        with self._lock:
            return [r for r in self.requests if to is None or r.to == to]

    def delivered(self, to: str | None = None) -> list[SmsRequest]:
        """Messages actually delivered: accepted, and not the repeat of a key already delivered."""
        return [r for r in self.accepted(to) if not r.repeat]
