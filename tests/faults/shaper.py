"""A network-shaping TCP relay on loopback: one-way delay, a shared rate cap, a per-connection window.

Loopback has no round trips, so it hides what users feel on a real network.
``Shaper(upstream, delay=0.025, rate=250e6)`` listens on ``127.0.0.1`` and
relays every connection to ``upstream`` (another loopback server), byte for
byte, but each direction behaves like a path with:

- **bandwidth**: all the connections of one direction share one link of
  ``rate`` bytes per second (``None``: unlimited), which takes the bytes in
  the order they were sent (it never idles while bytes wait for it);
- **latency**: every byte arrives ``delay`` seconds after it left the link (so
  a request/response exchange costs at least ``2 * delay``, the RTT);
- **a TCP window**: at most ``window`` bytes of one connection are in flight
  (read from the sender, not yet delivered); past that the relay stops
  reading, and the sender's socket fills up as with a real receive window. One
  connection therefore carries at most ``window / delay`` bytes per second, as
  one TCP connection on a long path does; more connections carry more.

It works on bytes, not HTTP: keep-alive, pipelining and TLS pass unchanged.
Delivery waits are real sleeps (this is a tool for benchmarks and for tests
that check behaviour, never timings). It must not talk to anything but
127.0.0.1, and ``stop()`` leaves no thread and no socket behind.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

__all__ = ["Shaper", "ShaperStats"]

LOOPBACK: Final = "127.0.0.1"
#: Bytes read at once; a piece is delivered whole, so this bounds the shaping's granularity.
PIECE: Final = 256 * 1024
#: Linux's default tcp_wmem maximum: what one autotuned connection keeps in flight.
DEFAULT_WINDOW: Final = 4 * 1024 * 1024
ACCEPT_POLL: Final = 0.2


@dataclass(frozen=True)
class ShaperStats:
    connections: int
    bytes_up: int  # client -> upstream
    bytes_down: int  # upstream -> client
    max_in_flight: int  # the most bytes one connection's direction held at once (never above the window)


class _Link:
    """One direction's bottleneck: pieces leave one after another at ``rate`` bytes per second.

    Pieces are booked as they are read, so the link serves them in the order
    they were sent; booking them as they are delivered (after the delay) let
    one connection's piece, sent after a pause, book the link ahead of
    pieces of others already waiting, and the link idled for up to a delay.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._free_at = 0.0
        self._lock = threading.Lock()

    def reserve(self, size: int, ready: float) -> float:
        """When a piece of ``size`` bytes, ready to go at ``ready``, has left the link."""
        if self.rate is None:
            return ready
        with self._lock:
            start = max(self._free_at, ready)
            self._free_at = start + size / self.rate
            return self._free_at


class _Pipe:
    """One direction of one connection: a reader that queues pieces, a writer that delivers them late."""

    def __init__(self, shaper: Shaper, source: socket.socket, sink: socket.socket, link: _Link, name: str) -> None:
        self.shaper, self.source, self.sink, self.link, self.name = shaper, source, sink, link, name
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.in_flight = 0
        self.ended = False  # the source sent EOF (or broke)
        self.broken = False  # the sink cannot take more: stop reading
        self.changed = threading.Condition()

    def read_loop(self) -> None:
        try:
            while True:
                with self.changed:
                    while self.in_flight >= self.shaper.window and not self.broken:
                        self.changed.wait()
                    if self.broken:
                        return
                    room = min(PIECE, self.shaper.window - self.in_flight)
                try:
                    data = self.source.recv(room)
                except OSError:
                    data = b""
                leaves = self.link.reserve(len(data), time.monotonic())
                with self.changed:
                    if not data:
                        return
                    self.queue.append((leaves + self.shaper.delay, data))
                    self.in_flight += len(data)
                    self.shaper.peak(self.in_flight)
                    self.changed.notify_all()
        finally:
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def write_loop(self) -> None:
        try:
            while True:
                with self.changed:
                    while not self.queue and not self.ended:
                        self.changed.wait()
                    if not self.queue:
                        break  # ended and drained
                    arrives, data = self.queue.popleft()
                pause = arrives - time.monotonic()
                if pause > 0 and self.shaper.stopping.wait(pause):
                    break
                try:
                    self.sink.sendall(data)
                except OSError:
                    break
                self.shaper.count(self.name, len(data))
                with self.changed:
                    self.in_flight -= len(data)
                    self.changed.notify_all()
        finally:
            with self.changed:
                self.broken = True
                self.changed.notify_all()
            # Pass the end on: the other side sees EOF once every byte before it arrived.
            _shutdown(self.sink, socket.SHUT_WR)
            _shutdown(self.source, socket.SHUT_RD)


