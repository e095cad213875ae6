"""Chunk plans for the edge sizes, and for any size."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.plan import DEFAULT_CHUNK_SIZE, Chunk, chunk_at, plan_chunks

pytestmark = pytest.mark.unit

C = DEFAULT_CHUNK_SIZE


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, []),
        (1, [(0, 1)]),
        (C - 1, [(0, C - 1)]),
        (C, [(0, C)]),
        (C + 1, [(0, C), (C, C + 1)]),
        (3 * C + 7, [(0, C), (C, 2 * C), (2 * C, 3 * C), (3 * C, 3 * C + 7)]),
    ],
)
def test_plan_edges(size: int, expected: list[tuple[int, int]]) -> None:
    assert [(c.start, c.end) for c in plan_chunks(size, C)] == expected


@given(size=st.integers(0, 10**12), chunk_size=st.integers(1, 10**11), data=st.data())
def test_plan_covers_the_file_once(size: int, chunk_size: int, data: st.DataObject) -> None:
    if size // chunk_size > 2000:
        chunk_size = size // 2000 + 1
    start = data.draw(st.integers(0, size))
    plan = plan_chunks(size, chunk_size, start)
    assert sum(c.length for c in plan) == size - start
    assert all(0 < c.length <= chunk_size and c.total == size for c in plan)
    assert all(a.end == b.start for a, b in itertools.pairwise(plan))
    if plan:
        assert plan[0].start == start and plan[-1].end == size
        assert plan[0] == chunk_at(start, size, chunk_size)


def test_content_range_end_is_inclusive() -> None:
    assert Chunk(0, 10, 25).content_range == "bytes 0-9/25"
    assert Chunk(20, 25, 25).content_range == "bytes 20-24/25"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "50", True, None])
def test_bad_chunk_size_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="chunk_size must be a positive number of bytes"):
        plan_chunks(100, bad)


def test_chunk_outside_file_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot start at byte 10 of a 10-byte file"):
        chunk_at(10, 10, 4)
