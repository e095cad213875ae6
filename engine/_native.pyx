# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled hashing core: MD5 (one, two or many lanes) and chunk digests, GIL released.

Twin of ``engine._pure``: same names, same results. This module must not do
I/O of its own; it hashes buffers it is handed (mmap windows, usually). Its
reads of those buffers are guarded (``_guard.h``): a window of a file that
shrank after it was mapped raises ``FileChangedError`` instead of killing the
process with SIGBUS.

``md5_many`` runs independent streams side by side in SIMD lanes
(``_md5_mb.h``): AVX-512F, AVX2 or scalar, the best the CPU and the OS allow,
capped by the environment variable ``SYNAPSE_MD5_SIMD`` (read once, here).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.string cimport memcpy

import os
import sys

import xxhash

from engine.errors import FileChangedError

cdef extern from "_md5.h" nogil:
    ctypedef struct md5_ctx:
        unsigned long long length
    void md5_init(md5_ctx *c)
    void md5_update(md5_ctx *c, const unsigned char *p, size_t n)
    void md5_update_pair(md5_ctx *x, md5_ctx *y, const unsigned char *p, size_t n)
    void md5_final(const md5_ctx *c, unsigned char *out)

cdef extern from "_md5_mb.h" nogil:
    ctypedef struct md5_mb_job:
        pass
    int MD5_MB_SCALAR, MD5_MB_AVX2, MD5_MB_AVX512
    int md5_mb_cpu_level()
    int md5_mb_width(int level)

cdef extern from "_guard.h" nogil:
    int guarded_md5_many(md5_ctx **ctx, const unsigned char **p, const size_t *n, size_t count, int level,
                         md5_mb_job *jobs)
    int guarded_md5_update(md5_ctx *c, const unsigned char *p, size_t n)
    int guarded_md5_update_pair(md5_ctx *x, md5_ctx *y, const unsigned char *p, size_t n)
    int guarded_copy(unsigned char *to, const unsigned char *p, size_t n)

_SHRANK = "the file shrank while it was being read (its mapping faulted)"

# Below this, releasing and re-taking the GIL costs more than hashing.
cdef Py_ssize_t GIL_RELEASE_MIN = 4096
# Slices copied for xxh3 right after MD5 saw them: the slice and its copy
# both fit in L2 (1 MiB slices, which do not, made xxh3 cost 11 % instead of 1 %).
cdef Py_ssize_t SLICE = 1 << 18

NATIVE = True


cdef class Md5:
    """hashlib-compatible MD5 whose state is plain data (copyable, picklable)."""

    cdef md5_ctx ctx
    name = "md5"
    digest_size = 16
    block_size = 64

    def __cinit__(self, data=None):
        md5_init(&self.ctx)

    def __init__(self, data=None):
        if data is not None:
            self.update(data)

    def update(self, data) -> None:
        cdef const unsigned char[::1] view = _bytes_view(data)
        cdef Py_ssize_t n = view.shape[0]
        cdef int failed
        if n == 0:
            return
        if n < GIL_RELEASE_MIN:
            failed = guarded_md5_update(&self.ctx, &view[0], n)
        else:
            with nogil:
                failed = guarded_md5_update(&self.ctx, &view[0], n)
        if failed:
            raise FileChangedError(_SHRANK)

    def digest(self) -> bytes:
        cdef unsigned char out[16]
        md5_final(&self.ctx, out)
        return out[:16]

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> Md5:
        cdef Md5 other = Md5.__new__(Md5)
        memcpy(&other.ctx, &self.ctx, sizeof(md5_ctx))
        return other

    def restore(self, Md5 saved) -> None:
        """Go back to the state of ``saved`` (a ``copy()`` taken earlier), in place."""
        memcpy(&self.ctx, &saved.ctx, sizeof(md5_ctx))

    @property
    def length(self) -> int:
        """Bytes absorbed so far."""
        return self.ctx.length

    def state(self) -> bytes:
        """The MD5 state as bytes, to continue later with ``Md5.from_state``."""
        return STATE_TAG + (<char *>&self.ctx)[:sizeof(md5_ctx)]

    @staticmethod
    def from_state(state: bytes) -> Md5:
        cdef Md5 md5 = Md5.__new__(Md5)
        if len(state) != len(STATE_TAG) + sizeof(md5_ctx) or not state.startswith(STATE_TAG):
            raise ValueError("not an MD5 state saved by this build of the engine")
        memcpy(&md5.ctx, <const char *>state + len(STATE_TAG), sizeof(md5_ctx))
        return md5

    def __reduce__(self):
        return (Md5.from_state, (self.state(),))


