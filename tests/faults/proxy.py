"""A fault-injecting HTTP/1.1 proxy on loopback, for testing the upload client against broken networks.

``Proxy(upstream, plan)`` listens on ``127.0.0.1`` (any free port unless told
one) and relays every connection to ``upstream``, another loopback server.
It understands HTTP/1.1 just enough to find message boundaries: a head (request
or status line plus headers) followed by ``Content-Length`` bytes or a chunked
body, several messages per keep-alive connection. For every request it asks
``plan(request_index, method, path, headers)`` and either forwards the request
faithfully (bytes unchanged, bodies streamed piece by piece, never held whole)
or injects the fault the plan returns:

- ``cut_request(n, linger=0)``: forward the head and ``n`` body bytes, then
  close both sides: the server sees a torn body, the client a broken
  connection (with ``linger``, the server's side only ``linger`` seconds later);
- ``drop_response()``: forward the request, wait for the server's whole
  answer, then close the client's connection without relaying it: the server
  acted and the client never learns it;
- ``status(code, retry_after=None)``: read and discard the request body, then
  answer ``code`` with a small JSON body itself, without forwarding;
- ``stall(seconds)``: forward the request, read the answer, hold it for
  ``seconds`` (past the client's read timeout), then close (or relay it late);
- ``corrupt(at_byte)``: forward the request with one body byte flipped, as a
  faulty NIC or middlebox would, and relay the answer.

With ``upstream=None`` it is a forward proxy instead, as ``HTTP(S)_PROXY``
names one: a request in absolute form (``GET http://127.0.0.1:8000/x``) goes
to the server it names, and ``CONNECT 127.0.0.1:8443`` opens a tunnel (for
https; tunnelled bytes are relayed as they are, without faults). With
``proxy_auth=(user, password)`` it answers 407 to a request without those
credentials. Both modes log every request (``log``), with its target.

When the upstream cannot be reached (a test killed it) the proxy answers
``502`` like a gateway would; when the upstream connection breaks in the middle
of an exchange, the client's connection is closed. Upstream connections are
made per client connection and never outlive a dead server, so a test may
restart the server on the same port behind a running proxy. The proxy itself
can be stopped and started again on the same port.

It must not talk to anything but 127.0.0.1, and ``stop()`` (or leaving the
``with`` block) leaves no thread and no socket behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "Corrupt",
    "CutRequest",
    "DropResponse",
    "Fault",
    "Plan",
    "Proxy",
    "ProxyStats",
    "RequestLog",
    "Stall",
    "Status",
    "corrupt",
    "cut_request",
    "drop_response",
    "stall",
    "status",
]

LOOPBACK: Final = "127.0.0.1"
# Relay granularity: big enough that per-piece Python work is noise, small
# enough that no request body is ever held whole.
BLOCK: Final = 64 * 1024
MAX_HEAD: Final = 64 * 1024
# How often the accept loop looks at the stop flag.
ACCEPT_POLL: Final = 0.05
# 405: a server (or gateway) that refuses a method, as one without whole-file POSTs does.
INJECTABLE_STATUSES: Final = frozenset({405, 429, 500, 502, 503, 504})


# -- faults -------------------------------------------------------------------


@dataclass(frozen=True)
class CutRequest:
    """Forward the head and ``after_bytes`` of the body, then close both sides.

    With ``linger``, the client's side closes at once and the server's only
    ``linger`` seconds later, as when a client vanishes and the server waits
    for the rest of the body until its own timeout.
    """

    after_bytes: int
    linger: float = 0.0

    @property
    def kind(self) -> str:
        return "cut_request"


@dataclass(frozen=True)
class DropResponse:
    """Forward the request, let the server answer, never relay the answer."""

    @property
    def kind(self) -> str:
        return "drop_response"


@dataclass(frozen=True)
class Status:
    """Answer ``code`` (with ``Retry-After``) without forwarding the request."""

    code: int
    retry_after: float | None = None

    @property
    def kind(self) -> str:
        return f"status_{self.code}"


@dataclass(frozen=True)
class Stall:
    """Forward the request, hold the answer ``seconds``, then close (or relay it late)."""

    seconds: float
    relay: bool = False

    @property
    def kind(self) -> str:
        return "stall"


@dataclass(frozen=True)
class Corrupt:
    """Forward the request with the body byte at ``at_byte`` inverted."""

    at_byte: int

    @property
    def kind(self) -> str:
        return "corrupt"


Fault = CutRequest | DropResponse | Status | Stall | Corrupt
#: ``(request_index, method, path, headers) -> Fault | None``; header names are lower case.
Plan = Callable[[int, str, str, Mapping[str, str]], "Fault | None"]


def cut_request(after_bytes: int, *, linger: float = 0.0) -> CutRequest:
    if after_bytes < 0 or linger < 0:
        raise ValueError(f"after_bytes and linger must not be negative, not {after_bytes} and {linger}")
    return CutRequest(after_bytes, linger)


def drop_response() -> DropResponse:
    return DropResponse()


def status(code: int, retry_after: float | None = None) -> Status:
    if code not in INJECTABLE_STATUSES:
        raise ValueError(f"status faults are {sorted(INJECTABLE_STATUSES)}, not {code}")
    return Status(code, retry_after)


def stall(seconds: float, *, relay: bool = False) -> Stall:
    if seconds < 0:
        raise ValueError(f"a stall cannot last {seconds} seconds")
    return Stall(seconds, relay)


def corrupt(at_byte: int) -> Corrupt:
    if at_byte < 0:
        raise ValueError(f"at_byte must not be negative, not {at_byte}")
    return Corrupt(at_byte)


# -- bookkeeping --------------------------------------------------------------


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy did so far.

    ``forwarded`` counts requests whose head and whole body reached the
    upstream (dropped and stalled ones included: the server got them);
    ``body_bytes`` counts request body bytes sent upstream, torn ones included.
    """

    requests: int = 0
    forwarded: int = 0
    body_bytes: int = 0
    relayed: int = 0
    response_bytes: int = 0
    upstream_errors: int = 0
    injected: Mapping[str, int] = field(default_factory=dict)
    #: The upstream's answers by status code, relayed or not.
    answers: Mapping[int, int] = field(default_factory=dict)

    @property
    def faults(self) -> int:
        return sum(self.injected.values())


