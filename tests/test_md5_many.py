"""md5_many, stream by stream against hashlib.md5: both twins, every SIMD level of the compiled one.

Each SIMD level is forced in-process with the compiled twin's private
``_set_md5_simd`` (the ``simd`` fixture), and once through the environment
variable in a subprocess. The guard test runs in a child process: if a
guard failed, SIGBUS would kill the test run itself.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import importlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine.source import MappedFile

pytestmark = pytest.mark.unit

LEVELS = ("avx512", "avx2", "scalar")
LANES = {"avx512": 16, "avx2": 16, "scalar": 2}
REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20

#: Every test below runs on the pure twin and on the compiled one at each SIMD level.
EVERY_KERNEL = pytest.mark.parametrize(
    ("twin", "simd"),
    [("native", level) for level in LEVELS] + [("pure", None)],
    indirect=True,
    ids=[f"native-{level}" for level in LEVELS] + ["pure"],
)


def _cpu_levels() -> set[str]:
    """The levels this CPU has, from what Linux says of it (the OS side is the engine's own check)."""
    with contextlib.suppress(OSError):
        flags = set(Path("/proc/cpuinfo").read_text().split())
        return {"scalar"} | {name for name, flag in (("avx2", "avx2"), ("avx512", "avx512f")) if flag in flags}
    return {"scalar"}


def _expected_level(wanted: str) -> str:
    """What a cap of ``wanted`` gives here: itself, or the best level below it this CPU has."""
    available = _cpu_levels()
    return next(level for level in LEVELS[LEVELS.index(wanted) :] if level in available)


@contextlib.contextmanager
def _at_level(twin: ModuleType, level: str | None) -> Iterator[None]:
    if level is None or not twin.NATIVE:
        yield
        return
    before = twin.md5_simd()
    twin._set_md5_simd(level)
    try:
        yield
    finally:
        twin._set_md5_simd(before)


@pytest.fixture
def simd(request: pytest.FixtureRequest, twin: ModuleType) -> Iterator[str | None]:
    """The compiled twin capped at ``request.param`` for one test (None: the pure twin)."""
    with _at_level(twin, request.param):
        yield twin.md5_simd() if request.param else None


def _kernels() -> list[tuple[ModuleType, str | None]]:
    """For hypothesis tests, which cannot take function-scoped fixtures: each twin, each level (use _at_level)."""
    kernels: list[tuple[ModuleType, str | None]] = [(importlib.import_module("engine._pure"), None)]
    with contextlib.suppress(ImportError):
        kernels += [(importlib.import_module("engine._native"), level) for level in LEVELS]
    return kernels


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _check(states, references) -> None:
    for i, (md5, reference) in enumerate(zip(states, references, strict=True)):
        assert (i, md5.hexdigest(), md5.length) == (i, reference.hexdigest(), reference.length)


class _Reference:
    """hashlib.md5 with the length an Md5 reports."""

    def __init__(self, data: bytes = b"") -> None:
        self.md5, self.length = hashlib.md5(data), len(data)

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        self.md5.update(view)
        self.length += len(view)

    def hexdigest(self) -> str:
        return self.md5.hexdigest()


def _run(twin: ModuleType, prefixes: list[bytes], buffers: list) -> None:
    states = [twin.Md5(prefix) for prefix in prefixes]
    references = [_Reference(prefix) for prefix in prefixes]
    twin.md5_many(states, buffers)
    for reference, data in zip(references, buffers, strict=True):
        reference.update(data)
    _check(states, references)


# ---- what the dispatch says ---------------------------------------------------


def test_exported_from_the_selector() -> None:
    assert {"md5_many", "md5_lanes", "md5_simd"} <= set(engine.__all__)
    assert engine.md5_many is engine.twin.md5_many


def test_pure_twin_has_one_lane() -> None:
    pure = importlib.import_module("engine._pure")
    assert (pure.md5_lanes(), pure.md5_simd()) == (1, "none")


@pytest.mark.parametrize("wanted", LEVELS)
def test_a_cap_falls_back_to_what_the_cpu_has(wanted: str) -> None:
    native = pytest.importorskip("engine._native")
    with _at_level(native, wanted):
        assert native.md5_simd() == _expected_level(wanted)
        assert native.md5_lanes() == LANES[native.md5_simd()]


def test_an_unknown_cap_is_refused() -> None:
    native = pytest.importorskip("engine._native")
    before = native.md5_simd()
    with pytest.raises(ValueError, match="SYNAPSE_MD5_SIMD must be one of scalar, avx2, avx512"):
        native._set_md5_simd("sse9")
    assert native.md5_simd() == before


_REPORT = """
import hashlib, os, engine
states = [engine.Md5(b"x" * i) for i in range(20)]
data = [os.urandom(1000 * i + 3) for i in range(20)]
engine.md5_many(states, data)
ok = all(s.hexdigest() == hashlib.md5(b"x" * i + d).hexdigest() for i, (s, d) in enumerate(zip(states, data)))
print(engine.md5_simd(), engine.md5_lanes(), ok)
"""


def _child(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "SYNAPSE_ENGINE": "native", **env}
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


@pytest.mark.parametrize("value", ["avx512", "avx2", "scalar", " AVX2 "])
def test_the_environment_caps_the_level_at_import(value: str) -> None:
    pytest.importorskip("engine._native")
    done = _child(_REPORT, SYNAPSE_MD5_SIMD=value)
    assert done.returncode == 0, done.stderr
    level = _expected_level(value.strip().lower())
    assert done.stdout.split() == [level, str(LANES[level]), "True"]


def test_an_unknown_level_in_the_environment_fails_the_import() -> None:
    """A ValueError: an ImportError would make the selector fall back to the pure twin without a word."""
    pytest.importorskip("engine._native")
    done = _child("import engine", SYNAPSE_MD5_SIMD="avx1024")
    assert done.returncode != 0
    assert "ValueError: SYNAPSE_MD5_SIMD must be one of scalar, avx2, avx512 (or unset), not 'avx1024'" in done.stderr


# ---- results, lane by lane ----------------------------------------------------


@EVERY_KERNEL
@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40])
def test_streams_of_unequal_lengths(twin, simd, count: int) -> None:
    """Lanes run out at different times; more streams than lanes queue for the lanes that free up."""
    sizes = [(i * 7919) % 9000 + (i % 3) * 64 for i in range(count)]
    _run(twin, [b""] * count, [_data(size, i) for i, size in enumerate(sizes)])


