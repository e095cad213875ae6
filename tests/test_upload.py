"""create_chunked_upload end to end, against our server and plain drf-chunked-upload."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine.errors import NO_STATUS, AuthenticationError, ClientConnectionError, ClientError, ValidationError
from engine.retry import RetryPolicy
from engine.uploader import ChunkedUploader
from synapse_sdk.clients.backend import BackendClient
from tests.conftest import ALICE, FakeClock, alice_uploader, make_file
from tests.faults import Fault, Proxy, corrupt

pytestmark = pytest.mark.integration

KIB = 1024


def stored_bytes(server, record: dict) -> bytes:
    """What the server wrote to disk for this upload."""
    path = urlparse(record["file"]).path if "://" in record["file"] else record["file"]
    if server.kind == "drf":
        return (server.directory / "media" / path.removeprefix("/media/")).read_bytes()
    return Path(path).read_bytes()


@pytest.mark.parametrize("size", [1, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 3 * 64 * KIB + 7])
def test_sizes_around_the_chunk_size(client, server, tmp_path: Path, size: int) -> None:
    path, data = make_file(tmp_path, "data.bin", size)
    progress: list[tuple[int, int]] = []
    result = client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda *p: progress.append(p))
    assert stored_bytes(server, result) == data
    assert progress[-1] == (size, size)
    assert [done for done, _ in progress] == sorted({done for done, _ in progress})
    chunks = -(-size // (64 * KIB))
    # One call per chunk in order; where chunks travel several at once, an answer may report two landed.
    assert len(progress) == chunks if server.kind == "drf" else 1 <= len(progress) <= chunks
    if server.kind == "reference":
        assert isinstance(result["id"], int)
        assert result["checksum"] == hashlib.md5(data).hexdigest() and result["size"] == size
    else:
        assert isinstance(result["id"], str) and len(result["id"]) == 36  # a UUID
        assert result["completed_at"]


def test_default_50_mib_chunks(client, server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "big.bin", 120 * 1024 * 1024)
    progress: list[int] = []
    result = client.create_chunked_upload(path, on_progress=lambda done, total: progress.append(done))
    mib = 1024 * 1024
    if server.kind == "drf":
        assert progress == [50 * mib, 100 * mib, 120 * mib]
    else:
        # Chunks travel several at once: the tail may land first, and one answer
        # may report two chunks held. Every report is still a sum of whole chunks.
        assert progress == sorted(set(progress)) and progress[0] == 50 * mib and progress[-1] == 120 * mib
        assert set(progress) <= {50 * mib, 70 * mib, 100 * mib, 120 * mib}
    assert hashlib.md5(stored_bytes(server, result)).digest() == hashlib.md5(data).digest()


def test_empty_file(client, server, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "empty.bin", 0)
    if server.kind == "drf":
        # Plain drf-chunked-upload refuses empty files: a clear error, not a crash.
        with pytest.raises(ValidationError, match=r"refused .*empty\.bin, an empty file") as raised:
            client.create_chunked_upload(path)
        assert raised.value.status_code == 400
    else:
        result = client.create_chunked_upload(path)
        assert result["size"] == 0 and result["checksum"] == hashlib.md5(b"").hexdigest()
        assert stored_bytes(server, result) == b""


def test_many_threads_share_one_client(client, server, tmp_path: Path) -> None:
    files = [make_file(tmp_path, f"f{i}.bin", 100 * KIB + i * 7919) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda f: client.create_chunked_upload(f[0], chunk_size=32 * KIB), files))
    assert len({r["id"] for r in results}) == len(files)
    for (_, data), result in zip(files, results, strict=False):
        assert stored_bytes(server, result) == data


def test_wrong_token_is_401(server, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "data.bin", 10)
    with BackendClient(server.base_url, access_token="wrong") as client, pytest.raises(AuthenticationError) as raised:
        client.create_chunked_upload(path)
    assert raised.value.status_code == 401


def test_legacy_authorization_header(server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 1000)
    with BackendClient(server.base_url, authorization_token=server.user_token) as client:
        assert stored_bytes(server, client.create_chunked_upload(path)) == data


def test_bad_paths_and_arguments(client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="File not found"):
        client.create_chunked_upload(tmp_path / "missing.bin")
    with pytest.raises(IsADirectoryError):
        client.create_chunked_upload(tmp_path)
    path, _ = make_file(tmp_path, "data.bin", 10)
    with pytest.raises(ValueError, match="chunk_size"):
        client.create_chunked_upload(path, chunk_size=0)


def test_unreachable_server_is_a_connection_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path, _ = make_file(tmp_path, "data.bin", 10)
    clock = FakeClock()
    client = BackendClient(f"http://127.0.0.1:{port}", access_token="x")
    retry = RetryPolicy(deadline=120.0, clock=clock.now)
    uploader = ChunkedUploader(client.transport, client.base_url, retry=retry, sleep=clock.sleep)
    with pytest.raises(ClientConnectionError) as raised:
        uploader.upload(path)
    # Retried until two minutes without progress had passed, the last attempt at the deadline.
    assert clock.now() == pytest.approx(120.0) and len(raised.value.retry_history) > 5
    assert raised.value.status_code == NO_STATUS and not raised.value.status_code


def test_resume_from_a_known_upload(client, server, tmp_path: Path) -> None:
    """An upload started elsewhere continues from the server's offset."""
    path, data = make_file(tmp_path, "data.bin", 300 * KIB)
    first = client._put(
        "chunked_upload/",
        data={"filename": "data.bin"},
        files={"file": ("data.bin", data[: 100 * KIB])},
        headers={"Content-Range": f"bytes 0-{100 * KIB - 1}/{len(data)}"},
    )
    sent: list[int] = []
    # One chunk at a time: the first progress is then the first chunk after the server's offset.
    uploader = ChunkedUploader(
        client.transport, client.base_url, headers=client._get_headers, chunk_size=64 * KIB, parallel_chunks=1
    )
    result = uploader.upload(path, lambda done, total: sent.append(done), url=first["url"])
    assert sent[0] == 164 * KIB and sent[-1] == len(data)
    assert stored_bytes(server, result) == data


