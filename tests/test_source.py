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
