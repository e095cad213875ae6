"""Resuming across runs: interrupted, killed, changed files, expired uploads.

These pin the sequential protocol, chunk by chunk, as against plain
drf-chunked-upload: the reference server here takes no chunk out of order.
Resuming uploads whose chunks travelled several at once is in
tests/test_parallel_chunks.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from engine.errors import GoneError
from engine.journal import Journal
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.server import ReferenceServer
from tests.conftest import ALICE, alice_uploader, make_file

pytestmark = pytest.mark.integration

KIB = 1024
REPO = Path(__file__).resolve().parent.parent


class Interrupted(Exception):
    """Stands for Ctrl-C, a crash, a lost laptop lid."""


def interrupt_after(chunks: int):
    seen = []

    def on_progress(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == chunks:
            raise Interrupted(done)

    return on_progress


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory):
    """The reference server, one chunk at a time (no ``Synapse-Parallel-Chunks``)."""
    with ReferenceServer(tmp_path_factory.mktemp("sequential"), tokens={ALICE: "alice"}, parallel_chunks=1) as server:
        yield server


@pytest.fixture
def alice(reference_server, tmp_path: Path):
    with BackendClient(reference_server.base_url, access_token=ALICE, journal=tmp_path / "journal") as client:
        yield client


def stored(record: dict) -> bytes:
    return Path(record["file"]).read_bytes()


def test_interrupted_upload_resumes_where_the_server_stopped(alice, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 10 * 64 * KIB + 3)
    with pytest.raises(Interrupted):
        alice.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=interrupt_after(7))
    progress: list[int] = []
    result = alice.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda d, t: progress.append(d))
    assert progress[0] == 7 * 64 * KIB  # picked up at the server's offset, not at zero
    assert progress[-1] == len(data) and progress == sorted(progress)
    assert stored(result) == data and result["checksum"] == hashlib.md5(data).hexdigest()
    assert list((tmp_path / "journal").glob("*.json")) == []  # removed after the verified finalize


def test_resume_with_either_twin(reference_server, tmp_path: Path, twin) -> None:
    """A journal written by the native engine resumes under the pure one too (it re-hashes the prefix)."""
    path, data = make_file(tmp_path, "data.bin", 500 * KIB)
    journal = Journal(tmp_path / "journal")
    first = BackendClient(reference_server.base_url, access_token=ALICE, journal=journal.directory)
    with pytest.raises(Interrupted):
        first.create_chunked_upload(path, chunk_size=100 * KIB, on_progress=interrupt_after(3))
    uploader = alice_uploader(reference_server, chunk_size=100 * KIB, twin=twin, journal=journal)
    progress: list[int] = []
    result = uploader.upload(path, lambda d, t: progress.append(d))
    assert progress[0] == 300 * KIB and stored(result) == data


def test_a_changed_file_starts_afresh_and_says_so(alice, tmp_path: Path, caplog) -> None:
    path, _ = make_file(tmp_path, "data.bin", 300 * KIB)
    with pytest.raises(Interrupted):
        alice.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=interrupt_after(2))
    data = os.urandom(300 * KIB)
    path.write_bytes(data)
    progress: list[int] = []
    result = alice.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda d, t: progress.append(d))
    assert progress[0] == 64 * KIB and stored(result) == data
    assert "changed since its upload" in caplog.text and "starting a fresh upload" in caplog.text


@pytest.mark.parametrize("chunk_digest", ["md5", "xxh3", "none"])
def test_same_size_and_mtime_but_other_bytes_is_caught_by_xxh3(
    reference_server, tmp_path: Path, caplog, chunk_digest
) -> None:
    """The journal holds each chunk's xxh3 whichever digest the chunks carried (the hasher's or the sender's)."""
    path, data = make_file(tmp_path, "data.bin", 300 * KIB)
    alice = BackendClient(
        reference_server.base_url, access_token=ALICE, journal=tmp_path / "journal", chunk_digest=chunk_digest
    )
    with pytest.raises(Interrupted):
        alice.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=interrupt_after(3))
    before = path.stat()
    changed = bytearray(data)
    changed[70 * KIB] ^= 0xFF  # inside the second chunk, which the server already holds
    with open(path, "r+b") as f:
        f.write(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = alice.create_chunked_upload(path, chunk_size=64 * KIB)
    assert stored(result) == bytes(changed)
    assert f"bytes {64 * KIB}-{128 * KIB} changed" in caplog.text


def test_journal_can_be_turned_off(reference_server, tmp_path: Path) -> None:
    path, _data = make_file(tmp_path, "data.bin", 300 * KIB)
    client = BackendClient(reference_server.base_url, access_token=ALICE, journal=False)
    with pytest.raises(Interrupted):
        client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=interrupt_after(3))
    progress: list[int] = []
    client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda d, t: progress.append(d))
    assert progress[0] == 64 * KIB


