"""The hashing service: many threads' MD5 streams packed into md5_many's lanes, results as hashlib's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import xxhash

from engine.hashing_service import SLICE, HashingService

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def _data(size: int, seed: int) -> bytes:
    return hashlib.shake_128(seed.to_bytes(4, "little")).digest(size)


def test_one_caller_gets_what_hashlib_gets(twin: ModuleType) -> None:
    service = HashingService(twin)
    running, chunk = twin.Md5(b"prefix"), twin.Md5()
    data = _data(3 * SLICE + 17, 1)
    service.update([running, chunk], data)
    assert running.hexdigest() == hashlib.md5(b"prefix" + data).hexdigest()
    assert chunk.hexdigest() == hashlib.md5(data).hexdigest()
    service.update([running], b"")  # nothing to do, nothing changes
    assert running.hexdigest() == hashlib.md5(b"prefix" + data).hexdigest()


def test_digest_windows_is_the_engines(twin: ModuleType) -> None:
    windows = [_data(SLICE + 5, 2), _data(7, 3), _data(2 * SLICE, 4)]
    ours, theirs = twin.Md5(b"x"), twin.Md5(b"x")
    for flags in [(True, True), (True, False), (False, True), (False, False)]:
        got = HashingService(twin).digest_windows(windows, ours, *flags)
        assert got == twin.digest_windows(windows, theirs, *flags)
        assert ours.hexdigest() == theirs.hexdigest()
    md5, xxh3 = HashingService(twin).digest_windows(windows, twin.Md5())
    assert (md5, xxh3) == (hashlib.md5(b"".join(windows)).digest(), xxhash.xxh3_128(b"".join(windows)).digest())


@pytest.mark.parametrize("combine_above", [0, None], ids=["always combined", "default"])
@pytest.mark.parametrize("threads", [1, 3, 12, 40])
def test_many_threads_at_once_each_get_their_own_digests(twin: ModuleType, threads: int, combine_above) -> None:
    service = HashingService(twin, combine_above=combine_above)
    datas = [[_data((i * 7919 + j * 104729) % (2 * SLICE) + j, i * 10 + j) for j in range(3)] for i in range(threads)]
    results: dict[int, tuple[str, list[str]]] = {}
    start = threading.Barrier(threads)

    def upload(i: int) -> None:
        running = twin.Md5()
        chunks = []
        start.wait()
        for piece in datas[i]:
            chunk = twin.Md5()
            service.update([running, chunk], piece)
            chunks.append(chunk.hexdigest())
        results[i] = (running.hexdigest(), chunks)

    workers = [threading.Thread(target=upload, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for i in range(threads):
        assert results[i] == (
            hashlib.md5(b"".join(datas[i])).hexdigest(),
            [hashlib.md5(piece).hexdigest() for piece in datas[i]],
        )


def _held_service(twin: ModuleType, lanes: int, combine_above: int):
    """A service whose ``md5_many`` releases ``entered`` when called and returns only once ``release`` is set."""
    service = HashingService(twin)
    service.lanes, service.combine_above = lanes, combine_above
    entered, release = threading.Semaphore(0), threading.Event()

    def md5_many(states, buffers):
        entered.release()
        assert release.wait(30), "never released"
        twin.md5_many(states, buffers)

    service.twin = SimpleNamespace(md5_many=md5_many, Md5=twin.Md5)
    return service, entered, release


def _each_got_its_digests(states, datas) -> None:
    """Each caller's file MD5 and chunk MD5 are hashlib's of its data."""
    for (running, chunk), data in zip(states, datas, strict=True):
        assert running.hexdigest() == chunk.hexdigest() == hashlib.md5(data).hexdigest()


def test_waiting_work_is_packed_into_the_lanes_of_one_round(twin: ModuleType) -> None:
    """While one caller combines, the others' work waits; the next round takes as much of it as the lanes hold."""
    callers = 6
    service = HashingService(twin, combine_above=0)
    calls: list[int] = []
    first = threading.Event()

    def md5_many(states, buffers):
        if not first.is_set():
            first.set()
            # Hold the first round until every other caller's work is waiting.
            while len(service._waiting) < callers - 1:
                threading.Event().wait(0.001)
        calls.append(len(states))
        twin.md5_many(states, buffers)

    service.twin = SimpleNamespace(md5_many=md5_many, Md5=twin.Md5)
    service.lanes = 8
    datas = [_data(SLICE // 2, i) for i in range(callers)]
    states = [[twin.Md5(), twin.Md5()] for _ in range(callers)]
    workers = [threading.Thread(target=service.update, args=(states[i], datas[i])) for i in range(1, callers)]
    leader = threading.Thread(target=service.update, args=(states[0], datas[0]))
    leader.start()
    first.wait()
    for worker in workers:
        worker.start()
    for thread in [leader, *workers]:
        thread.join()
    # The first round held the leader's two streams; the next packed four callers (8 lanes), then the last.
    assert calls == [2, 8, 2]
    assert (service.rounds, service.streams) == (3, 12)
    _each_got_its_digests(states, datas)


def test_few_streams_are_hashed_by_their_callers_at_once(twin: ModuleType) -> None:
    """Two files' streams (4) fill few of 16 lanes: each caller hashes alone, in its own thread, both at once."""
    service, entered, release = _held_service(twin, lanes=16, combine_above=8)
    states = [[twin.Md5(), twin.Md5()] for _ in range(2)]
    datas = [_data(SLICE + 3, i) for i in range(2)]
    callers = [threading.Thread(target=service.update, args=(states[i], datas[i])) for i in range(2)]
    for caller in callers:
        caller.start()
    # Both inside md5_many at the same time: neither waits for the other's round.
    assert entered.acquire(timeout=30) and entered.acquire(timeout=30)
    release.set()
    for caller in callers:
        caller.join()
    assert (service.rounds, service.streams, service.alone) == (0, 0, 8)  # 2 callers x 2 slices x 2 streams
    _each_got_its_digests(states, datas)


def test_work_is_combined_once_the_callers_hold_more_than_half_the_lanes(twin: ModuleType) -> None:
    service, entered, release = _held_service(twin, lanes=8, combine_above=4)
    states = [[twin.Md5(), twin.Md5()] for _ in range(3)]
    datas = [_data(1000 + i, i) for i in range(3)]
    callers = [threading.Thread(target=service.update, args=(states[i], datas[i])) for i in range(3)]
    for caller in callers[:2]:
        caller.start()
    assert entered.acquire(timeout=30) and entered.acquire(timeout=30)  # 2 and 4 streams inside: each alone
    callers[2].start()  # 6 streams inside: its work goes into a round, which it runs
    assert entered.acquire(timeout=30)
    release.set()
    for caller in callers:
        caller.join()
    assert (service.rounds, service.streams, service.alone) == (1, 2, 4)
    _each_got_its_digests(states, datas)


@pytest.mark.parametrize("lanes", [1, 2], ids=["pure twin", "scalar kernel"])
def test_without_simd_lanes_work_is_never_combined(twin: ModuleType, lanes: int) -> None:
    scalar = SimpleNamespace(md5_lanes=lambda: lanes, md5_many=twin.md5_many, Md5=twin.Md5)
    service = HashingService(scalar)
    start = threading.Barrier(12)
    states = [[twin.Md5(), twin.Md5()] for _ in range(12)]
    datas = [_data(SLICE // 4 + i, i) for i in range(12)]

    def upload(i: int) -> None:
        start.wait()
        service.update(states[i], datas[i])

    callers = [threading.Thread(target=upload, args=(i,)) for i in range(12)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert (service.rounds, service.alone) == (0, 24)
    _each_got_its_digests(states, datas)


SHRINKS_UNDER_ONE_CALLER = """
import hashlib, os, sys, threading
from engine import _native as native
from engine.errors import FileChangedError
from engine.hashing_service import HashingService
from engine.source import MappedFile

folder, MIB = sys.argv[1], 1 << 20
service = HashingService(native, combine_above=0)
paths = [os.path.join(folder, f"{i}.bin") for i in range(8)]
for path in paths:
    with open(path, "wb") as f:
        f.write(os.urandom(4 * MIB))
sources = [MappedFile(path) for path in paths]
readers = [source.windows(0, source.size) for source in sources]
views = [next(reader) for reader in readers]
os.truncate(paths[5], MIB)
outcomes = {}

def upload(i):
    running, chunk = native.Md5(), native.Md5()
    try:
        service.update([running, chunk], views[i])
    except FileChangedError:
        outcomes[i] = "FileChangedError"
    else:
        with open(paths[i], "rb") as f:
            good = running.hexdigest() == chunk.hexdigest() == hashlib.md5(f.read()).hexdigest()
        outcomes[i] = "ok" if good else "wrong digest"

threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(outcomes[i] for i in range(8)))
"""


def test_a_file_shrinking_under_one_caller_fails_that_caller_only(tmp_path: Path) -> None:
    pytest.importorskip("engine._native", reason="only the compiled engine guards its reads")
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", SHRINKS_UNDER_ONE_CALLER, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "SYNAPSE_ENGINE": "native"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok"] * 5 + ["FileChangedError"] + ["ok"] * 2


def test_states_of_another_engine_are_refused(twin: ModuleType) -> None:
    with pytest.raises(TypeError, match="takes this engine's Md5 states"):
        HashingService(twin).update([hashlib.md5()], b"data")  # type: ignore[list-item]


@pytest.mark.parametrize("combine_above", [0, None], ids=["in a round", "alone"])
def test_an_error_in_a_round_reaches_its_callers_and_the_service_goes_on(twin: ModuleType, combine_above) -> None:
    service = HashingService(twin, combine_above=combine_above)
    failures = iter([MemoryError("no room for the lanes")])

    def md5_many(states, buffers):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        twin.md5_many(states, buffers)

    service.twin = SimpleNamespace(md5_many=md5_many, Md5=twin.Md5)
    with pytest.raises(MemoryError):
        service.update([twin.Md5()], b"abc")
    running = twin.Md5()
    service.update([running], b"abc")
    assert running.hexdigest() == hashlib.md5(b"abc").hexdigest()


def test_a_caller_hashing_alone_joins_the_rounds_when_others_arrive(twin: ModuleType) -> None:
    """The choice is made slice by slice: a long window started alone goes on in rounds once the lanes would fill."""
    service = HashingService(twin)
    service.lanes, service.combine_above = 8, 2
    widths: list[int] = []

    def until(condition) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.001)

    def md5_many(states, buffers):
        widths.append(len(states))
        if len(widths) == 1:
            until(lambda: service._streams_inside == 4)  # the first's first slice, alone, until the second is in
        elif len(widths) == 2:
            until(lambda: len(service._waiting) == 1)  # the second's first round, until the first's rest waits
        twin.md5_many(states, buffers)

    service.twin = SimpleNamespace(md5_many=md5_many, Md5=twin.Md5)
    datas = [_data(3 * SLICE, 0), _data(2 * SLICE, 1)]
    states = [[twin.Md5(), twin.Md5()] for _ in range(2)]
    first = threading.Thread(target=service.update, args=(states[0], datas[0]))
    second = threading.Thread(target=service.update, args=(states[1], datas[1]))
    first.start()
    until(lambda: widths)
    second.start()
    for caller in (first, second):
        caller.join()
    # The first's slice 1 alone; the second's slice 1 in a round; then both in one round; then the first's last.
    assert widths == [2, 2, 4, 2]
    assert (service.alone, service.rounds, service.streams) == (2, 3, 8)
    _each_got_its_digests(states, datas)
