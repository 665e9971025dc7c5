"""A TCP proxy that can cut a server off from its clients: the database outages of
tests/reliability/test_database_outage.py; and break connections on the clients' side only, as a
network failing between them does (tests/integration/test_remote_control_reconnect.py)."""

import select
import socket
import threading
from contextlib import contextmanager

from tests.fakes.smtp_server import free_port


class TcpProxy:
    """A TCP proxy in front of a server (PostgreSQL, Redis). Inside `with proxy.outage():` every
    connection through it is closed and new ones are closed once accepted (`refuse=True`: not
    accepted at all, as by a stopped server): to the processes behind it, the server is down,
    while it keeps its data."""

    def __init__(self, host: str, port: int, listen: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.listen, self.port = listen, free_port(listen)
        self._down = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stale: list[socket.socket] = []  # the server's side of connections dropped by drop_clients()
        self._lock = threading.Lock()
        self._listen()

    def _listen(self) -> None:
        self._listener = socket.create_server((self.listen, self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (b if source is a else a).sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    @contextmanager
    def outage(self, refuse: bool = False):
        self._down.set()
        if refuse:  # shut down first: it wakes the thread waiting in accept(), which frees the port
            self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        self._close_connections()
        for sock in self._stale:
            sock.close()
        try:
            yield
        finally:
            if refuse:
                self._listen()
            self._down.clear()

    def drop_clients(self) -> None:
        """Close every connection on its client's side and keep it open on the server's, as a
        network failing between them does: the clients see their connections end and reconnect,
        while the server holds the old sessions (and what they own) until its own timeout."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            self._stale.append(upstream.dup())  # the pump closes its own descriptor, not the connection
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_connections(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening and close every connection through it: a session left open (a host cut
        off mid-transaction) would keep its locks and block the test database's flush."""
        self._listener.close()
        self._close_connections()
        for sock in self._stale:
            sock.close()
