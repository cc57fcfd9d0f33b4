"""The writing end of a shared-memory ring (layout and memory ordering: ``_ring.py``)."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from .._errors import BadRequest, Unavailable
from ._descriptor import Descriptor, _np, encode_array_meta
from ._ring import (
    _DATA_TAG,
    _MAGIC,
    _VERSION,
    _W_CAPACITY,
    _W_CREATED,
    _W_HEADER,
    _W_MAGIC,
    _W_READ_POS,
    _W_READER_CLOSED,
    _W_RELEASE_SEQ,
    _W_VERSION,
    _W_WRITE_POS,
    _W_WRITE_SEQ,
    _W_WRITER_CLOSED,
    _W_WRITER_PID,
    _WRAP_WORD,
    RING_HEADER_BYTES,
    RING_RECORD_HEADER_BYTES,
    RingWriterStatistics,
    WouldBlock,
    _check_capacity,
    _RingEnd,
    ring_record_bytes,
)
from ._segment import Segment

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)


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

    def records_in_use(self) -> int:
        """Records committed and not yet released by the reader."""
        self._check_open()
        return self._seq - self._words[_W_RELEASE_SEQ]

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