def test_an_expired_upload_is_restarted_once_then_reported(tmp_path: Path, caplog) -> None:
    path, _ = make_file(tmp_path, "data.bin", 300 * KIB)
    # Uploads expire as soon as they are created: every second chunk answers 410.
    with ReferenceServer(tmp_path / "srv", tokens={ALICE: "alice"}, expire_after=timedelta(0)) as server:
        client = BackendClient(server.base_url, access_token=ALICE, journal=tmp_path / "journal")
        with pytest.raises(GoneError) as raised:
            client.create_chunked_upload(path, chunk_size=64 * KIB)
    assert raised.value.status_code == 410 and raised.value.url.endswith("/chunked_upload/2/")
    assert caplog.text.count("the server expired the upload (410); starting a fresh upload") == 1


KILL_AFTER = """
import os, signal, sys
from synapse_sdk.clients.backend import BackendClient
done = []
def progress(offset, total):
    done.append(offset)
    if len(done) == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)
client = BackendClient(sys.argv[1], access_token=sys.argv[2], journal=sys.argv[5])
client.create_chunked_upload(sys.argv[3], chunk_size=64 * 1024, on_progress=progress)
"""


def test_client_killed_mid_upload_sends_only_the_missing_bytes(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 20 * 64 * KIB + 11)
    journal = tmp_path / "journal"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER, reference_server.base_url, ALICE, str(path), "13", str(journal)],
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    before = reference_server.stats()["bytes_received"] if hasattr(reference_server, "stats") else None
    client = BackendClient(reference_server.base_url, access_token=ALICE, journal=journal)
    progress: list[int] = []
    result = client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda d, t: progress.append(d))
    assert stored(result) == data
    assert progress[0] == 13 * 64 * KIB
    if before is not None:
        assert reference_server.stats()["bytes_received"] - before == len(data) - 13 * 64 * KIB


def test_the_url_told_to_on_url_resumes_elsewhere_without_a_journal(reference_server, tmp_path: Path) -> None:
    """How a Ray worker's file continues on another worker: by the URL the first one reported."""
    path, data = make_file(tmp_path, "data.bin", 10 * 64 * KIB + 5)
    urls: list[str] = []
    with pytest.raises(Interrupted):
        alice_uploader(reference_server, chunk_size=64 * KIB).upload(path, interrupt_after(4), on_url=urls.append)
    assert len(urls) == 1 and "/chunked_upload/" in urls[0]
    before = reference_server.stats()["bytes_received"]
    progress: list[int] = []
    again: list[str] = []
    result = alice_uploader(reference_server, chunk_size=64 * KIB).upload(
        path, lambda d, t: progress.append(d), url=urls[0], on_url=again.append
    )
    assert stored(result) == data and result["url"] == urls[0] and again == []
    assert progress[0] == 5 * 64 * KIB
    assert reference_server.stats()["bytes_received"] - before == len(data) - 4 * 64 * KIB


def test_a_file_changed_during_the_upload_is_never_finalized(alice, tmp_path: Path) -> None:
    from engine.errors import FileChangedError

    path, data = make_file(tmp_path, "data.bin", 10 * 64 * KIB)

    def rewrite_after_two_chunks(done: int, total: int) -> None:
        if done == 2 * 64 * KIB:
            with open(path, "r+b") as f:
                f.seek(5 * 64 * KIB)
                f.write(b"new bytes")

    with pytest.raises(FileChangedError, match="changed while it was being uploaded") as raised:
        alice.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=rewrite_after_two_chunks)
    state = alice._get(raised.value.url)
    assert state["completed_at"] is None and state["offset"] < len(data)


# The race no check can close: the file shrinks after a window was mapped, before it is read.
SHRINKS_BETWEEN_MAP_AND_READ = """
import os, sys
from engine.errors import FileChangedError
from engine.source import MappedFile
from synapse_sdk.clients.backend import BackendClient

base_url, token, path, journal, chunk_digest = sys.argv[1:]
mapped = MappedFile.windows
shrunk = []

def map_then_shrink(source, start, end):
    for view in mapped(source, start, end):
        if not shrunk and start > 0:  # a window past the first chunk, once mapped
            shrunk.append(start)
            os.truncate(source.path, 4096)
        yield view

MappedFile.windows = map_then_shrink
client = BackendClient(base_url, access_token=token, journal=journal, chunk_digest=chunk_digest)
try:
    client.create_chunked_upload(path, chunk_size=64 * 1024)
except FileChangedError as error:
    print("FileChangedError:", error.detail)
"""