# Marks saved states: the layout is this build's struct, native byte order.
STATE_TAG = b"md5-le-1:" if sys.byteorder == "little" else b"md5-be-1:"


cdef object _bytes_view(object data):
    # A typed memoryview needs a flat byte buffer; cast other formats to bytes.
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def update_pair(Md5 running, Md5 chunk, data) -> None:
    """Feed the same bytes to two MD5s in one interleaved pass."""
    cdef const unsigned char[::1] view = _bytes_view(data)
    cdef Py_ssize_t n = view.shape[0]
    cdef int failed
    if n == 0:
        return
    with nogil:
        failed = guarded_md5_update_pair(&running.ctx, &chunk.ctx, &view[0], n)
    if failed:
        raise FileChangedError(_SHRANK)


def read_into(buffer, data) -> None:
    """Copy ``data`` (a mapped window, say) to the start of ``buffer``, for code that cannot guard its reads."""
    cdef unsigned char[::1] to = buffer
    cdef const unsigned char[::1] view = _bytes_view(data)
    cdef Py_ssize_t n = view.shape[0]
    cdef int failed
    if n > to.shape[0]:
        raise ValueError(f"{n} bytes do not fit a buffer of {to.shape[0]}")
    if n == 0:
        return
    with nogil:
        failed = guarded_copy(&to[0], &view[0], n)
    if failed:
        raise FileChangedError(_SHRANK)


def digest_windows(windows, Md5 running, bint chunk_md5=True, bint xxh3=True):
    """Hash a chunk given as buffers: returns ``(md5 or None, xxh3_128 or None)``.

    ``running`` (the whole file's MD5) absorbs the same bytes; the chunk's own
    MD5 is computed alongside (two lanes, one pass) unless ``chunk_md5`` is
    false, its xxh3-128 unless ``xxh3`` is false. xxhash cannot guard its
    reads of a mapping, so it hashes a (guarded) copy of each slice, taken
    right after MD5 pulled the slice into cache: the copy is cheap there.
    """
    cdef Md5 chunk = Md5()
    cdef const unsigned char[::1] view
    cdef unsigned char[::1] copy
    cdef const unsigned char *data
    cdef Py_ssize_t start, end, n
    cdef int failed
    xxh = xxhash.xxh3_128() if xxh3 else None
    if xxh3:
        staging = memoryview(bytearray(SLICE))
        copy = staging
    for window in windows:
        view = _bytes_view(window)
        n = view.shape[0]
        start = 0
        while start < n:
            end = min(start + SLICE, n)
            with nogil:
                data = &view[start]
                if chunk_md5:
                    failed = guarded_md5_update_pair(&running.ctx, &chunk.ctx, data, end - start)
                else:
                    failed = guarded_md5_update(&running.ctx, data, end - start)
                if xxh3 and not failed:
                    failed = guarded_copy(&copy[0], data, end - start)
            if failed:
                raise FileChangedError(_SHRANK)
            if xxh3:
                xxh.update(staging[: end - start])
            start = end
    return (chunk.digest() if chunk_md5 else None), (xxh.digest() if xxh is not None else None)


# ---- many streams in SIMD lanes ---------------------------------------------

_SIMD_NAMES = {"scalar": MD5_MB_SCALAR, "avx2": MD5_MB_AVX2, "avx512": MD5_MB_AVX512}
cdef int _CPU_LEVEL = md5_mb_cpu_level()
cdef int _simd_level = _CPU_LEVEL


