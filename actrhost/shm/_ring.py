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

Both ends are plain synchronous objects: no call blocks (``*_nowait`` raise
:class:`WouldBlock`), no call is async, so cancellation cannot leave them half-done.
Neither end is thread-safe; each belongs to one thread.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._errors import BadRequest, ClosedResourceError, Unavailable
from ._descriptor import Descriptor, _np, decode_array_meta, encode_array_meta
from ._segment import Segment

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "RING_HEADER_BYTES",
    "RING_RECORD_HEADER_BYTES",
    "RingReader",
    "RingStatistics",
    "RingWriter",
    "RingWriterStatistics",
    "WouldBlock",
    "ring_record_bytes",
]

logger = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------- writer


class RingWriter(_RingEnd):
    """The producing end. Create it with :meth:`create`; one per ring, one thread.

    Space is reclaimed only as the reader releases records in order. When a record does
    not fit, ``*_nowait`` raises :class:`WouldBlock` and changes nothing; the ring has no
    wake-up of its own (the runtime retries or drops; see docs/shm.md).
    """

    __slots__ = (
        "_bytes_committed",
        "_peak_used",
        "_res",
        "_res_view",
        "_seq",
        "_would_block",
        "_wraps",
        "_write_pos",
    )

    def __init__(self, segment: Segment, capacity_bytes: int) -> None:
        # Private: use RingWriter.create().
        super().__init__(segment, capacity_bytes)
        self._write_pos = 0
        self._seq = 0
        # Open reservation: (start_offset, length, new_write_pos, skipped_tail_start or -1)
        self._res: tuple[int, int, int, int] | None = None
        self._res_view: memoryview | None = None
        self._peak_used = 0
        self._bytes_committed = 0
        self._would_block = 0
        self._wraps = 0

    @classmethod
    def create(cls, name: str, capacity_bytes: int) -> RingWriter:
        """Create ring ``name`` with a data area of ``capacity_bytes`` (multiple of 8).

        The segment is ``RING_HEADER_BYTES + capacity_bytes`` long, mode 0600. Raises
        :class:`FileExistsError` if the name exists, :class:`ValueError` for a bad name or
        capacity, :class:`OSError` if ``/dev/shm`` is full. Nothing is left on failure.
        """
        _check_capacity(capacity_bytes)
        segment = Segment.create(name, RING_HEADER_BYTES + capacity_bytes)
        try:
            self = cls(segment, capacity_bytes)
            w = self._words
            w[_W_VERSION] = _VERSION
            w[_W_CAPACITY] = capacity_bytes
            w[_W_HEADER] = RING_HEADER_BYTES
            w[_W_WRITER_PID] = os.getpid()
            w[_W_CREATED] = time.time_ns()
            w[_W_MAGIC] = _MAGIC  # last: a ring with its magic is fully initialised
        except BaseException:
            segment.close()
            segment.unlink(missing_ok=True)
            raise
        logger.debug("RingWriter(%s) created, capacity %d bytes", name, capacity_bytes)
        return self

    def free_bytes(self) -> int:
        """Bytes not in use. A record needs ``ring_record_bytes(length)`` of them, and more
        when it must skip the tail: a record smaller than this may still not fit."""
        self._check_open()
        used = self._write_pos - self._words[_W_READ_POS]
        return max(self.capacity_bytes - used, 0)

    def reserve_nowait(self, length_bytes: int) -> memoryview:
        """Reserve room for a ``length_bytes`` payload; return a writable view of it.

        Fill the view, then :meth:`commit` (publish, get the descriptor) or :meth:`abort`.
        One reservation at a time. Never blocks. Raises :class:`WouldBlock` if the ring has
        no room now, :class:`BadRequest` if the payload exceeds :attr:`max_record_bytes`
        (it could never fit), :class:`Unavailable` if the reader closed,
        :class:`ClosedResourceError` after close, :class:`RuntimeError` if a reservation
        is already open.
        """
        self._check_open()
        if self._res is not None:
            raise RuntimeError(f"RingWriter({self.name}): a reservation is already open")
        if not isinstance(length_bytes, int) or length_bytes < 0:
            raise ValueError(f"length_bytes must be a non-negative int, got {length_bytes!r}")
        cap = self.capacity_bytes
        need = ring_record_bytes(length_bytes)
        if need > cap:
            raise BadRequest(
                f"ring {self.name}: a record of {length_bytes} bytes can never fit; "
                f"max_record_bytes is {cap - RING_RECORD_HEADER_BYTES} "
                f"(capacity_bytes {cap})"
            )
        words = self._words
        if words[_W_READER_CLOSED]:
            raise Unavailable(f"ring {self.name}: the reader has closed")
        write_pos = self._write_pos
        used = write_pos - words[_W_READ_POS]
        offset = write_pos % cap
        tail = cap - offset
        if need <= tail:
            if used + need > cap:
                self._would_block += 1
                raise WouldBlock(f"ring {self.name}: {need} bytes needed, {cap - used} free")
            self._res = (offset, length_bytes, write_pos + need, -1)
            start = offset
        else:
            # Skip the tail and start over at 0. With an empty ring that is always allowed
            # (nothing unread can be overwritten), so any record up to max_record_bytes
            # fits into an empty ring whatever the offset.
            if used and used + tail + need > cap:
                self._would_block += 1
                raise WouldBlock(
                    f"ring {self.name}: {need} bytes needed after skipping a {tail}-byte "
                    f"tail, {cap - used} free"
                )
            self._res = (0, length_bytes, write_pos + tail + need, offset)
            start = 0
        view = self._data[
            start + RING_RECORD_HEADER_BYTES : start + RING_RECORD_HEADER_BYTES + length_bytes
        ]
        self._res_view = view
        return view

    def commit(self, meta: bytes = b"") -> Descriptor:
        """Publish the open reservation; return its descriptor (with ``meta`` attached).

        The reservation's view is released (later writes through it raise ValueError).
        Raises :class:`RuntimeError` if no reservation is open.
        """
        self._check_open()
        res = self._res
        if res is None:
            raise RuntimeError(f"RingWriter({self.name}): commit() without a reservation")
        start, length, new_write_pos, skipped = res
        seq = self._seq
        data_q = self._data_q
        cap = self.capacity_bytes
        if skipped >= 0:
            # Wrap marker in the skipped tail, if it has room and the record (placed at 0
            # in an empty ring) does not cover it. The reader checks the same condition.
            if cap - skipped >= RING_RECORD_HEADER_BYTES and ring_record_bytes(length) <= skipped:
                data_q[skipped // 8] = _WRAP_WORD
                data_q[skipped // 8 + 1] = seq
            self._wraps += 1
        data_q[start // 8] = _DATA_TAG | length
        data_q[start // 8 + 1] = seq
        words = self._words
        words[_W_WRITE_SEQ] = seq + 1
        words[_W_WRITE_POS] = new_write_pos  # publish: one aligned 8-byte store, last
        self._write_pos = new_write_pos
        self._seq = seq + 1
        self._res = None
        self._release_res_view()
        self._bytes_committed += length
        used = new_write_pos - words[_W_READ_POS]
        if used > self._peak_used:
            self._peak_used = min(used, cap)
        return Descriptor(self.name, start, length, seq, bytes(meta))

    def abort(self) -> None:
        """Drop the open reservation (if any) without publishing anything."""
        self._res = None
        self._release_res_view()

    def _release_res_view(self) -> None:
        view, self._res_view = self._res_view, None
        if view is not None:
            try:
                view.release()
            except BufferError:
                pass  # a caller's array still exports it

    def write_nowait(self, data: Any) -> Descriptor:
        """Copy ``data`` (bytes, bytearray, memoryview, ndarray: any buffer) into the ring
        once and publish it. Non-contiguous buffers are copied in C order, still once.

        Never blocks. Raises like :meth:`reserve_nowait`; on any failure nothing is
        published. The descriptor has no ``meta``: use :meth:`write_array_nowait` to keep
        dtype and shape.
        """
        src = memoryview(data)
        view = self.reserve_nowait(src.nbytes)
        try:
            if src.c_contiguous:
                view[:] = src if (src.ndim == 1 and src.format == "B") else src.cast("B")
            else:
                np = _np()
                arr = np.asarray(src)
                dst = np.ndarray(arr.shape, arr.dtype, buffer=view)
                np.copyto(dst, arr, casting="no")
                del dst
        except BaseException:
            self.abort()
            raise
        return self.commit()

    def write_array_nowait(self, array: npt.ArrayLike) -> Descriptor:
        """Copy a numpy array (any strides) into the ring once; the descriptor's ``meta``
        holds its dtype and shape for :meth:`RingReader.read_array`.

        Non-arrays are converted with ``numpy.asarray`` first. Raises like
        :meth:`reserve_nowait`, and BadRequest for dtypes :func:`encode_array_meta` refuses.
        """
        np = _np()
        arr = np.asarray(array)
        meta = encode_array_meta(arr.dtype, arr.shape)
        view = self.reserve_nowait(arr.nbytes)
        try:
            dst = np.ndarray(arr.shape, arr.dtype, buffer=view)
            np.copyto(dst, arr, casting="no")
            del dst
        except BaseException:
            self.abort()
            raise
        return self.commit(meta)

    def statistics(self) -> RingWriterStatistics:
        """Shared state plus peak use, bytes committed, WouldBlock and wrap counts."""
        return RingWriterStatistics(
            **self._base_statistics(),
            peak_used_bytes=self._peak_used,
            bytes_committed=self._bytes_committed,
            would_block_count=self._would_block,
            wrap_count=self._wraps,
        )

    def close(self) -> None:
        """Mark the writer closed in the ring and unmap. Idempotent; never unlinks.

        Records already committed stay readable by the reader. Call :meth:`unlink` (or
        let the supervisor sweep the node prefix) to remove the name.
        """
        self._res = None
        view, self._res_view = self._res_view, None
        self._close_views(_W_WRITER_CLOSED, [view] if view is not None else [])


# ---------------------------------------------------------------------------- reader


class RingReader(_RingEnd):
    """The consuming end. Attach with :meth:`attach`; one per ring, one thread.

    :meth:`read` gives a read-only zero-copy view of a record; :meth:`release` frees it,
    strictly in FIFO order. :meth:`retire` frees in any order (space is reclaimed once
    every older record is retired too), and :meth:`borrow` wraps read + retire.
    A view must not be used after its record is released: :meth:`release` invalidates the
    views it handed out when it can (see there).
    """

    __slots__ = ("_data_ro", "_read_pos", "_release_seq", "_retired", "_views")

    def __init__(self, segment: Segment, capacity_bytes: int) -> None:
        # Private: use RingReader.attach().
        super().__init__(segment, capacity_bytes)
        self._data_ro = self._data.toreadonly()
        self._read_pos = self._words[_W_READ_POS]
        self._release_seq = self._words[_W_RELEASE_SEQ]
        self._views: dict[int, list[memoryview]] = {}
        self._retired: dict[int, Descriptor] = {}

    @classmethod
    def attach(cls, name: str) -> RingReader:
        """Attach to the ring ``name`` that a :class:`RingWriter` created.

        Raises :class:`Unavailable` if it does not exist (its writer's node or worker was
        cleaned up), :class:`BadRequest` if the segment is not an initialised ring of this
        version, :class:`ValueError` for a bad name.
        """
        try:
            segment = Segment.attach(name)
        except FileNotFoundError:
            raise Unavailable(f"ring {name} does not exist") from None
        try:
            if segment.size_bytes < RING_HEADER_BYTES + _MIN_CAPACITY:
                raise BadRequest(f"segment {name} is too small to be a ring")
            words = segment.buf[:RING_HEADER_BYTES].cast("Q")
            try:
                magic, version = words[_W_MAGIC], words[_W_VERSION]
                capacity, header = words[_W_CAPACITY], words[_W_HEADER]
            finally:
                words.release()
            if magic != _MAGIC:
                raise BadRequest(f"segment {name} is not an initialised actrhost ring")
            if version != _VERSION or header != RING_HEADER_BYTES:
                raise BadRequest(f"ring {name} has version {version}, expected {_VERSION}")
            if segment.size_bytes != RING_HEADER_BYTES + capacity:
                raise BadRequest(f"ring {name}: capacity {capacity} does not match its size")
            _check_capacity(capacity)
            self = cls(segment, capacity)
        except BaseException:
            segment.close()
            raise
        self._words[_W_READER_PID] = os.getpid()
        return self

    def _record(self, desc: Descriptor) -> None:
        """Validate ``desc`` against the ring; raise BadRequest if it does not match."""
        self._check_open()
        if desc.ring != self.name:
            raise BadRequest(f"RingReader({self.name}): descriptor is for ring {desc.ring}")
        seq, offset, length = desc.sequence, desc.offset, desc.length
        if seq < self._release_seq or seq in self._retired:
            raise BadRequest(f"ring {self.name}: record {seq} was already released")
        if seq >= self._words[_W_WRITE_SEQ]:
            raise BadRequest(f"ring {self.name}: record {seq} was never committed")
        if (
            offset < 0
            or length < 0
            or offset % _ALIGN
            or offset + ring_record_bytes(length) > self.capacity_bytes
        ):
            raise BadRequest(
                f"ring {self.name}: descriptor out of bounds (offset {offset}, length {length})"
            )
        i = offset // 8
        if self._data_q[i] != _DATA_TAG | length or self._data_q[i + 1] != seq:
            raise BadRequest(
                f"ring {self.name}: descriptor (offset {offset}, length {length}, "
                f"sequence {seq}) does not match the record in the ring"
            )

    def read(self, desc: Descriptor) -> memoryview:
        """Return a read-only, zero-copy view of the record's payload. Never blocks.

        Valid until the record is released; reading the same record again is allowed.
        Raises :class:`BadRequest` if ``desc`` is for another ring, already released,
        not committed, or does not match the ring's record header;
        :class:`ClosedResourceError` after close.
        """
        self._record(desc)
        start = desc.offset + RING_RECORD_HEADER_BYTES
        view = self._data_ro[start : start + desc.length]
        self._views.setdefault(desc.sequence, []).append(view)
        return view

    def read_array(self, desc: Descriptor) -> np.ndarray[Any, Any]:
        """Return the record as a read-only ndarray with the dtype and shape in ``desc.meta``.

        Zero-copy; the array is valid until the record is released. Raises BadRequest if
        ``desc.meta`` is missing or malformed or does not match the payload length, and
        like :meth:`read`.
        """
        if not desc.meta:
            raise BadRequest(f"ring {self.name}: record {desc.sequence} carries no array meta")
        dtype, shape = decode_array_meta(desc.meta)
        count = 1
        for d in shape:
            count *= d
        if count * dtype.itemsize != desc.length:
            raise BadRequest(
                f"ring {self.name}: array {dtype}{list(shape)} needs {count * dtype.itemsize} "
                f"bytes, record {desc.sequence} has {desc.length}"
            )
        view = self.read(desc)
        return _np().frombuffer(view, dtype=dtype).reshape(shape)

    def release(self, desc: Descriptor) -> None:
        """Free the oldest unreleased record, ``desc``, so the writer may reuse its bytes.

        Strict FIFO: ``desc`` must be the oldest record not yet released, else
        :class:`BadRequest` (nothing changes). Views :meth:`read` returned for it are
        released too; a view something else still holds a buffer of (a numpy array made
        from it) cannot be, and then must simply not be used any more.
        """
        self._record(desc)
        if desc.sequence != self._release_seq:
            raise BadRequest(
                f"ring {self.name}: release out of order: record {desc.sequence}, "
                f"the oldest unreleased is {self._release_seq}"
            )
        self._advance(desc)
        self._drain_retired()

    def retire(self, desc: Descriptor) -> None:
        """Mark a record done, in any order; it is released with every older one.

        For consumers that finish records out of order (callbacks of different streams
        run concurrently). Raises BadRequest like :meth:`read`, or if already retired.
        """
        self._record(desc)
        self._invalidate(desc.sequence)
        if desc.sequence == self._release_seq:
            self._advance(desc)
            self._drain_retired()
        else:
            self._retired[desc.sequence] = desc

    @contextlib.contextmanager
    def borrow(self, desc: Descriptor) -> Iterator[Any]:
        """``with reader.borrow(desc) as payload:`` read, then retire on exit (even on error).

        ``payload`` is an ndarray (:meth:`read_array`) when ``desc.meta`` is set, else a
        memoryview (:meth:`read`): an array again when an array was sent.
        """
        payload = self.read_array(desc) if desc.meta else self.read(desc)
        try:
            yield payload
        finally:
            del payload
            if not self._closed:
                self.retire(desc)

    def _advance(self, desc: Descriptor) -> None:
        cap = self.capacity_bytes
        read_pos = self._read_pos
        at = read_pos % cap
        need = ring_record_bytes(desc.length)
        if desc.offset == at:
            start = read_pos
        elif desc.offset == 0:
            # The writer skipped the tail at `at`; check its wrap marker where one must be.
            tail = cap - at
            if tail >= RING_RECORD_HEADER_BYTES and need <= at:
                i = at // 8
                if self._data_q[i] != _WRAP_WORD or self._data_q[i + 1] != desc.sequence:
                    raise BadRequest(f"ring {self.name}: wrap marker missing at offset {at}")
            start = read_pos + tail
        else:
            raise BadRequest(
                f"ring {self.name}: record {desc.sequence} at offset {desc.offset} is not "
                f"where the oldest record must be (offset {at} or 0)"
            )
        new_read_pos = start + need
        if new_read_pos > self._words[_W_WRITE_POS]:
            raise BadRequest(f"ring {self.name}: record {desc.sequence} ends past the writer")
        self._invalidate(desc.sequence)
        words = self._words
        self._release_seq = desc.sequence + 1
        self._read_pos = new_read_pos
        words[_W_RELEASE_SEQ] = self._release_seq
        words[_W_READ_POS] = new_read_pos  # publish: one aligned 8-byte store, last

    def _drain_retired(self) -> None:
        retired = self._retired
        while retired:
            desc = retired.pop(self._release_seq, None)
            if desc is None:
                return
            self._advance(desc)

    def _invalidate(self, seq: int) -> None:
        views = self._views.pop(seq, None)
        if views:
            for view in views:
                try:
                    view.release()
                except BufferError:
                    pass  # an array made from it still exports it: cannot invalidate

    @property
    def pending_retired(self) -> int:
        """Records retired out of order, waiting for an older one before they are freed."""
        return len(self._retired)

    def statistics(self) -> RingStatistics:
        """A snapshot of the ring's shared state."""
        return RingStatistics(**self._base_statistics())

    def close(self) -> None:
        """Mark the reader closed in the ring (the writer then gets Unavailable) and unmap.

        Idempotent; never unlinks. Views still held stay valid memory until dropped.
        """
        views = [v for vs in self._views.values() for v in vs]
        self._views.clear()
        self._retired.clear()
        self._close_views(_W_READER_CLOSED, [*views, self._data_ro])
