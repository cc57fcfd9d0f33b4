"""The reading end of a shared-memory ring (layout and memory ordering: ``_ring.py``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._errors import BadRequest, Unavailable
from ._descriptor import Descriptor, _np, decode_array_meta
from ._ring import (
    _ALIGN,
    _DATA_TAG,
    _MAGIC,
    _MIN_CAPACITY,
    _VERSION,
    _W_CAPACITY,
    _W_HEADER,
    _W_MAGIC,
    _W_READ_POS,
    _W_READER_CLOSED,
    _W_READER_PID,
    _W_RELEASE_SEQ,
    _W_VERSION,
    _W_WRITE_POS,
    _W_WRITE_SEQ,
    _WRAP_WORD,
    RING_HEADER_BYTES,
    RING_RECORD_HEADER_BYTES,
    RingStatistics,
    _check_capacity,
    _RingEnd,
    ring_record_bytes,
)
from ._segment import Segment

if TYPE_CHECKING:
    import numpy as np


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
