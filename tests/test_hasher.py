"""ChunkHasher: chunk digests hashed ahead of the sender, on both engine twins, from a real file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from engine.errors import FileChangedError
from engine.hasher import ChunkHasher
from engine.plan import Chunk, plan_chunks
from engine.source import MappedFile

pytestmark = pytest.mark.unit

CHUNK = 96 * 1024
SIZE = 7 * CHUNK + 123


@pytest.fixture
def file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "f.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, data


@pytest.fixture
def hasher(file: tuple[Path, bytes], twin: ModuleType) -> Iterator[ChunkHasher]:
    with MappedFile(file[0], window=64 * 1024) as source:
        hasher = ChunkHasher(source, twin)
        yield hasher
        hasher.close()


def md5_of(data: bytes, chunk: Chunk) -> bytes:
    return hashlib.md5(data[chunk.start : chunk.end]).digest()


@pytest.mark.parametrize("ahead", [1, 4, 20])
def test_every_chunk_and_the_whole_file_hash_right_however_far_ahead(file, hasher: ChunkHasher, ahead: int) -> None:
    _, data = file
    for chunk in plan_chunks(SIZE, CHUNK):
        digest = hasher.digest(chunk, chunk_size=CHUNK, ahead=ahead)
        assert (digest.start, digest.end, digest.md5) == (chunk.start, chunk.end, md5_of(data, chunk))
        assert digest.xxh3_128 is not None
    assert hasher.md5_at(SIZE).digest() == hashlib.md5(data).digest()


def test_a_jump_past_held_chunks_and_a_resend_drop_what_was_hashed_ahead(file, hasher: ChunkHasher) -> None:
    _, data = file
    chunks = plan_chunks(SIZE, CHUNK)
    for chunk in (chunks[0], chunks[3], chunks[1], chunks[1], chunks[7]):
        assert hasher.digest(chunk, chunk_size=CHUNK, ahead=3).md5 == md5_of(data, chunk)
    assert hasher.md5_at(SIZE).digest() == hashlib.md5(data).digest()


def test_bytes_that_change_under_a_chunk_asked_for_twice_are_reported(file, hasher: ChunkHasher) -> None:
    path, _ = file
    chunks = plan_chunks(SIZE, CHUNK)
    hasher.digest(chunks[2], chunk_size=CHUNK, ahead=4)
    with open(path, "r+b") as handle:
        handle.seek(chunks[2].start + 10)
        handle.write(b"changed")
    with pytest.raises(FileChangedError, match="changed while it was being uploaded"):
        hasher.digest(chunks[2], chunk_size=CHUNK, ahead=4)
