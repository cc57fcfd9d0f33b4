"""Single-producer/single-consumer byte ring in a shared-memory segment.

Layout of the segment (all integers native-endian u64, the ring never leaves the machine)::

    0    header line  : magic, version, capacity_bytes, header_bytes, writer_pid, created_ns
    128  writer line  : write_pos, write_seq, writer_closed          (written by the writer)
    256  reader line  : read_pos, release_seq, reader_closed, reader_pid (written by the reader)
    384  data area    : capacity_bytes of records

Lines are 128 bytes apart so the two sides never write the same cache line (and the
adjacent-line prefetcher of x86 does not pair them either). ``write_pos`` and ``read_pos``
are byte counters that only grow; ``counter % capacity_bytes`` is the offset in the data
area, ``write_pos - read_pos`` is the number of bytes in use.

A record is a 16-byte header ``(kind << 32 | length, sequence)`` followed by the payload,
padded to 8 bytes. A record is never split: when it does not fit between the write offset
and the end of the data area, the writer skips that tail (writing a *wrap marker*,
``(WRAP << 32, sequence of the next record)``, when the tail has room for one) and puts the
record at offset 0. The skipped tail counts as used until the reader passes it.

Descriptors (:class:`Descriptor`) carry (ring, offset, length, sequence) to the reader out
of band (over ZeroMQ in actrhost); the reader validates each one against the record header
in the ring before handing out a view, so a stale or forged descriptor is refused with
:class:`~actrhost._errors.BadRequest` rather than showing the wrong bytes.

Memory ordering. CPython's GIL orders threads of *one* process; it is no barrier between
processes. What makes this ring correct across processes:

* Every shared counter is read and written with one aligned 8-byte access: a
  ``memoryview.cast("Q")`` item access, which CPython compiles to a ``memcpy`` of 8 bytes
  (``PACK_SINGLE`` / ``UNPACK_SINGLE`` in ``memoryobject.c``), i.e. a single ``mov`` /
  ``ldr``/``str``. Aligned 8-byte loads and stores are single-copy atomic on x86-64 and
  aarch64, so a reader never sees a torn counter. (``struct.pack_into("<Q")`` would not
  do: its little-endian packer stores byte by byte.)
* Writer → reader: the writer copies the payload, writes the record header, then
  publishes ``write_pos``; each is a separate C call, so the compiler cannot reorder them.
  On x86-64 (TSO) stores become visible in program order. On any architecture the reader
  only touches a record after it *received its descriptor*, and the descriptor travels
  through the kernel (a ZeroMQ/pipe/socket send and recv: the kernel's queue locks give
  release/acquire ordering between the sender's earlier stores and the receiver's later
  loads). The shared ``write_pos`` is only used for validation.
* Reader → writer: the reader publishes ``read_pos`` after it is done with the slot; the
  writer reuses the bytes only after loading a ``read_pos`` past them. On x86-64 a store
  is never made visible before an earlier load completes (TSO), so that is sound. On
  aarch64 the architecture would allow it in theory; in practice a store becomes visible
  only after it retires, which is after the earlier loads have their values, and the
  release comes thousands of instructions after the last payload read. This is the one
  place that leans on the microarchitecture; DESIGN targets x86-64 (see docs/shm.md).

The writer is ``_ring_writer.py``, the reader ``_ring_reader.py``; this module holds what
they share (the layout, the common end, statistics). Both ends are plain synchronous
objects: no call blocks (``*_nowait`` raise :class:`WouldBlock`), no call is async, so
cancellation cannot leave them half-done. Neither end is thread-safe; each belongs to
one thread.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._errors import ClosedResourceError
from ._segment import Segment

if TYPE_CHECKING:
    pass

__all__ = [
    "RING_HEADER_BYTES",
    "RING_RECORD_HEADER_BYTES",
    "RingStatistics",
    "RingWriterStatistics",
    "WouldBlock",
    "ring_record_bytes",
]


class WouldBlock(Exception):
    """A ``*_nowait`` call could not proceed without waiting (the ring is full).

    Not an :class:`~actrhost.ActrError`: it never crosses the wire. The caller decides the
    policy: retry later (reliable lanes, bounded by the send's deadline) or drop and count
    (latency-first and media lanes). Like trio's ``WouldBlock``.
    """


_MAGIC = int.from_bytes(b"ACTRRING", "little")
_VERSION = 1

_LINE = 128
RING_HEADER_BYTES = 3 * _LINE  #: bytes before the data area
RING_RECORD_HEADER_BYTES = 16  #: bytes of one record header (and of a wrap marker)
_ALIGN = 8
_MIN_CAPACITY = 2 * RING_RECORD_HEADER_BYTES
_MAX_CAPACITY = 1 << 32  # offsets and lengths travel as u32

# Word indices into the header (u64 words).
_W_MAGIC, _W_VERSION, _W_CAPACITY, _W_HEADER, _W_WRITER_PID, _W_CREATED = range(6)
_W_WRITE_POS, _W_WRITE_SEQ, _W_WRITER_CLOSED = 16, 17, 18
_W_READ_POS, _W_RELEASE_SEQ, _W_READER_CLOSED, _W_READER_PID = 32, 33, 34, 35

_KIND_DATA = 0x44434552  # "RECD"
_KIND_WRAP = 0x50415257  # "WRAP"
_DATA_TAG = _KIND_DATA << 32
_WRAP_WORD = _KIND_WRAP << 32


def ring_record_bytes(length_bytes: int) -> int:
    """Bytes a record with a ``length_bytes`` payload takes in the ring (header + padding)."""
    return RING_RECORD_HEADER_BYTES + ((length_bytes + _ALIGN - 1) & ~(_ALIGN - 1))


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class RingStatistics:
    """A snapshot of a ring's shared state (either end can take it)."""

    name: str
    capacity_bytes: int
    write_position: int  #: bytes ever reserved by the writer (records, padding, skipped tails)
    read_position: int  #: bytes ever released by the reader
    used_bytes: int  #: write_position - read_position, at most capacity_bytes
    free_bytes: int  #: capacity_bytes - used_bytes
    records_committed: int
    records_released: int
    writer_closed: bool
    reader_closed: bool


@dataclass(frozen=True, slots=True)
class RingWriterStatistics(RingStatistics):
    """Shared state plus the writer's own counters."""

    peak_used_bytes: int  #: highest used_bytes seen right after a commit
    bytes_committed: int  #: payload bytes
    would_block_count: int  #: reservations refused with WouldBlock
    wrap_count: int  #: records placed at offset 0 after skipping the tail


# ---------------------------------------------------------------------------- common


def _check_capacity(capacity_bytes: int) -> None:
    if (
        not isinstance(capacity_bytes, int)
        or isinstance(capacity_bytes, bool)
        or capacity_bytes < _MIN_CAPACITY
        or capacity_bytes > _MAX_CAPACITY
        or capacity_bytes % _ALIGN
    ):
        raise ValueError(
            f"capacity_bytes must be a multiple of {_ALIGN} in [{_MIN_CAPACITY}, "
            f"{_MAX_CAPACITY}], got {capacity_bytes!r}"
        )


class _RingEnd(abc.ABC):
    __slots__ = ("_closed", "_data", "_data_q", "_segment", "_words", "capacity_bytes", "name")

    name: str
    capacity_bytes: int

    def __init__(self, segment: Segment, capacity_bytes: int) -> None:
        self._segment = segment
        self.name = segment.name
        self.capacity_bytes = capacity_bytes
        buf = segment.buf
        self._words = buf[:RING_HEADER_BYTES].cast("Q")
        self._data = buf[RING_HEADER_BYTES : RING_HEADER_BYTES + capacity_bytes]
        self._data_q = self._data.cast("Q")
        self._closed = False

    @property
    def max_record_bytes(self) -> int:
        """The largest payload this ring accepts (capacity minus one record header)."""
        return self.capacity_bytes - RING_RECORD_HEADER_BYTES

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writer_closed(self) -> bool:
        """The writer closed its end: no record will be added after those already sent."""
        return not self._closed and bool(self._words[_W_WRITER_CLOSED])

    @property
    def reader_closed(self) -> bool:
        """The reader closed its end: writes raise Unavailable."""
        return not self._closed and bool(self._words[_W_READER_CLOSED])

    def is_linked(self) -> bool:
        """True while the ring's name still exists (see :meth:`Segment.is_linked`)."""
        return self._segment.is_linked()

    def unlink(self, *, missing_ok: bool = False) -> None:
        """Remove the ring's name. Both ends keep working until they close."""
        self._segment.unlink(missing_ok=missing_ok)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError(f"{type(self).__name__}({self.name}) is closed")

    def _base_statistics(self) -> dict[str, Any]:
        self._check_open()
        w = self._words
        write_pos, read_pos = w[_W_WRITE_POS], w[_W_READ_POS]
        used = min(write_pos - read_pos, self.capacity_bytes)
        return {
            "name": self.name,
            "capacity_bytes": self.capacity_bytes,
            "write_position": write_pos,
            "read_position": read_pos,
            "used_bytes": used,
            "free_bytes": self.capacity_bytes - used,
            "records_committed": w[_W_WRITE_SEQ],
            "records_released": w[_W_RELEASE_SEQ],
            "writer_closed": bool(w[_W_WRITER_CLOSED]),
            "reader_closed": bool(w[_W_READER_CLOSED]),
        }

    def _close_views(self, flag_word: int, extra: list[memoryview]) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError):
            self._words[flag_word] = 1
        for view in [*extra, self._data_q, self._data, self._words]:
            with contextlib.suppress(BufferError):
                view.release()
        self._segment.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Unmap the ring (each end releases its own state first)."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} ({self.name}) {self.capacity_bytes} bytes, {state}>"
