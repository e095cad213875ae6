"""The reference store hashes chunks placed out of order once: their own MD5 and the running MD5 in one pass.

A chunk received beside the chunks before it holds its hashing back until
the upload's running MD5 reaches its first byte, then hashes both digests
together; the running MD5 then never reads it again. Where the bytes before
it fail or are not coming, it is hashed alone, and the running MD5 reads it
back later, as before. Real files, real threads; ``_hash_file_into`` (the
read-back) is watched to count what is read twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from random import Random

import pytest

from synapse_sdk.server import store as store_module
from synapse_sdk.server.store import Chunk, Owner, Store, Upload

pytestmark = pytest.mark.unit

CHUNK = 3 << 20  # past the store's hashing batch: hashing may begin while a chunk is received
SIZE = 4 * CHUNK
OWNER = Owner("alice")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def read_back(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The byte ranges the running MD5 reads back from the file."""
    ranges: list[tuple[int, int]] = []
    original = store_module._hash_file_into

    def watched(md5, path, start, end):  # type: ignore[no-untyped-def]
        ranges.append((start, end))
        original(md5, path, start, end)

    monkeypatch.setattr(store_module, "_hash_file_into", watched)
    return ranges


def created(store: Store, data: bytes) -> Upload:
    """An upload of ``data`` whose first chunk is stored, as a create leaves it."""
    upload = store.reserve(OWNER, len(data))
    with store.append(upload, limit=CHUNK, verify=("md5",)) as chunk:
        received(chunk, data[:CHUNK])
        return store.commit(chunk, filename="f.bin")


def received(chunk: Chunk, data: bytes, piece: int = 1 << 20) -> None:
    for start in range(0, len(data), piece):
        chunk.write(memoryview(data)[start : start + piece])
    chunk.settle()


def place(store: Store, upload: Upload, index: int) -> Chunk:
    with store.locked(upload.id):
        return store.place(upload, index * CHUNK, CHUNK, ("md5",), width=4)


def commit(store: Store, upload: Upload, chunk: Chunk, data: bytes) -> None:
    expected = hashlib.md5(data[chunk.at : chunk.at + CHUNK]).digest()
    assert chunk.chunk_md5 is not None and chunk.chunk_md5.digest() == expected
    with store.locked(upload.id):
        store.commit_placed(chunk)


def stored(store: Store, upload: Upload, index: int, data: bytes) -> None:
    """Chunk ``index`` of ``data`` placed, received whole and committed."""
    with place(store, upload, index) as chunk:
        received(chunk, data[index * CHUNK : (index + 1) * CHUNK])
        commit(store, upload, chunk, data)


def running_md5(store: Store, upload_id: int, size: int = SIZE) -> str:
    with store.locked(upload_id):
        upload = store.get(upload_id, OWNER)
        assert upload is not None and upload.offset == size
        return store.running_md5(upload)


def test_chunks_placed_in_order_are_read_once(store: Store, read_back: list[tuple[int, int]]) -> None:
    data = os.urandom(SIZE)
    upload = created(store, data)
    for index in range(1, 4):
        stored(store, upload, index, data)
    assert running_md5(store, upload.id) == hashlib.md5(data).hexdigest()
    assert read_back == []