@dataclass(frozen=True)
class RequestLog:
    """One request as the proxy saw it, for failure messages."""

    index: int
    method: str
    path: str
    fault: str | None
    outcome: str = ""


class _Torn(Exception):
    """A peer closed the connection in the middle of an HTTP message."""


class _Malformed(Exception):
    """Bytes that are not the HTTP/1.1 this proxy understands."""


class _UpstreamBroke(Exception):
    """The upstream connection failed in the middle of an exchange."""


# -- HTTP/1.1 framing ---------------------------------------------------------


class _Reader:
    """Buffered reads from one socket: heads, lines, and bounded body pieces."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(BLOCK)
        if not data:
            return False
        self.buffer += data
        return True

    def head(self) -> bytes | None:
        """The next head with its blank line, or None at a clean end of the connection."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[: end + 4])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > MAX_HEAD:
                raise _Malformed(f"head over {MAX_HEAD} bytes")
            if not self._fill():
                if self.buffer:
                    raise _Torn("connection closed inside a head")
                return None

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > MAX_HEAD:
                raise _Malformed("line too long")
            if not self._fill():
                raise _Torn("connection closed inside a line")

    def some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes (at least one)."""
        if not self.buffer and not self._fill():
            raise _Torn("connection closed inside a body")
        piece = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return piece

    def idle(self) -> bool:
        """Nothing buffered and nothing waiting: a pooled connection that is still good."""
        if self.buffer:
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        # Readable while idle means EOF (or junk): either way, not reusable.
        return not poller.poll(0)


@dataclass(frozen=True)
class _Head:
    raw: bytes
    start: list[str]
    headers: dict[str, str]

    @property
    def close(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.start[-1] == "HTTP/1.0" or self.start[0] == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens


def _parse_head(raw: bytes) -> _Head:
    # HTTP heads are bytes; latin-1 maps each to one character, so nothing is lost or refused.
    lines = raw.decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    if len(start) < 2:
        raise _Malformed(f"bad start line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _Malformed(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return _Head(raw, start, headers)


def _framing(head: _Head, *, response_to: str | None = None) -> tuple[str, int]:
    """How the body after ``head`` ends: ("length", n), ("chunked", 0), ("close", 0) or ("none", 0)."""
    if response_to is not None:
        code = int(head.start[1])
        if response_to == "HEAD" or code < 200 or code in (204, 304):
            return ("none", 0)
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        return ("chunked", 0)
    if "content-length" in head.headers:
        try:
            length = int(head.headers["content-length"])
        except ValueError:
            raise _Malformed("bad Content-Length") from None
        if length < 0:
            raise _Malformed("negative Content-Length")
        return ("length", length)
    # A request without length has no body; a response without one runs to EOF.
    return ("none", 0) if response_to is None else ("close", 0)


def _body(reader: _Reader, framing: tuple[str, int]) -> Iterator[bytes]:
    """The raw bytes of one body, framing included, piece by piece."""
    kind, length = framing
    if kind == "length":
        while length > 0:
            piece = reader.some(min(length, BLOCK))
            length -= len(piece)
            yield piece
    elif kind == "chunked":
        while True:
            line = reader.line()
            yield line
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Malformed(f"bad chunk size line {line!r}") from None
            if size == 0:
                break
            size += 2  # the CRLF after the chunk's data
            while size > 0:
                piece = reader.some(min(size, BLOCK))
                size -= len(piece)
                yield piece
        while True:  # trailers, up to the blank line
            line = reader.line()
            yield line
            if line == b"\r\n":
                break
    elif kind == "close":
        while True:
            try:
                piece = reader.some(BLOCK)
            except _Torn:
                return
            yield piece


def _answer(
    code: int, detail: str, *, retry_after: float | None = None, close: bool = False, challenge: bool = False
) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    lines = [
        f"HTTP/1.1 {code} {HTTPStatus(code).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if retry_after is not None:
        lines.append(f"Retry-After: {retry_after:g}")
    if challenge:
        lines.append('Proxy-Authenticate: Basic realm="fault proxy"')
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_upstream(upstream: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(upstream, str):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.port is None:
            raise ValueError(f"upstream must be http://127.0.0.1:PORT, not {upstream!r}")
        host, port = parts.hostname or "", parts.port
    else:
        host, port = upstream
    if host not in (LOOPBACK, "localhost"):
        # Test tooling only: it must never relay to anything off this machine.
        raise ValueError(f"the fault proxy only relays to {LOOPBACK}, not {host!r}")
    return LOOPBACK, int(port)


# -- the proxy ----------------------------------------------------------------


def _loopback_target(authority: str) -> tuple[str, int]:
    """``host:port`` of a forward-proxy request, which must be on this machine."""
    host, _, port = authority.rpartition(":")
    if not port.isdigit():
        raise _Malformed(f"no port in {authority!r}")
    return _parse_upstream((host.strip("[]"), int(port)))


def _origin_form(head: _Head) -> tuple[bytes, tuple[str, int]]:
    """An absolute-form request head rewritten for the origin server, and that server's address."""
    method, target, version = (*head.start, "HTTP/1.1")[:3]
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.netloc:
        raise _Malformed(f"a forward proxy needs an absolute http URL, not {target!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = head.raw.decode("latin-1").split("\r\n")
    kept = [line for line in lines[1:] if not line.lower().startswith(("proxy-authorization:", "proxy-connection:"))]
    raw = "\r\n".join([f"{method} {path} {version}", *kept]).encode("latin-1")
    return raw, _loopback_target(parts.netloc if parts.port else f"{parts.netloc}:80")


@dataclass
class _Link:
    """One client connection and the upstream connection that currently serves it."""

    client: _Reader
    upstream: _Reader | None = None
    #: Where ``upstream`` leads (a forward proxy's requests may name different servers).
    target: tuple[str, int] | None = None


class Proxy:
    """A threaded fault-injecting proxy from ``url`` to ``upstream`` (see the module docstring).

    ``plan`` may be replaced between requests (``proxy.plan = ...``).
    ``connect_timeout``/``io_timeout`` bound every upstream operation and
    ``idle_timeout`` how long a client connection may sit between requests,
    so no proxy thread can block forever.
    """

    def __init__(
        self,
        upstream: str | tuple[str, int] | None,
        plan: Plan | None = None,
        *,
        port: int = 0,
        connect_timeout: float = 2.0,
        io_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        log_size: int = 200,
        proxy_auth: tuple[str, str] | None = None,
    ) -> None:
        self.upstream = None if upstream is None else _parse_upstream(upstream)
        self.plan = plan
        self._credentials = (
            None if proxy_auth is None else "Basic " + base64.b64encode(":".join(proxy_auth).encode()).decode()
        )
        self.port = port
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.idle_timeout = idle_timeout
        self._log_size = log_size
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._index = 0
        self._counts: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._answers: Counter[int] = Counter()
        self._log: list[RequestLog] = []

    # -- life cycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy (known once started): the upstream's stand-in, or HTTP(S)_PROXY."""
        if self.port == 0:
            raise RuntimeError("the proxy has no port yet: call start() first")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Proxy:
        if self._listener is not None:
            raise RuntimeError("the proxy is already running")
        # create_server sets SO_REUSEADDR, so a restart rebinds the same port
        # even with the last run's connections in TIME_WAIT.
        listener = socket.create_server((LOOPBACK, self.port))
        listener.settimeout(ACCEPT_POLL)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, and join every thread."""
        if self._listener is None:
            return
        self._stopping.set()
        assert self._acceptor is not None
        self._acceptor.join(timeout)
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            # Wakes a handler blocked in recv(); the handler closes its own sockets.
            _shutdown(sock)
        for thread in threads:
            thread.join(timeout)
        with self._lock:
            leftovers, self._sockets = list(self._sockets), set()
        for sock in leftovers:
            sock.close()  # a handler that did not stop in time must not leak its sockets
        self._listener.close()
        alive = [t.name for t in [self._acceptor, *threads] if t.is_alive()]
        self._listener = self._acceptor = None
        if alive:
            raise RuntimeError(f"fault proxy threads did not stop: {alive}")

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what happened

    @property
    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                requests=self._index,
                forwarded=self._counts["forwarded"],
                body_bytes=self._counts["body_bytes"],
                relayed=self._counts["relayed"],
                response_bytes=self._counts["response_bytes"],
                upstream_errors=self._counts["upstream_errors"],
                injected=dict(self._injected),
                answers=dict(self._answers),
            )

    @property
    def log(self) -> list[RequestLog]:
        """The last requests seen (at most ``log_size``), oldest first."""
        with self._lock:
            return list(self._log)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _count_fault(self, fault: Fault) -> None:
        with self._lock:
            self._injected[fault.kind] += 1

    def _note(self, entry: RequestLog) -> None:
        with self._lock:
            self._log.append(entry)
            del self._log[: -self._log_size]

    # -- threads

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), name="fault-proxy-conn", daemon=True)
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    return
                self._sockets.add(client)
                self._threads.add(thread)
            thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        if self._stopping.is_set():
            _shutdown(sock)
        return sock

    def _close(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        _shutdown(sock)
        sock.close()

    def _serve(self, client: socket.socket) -> None:
        link = _Link(_Reader(client))
        try:
            client.settimeout(self.idle_timeout)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self._stopping.is_set() and self._exchange(link):
                pass
        except (OSError, _Torn, _Malformed):
            pass  # the client went away or spoke nonsense: drop the connection
        finally:
            self._close(link.upstream.sock if link.upstream is not None else None)
            self._close(client)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _exchange(self, link: _Link) -> bool:
        """Relay (or break) one request; returns whether to keep the client's connection."""
        client, upstream = link.client, link.upstream
        raw = client.head()
        if raw is None:
            return False
        client.sock.settimeout(self.io_timeout)
        head = _parse_head(raw)
        method, path = head.start[0], head.start[1]
        framing = _framing(head)
        with self._lock:
            index = self._index
            self._index += 1
        target = self.upstream
        if self.upstream is None:  # a forward proxy
            if self._credentials is not None and head.headers.get("proxy-authorization") != self._credentials:
                for _ in _body(client, framing):
                    pass
                client.sock.sendall(_answer(407, "proxy credentials required", close=True, challenge=True))
                self._note(RequestLog(index, method, path, None, "answered 407"))
                return False
            if method == "CONNECT":
                self._tunnel(link, _loopback_target(path))
                self._note(RequestLog(index, method, path, None, "tunnelled"))
                return False
            raw, target = _origin_form(head)
        plan = self.plan
        fault = plan(index, method, path, dict(head.headers)) if plan is not None else None

        def note(outcome: str) -> None:
            self._note(RequestLog(index, method, path, fault.kind if fault is not None else None, outcome))

        if isinstance(fault, Status):
            self._count_fault(fault)
            # Read the body first: a client still sending would see a reset, not the answer.
            for _ in _body(client, framing):
                pass
            client.sock.sendall(
                _answer(
                    fault.code,
                    f"injected {fault.code} by the fault proxy",
                    retry_after=fault.retry_after,
                    close=head.close,
                )
            )
            note(f"answered {fault.code}")
            client.sock.settimeout(self.idle_timeout)
            return not head.close

        if upstream is not None and (link.target != target or not upstream.idle()):
            self._close(upstream.sock)
            upstream = link.upstream = None
        if upstream is None:
            try:
                sock = socket.create_connection(target, timeout=self.connect_timeout)
            except OSError as error:
                self._count("upstream_errors")
                for _ in _body(client, framing):
                    pass
                client.sock.sendall(_answer(502, f"fault proxy: upstream unreachable: {error}", close=head.close))
                note("502 upstream unreachable")
                client.sock.settimeout(self.idle_timeout)
                return not head.close
            # Kept on the link at once, so that whatever fails next, _serve closes it.
            upstream = link.upstream = _Reader(self._track(sock))
            link.target = target
            sock.settimeout(self.io_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if fault is not None:
            # Counted once it can take effect: with the upstream down, the answer was a 502 instead.
            self._count_fault(fault)

        try:
            self._send_upstream(upstream, raw)
            sent = 0
            limit = fault.after_bytes if isinstance(fault, CutRequest) else None
            for piece in _body(client, framing):
                if isinstance(fault, Corrupt) and sent <= fault.at_byte < sent + len(piece):
                    flipped = bytearray(piece)
                    flipped[fault.at_byte - sent] ^= 0xFF
                    piece = bytes(flipped)
                if limit is not None and sent + len(piece) >= limit:
                    self._send_upstream(upstream, piece[: limit - sent])
                    self._count("body_bytes", limit - sent)
                    sent = limit
                    break
                self._send_upstream(upstream, piece)
                self._count("body_bytes", len(piece))
                sent += len(piece)
            if isinstance(fault, CutRequest):
                # Torn on both sides: the caller closes the client and the upstream.
                note(f"cut after {sent} body bytes")
                if fault.linger:
                    self._close(client.sock)
                    self._stopping.wait(fault.linger)
                return False
            self._count("forwarded")
            answer, answer_framing = self._upstream_head(upstream, method)
            with self._lock:
                self._answers[int(answer.start[1])] += 1
            if isinstance(fault, DropResponse) or (isinstance(fault, Stall) and not fault.relay):
                # Read the whole answer so the server has finished acting on the request.
                self._drain_upstream(upstream, answer_framing)
                # Noted before a stall, so the log reads in the order things happened.
                note(f"server answered {answer.start[1]}, not relayed")
                if isinstance(fault, Stall):
                    self._stopping.wait(fault.seconds)
                return False
            if isinstance(fault, Stall):
                note(f"server answered {answer.start[1]}, relayed after {fault.seconds:g} s")
                self._stopping.wait(fault.seconds)
            client.sock.sendall(answer.raw)
            size = len(answer.raw)
            for piece in self._upstream_body(upstream, answer_framing):
                client.sock.sendall(piece)
                size += len(piece)
            self._count("relayed")
            self._count("response_bytes", size)
            if not isinstance(fault, Stall):
                note(f"relayed {answer.start[1]}")
        except _UpstreamBroke:
            self._count("upstream_errors")
            note("upstream broke")
            return False
        client.sock.settimeout(self.idle_timeout)
        keep = not (head.close or answer.close or answer_framing[0] == "close")
        return keep

    def _tunnel(self, link: _Link, target: tuple[str, int]) -> None:
        """Answer a CONNECT and relay bytes both ways until either side closes."""
        try:
            upstream = self._track(socket.create_connection(target, timeout=self.connect_timeout))
        except OSError as error:
            link.client.sock.sendall(_answer(502, f"fault proxy: cannot reach {target}: {error}", close=True))
            return
        link.upstream, link.target = _Reader(upstream), target
        link.client.sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pending = bytes(link.client.buffer)  # bytes the client sent right behind its CONNECT
        link.client.buffer.clear()
        if pending:
            upstream.sendall(pending)
        peers = {link.client.sock: upstream, upstream: link.client.sock}
        while not self._stopping.is_set():
            readable, _, _ = select.select(list(peers), [], [], self.io_timeout)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(BLOCK)
                if not data:
                    return
                peers[sock].sendall(data)

    # Upstream operations raise _UpstreamBroke so that a dead server is told
    # apart from a client that went away.

    def _send_upstream(self, upstream: _Reader, data: bytes) -> None:
        try:
            upstream.sock.sendall(data)
        except OSError as error:
            raise _UpstreamBroke(str(error)) from None

    def _upstream_head(self, upstream: _Reader, method: str) -> tuple[_Head, tuple[str, int]]:
        try:
            while True:
                raw = upstream.head()
                if raw is None:
                    raise _UpstreamBroke("upstream closed the connection before answering")
                head = _parse_head(raw)
                code = int(head.start[1])
                if code >= 200 or code == 101:
                    return head, _framing(head, response_to=method)
                # An interim 1xx answer: the real one follows.
        except (OSError, _Torn, _Malformed, ValueError, IndexError) as error:
            raise _UpstreamBroke(str(error)) from None

    def _upstream_body(self, upstream: _Reader, framing: tuple[str, int]) -> Iterator[bytes]:
        pieces = _body(upstream, framing)
        while True:
            try:
                piece = next(pieces)
            except StopIteration:
                return
            except (OSError, _Torn, _Malformed) as error:
                raise _UpstreamBroke(str(error)) from None
            yield piece

    def _drain_upstream(self, upstream: _Reader, framing: tuple[str, int]) -> None:
        for _ in self._upstream_body(upstream, framing):
            pass


def _shutdown(sock: socket.socket) -> None:
    # Not connected, or already shut: nothing to wake.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
