"""Mapped windows and chunk digests, on both twins, against hashlib and xxhash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import FileChangedError
from engine.plan import plan_chunks
from engine.source import MappedFile

PAGE = 4096


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(5 * PAGE * 3 + 123)
    path = tmp_path / "sample.bin"
    path.write_bytes(data)
    return path, data


def test_windows_cover_any_range(sample) -> None:
    path, data = sample
    with MappedFile(path, window=2 * PAGE) as source:
        for start, end in [(0, len(data)), (1, 2), (PAGE - 1, 3 * PAGE + 5), (len(data), len(data)), (77, 77)]:
            views = list(bytes(v) for v in source.windows(start, end))
            assert b"".join(views) == data[start:end]
            assert all(len(v) <= 2 * PAGE for v in views)


def test_digests_of_every_chunk(twin, sample) -> None:
    path, data = sample
    running = twin.Md5()
    with MappedFile(path, window=PAGE) as source:
        for chunk in plan_chunks(source.size, 3 * PAGE + 1):
            md5, xxh3 = twin.digest_windows(source.windows(chunk.start, chunk.end), running)
            assert md5 == hashlib.md5(data[chunk.start : chunk.end]).digest()
            assert xxh3 == xxhash.xxh3_128(data[chunk.start : chunk.end]).digest()
    assert running.hexdigest() == hashlib.md5(data).hexdigest()


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 70_000), chunk_size=st.integers(1, 40_000), chunk_md5=st.booleans(), xxh3=st.booleans())
def test_twins_agree(tmp_path_factory, size: int, chunk_size: int, chunk_md5: bool, xxh3: bool) -> None:
    import engine._native as native
    import engine._pure as pure

    path = tmp_path_factory.mktemp("twins") / "f.bin"
    path.write_bytes(os.urandom(size))
    results = []
    for twin in (native, pure):
        running = twin.Md5()
        with MappedFile(path, window=PAGE) as source:
            digests = [
                twin.digest_windows(source.windows(c.start, c.end), running, chunk_md5, xxh3)
                for c in plan_chunks(size, chunk_size)
            ]
        results.append((digests, running.digest()))
    assert results[0] == results[1]


def test_copies_are_the_windows_bytes_in_slices(sample) -> None:
    path, data = sample
    with MappedFile(path, window=2 * PAGE) as source:
        for start, end in [(0, len(data)), (1, 2), (PAGE - 1, 3 * PAGE + 5), (len(data), len(data))]:
            assert b"".join(bytes(piece) for piece in source.copies(start, end)) == data[start:end]
            assert source.xxh3_128(start, end) == xxhash.xxh3_128(data[start:end]).digest()


def test_range_outside_file_is_refused(sample) -> None:
    path, data = sample
    with MappedFile(path) as source, pytest.raises(ValueError, match="outside the"):
        list(source.windows(0, len(data) + 1))


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        MappedFile(tmp_path)


def test_truncated_file_is_detected_before_mapping(sample) -> None:
    """Mapping past the end of a shrunk file would crash with SIGBUS: it is refused instead."""
    path, data = sample
    with MappedFile(path, window=PAGE) as source:
        windows = source.windows(0, len(data))
        next(windows)
        os.truncate(path, PAGE)
        with pytest.raises(FileChangedError, match="changed while it was being uploaded"):
            next(windows)


def test_window_must_be_page_aligned(sample) -> None:
    with pytest.raises(ValueError, match="multiple of"):
        MappedFile(sample[0], window=1000)


def test_chunk_md5_can_be_skipped(twin, sample) -> None:
    path, data = sample
    running = twin.Md5()
    with MappedFile(path) as source:
        md5, xxh3 = twin.digest_windows(source.windows(0, len(data)), running, False)
    assert md5 is None and xxh3 == xxhash.xxh3_128(data).digest()
    assert running.hexdigest() == hashlib.md5(data).hexdigest()


def test_only_the_whole_file_md5(twin, sample) -> None:
    """With neither chunk digest asked for, the hasher does one MD5 lane and nothing else."""
    path, data = sample
    running = twin.Md5()
    with MappedFile(path) as source:
        assert twin.digest_windows(source.windows(0, len(data)), running, False, False) == (None, None)
    assert running.hexdigest() == hashlib.md5(data).hexdigest()


# Run in a child process: if a guard failed, SIGBUS would kill the test run itself.
SHRUNK_AFTER_MAPPING = """
import os, sys
import engine
from engine.errors import FileChangedError
from engine.source import MappedFile

assert engine.NATIVE
path = sys.argv[1]
with open(path, "wb") as f:
    f.write(os.urandom(3 << 20))
with MappedFile(path) as source:
    windows = source.windows(0, source.size)
    view = next(windows)  # mapped while the file had 3 MiB
    os.truncate(path, 4096)
    reads = {
        "Md5.update": lambda: engine.Md5().update(view),
        "update_pair": lambda: engine.update_pair(engine.Md5(), engine.Md5(), view),
        "digest_windows md5": lambda: engine.digest_windows([view], engine.Md5(), True, False),
        "digest_windows xxh3": lambda: engine.digest_windows([view], engine.Md5(), False, True),
        "read_into": lambda: engine.read_into(bytearray(len(view)), view),
    }
    for name, read in reads.items():
        try:
            read()
            print(name, "read past the end without an error")
        except FileChangedError:
            print(name, "FileChangedError")
    try:
        with source.reading():
            engine.Md5().update(view)
    except FileChangedError as error:
        print("reading:", error)
"""


def test_a_file_that_shrinks_after_mapping_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Reading a window past the new end of a truncated file raises SIGBUS; the native reads turn it into an error."""
    pytest.importorskip("engine._native", reason="only the compiled engine guards its reads")
    import subprocess
    import sys

    path = tmp_path / "shrinks.bin"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "SYNAPSE_ENGINE": "native"}
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", SHRUNK_AFTER_MAPPING, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == [
        f"{name} FileChangedError"
        for name in ("Md5.update", "update_pair", "digest_windows md5", "digest_windows xxh3", "read_into")
    ]
    assert lines[5] == f"reading: {path} changed while it was being uploaded (size {3 << 20} -> 4096)" + (
        "; nothing was finalized"
    )