def test_a_chunk_that_lands_first_waits_for_the_one_before_it_and_pairs(
    store: Store, read_back: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PAIRING_WAIT", 3600.0)  # however slow this machine is
    data = os.urandom(SIZE)
    upload = created(store, data)
    second, third = place(store, upload, 1), place(store, upload, 2)
    third_settled = threading.Event()

    def receive_third() -> None:
        with third:
            received(third, data[2 * CHUNK : 3 * CHUNK])  # its settle waits for the second chunk
            third_settled.set()
            commit(store, upload, third, data)

    thread = threading.Thread(target=receive_third)
    thread.start()
    assert not third_settled.wait(0.5)  # still waiting: the bytes before it are being received
    with second:
        received(second, data[CHUNK : 2 * CHUNK])
        commit(store, upload, second, data)
    thread.join(timeout=30)
    assert not thread.is_alive()
    stored(store, upload, 3, data)
    assert running_md5(store, upload.id) == hashlib.md5(data).hexdigest()
    assert read_back == []


def test_a_chunk_whose_predecessor_fails_is_hashed_alone_and_the_file_still_verifies(
    store: Store, read_back: list[tuple[int, int]]
) -> None:
    data = os.urandom(SIZE)
    upload = created(store, data)
    second, third = place(store, upload, 1), place(store, upload, 2)
    done = threading.Event()

    def receive_third() -> None:
        with third:
            received(third, data[2 * CHUNK : 3 * CHUNK])
            commit(store, upload, third, data)
        done.set()

    thread = threading.Thread(target=receive_third)
    thread.start()
    with second:  # its request breaks off half way: nothing is committed
        second.write(memoryview(data)[CHUNK : CHUNK + CHUNK // 2])
    thread.join(timeout=30)
    assert done.is_set()
    assert read_back == []  # the third chunk's own MD5 was computed without the running one
    for index in (1, 3):
        stored(store, upload, index, data)
    assert running_md5(store, upload.id) == hashlib.md5(data).hexdigest()
    # The second chunk paired (it followed the first); the third was read back once, and the fourth followed it.
    assert read_back == [(2 * CHUNK, 3 * CHUNK)]


def test_a_chunk_past_a_gap_does_not_wait(
    store: Store, read_back: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PAIRING_WAIT", 3600.0)  # a wait would hang the test
    data = os.urandom(SIZE)
    upload = created(store, data)
    thread = threading.Thread(target=lambda: stored(store, upload, 3, data))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    for index in (1, 2):
        stored(store, upload, index, data)
    assert running_md5(store, upload.id) == hashlib.md5(data).hexdigest()
    assert read_back == [(3 * CHUNK, SIZE)]


def test_a_chunk_waits_for_the_one_before_it_only_so_long(
    store: Store, read_back: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its answer waits too: past ``PAIRING_WAIT`` it is hashed alone, before the chunk before it lands."""
    monkeypatch.setattr(store_module, "PAIRING_WAIT", 0.2)
    data = os.urandom(SIZE)
    upload = created(store, data)
    second = place(store, upload, 1)
    second.write(memoryview(data)[CHUNK : CHUNK + CHUNK // 2])  # still arriving
    stored(store, upload, 2, data)
    with second:
        second.write(memoryview(data)[CHUNK + CHUNK // 2 : 2 * CHUNK])
        second.settle()
        commit(store, upload, second, data)
    stored(store, upload, 3, data)
    assert running_md5(store, upload.id) == hashlib.md5(data).hexdigest()
    assert read_back == [(2 * CHUNK, 3 * CHUNK)]


@pytest.mark.parametrize("seed", range(4))
def test_chunks_landing_in_any_order_some_breaking_off_leave_the_right_md5(store: Store, seed: int) -> None:
    """Real threads, random pauses: whatever pairs and whatever does not, the running MD5 is the file's."""
    chunks = 6
    data = os.urandom(chunks * CHUNK)
    upload = created(store, data)
    random = Random(seed)
    plans = {index: [random.random() < 0.3, [random.uniform(0, 0.004) for _ in range(3)]] for index in range(1, chunks)}
    errors: list[BaseException] = []

    def send(index: int) -> None:
        breaks_off, pauses = plans[index]
        piece = CHUNK // 3
        try:
            for attempt in (0, 1):
                with store.locked(upload.id):
                    chunk = store.place(upload, index * CHUNK, CHUNK, ("md5",), width=8)
                with chunk:
                    for part, pause in enumerate(pauses):
                        threading.Event().wait(pause)
                        start = index * CHUNK + part * piece
                        chunk.write(memoryview(data)[start : start + piece])
                        if breaks_off and attempt == 0 and part == 1:
                            break
                    else:
                        chunk.settle()
                        commit(store, upload, chunk, data)
                        return
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=send, args=(index,)) for index in random.sample(range(1, chunks), chunks - 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads) and errors == []
    assert running_md5(store, upload.id, len(data)) == hashlib.md5(data).hexdigest()