@EVERY_KERNEL
@pytest.mark.parametrize("count", [1, 2, 8, 16, 17])
def test_streams_of_equal_lengths(twin, simd, count: int) -> None:
    _run(twin, [b""] * count, [_data(64 * 100, i) for i in range(count)])


@EVERY_KERNEL
def test_empty_streams(twin, simd) -> None:
    twin.md5_many([], [])
    _run(twin, [b""] * 5, [b""] * 5)
    _run(twin, [b"abc", b"", b"x" * 64, b"y" * 70], [b"", b"", b"", b""])
    _run(twin, [b""] * 20, [b"" if i % 2 else _data(3000 + i, i) for i in range(20)])


@EVERY_KERNEL
@pytest.mark.parametrize("count", [1, 5, 16, 23])
def test_pending_partial_blocks(twin, simd, count: int) -> None:
    """States that hold part of a block: completed first, then whole blocks in lanes, the tail kept."""
    prefixes = [_data(i * 11 % 64, 100 + i) for i in range(count)]
    sizes = [0, 1, 63 - (5 * 11 % 64), 64, 65, 127, 640, 4097, 20_000]
    buffers = [_data(sizes[i % len(sizes)] + i, i) for i in range(count)]
    _run(twin, prefixes, buffers)


@EVERY_KERNEL
def test_streams_join_and_leave_across_calls(twin, simd) -> None:
    """Some streams are updated in calls 1 and 3 but not 2, others join late or leave early."""
    count = 20
    states = [twin.Md5() for _ in range(count)]
    references = [_Reference() for _ in range(count)]
    calls = [range(0, 12), range(6, 20), [*range(0, 6), *range(14, 20)], [3], range(0, 20, 3)]
    for number, members in enumerate(calls):
        members = list(members)
        buffers = [_data((i * 1013 + number * 331) % 5000, 1000 * number + i) for i in members]
        twin.md5_many([states[i] for i in members], buffers)
        for i, data in zip(members, buffers, strict=True):
            references[i].update(data)
        _check(states, references)