class Shaper:
    """A threaded shaping relay from ``url`` to ``upstream`` (see the module docstring)."""

    def __init__(
        self,
        upstream: str | tuple[str, int],
        *,
        delay: float = 0.025,
        rate: float | None = None,
        window: int = DEFAULT_WINDOW,
        port: int = 0,
    ) -> None:
        if delay < 0 or (rate is not None and rate <= 0) or window < 1:
            raise ValueError(f"delay must be >= 0, rate > 0 or None, window >= 1; not {delay}, {rate}, {window}")
        self.upstream = _parse_upstream(upstream)
        self.delay, self.window, self.port = delay, window, port
        self.up, self.down = _Link(rate), _Link(rate)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._counts = collections.Counter[str]()

    @property
    def url(self) -> str:
        if self.port == 0:
            raise RuntimeError("the shaper has no port yet: call start() first")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def stats(self) -> ShaperStats:
        with self._lock:
            counts = self._counts
            return ShaperStats(counts["connections"], counts["up"], counts["down"], counts["max_in_flight"])

    def count(self, name: str, amount: int) -> None:
        with self._lock:
            self._counts[name] += amount

    def peak(self, in_flight: int) -> None:
        with self._lock:
            self._counts["max_in_flight"] = max(self._counts["max_in_flight"], in_flight)

    def start(self) -> Shaper:
        if self._listener is not None:
            raise RuntimeError("the shaper is already running")
        listener = socket.create_server((LOOPBACK, self.port))
        listener.settimeout(ACCEPT_POLL)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self.stopping.clear()
        self._spawn(self._accept_loop, f"shaper-{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, and join every thread."""
        if self._listener is None:
            return
        self.stopping.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock, socket.SHUT_RDWR)  # wakes readers blocked in recv()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
            if not threads or time.monotonic() > deadline:
                break
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers, self._sockets = list(self._sockets), set()
            alive = [t.name for t in self._threads if t.is_alive()]
            self._threads = set()
        for sock in leftovers:
            sock.close()
        self._listener.close()
        self._listener = None
        if alive:
            raise RuntimeError(f"shaper threads did not stop: {alive}")

    def __enter__(self) -> Shaper:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                client.close()  # the upstream is down: the client sees its connection closed, as a dead path
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, upstream))
            self.count("connections", 1)
            workers = []
            for pipe in (
                _Pipe(self, client, upstream, self.up, "up"),
                _Pipe(self, upstream, client, self.down, "down"),
            ):
                workers.append(self._spawn(pipe.read_loop, f"shaper-{pipe.name}-read"))
                workers.append(self._spawn(pipe.write_loop, f"shaper-{pipe.name}-write"))
            self._spawn(self._reap, "shaper-reap", workers, client, upstream)
            with self._lock:
                self._threads = {t for t in self._threads if t.is_alive()}

    def _reap(self, workers: list[threading.Thread], client: socket.socket, upstream: socket.socket) -> None:
        """Close a connection's sockets once both its directions ended."""
        for worker in workers:
            worker.join()
        with self._lock:
            self._sockets.difference_update((client, upstream))
        client.close()
        upstream.close()


def _parse_upstream(upstream: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(upstream, tuple):
        host, port = upstream
    else:
        rest = upstream.split("://", 1)[-1].split("/", 1)[0]
        host, _, port_text = rest.rpartition(":")
        port = int(port_text)
    if host not in (LOOPBACK, "localhost"):
        raise ValueError(f"the shaper only relays to {LOOPBACK}, not {host!r}")
    return LOOPBACK, int(port)


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)