def test_settings_rebuild_an_equivalent_client_elsewhere(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "ca.pem").write_text("")  # read at the first TLS connection, which this test never makes
    client = BackendClient(
        "https://example.test/api/",
        "token",
        tenant="t",
        agent_token="a",
        timeout={"connect": 1, "read": 2},
        verify=tmp_path / "ca.pem",
        retry=RetryPolicy(attempts=2),
        journal=tmp_path / "journal",
        chunk_digest="xxh3",
    )
    settings = pickle.loads(pickle.dumps(client.settings()))
    twin = BackendClient(**settings)
    assert twin.settings() == client.settings() and twin._get_headers() == client._get_headers()
    assert settings["verify"] == str(tmp_path / "ca.pem") and settings["journal"] == str(tmp_path / "journal")
    assert twin.journal.directory == client.journal.directory and twin.retry.attempts == 2
    # True stays True: a worker's default journal folder is its own.
    assert BackendClient("http://h", journal=True).settings()["journal"] is True


def test_both_twins_upload_identically(reference_server, tmp_path: Path, twin) -> None:
    path, data = make_file(tmp_path, "data.bin", 777 * KIB)
    uploader = alice_uploader(reference_server, chunk_size=100 * KIB, twin=twin)
    result = uploader.upload(path)
    assert result["checksum"] == hashlib.md5(data).hexdigest()


def test_errors_carry_the_upload_and_pickle(client, tmp_path: Path) -> None:
    import pickle

    path, _ = make_file(tmp_path, "data.bin", 10)
    bad = BackendClient(client.base_url, access_token="nope")
    with pytest.raises(ClientError) as raised:
        bad.create_chunked_upload(path)
    again = pickle.loads(pickle.dumps(raised.value))
    assert type(again) is type(raised.value) and again.status_code == 401 and again.offset == 0


def test_progress_callback_runs_on_the_calling_thread(client, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "data.bin", 200 * KIB)
    threads = set()
    client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda *_: threads.add(threading.get_ident()))
    assert threads == {threading.get_ident()}


