"""A loopback TCP proxy that can add network delay or take a server away.

`TcpProxy` forwards one port of 127.0.0.1 to another. With a ``delay`` it
holds every chunk it reads for that long before passing it on, in each
direction, so a client on the loopback sees the round trips of a real
network. Switched off, it closes the connections it carries and answers new
ones by closing them, as a crashed server's host would; on again, it forwards
as before.

It runs in threads of its own rather than on the caller's event loop: a
benchmark's loop then spends nothing on forwarding, and the delay is kept
with ``time.sleep``'s precision (tens of microseconds on Linux) instead of an
event loop's timer, which the selector rounds up to whole milliseconds.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

from ._lifecycle import StartStop
from ._process import find_free_port

__all__ = ["TcpProxy"]

_CHUNK = 65536
# A connection's bytes held for delay, per direction, before its reader
# waits: a slow receiver cannot make the proxy buffer without bound.
_MAX_HELD = 16 * 1024 * 1024
_ACCEPT_POLL = 0.1
_CONNECT_TIMEOUT = 5.0


class _DelayedPipe:
    """One direction of one connection: ``source`` to ``sink``, ``delay``
    seconds late.

    A reader thread stamps each chunk with the time it is due and queues it;
    a writer thread sends it then. Reading never waits for writing, so a
    delay adds latency without lowering throughput, as a long network path
    does. The end of the source is passed on as a half close.
    """

    def __init__(
        self, source: socket.socket, sink: socket.socket, delay: float
    ) -> None:
        self._source = source
        self._sink = sink
        self._delay = delay
        self._held: collections.deque[tuple[float, bytes]] = collections.deque()
        self._held_bytes = 0
        self._ended = False
        self._changed = threading.Condition()
        self.threads = [
            threading.Thread(target=self._read, daemon=True, name="tcp-proxy-read"),
            threading.Thread(target=self._write, daemon=True, name="tcp-proxy-write"),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        try:
            while data := self._source.recv(_CHUNK):
                due = time.monotonic() + self._delay
                with self._changed:
                    while self._held_bytes > _MAX_HELD and not self._ended:
                        self._changed.wait()
                    if self._ended:
                        return
                    self._held.append((due, data))
                    self._held_bytes += len(data)
                    self._changed.notify_all()
        except OSError:
            pass
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _write(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._held and not self._ended:
                        self._changed.wait()
                    if not self._held:
                        break
                    due, data = self._held.popleft()
                    self._held_bytes -= len(data)
                    self._changed.notify_all()
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._sink.sendall(data)
            self._sink.shutdown(socket.SHUT_WR)
        except OSError:
            # The other end went away: stop reading too.
            with contextlib.suppress(OSError):
                self._source.shutdown(socket.SHUT_RDWR)
            with self._changed:
                self._ended = True
                self._held.clear()
                self._changed.notify_all()


class TcpProxy(StartStop):
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``.

    Use as a context manager (``with`` or ``async with``), or call `start`
    and `stop`.

    Parameters
    ----------
    target_port
        Where connections go.
    delay
        Seconds each chunk of data is held, in each direction: a request and
        its answer take at least ``2 * delay`` longer than without the proxy
        (a one-way delay of 1 ms is a 2 ms round trip).
    port
        Port to listen on; 0 picks a free one at `start`, kept by later
        starts.
    """

    def __init__(self, target_port: int, *, delay: float = 0.0, port: int = 0) -> None:
        if delay < 0:
            raise ValueError(f"delay must be 0 or more seconds, got {delay}")
        self.target_port = target_port
        self.delay = delay
        self.port = port
        self.enabled = True
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # Sockets of the connections carried now, and their threads.
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, e.g. for ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        """Whether it listens."""
        return self._listener is not None

    def start(self) -> None:
        """Listen and forward; no-op if already listening.

        Raises
        ------
        OSError
            If the port cannot be bound.
        """
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # A port kept from an earlier start may still have connections
            # in TIME_WAIT.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(_ACCEPT_POLL)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._accepting = threading.Thread(
            target=self._accept, args=(listener,), daemon=True, name="tcp-proxy"
        )
        self._accepting.start()

    def stop(self) -> None:
        """Close every connection and stop listening. Idempotent."""
        listener, accepting = self._listener, self._accepting
        if listener is None or accepting is None:
            return
        self._stopping.set()
        accepting.join()
        listener.close()
        self._listener = self._accepting = None
        self._close_connections()
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)

    def switch_off(self) -> None:
        """Close every carried connection and refuse new ones."""
        self.enabled = False
        self._close_connections()

    def switch_on(self) -> None:
        """Forward new connections again."""
        self.enabled = True

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------

    def _close_connections(self) -> None:
        with self._lock:
            carried = list(self._sockets)
        for sock in carried:
            # shutdown() wakes a thread blocked in recv(); close() alone
            # does not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.enabled:
                client.close()
                continue
            threading.Thread(
                target=self._carry, args=(client,), daemon=True, name="tcp-proxy-conn"
            ).start()

    def _carry(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(
                ("127.0.0.1", self.target_port), timeout=_CONNECT_TIMEOUT
            )
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            # Small writes (a Kafka request) must not wait for more.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipes = [
            _DelayedPipe(client, upstream, self.delay),
            _DelayedPipe(upstream, client, self.delay),
        ]
        threads = [thread for pipe in pipes for thread in pipe.threads]
        with self._lock:
            if not self.enabled or self._stopping.is_set():
                client.close()
                upstream.close()
                return
            self._sockets.update((client, upstream))
            self._threads = [t for t in self._threads if t.is_alive()] + threads
        for pipe in pipes:
            pipe.start()
        for thread in threads:
            thread.join()
        with self._lock:
            self._sockets.difference_update((client, upstream))
        client.close()
        upstream.close()


class DelayedFront:
    """A delaying `TcpProxy` in front of a broker's listener.

    The broker advertises the proxy's address in its place, so every
    connection a client opens (not only the bootstrap) crosses the proxy
    and pays ``delay`` each way. With ``delay`` 0 there is no proxy.

    Raises
    ------
    ValueError
        If ``delay`` is negative.
    """

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"network_delay must be 0 or more seconds, got {delay}")
        self.delay = delay
        self.port = 0
        self._proxy: TcpProxy | None = None

    @property
    def address(self) -> str | None:
        """``127.0.0.1:<port>`` of the proxy; None without a delay or a port."""
        return f"127.0.0.1:{self.port}" if self.delay and self.port else None

    def choose_port(self, port: int = 0) -> None:
        """Pick the proxy's port (``port``, or a free one) before the broker
        starts; a proxy left from an attempt that failed is stopped."""
        self.stop()
        self.port = (port or find_free_port()) if self.delay else 0

    def start(self, target_port: int) -> None:
        """Forward the chosen port to ``target_port``; no-op without a delay
        or when already forwarding."""
        if self.delay and self._proxy is None:
            self._proxy = TcpProxy(target_port, delay=self.delay, port=self.port)
            self._proxy.start()

    def stop(self) -> None:
        """Stop forwarding. Idempotent."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