def _set_md5_simd(name: str) -> str:
    """Cap the SIMD level md5_many uses (tests run every path with it); returns the level now in use.

    A level this CPU lacks falls back to the best it has below it. ``""``
    restores the best the CPU has.
    """
    global _simd_level
    wanted = name.strip().lower()
    if wanted and wanted not in _SIMD_NAMES:
        raise ValueError(f"SYNAPSE_MD5_SIMD must be one of {', '.join(_SIMD_NAMES)} (or unset), not {name!r}")
    _simd_level = min(_SIMD_NAMES[wanted], _CPU_LEVEL) if wanted else _CPU_LEVEL
    return md5_simd()


def md5_simd() -> str:
    """The kernel md5_many runs: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    for name, level in _SIMD_NAMES.items():
        if level == _simd_level:
            return name
    raise AssertionError(_simd_level)


def md5_lanes() -> int:
    """How many streams md5_many runs at once: 16 (AVX-512, or AVX2 as two groups of 8) or 2 (scalar)."""
    return md5_mb_width(_simd_level)


# A ValueError, not a warning nor an ImportError: a typo here must not pass
# unseen (a warning), nor make engine/__init__.py fall back to the slow
# pure-Python twin without a word (it takes an ImportError to mean "not built").
_set_md5_simd(os.environ.get("SYNAPSE_MD5_SIMD", ""))


def md5_many(states, buffers) -> None:
    """Update ``states[i]`` with ``buffers[i]`` for every i, the streams side by side in SIMD lanes.

    The result is exactly that of ``states[i].update(buffers[i])`` in turn:
    lengths may differ or be 0, states may hold a partial block. Up to
    ``md5_lanes()`` streams run at once, with the GIL released; more are
    queued for the lanes that free up. ``states`` are this twin's ``Md5``
    objects, each at most once; ``buffers`` any C-contiguous buffers, as many.
    A mapped window that faults raises ``FileChangedError``; the states are
    then undefined, as after a failed ``Md5.update``.
    """
    cdef list hashes = _distinct_md5s(states)
    cdef list datas = list(buffers)
    cdef Py_ssize_t count = len(hashes), acquired = 0, i
    if len(datas) != count:
        raise ValueError(f"md5_many got {count} states and {len(datas)} buffers: it needs one buffer per state")
    if count == 0:
        return
    cdef Py_buffer *views = <Py_buffer *>PyMem_Calloc(count, sizeof(Py_buffer))
    cdef md5_ctx **ctx = <md5_ctx **>PyMem_Calloc(count, sizeof(md5_ctx *))
    cdef const unsigned char **ptr = <const unsigned char **>PyMem_Calloc(count, sizeof(unsigned char *))
    cdef size_t *size = <size_t *>PyMem_Calloc(count, sizeof(size_t))
    cdef md5_mb_job *jobs = <md5_mb_job *>PyMem_Calloc(count, sizeof(md5_mb_job))
    cdef size_t total = 0
    cdef int failed = 0, level = _simd_level
    try:
        if not (views and ctx and ptr and size and jobs):
            raise MemoryError()
        # Every buffer is taken before any state changes: a bad one leaves all states as they were.
        for i in range(count):
            PyObject_GetBuffer(datas[i], &views[i], PyBUF_SIMPLE)
            acquired += 1
            ctx[i] = &(<Md5>hashes[i]).ctx
            ptr[i] = <const unsigned char *>views[i].buf
            size[i] = <size_t>views[i].len
            total += size[i]
        if total < <size_t>GIL_RELEASE_MIN:
            failed = guarded_md5_many(ctx, ptr, size, count, level, jobs)
        else:
            with nogil:
                failed = guarded_md5_many(ctx, ptr, size, count, level, jobs)
    finally:
        for i in range(acquired):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
        PyMem_Free(ctx)
        PyMem_Free(ptr)
        PyMem_Free(size)
        PyMem_Free(jobs)
    if failed:
        raise FileChangedError(_SHRANK)


cdef list _distinct_md5s(states):
    # Two lanes on one state would each start from it and the last to finish would win.
    cdef list hashes = list(states)
    seen = set()
    for md5 in hashes:
        if not isinstance(md5, Md5):
            raise TypeError(f"md5_many takes engine._native.Md5 states, not {type(md5).__name__}")
        if id(md5) in seen:
            raise ValueError("md5_many got the same Md5 twice: each stream needs its own state")
        seen.add(id(md5))
    return hashes