@EVERY_KERNEL
def test_big_and_tiny_buffers(twin, simd) -> None:
    sizes = [5 * MIB + 3, 3 * MIB, 1, 0, 63, 64, 65, 2 * MIB - 1, 100, 4 * MIB + 64, 17, 1 * MIB, 7, 8, 9, 4096, 4097]
    _run(twin, [b"p" * (i % 70) for i in range(len(sizes))], [_data(size, i) for i, size in enumerate(sizes)])


@EVERY_KERNEL
def test_any_c_contiguous_buffer(twin, simd) -> None:
    words = array.array("I", range(3000))
    doubles = array.array("d", (i / 3 for i in range(777)))
    grid = memoryview(bytearray(_data(64 * 48, 5))).cast("B", (48, 64))
    buffers = [words, doubles, grid, bytearray(_data(999, 1)), memoryview(_data(5000, 2))[7:4007], b"tail"]
    _run(twin, [b"", b"ab", b"", b"q" * 63, b"", b"z" * 64], buffers)


@EVERY_KERNEL
def test_memoryviews_of_mmap_windows(twin, simd, tmp_path: Path) -> None:
    sizes = [3 * MIB + 5, 1 * MIB, 70_000, 4096, 1, 2 * MIB + 64]
    prefixes = [b"m" * i for i in range(len(sizes))]
    references = [_Reference(prefix) for prefix in prefixes]
    with contextlib.ExitStack() as stack:
        windows = []
        for i, size in enumerate(sizes):
            path = tmp_path / f"{i}.bin"
            data = _data(size, i)
            path.write_bytes(data)
            # Starts inside the file, off a page boundary (but for the 1-byte file).
            start = min(i * 1000 + 13, size - 1)
            references[i].update(data[start:])
            # The generator unmaps its window when closed: it stays open until the hashing is done.
            reader = stack.enter_context(contextlib.closing(stack.enter_context(MappedFile(path)).windows(start, size)))
            windows.append(next(reader))
        states = [twin.Md5(prefix) for prefix in prefixes]
        twin.md5_many(states, windows)
    _check(states, references)


_lengths = st.one_of(st.integers(0, 130), st.integers(0, 5000), st.sampled_from([64, 128, 640, 4096, 4160]))


@st.composite
def _mixes(draw) -> tuple[list[int], list[list[int | None]], int]:
    """Stream count, each stream's prefix length, and per call each stream's length (None: not in that call)."""
    count = draw(st.integers(1, 40))
    prefixes = draw(st.lists(st.integers(0, 150), min_size=count, max_size=count))
    calls = draw(st.lists(st.lists(st.none() | _lengths, min_size=count, max_size=count), min_size=1, max_size=3))
    return prefixes, calls, draw(st.integers(0, 2**32))


@settings(deadline=None, max_examples=60)
@given(mix=_mixes())
def test_any_mix_of_streams(mix) -> None:
    prefix_sizes, calls, seed = mix
    for twin, level in _kernels():
        prefixes = [_data(size, seed + i) for i, size in enumerate(prefix_sizes)]
        states = [twin.Md5(prefix) for prefix in prefixes]
        references = [_Reference(prefix) for prefix in prefixes]
        for number, lengths in enumerate(calls):
            members = [i for i, size in enumerate(lengths) if size is not None]
            buffers = [_data(lengths[i], seed ^ (number << 8) ^ i) for i in members]
            with _at_level(twin, level):
                twin.md5_many([states[i] for i in members], buffers)
            for i, data in zip(members, buffers, strict=True):
                references[i].update(data)
        _check(states, references)


@settings(deadline=None, max_examples=40)
@given(prefix=st.binary(max_size=70), data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=4))
def test_same_as_update_for_one_stream_in_any_split(prefix: bytes, data: bytes, cuts: list[int]) -> None:
    for twin, level in _kernels():
        many, one = twin.Md5(prefix), twin.Md5(prefix)
        last = 0
        for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
            with _at_level(twin, level):
                twin.md5_many([many], [data[last:cut]])
            one.update(data[last:cut])
            last = cut
        assert (many.hexdigest(), many.length) == (one.hexdigest(), one.length)