@pytest.mark.parametrize("chunk_digest", ["md5", "xxh3", "none"])
def test_chunk_digest_modes(server, tmp_path: Path, chunk_digest: str) -> None:
    """Other servers ignore Content-XXH3; the reference server verifies it."""
    path, data = make_file(tmp_path, "data.bin", 5 * 64 * KIB + 3)
    with BackendClient(server.base_url, access_token=server.user_token, chunk_digest=chunk_digest) as client:
        result = client.create_chunked_upload(path, chunk_size=64 * KIB)
    assert stored_bytes(server, result) == data


def test_unknown_chunk_digest_is_refused(server) -> None:
    with pytest.raises(ValueError, match="chunk_digest must be one of md5, xxh3, none"):
        BackendClient(server.base_url, chunk_digest="sha1").create_chunked_upload("README.md")


def test_plain_http_sends_chunks_with_sendfile(reference_server, tmp_path: Path, monkeypatch) -> None:
    """Over plain HTTP the chunk bytes go through os.sendfile, never through user space."""
    import os

    calls: list[int] = []
    real = os.sendfile

    def counting_sendfile(out_fd, in_fd, offset, count):
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    path, data = make_file(tmp_path, "data.bin", 3 * 64 * KIB + 5)
    with BackendClient(reference_server.base_url, access_token=ALICE, journal=False) as client:
        result = client.create_chunked_upload(path, chunk_size=64 * KIB)
    assert Path(result["file"]).read_bytes() == data
    assert sum(calls) == len(data)


def flip_a_byte_of_the_second_chunk() -> Callable[..., Fault | None]:
    """A fault proxy plan: one byte in the middle of the second chunk PUT arrives inverted."""
    puts = itertools.count()

    def plan(index: int, method: str, path: str, headers: Mapping[str, str]) -> Fault | None:
        if method == "PUT" and next(puts) == 1:
            return corrupt(int(headers["content-length"]) // 2)
        return None

    return plan


@pytest.mark.parametrize("chunk_digest", ["md5", "xxh3"])
def test_a_chunk_corrupted_on_the_wire_is_refused_and_sent_again(
    reference_server, tmp_path: Path, chunk_digest: str
) -> None:
    """The server refuses the flipped chunk; the client checks the file did not change and resends it."""
    path, data = make_file(tmp_path, "data.bin", 5 * 64 * KIB + 3)
    with Proxy(reference_server.base_url, flip_a_byte_of_the_second_chunk()) as proxy:
        client = BackendClient(proxy.url, access_token=ALICE, journal=False, chunk_digest=chunk_digest)
        result = client.create_chunked_upload(path, chunk_size=64 * KIB)
    assert Path(result["file"]).read_bytes() == data
    assert proxy.stats.injected == {"corrupt": 1} and proxy.stats.answers[400] == 1


def test_without_chunk_digests_corruption_is_caught_at_finalize(reference_server, tmp_path: Path) -> None:
    """With chunk_digest="none" nothing checks a chunk on arrival, but the whole file's MD5 refuses the result."""
    path, _ = make_file(tmp_path, "data.bin", 5 * 64 * KIB + 3)
    with Proxy(reference_server.base_url, flip_a_byte_of_the_second_chunk()) as proxy:
        client = BackendClient(proxy.url, access_token=ALICE, journal=False, chunk_digest="none")
        with pytest.raises(ClientError, match="checksum") as raised:
            client.create_chunked_upload(path, chunk_size=64 * KIB)
        upload_id = raised.value.url.rstrip("/").split("/")[-1]
        assert client.get_chunked_upload(upload_id)["completed_at"] is None


def test_url_host_rides_on_every_request(server, tmp_path: Path) -> None:
    """``BackendClient(url_host=...)`` is a query parameter of every request, the upload's included."""
    path, data = make_file(tmp_path, "data.bin", 300 * KIB)
    with (
        Proxy(server.base_url) as proxy,
        BackendClient(proxy.url, access_token=server.user_token, url_host="internal", journal=False) as client,
    ):
        result = client.create_chunked_upload(path, chunk_size=64 * KIB)
        client.get_chunked_upload(result["id"])
    assert stored_bytes(server, result) == data
    assert len(proxy.log) == 7 and all(entry.path.endswith("?url_host=internal") for entry in proxy.log)
