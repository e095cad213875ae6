# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled hashing core: MD5 (one or two lanes) and chunk digests, GIL released.

Twin of ``engine._pure``: same names, same results. This module must not do
I/O of its own; it hashes buffers it is handed (mmap windows, usually). Its
reads of those buffers are guarded (``_guard.h``): a window of a file that
shrank after it was mapped raises ``FileChangedError`` instead of killing the
process with SIGBUS.
"""

from libc.string cimport memcpy

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

cdef extern from "_guard.h" nogil:
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