# ---- bad arguments: refused before any state changes --------------------------


@EVERY_KERNEL
def test_the_same_state_twice_is_refused(twin, simd) -> None:
    shared, other = twin.Md5(b"a"), twin.Md5(b"b")
    with pytest.raises(ValueError, match="the same Md5 twice"):
        twin.md5_many([shared, other, shared], [b"1" * 100, b"2" * 100, b"3" * 100])
    assert shared.hexdigest() == hashlib.md5(b"a").hexdigest()
    assert other.hexdigest() == hashlib.md5(b"b").hexdigest()


@EVERY_KERNEL
def test_one_buffer_per_state(twin, simd) -> None:
    states = [twin.Md5(), twin.Md5()]
    with pytest.raises(ValueError, match="2 states and 3 buffers"):
        twin.md5_many(states, [b"a", b"b", b"c"])
    assert all(md5.length == 0 for md5 in states)


@EVERY_KERNEL
def test_states_must_be_this_twins_md5(twin, simd) -> None:
    other_twin = pytest.importorskip("engine._pure" if twin.NATIVE else "engine._native")
    for wrong in (hashlib.md5(), None, other_twin.Md5()):
        with pytest.raises(TypeError, match=r"md5_many takes engine\._(native|pure)\.Md5 states"):
            twin.md5_many([twin.Md5(), wrong], [b"a", b"b"])


@EVERY_KERNEL
def test_a_bad_buffer_changes_no_state(twin, simd) -> None:
    states = [twin.Md5(), twin.Md5()]
    with pytest.raises(TypeError):
        twin.md5_many(states, [b"a" * 5000, "not bytes"])
    with pytest.raises(BufferError):
        twin.md5_many(states, [b"a" * 5000, memoryview(b"abcdef")[::2]])
    assert all(md5.length == 0 for md5 in states)


# ---- a file that shrinks under its mapping -----------------------------------

SHRUNK_UNDER_ONE_OF_MANY = """
import os, sys
from engine import _native as native
from engine.errors import FileChangedError
from engine.source import MappedFile

folder = sys.argv[1]
MIB = 1 << 20

def attempt(level, sizes, bad, keep, pending):
    native._set_md5_simd(level)
    paths = [os.path.join(folder, f"{i}.bin") for i in range(len(sizes))]
    for path, size in zip(paths, sizes):
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    sources = [MappedFile(path) for path in paths]
    readers = [source.windows(0, source.size) for source in sources]
    views = [next(reader) for reader in readers]  # mapped at full size
    os.truncate(paths[bad], keep)
    states = [native.Md5(b"p" * pending) for _ in sizes]
    try:
        native.md5_many(states, views)
        outcome = "read past the end without an error"
    except FileChangedError:
        outcome = "FileChangedError"
    for reader, source in zip(readers, sources):
        reader.close()
        source.close()
    print(level, bad, keep, pending, outcome, flush=True)

for level in ("avx512", "avx2", "scalar"):
    for bad in (0, 3, 9):
        attempt(level, [MIB] * 10, bad, 0, 0)
    attempt(level, [MIB] * 10, 5, 0, 7)                       # the fault in completing a partial block
    attempt(level, [MIB] * 10, 5, 256 * 1024, 0)              # the fault partway, all lanes busy
    attempt(level, [64 * 1024] * 9 + [2 * MIB], 9, MIB, 0)   # the fault with one stream left, scalar
    attempt(level, [64 * 1024] * 4 + [2 * MIB] * 3, 6, MIB, 0)  # the fault with a few lanes left
print("alive")
"""


def test_a_file_that_shrinks_under_one_of_many_mappings_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A fault in any of the buffers being read ends md5_many with FileChangedError, at every level."""
    pytest.importorskip("engine._native", reason="only the compiled engine guards its reads")
    done = _child(SHRUNK_UNDER_ONE_OF_MANY, str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "alive"
    assert len(lines) == 1 + 3 * 7
    assert all(line.endswith("FileChangedError") for line in lines[:-1]), lines
