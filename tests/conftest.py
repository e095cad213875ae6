"""Shared fixtures: both engine twins, and real servers on loopback."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

# The unit / integration tiers and the check that unit tests open no socket; pytester to test that check.
pytest_plugins = ("pytester", "tests.tiers")

# A local Ray binds its services to the machine's address unless told it is no
# cluster (Ray reads this when imported; it ignores ray.init(_node_ip_address=
# "127.0.0.1")). The tests' Ray then stays on loopback, as all their traffic must.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Nothing but this process reaches a loopback Ray: no token, and none written to ~/.ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_of_the_machine():
    """The tests' traffic stays on loopback even where the machine's environment names a proxy."""
    mp = pytest.MonkeyPatch()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        mp.delenv(name, raising=False)
        mp.delenv(name.lower(), raising=False)
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _journal_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    """Resume journals of the tests' uploads never land in the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SYNAPSE_UPLOAD_JOURNAL", str(tmp_path_factory.mktemp("journal")))
    yield
    mp.undo()


@pytest.fixture(params=["native", "pure"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    """Each engine test runs on the compiled module and on its pure-Python twin."""
    if request.param == "native":
        try:
            return importlib.import_module("engine._native")
        except ImportError as error:
            pytest.skip(f"compiled engine not built: {error} (test_native_extension_loaded fails for this)")
    return importlib.import_module("engine._pure")


ALICE = "alice-token"
BOB = "bob-token"


@pytest.fixture(scope="session")
def reference_server(tmp_path_factory: pytest.TempPathFactory):
    """The project's reference server on loopback, with users alice and bob."""
    from synapse_sdk.server import ReferenceServer

    with ReferenceServer(tmp_path_factory.mktemp("reference"), tokens={ALICE: "alice", BOB: "bob"}) as server:
        yield server


@pytest.fixture(scope="session")
def drf_server(tmp_path_factory: pytest.TempPathFactory):
    """A plain drf-chunked-upload server (Django) on loopback, in a subprocess."""
    from tests.drf_fixture import start_drf_server

    directory = tmp_path_factory.mktemp("drf")
    with start_drf_server(directory) as server:
        server.directory = directory
        yield server


@pytest.fixture(params=["reference", "drf"])
def server(request: pytest.FixtureRequest):
    """Each integration test runs against our server and against drf-chunked-upload."""
    if request.param == "drf":
        server = request.getfixturevalue("drf_server")
        server.kind, server.user_token = "drf", server.token
    else:
        server = request.getfixturevalue("reference_server")
        server.kind, server.user_token = "reference", ALICE
    return server


@pytest.fixture
def client(server):
    from synapse_sdk.clients.backend import BackendClient

    with BackendClient(server.base_url, access_token=server.user_token) as client:
        yield client


def alice_uploader(server, **options):
    """An engine ``ChunkedUploader`` for user alice on ``server`` (options: twin, journal, chunk_size...)."""
    from engine.transport import Transport
    from engine.uploader import ChunkedUploader

    return ChunkedUploader(
        Transport(), server.base_url, headers=lambda: {"Synapse-Access-Token": f"Token {ALICE}"}, **options
    )


class FakeClock:
    """A clock that moves only when slept on: retries that wait minutes take no time."""

    def __init__(self) -> None:
        self.time = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += seconds


def make_file(directory, name: str, size: int) -> tuple:
    """A file of random bytes; returns its path and content."""
    import os

    data = os.urandom(size)
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, data