# Over plain HTTP only the hasher maps windows (the sender uses sendfile): two lanes, or one and xxh3.
@pytest.mark.parametrize("chunk_digest", ["md5", "xxh3", "none"])
def test_a_file_shrinking_under_a_mapped_window_fails_that_upload_not_the_process(
    reference_server, tmp_path: Path, chunk_digest: str
) -> None:
    path, _ = make_file(tmp_path, "data.bin", 10 * 64 * KIB)
    pytest.importorskip("engine._native", reason="only the compiled engine guards its reads")
    arguments = [reference_server.base_url, ALICE, str(path), str(tmp_path / "journal"), chunk_digest]
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", SHRINKS_BETWEEN_MAP_AND_READ, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        # The guard is the compiled twin's: the pure one cannot guard its reads (README), even in the
        # SYNAPSE_ENGINE=python run of the suite.
        env={**os.environ, "SYNAPSE_ENGINE": "native"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # SIGBUS would be -7
    assert done.stdout.startswith(f"FileChangedError: {path} changed while it was being uploaded"), done.stdout


@pytest.mark.parametrize("chunk_digest", ["xxh3", "none"])
def test_resume_without_chunk_md5(reference_server, tmp_path: Path, chunk_digest) -> None:
    """Without per-chunk MD5 the journal may hold an MD5 state behind the offset; the resume catches up."""
    path, data = make_file(tmp_path, "data.bin", 12 * 64 * KIB + 9)
    client = BackendClient(
        reference_server.base_url, access_token=ALICE, journal=tmp_path / "journal", chunk_digest=chunk_digest
    )
    with pytest.raises(Interrupted):
        client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=interrupt_after(8))
    progress: list[int] = []
    result = client.create_chunked_upload(path, chunk_size=64 * KIB, on_progress=lambda d, t: progress.append(d))
    assert progress[0] == 8 * 64 * KIB and stored(result) == data
    assert result["checksum"] == hashlib.md5(data).hexdigest()


def _mount_tmpfs(directory: Path, *options: str) -> bool:
    """A real small filesystem for the journal, if this machine lets the tests mount one (root, CAP_SYS_ADMIN)."""
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(directory)],
        capture_output=True,
    )
    return mounted.returncode == 0


def _upload_twice_and_check(reference_server, tmp_path: Path, journal: Path, caplog) -> None:
    """Two multi-chunk uploads with an unusable journal: both complete, the journal is warned of once."""
    for name in ("a.bin", "b.bin"):
        path, data = make_file(tmp_path, name, 300 * KIB)
        with BackendClient(reference_server.base_url, access_token=ALICE, journal=journal) as client:
            result = client.create_chunked_upload(path, chunk_size=64 * KIB)
        assert stored(result) == data
    warnings = [r for r in caplog.records if "cannot write the resume journal" in r.getMessage()]
    assert len(warnings) == 1 and "not resumable" in warnings[0].getMessage()


def test_a_journal_folder_that_cannot_be_made_never_fails_the_upload(reference_server, tmp_path: Path, caplog) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    _upload_twice_and_check(reference_server, tmp_path, in_the_way / "journal", caplog)


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_a_read_only_or_full_journal_disk_never_fails_the_upload(
    reference_server, tmp_path: Path, caplog, kind: str
) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, *(["ro"] if kind == "read-only" else [])):
        pytest.skip("this machine does not let the tests mount a filesystem")
    try:
        if kind == "full":
            (disk / "journal").mkdir()
            with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * 1024 * 1024)  # ENOSPC after 64 KiB
        _upload_twice_and_check(reference_server, tmp_path, disk / "journal", caplog)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_without_fcntl_the_package_imports_and_uploads_without_resume(reference_server, tmp_path: Path) -> None:
    """As on Windows: no fcntl, so no journal; said once, and uploads work."""
    path, data = make_file(tmp_path, "data.bin", 300 * KIB)
    program = f"""
import sys
sys.modules["fcntl"] = None  # what `import fcntl` finds where it does not exist
from synapse_sdk.clients.backend import BackendClient
client = BackendClient({reference_server.base_url!r}, access_token={ALICE!r}, journal={str(tmp_path / "journal")!r})
for _ in range(2):
    print(client.create_chunked_upload({str(path)!r}, chunk_size=65536)["checksum"])
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [hashlib.md5(data).hexdigest()] * 2
    assert done.stderr.count("no fcntl") == 1 and "not resumable" in done.stderr
    assert not (tmp_path / "journal").exists()
