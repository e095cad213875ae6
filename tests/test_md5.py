"""Both twins' MD5 against hashlib: one lane, two lanes, any split, copies."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

import engine

pytestmark = pytest.mark.unit

SIZES = [0, 1, 55, 56, 63, 64, 65, 127, 128, 4095, 4096, 4097, 100_003]


def test_native_extension_loaded() -> None:
    """CI builds the extension: failing to load it must not pass silently."""
    native = importlib.import_module("engine._native")
    assert native.NATIVE is True
    if os.environ.get("SYNAPSE_ENGINE", "") != "python":
        assert engine.NATIVE is True


@pytest.mark.parametrize("size", SIZES)
def test_md5_matches_hashlib(twin, size: int) -> None:
    data = os.urandom(size)
    md5 = twin.Md5(data)
    assert md5.digest() == hashlib.md5(data).digest()
    assert md5.hexdigest() == hashlib.md5(data).hexdigest()
    assert md5.length == size


@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_md5_any_split(data: bytes, cuts: list[int]) -> None:
    for twin in _twins():
        md5 = twin.Md5()
        last = 0
        for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
            md5.update(memoryview(data)[last:cut])
            last = cut
        assert md5.hexdigest() == hashlib.md5(data).hexdigest()


@given(prefix=st.binary(max_size=200), data=st.binary(max_size=5000), head=st.binary(max_size=70))
def test_update_pair_feeds_both_lanes(prefix: bytes, data: bytes, head: bytes) -> None:
    """Lanes at different block alignments still get exactly the same bytes."""
    for twin in _twins():
        running, chunk = twin.Md5(prefix), twin.Md5(head)
        twin.update_pair(running, chunk, data)
        assert running.hexdigest() == hashlib.md5(prefix + data).hexdigest()
        assert chunk.hexdigest() == hashlib.md5(head + data).hexdigest()


def test_copy_is_independent(twin) -> None:
    md5 = twin.Md5(b"abc")
    copy = md5.copy()
    copy.update(b"def")
    assert md5.hexdigest() == hashlib.md5(b"abc").hexdigest()
    assert copy.hexdigest() == hashlib.md5(b"abcdef").hexdigest()


def test_accepts_non_byte_buffers(twin) -> None:
    import array

    words = array.array("I", range(1000))
    assert twin.Md5(words).hexdigest() == hashlib.md5(words.tobytes()).hexdigest()


def test_native_state_pickles() -> None:
    native = importlib.import_module("engine._native")
    md5 = native.Md5(b"x" * 1000)
    restored = pickle.loads(pickle.dumps(md5))
    restored.update(b"tail")
    assert restored.hexdigest() == hashlib.md5(b"x" * 1000 + b"tail").hexdigest()


def test_pure_state_refuses_to_pickle() -> None:
    with pytest.raises(TypeError, match="cannot be saved"):
        pickle.dumps(importlib.import_module("engine._pure").Md5(b"x"))


def _twins():
    yield importlib.import_module("engine._pure")
    with contextlib.suppress(ImportError):
        yield importlib.import_module("engine._native")
