"""A request a fake provider keeps unanswered until the test lets it go.

A test that needs "a message in flight" waits for `arrived` instead of guessing the moment
with a delay, and decides itself when the provider answers.
"""

import threading
import time


class Hold:
    """Set `arrived` when the request comes in (`to`: its recipient); answered after `release()`."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.to = ""
        self._arrived_at = 0.0  # monotonic

    def arrive(self, to: str) -> None:
        """(The provider's side.) The request is here and will wait for `released`."""
        self.to, self._arrived_at = to, time.monotonic()
        self.arrived.set()

    def release(self) -> None:
        self.released.set()

    def wait(self, timeout: float, what: str) -> "Hold":
        """Until the request arrives; fail after `timeout` seconds, naming `what` was awaited."""
        if not self.arrived.wait(timeout):
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}")
        return self

    def held_for(self) -> float:
        """Seconds since the request arrived."""
        return time.monotonic() - self._arrived_at
