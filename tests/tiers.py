"""The test tiers, as a pytest plugin: ``unit`` tests open no socket, ``integration`` tests use real servers.

Each test module says its tier at its top (``pytestmark = pytest.mark.unit``
or ``pytest.mark.integration``); ``slow`` marks the long tests of either.
``pytest -m unit`` then runs the fast, socket-free tier alone, and
``pytest -m "integration and not slow"`` the servers without the long runs.

A module that names no tier counts as ``integration``: it is not known to be
free of sockets. A ``unit`` test that binds or connects a socket (of any
family, in this process) fails, saying where, even when the code under test
caught the error: the promise "no sockets" is checked, not trusted. The
guard covers the test's setup and call, not its teardown, where session
servers that another tier started may stop.
"""

from __future__ import annotations

import contextlib
import socket
import traceback
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

__all__ = ["TIERS", "SocketInUnitTest"]

#: The markers that say a test's tier; a test carries one of them.
TIERS = ("unit", "integration")
_GUARDED = ("bind", "connect", "connect_ex")


class SocketInUnitTest(RuntimeError):
    """A test marked ``unit`` opened a socket. Not an ``OSError``: retry loops must not take it for a network fault."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers = [name for name in TIERS if item.get_closest_marker(name) is not None]
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked both {' and '.join(tiers)}: a test has one tier")
        if not tiers:
            item.add_marker(pytest.mark.integration)


class _Guard:
    """Replaces ``socket.socket``'s bind and connect while a unit test runs, and remembers each attempt."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._saved: dict[str, Callable[..., Any]] = {}

    def __enter__(self) -> _Guard:
        for name in _GUARDED:
            self._saved[name] = getattr(socket.socket, name)
            setattr(socket.socket, name, self._refuse(name))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, method in self._saved.items():
            setattr(socket.socket, name, method)

    def _refuse(self, name: str) -> Callable[..., Any]:
        def refuse(sock: socket.socket, address: object, *args: object) -> Any:
            where = "".join(traceback.format_stack(limit=8)[:-1])
            self.attempts.append(f"socket.{name}({address!r})\n{where}")
            # Closed here: callers close a socket on OSError only (socket.create_connection), and
            # one left open would fail whichever later test the garbage collector finds it in.
            sock.close()
            raise SocketInUnitTest(
                f"a test marked unit called socket.{name}({address!r}); unit tests open no socket:"
                " mark the module pytest.mark.integration, or keep the network out of this test"
            )

        return refuse


@contextlib.contextmanager
def _tier(item: pytest.Item) -> Iterator[None]:
    """Around a phase of ``item``: for a unit test, sockets refused and any attempt made a failure."""
    if item.get_closest_marker("unit") is None:
        yield
        return
    with _Guard() as guard:
        yield
    if guard.attempts:
        # The code under test may have caught the first error: the attempt still fails the test.
        pytest.fail(
            f"{item.nodeid} is marked unit but tried to open a socket {len(guard.attempts)} time(s); the first:\n"
            + guard.attempts[0],
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _tier(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _tier(item):
        return (yield)
