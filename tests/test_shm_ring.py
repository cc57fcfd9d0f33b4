"""SPSC rings: unit tests, a Hypothesis state machine against a deque model, two processes."""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, register_random, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actrhost._errors import BadRequest, ClosedResourceError, Unavailable
from actrhost.shm import (
    DESCRIPTOR_FIXED_BYTES,
    RING_HEADER_BYTES,
    RING_RECORD_HEADER_BYTES,
    Descriptor,
    RingReader,
    RingWriter,
    Segment,
    WouldBlock,
    decode_array_meta,
    encode_array_meta,
    list_prefix,
    node_segment_prefix,
    ring_record_bytes,
    segment_name,
    unlink_prefix,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# The one Random of this file, registered so Hypothesis seeds and restores it (STYLE §4).
RNG = random.Random(0x5EED)
register_random(RNG)

# One node prefix for this test process (xdist workers are processes); tests that need
# isolation take the `node` fixture instead.
MODULE_NODE = "t" + uuid.uuid4().hex[:12]
_names = itertools.count()


def _fresh_name() -> str:
    return segment_name(MODULE_NODE, "r", next(_names))


@pytest.fixture(scope="module", autouse=True)
def _module_cleanup() -> Iterator[None]:
    yield
    unlink_prefix(node_segment_prefix(MODULE_NODE))
    assert list_prefix(node_segment_prefix(MODULE_NODE)) == []


@pytest.fixture
def node() -> Iterator[str]:
    node = "t" + uuid.uuid4().hex[:12]
    yield node
    unlink_prefix(node_segment_prefix(node))
    assert list_prefix(node_segment_prefix(node)) == []


@pytest.fixture
def ring() -> Iterator[tuple[RingWriter, RingReader]]:
    name = _fresh_name()
    writer = RingWriter.create(name, 256)
    reader = RingReader.attach(name)
    yield writer, reader
    reader.close()
    writer.close()
    writer.unlink()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


# ---------------------------------------------------------------------------- unit tests


def test_basic_round_trip(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    assert writer.capacity_bytes == reader.capacity_bytes == 256
    assert writer.max_record_bytes == 256 - RING_RECORD_HEADER_BYTES
    desc = writer.write_nowait(b"hello")
    assert desc == Descriptor(writer.name, 0, 5, 0)
    view = reader.read(desc)
    assert view.readonly and bytes(view) == b"hello"
    with pytest.raises(TypeError):
        view[0] = 1  # type: ignore[index]
    reader.release(desc)
    with pytest.raises(ValueError):
        bytes(view)  # released with its record
    assert writer.free_bytes() == 256
    stats = writer.statistics()
    assert (stats.records_committed, stats.records_released, stats.bytes_committed) == (1, 1, 5)
    assert stats.peak_used_bytes == ring_record_bytes(5) == 24


def test_segment_layout(ring: tuple[RingWriter, RingReader]) -> None:
    writer, _ = ring
    assert os.path.getsize(os.path.join("/dev/shm", writer.name)) == RING_HEADER_BYTES + 256


@pytest.mark.parametrize("capacity", [0, 8, 24, 33, 100, 2**32 + 8, True, 64.0])
def test_bad_capacity(capacity: object) -> None:
    with pytest.raises(ValueError):
        RingWriter.create(_fresh_name(), capacity)  # type: ignore[arg-type]


def test_sizes_zero_one_max_capacity(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    for size in (0, 1, writer.max_record_bytes):
        desc = writer.write_nowait(bytes([size % 251]) * size)
        assert bytes(reader.read(desc)) == bytes([size % 251]) * size
        reader.release(desc)
    for size in (writer.max_record_bytes + 1, writer.capacity_bytes, writer.capacity_bytes + 1):
        with pytest.raises(BadRequest, match="can never fit"):
            writer.write_nowait(bytes(size))
    assert writer.statistics().records_committed == 3


def test_full_ring_would_block_then_frees(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    descs = [writer.write_nowait(bytes([i]) * 48) for i in range(4)]  # 4 x 64 bytes
    assert writer.free_bytes() == 0
    with pytest.raises(WouldBlock):
        writer.write_nowait(b"")
    assert writer.statistics().would_block_count == 1
    reader.release(descs[0])
    assert writer.free_bytes() == 64
    desc = writer.write_nowait(bytes([9]) * 48)  # exactly the free space, wraps to 0
    assert desc.offset == 0
    for d in descs[1:]:
        assert bytes(reader.read(d)) == bytes([d.sequence]) * 48
        reader.release(d)
    assert bytes(reader.read(desc)) == bytes([9]) * 48
    reader.release(desc)


def test_wrap_from_empty_ring_accepts_max_record(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    small = writer.write_nowait(bytes(100))  # 120 bytes: write offset now 120
    reader.release(small)
    big = writer.write_nowait(b"\x01" * writer.max_record_bytes)  # must skip and wrap
    assert big.offset == 0
    assert writer.statistics().wrap_count == 1
    with pytest.raises(WouldBlock):
        writer.write_nowait(b"")
    assert bytes(reader.read(big)) == b"\x01" * writer.max_record_bytes
    reader.release(big)
    assert writer.free_bytes() == 256
    writer.write_nowait(b"again")


def test_release_out_of_order_is_refused(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    a, b = writer.write_nowait(b"a"), writer.write_nowait(b"b")
    with pytest.raises(BadRequest, match="out of order"):
        reader.release(b)
    reader.release(a)
    with pytest.raises(BadRequest, match="already released"):
        reader.release(a)
    with pytest.raises(BadRequest, match="already released"):
        reader.read(a)
    reader.release(b)


def test_retire_out_of_order(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    a, b, c = (writer.write_nowait(bytes([i]) * 40) for i in range(3))
    assert writer.records_in_use() == 3
    reader.retire(c)
    reader.retire(b)
    assert reader.pending_retired == 2 and writer.records_in_use() == 3
    assert writer.statistics().records_released == 0
    with pytest.raises(BadRequest):
        reader.retire(b)
    with pytest.raises(BadRequest):
        reader.read(c)
    assert bytes(reader.read(a)) == bytes(40)
    reader.retire(a)
    assert reader.pending_retired == 0 and writer.records_in_use() == 0
    assert writer.statistics().records_released == 3
    assert writer.free_bytes() == 256


def test_borrow_retires_even_on_error(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    desc = writer.write_nowait(b"payload")
    with pytest.raises(RuntimeError), reader.borrow(desc) as view:
        assert bytes(view) == b"payload"
        raise RuntimeError("callback failed")
    assert writer.statistics().records_released == 1


def test_bad_descriptors(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    desc = writer.write_nowait(b"abcdefgh")
    bad = [
        Descriptor("actrh-other-ring", desc.offset, desc.length, desc.sequence),
        Descriptor(desc.ring, desc.offset + 8, desc.length, desc.sequence),
        Descriptor(desc.ring, desc.offset + 3, desc.length, desc.sequence),
        Descriptor(desc.ring, desc.offset, desc.length + 1, desc.sequence),
        Descriptor(desc.ring, desc.offset, 10_000, desc.sequence),
        Descriptor(desc.ring, desc.offset, desc.length, desc.sequence + 1),
        Descriptor(desc.ring, -256, desc.length, desc.sequence),
        Descriptor(desc.ring, desc.offset, -1, desc.sequence),
    ]
    for d in bad:
        with pytest.raises(BadRequest):
            reader.read(d)
    assert bytes(reader.read(desc)) == b"abcdefgh"
    reader.release(desc)


def test_reserve_commit_abort(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    view = writer.reserve_nowait(10)
    with pytest.raises(RuntimeError):
        writer.reserve_nowait(1)
    view[:] = b"0123456789"
    writer.abort()
    assert writer.statistics().write_position == 0
    view = writer.reserve_nowait(4)
    view[:] = b"abcd"
    desc = writer.commit(b"meta")
    assert desc.meta == b"meta"
    with pytest.raises(ValueError):
        view[0] = 1  # the reservation view is released at commit
    with pytest.raises(RuntimeError):
        writer.commit()
    assert bytes(reader.read(desc)) == b"abcd"
    reader.release(desc)


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"bytes-payload",
        lambda: bytearray(b"bytearray"),
        lambda: memoryview(bytes(range(100)))[::7],  # non-contiguous
        lambda: memoryview(np.arange(24, dtype=np.int32).reshape(4, 6)),  # 2-D, format "i"
        lambda: np.arange(60, dtype=np.float64).reshape(6, 10)[::2, 1::3],  # strided
        lambda: np.asfortranarray(np.arange(12, dtype=np.uint16).reshape(3, 4)),
        lambda: np.float32(1.5).reshape(()),  # 0-d
        lambda: b"",
    ],
)
def test_write_nowait_buffers(ring: tuple[RingWriter, RingReader], make) -> None:  # type: ignore[no-untyped-def]
    writer, reader = ring
    data = make()
    expected = np.asarray(memoryview(data)).tobytes() if not isinstance(data, bytes) else data
    desc = writer.write_nowait(data)
    assert desc.length == len(expected)
    assert bytes(reader.read(desc)) == expected
    reader.release(desc)


def test_closed_ends(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    desc = writer.write_nowait(b"last")
    writer.close()
    writer.close()
    assert reader.writer_closed
    with pytest.raises(ClosedResourceError):
        writer.write_nowait(b"x")
    with pytest.raises(ClosedResourceError):
        writer.free_bytes()
    assert bytes(reader.read(desc)) == b"last"  # committed records stay readable
    reader.release(desc)
    reader.close()
    reader.close()
    with pytest.raises(ClosedResourceError):
        reader.read(desc)
    assert "closed" in repr(reader)


def test_reader_close_makes_writer_unavailable(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    view = reader.read(writer.write_nowait(b"held"))
    reader.close()
    with pytest.raises(ValueError):
        bytes(view)  # the reader's views are released with it
    assert writer.statistics().reader_closed
    with pytest.raises(Unavailable):
        writer.write_nowait(b"x")


def test_attach_errors(node: str) -> None:
    with pytest.raises(Unavailable):
        RingReader.attach(segment_name(node, "nope"))
    name = segment_name(node, "plain")
    seg = Segment.create(name, RING_HEADER_BYTES + 64)
    with pytest.raises(BadRequest, match="not an initialised"):
        RingReader.attach(name)
    seg.close()
    small = segment_name(node, "small")
    Segment.create(small, 8).close()
    with pytest.raises(BadRequest, match="too small"):
        RingReader.attach(small)
    with pytest.raises(FileExistsError):
        RingWriter.create(name, 64)


def test_unlink_and_is_linked(node: str) -> None:
    writer = RingWriter.create(segment_name(node, "l"), 64)
    assert writer.is_linked()
    writer.unlink()
    assert not writer.is_linked()
    writer.write_nowait(b"still works")
    writer.close()


# ---------------------------------------------------------------------------- descriptors


@given(
    name=st.from_regex(r"actrh-[a-z0-9]{1,40}-[a-z0-9.]{1,40}", fullmatch=True),
    offset=st.integers(0, 2**32 - 1),
    length=st.integers(0, 2**32 - 1),
    sequence=st.integers(0, 2**64 - 1),
    meta=st.binary(max_size=300),
)
@settings(max_examples=50, deadline=None)
def test_descriptor_round_trip(
    name: str, offset: int, length: int, sequence: int, meta: bytes
) -> None:
    desc = Descriptor(name, offset, length, sequence, meta)
    raw = desc.to_bytes()
    assert len(raw) == DESCRIPTOR_FIXED_BYTES + len(name) + len(meta)
    assert Descriptor.from_bytes(raw) == desc
    assert Descriptor.from_bytes(memoryview(raw)) == desc
    with pytest.raises(BadRequest):
        Descriptor.from_bytes(raw[:-1])
    with pytest.raises(BadRequest):
        Descriptor.from_bytes(raw + b"x")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01" * 5,
        b"\x02" + bytes(19),  # bad version
        Descriptor("actrh-a-b", 0, 0, 0).to_bytes().replace(b"actrh-a-b", b"actrh/a/b"),
        Descriptor("actrh-a-b", 0, 0, 0).to_bytes().replace(b"actrh-a-b", b"\xffctrh-a-b"),
    ],
)
def test_descriptor_malformed(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        Descriptor.from_bytes(raw)


# ---------------------------------------------------------------------------- numpy

_DTYPES = (
    hnp.scalar_dtypes()
    | hnp.byte_string_dtypes(max_len=8)
    | hnp.unicode_string_dtypes(max_len=8)
    | hnp.datetime64_dtypes()
    | hnp.timedelta64_dtypes()
)


@given(
    arr=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
    layout=st.sampled_from(["c", "f", "strided"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_numpy_round_trip(arr: np.ndarray, layout: str) -> None:
    if layout == "f":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = arr[..., ::2]
    name = _fresh_name()
    with RingWriter.create(name, 64 * 1024) as writer, RingReader.attach(name) as reader:
        desc = writer.write_array_nowait(arr)
        assert desc.length == arr.nbytes
        wire = Descriptor.from_bytes(desc.to_bytes())
        out = reader.read_array(wire)
        assert out.dtype == arr.dtype and out.shape == arr.shape
        assert not out.flags.writeable
        assert out.tobytes() == arr.tobytes()
        with reader.borrow(writer.write_array_nowait(arr)) as again:
            assert again.tobytes() == arr.tobytes()
        del out
        reader.release(wire)
        writer.unlink()


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype(object),
        np.dtype([("a", "<i4"), ("b", "<f8")]),
        np.dtype(("<f8", (2,))),
        np.dtype("S0"),
    ],
)
def test_numpy_refused_dtypes(dtype: np.dtype) -> None:
    with pytest.raises(BadRequest):
        encode_array_meta(dtype, (2,))


def test_array_meta_round_trip_and_malformed() -> None:
    meta = encode_array_meta(np.dtype(">f8"), (3, 4))
    assert len(meta) == 1 + 1 + 3 + 1 + 16
    assert decode_array_meta(meta) == (np.dtype(">f8"), (3, 4))
    assert decode_array_meta(encode_array_meta("<M8[ns]", ())) == (np.dtype("<M8[ns]"), ())
    good = encode_array_meta(np.dtype("<i2"), (5,))
    for bad in (
        b"",
        good[:-1],
        good + b"\x00",
        b"\x02" + good[1:],
        bytes((1, 3)) + b"|O8" + bytes((0,)),  # object dtype from the wire
        bytes((1, 9)) + b"i4,f8,u1" + bytes((0,)),
    ):
        with pytest.raises(BadRequest):
            decode_array_meta(bad)


def test_read_array_checks_meta(ring: tuple[RingWriter, RingReader]) -> None:
    writer, reader = ring
    desc = writer.write_nowait(bytes(16))
    with pytest.raises(BadRequest, match="no array meta"):
        reader.read_array(desc)
    lying = Descriptor(
        desc.ring, desc.offset, desc.length, desc.sequence, encode_array_meta("<f8", (3,))
    )
    with pytest.raises(BadRequest, match="needs 24 bytes"):
        reader.read_array(lying)
    ok = Descriptor(
        desc.ring, desc.offset, desc.length, desc.sequence, encode_array_meta("<f4", (2, 2))
    )
    assert reader.read_array(ok).shape == (2, 2)
    reader.release(desc)


# ---------------------------------------------------------------------------- state machine


@dataclass
class _Rec:
    desc: Descriptor
    payload: bytes
    end: int  # the model's write position after this record
    held: memoryview  # a view taken right after the write, kept until release
    retired: bool = False
    crc: int = field(init=False)

    def __post_init__(self) -> None:
        self.crc = zlib.crc32(self.payload)


class RingMachine(RuleBasedStateMachine):
    """The ring against a model: a deque of live records plus the two byte counters.

    The model decides independently where each record must go (FIFO, never split, skip
    the tail and wrap to 0, always allowed into an empty ring) and whether it fits; the
    ring must agree exactly, never change a live record's bytes, and never let two live
    records overlap.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: deque[_Rec] = deque()
        self.released: list[Descriptor] = []
        self.write_pos = 0
        self.read_pos = 0
        self.seq = 0

    @initialize(capacity=st.sampled_from([32, 40, 64, 96, 128, 200, 256, 1000]))
    def create(self, capacity: int) -> None:
        self.cap = capacity
        self.name = _fresh_name()
        self.writer = RingWriter.create(self.name, capacity)
        self.reader = RingReader.attach(self.name)

    def teardown(self) -> None:
        if hasattr(self, "writer"):
            for rec in self.live:
                rec.held.release()
            self.reader.close()
            self.writer.close()
            self.writer.unlink()

    # The size to write, chosen relative to the current state.
    def _size(self, kind: str, n: int) -> int:
        cap, used = self.cap, self.write_pos - self.read_pos
        offset = self.write_pos % cap
        tail = cap - offset
        target = {
            "zero": 0,
            "one": 1,
            "max": cap - RING_RECORD_HEADER_BYTES,
            "max+1": cap - RING_RECORD_HEADER_BYTES + 1,
            "cap": cap,
            "cap+1": cap + 1,
            "free": cap - used - RING_RECORD_HEADER_BYTES,  # record == free space exactly
            "free+1": cap - used - RING_RECORD_HEADER_BYTES + 1,
            "tail": tail - RING_RECORD_HEADER_BYTES,  # record == tail exactly
            "tail+1": tail - RING_RECORD_HEADER_BYTES + 1,
            "head": self.read_pos % cap - RING_RECORD_HEADER_BYTES,  # fits before the reader
            "random": n % (cap + 24),
        }[kind]
        return max(target, 0)

    def _expect(self, size: int) -> tuple[str, int, int]:
        """(outcome, start offset, new write position) by the model's rules."""
        cap, used = self.cap, self.write_pos - self.read_pos
        need = RING_RECORD_HEADER_BYTES + (size + 7) // 8 * 8
        if need > cap:
            return "too-big", -1, -1
        offset = self.write_pos % cap
        tail = cap - offset
        if need <= tail:
            ok = used + need <= cap
            return ("ok" if ok else "block"), offset, self.write_pos + need
        ok = used == 0 or used + tail + need <= cap
        return ("ok" if ok else "block"), 0, self.write_pos + tail + need

    @rule(
        kind=st.sampled_from(
            [
                "zero",
                "one",
                "max",
                "max+1",
                "cap",
                "cap+1",
                "free",
                "free+1",
                "tail",
                "tail+1",
                "head",
                "random",
                "random",
                "random",
            ]
        ),
        n=st.integers(0, 1100),
        method=st.sampled_from(["bytes", "memoryview", "reserve", "numpy"]),
        seed=st.integers(0, 2**32),
    )
    def write(self, kind: str, n: int, method: str, seed: int) -> None:
        size = self._size(kind, n)
        payload = random.Random(seed).randbytes(size)
        outcome, start, new_write_pos = self._expect(size)
        wraps = start == 0 and self.write_pos % self.cap != 0
        event(f"write {outcome}{' (wraps)' if wraps and outcome != 'too-big' else ''}")
        before = self.writer.statistics()
        try:
            if method == "bytes":
                desc = self.writer.write_nowait(payload)
            elif method == "memoryview":
                desc = self.writer.write_nowait(memoryview(bytearray(payload)))
            elif method == "numpy":
                desc = self.writer.write_nowait(np.frombuffer(payload, dtype=np.uint8))
            else:
                view = self.writer.reserve_nowait(size)
                view[:] = payload
                desc = self.writer.commit()
        except BadRequest:
            assert outcome == "too-big", (outcome, size)
            assert self.writer.statistics().write_position == before.write_position
            return
        except WouldBlock:
            assert outcome == "block", (outcome, size)
            assert self.writer.statistics().write_position == before.write_position
            return
        assert outcome == "ok", (outcome, size, desc)
        assert (desc.offset, desc.length, desc.sequence) == (start, size, self.seq)
        need = ring_record_bytes(size)
        for rec in self.live:  # never overlapping a live record
            other = ring_record_bytes(rec.desc.length)
            assert start + need <= rec.desc.offset or rec.desc.offset + other <= start
        self.seq += 1
        self.write_pos = new_write_pos
        self.live.append(_Rec(desc, payload, new_write_pos, self.reader.read(desc)))

    @precondition(lambda self: self.live)
    @rule(how=st.sampled_from(["release", "retire", "wire"]))
    def release_oldest(self, how: str) -> None:
        rec = self.live[0]
        if rec.retired:
            return
        assert bytes(rec.held) == rec.payload
        desc = Descriptor.from_bytes(rec.desc.to_bytes()) if how == "wire" else rec.desc
        (self.reader.retire if how == "retire" else self.reader.release)(desc)
        rec.retired = True
        self._pop_retired()

    @precondition(lambda self: len(self.live) >= 2)
    @rule(data=st.data())
    def retire_later(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(1, len(self.live) - 1))
        rec = self.live[index]
        if rec.retired:
            with pytest.raises(BadRequest):
                self.reader.retire(rec.desc)
            return
        with pytest.raises(BadRequest, match="out of order"):
            self.reader.release(rec.desc)
        self.reader.retire(rec.desc)
        rec.retired = True
        self._pop_retired()

    def _pop_retired(self) -> None:
        while self.live and self.live[0].retired:
            rec = self.live.popleft()
            self.read_pos = rec.end
            self.released.append(rec.desc)
            with pytest.raises(ValueError):
                rec.held.tobytes()  # released together with its record

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def read_released(self, data: st.DataObject) -> None:
        desc = data.draw(st.sampled_from(self.released[-20:]))
        with pytest.raises(BadRequest):
            self.reader.read(desc)

    @rule(size=st.integers(0, 64))
    def reserve_and_abort(self, size: int) -> None:
        try:
            view = self.writer.reserve_nowait(size)
        except (WouldBlock, BadRequest):
            return
        view[:] = b"\xee" * size
        self.writer.abort()

    @invariant()
    def counters_match(self) -> None:
        if not hasattr(self, "writer"):
            return
        stats = self.writer.statistics()
        assert (stats.write_position, stats.read_position) == (self.write_pos, self.read_pos)
        assert stats.records_committed == self.seq
        assert self.writer.free_bytes() == max(self.cap - (self.write_pos - self.read_pos), 0)
        if not self.live:
            assert self.writer.free_bytes() == self.cap

    @invariant()
    def live_data_intact(self) -> None:
        for rec in self.live:
            if rec.retired:
                continue
            assert zlib.crc32(rec.held) == rec.crc
            assert bytes(self.reader.read(rec.desc)) == rec.payload


RingMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_ring_state_machine = RingMachine.TestCase


# ---------------------------------------------------------------------------- two processes

_READER_CHILD = textwrap.dedent(
    """
    import json, os, select, struct, sys, zlib
    from collections import deque
    from actrhost.shm import Descriptor, RingReader

    hold = int(sys.argv[1])
    fd = sys.stdin.fileno()
    buf = bytearray()
    reader = None
    outstanding = deque()
    count = errors = 0

    def frame(block):
        while True:
            if len(buf) >= 4:
                (n,) = struct.unpack_from("<I", buf)
                if len(buf) >= 4 + n:
                    f = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    return f
            if not block and not select.select([fd], [], [], 0)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError
            buf.extend(chunk)

    def release_one():
        global errors
        desc, view, crc = outstanding.popleft()
        if zlib.crc32(view) != crc:  # still intact after the writer moved on
            errors += 1
        reader.release(desc)

    while True:
        f = frame(block=not outstanding)
        if f is None:  # nothing pending: give the writer its space back
            while outstanding:
                release_one()
            continue
        if f == b"":
            break
        desc, crc = Descriptor.from_bytes(f[:-4]), struct.unpack("<I", f[-4:])[0]
        if reader is None:
            reader = RingReader.attach(desc.ring)  # lazily, on the first descriptor
        view = reader.read(desc)
        if zlib.crc32(view) != crc:
            errors += 1
        count += 1
        outstanding.append((desc, view, crc))
        while len(outstanding) > hold:
            release_one()
    while outstanding:
        release_one()
    reader.close()
    print(json.dumps({"count": count, "errors": errors}))
    """
)


@pytest.mark.parametrize(("capacity", "records", "hold"), [(4096, 3000, 3), (65536, 2000, 20)])
def test_two_process_stream(capacity: int, records: int, hold: int) -> None:
    name = _fresh_name()
    writer = RingWriter.create(name, capacity)
    max_size = writer.max_record_bytes
    pool = RNG.randbytes(2 * max_size + 1)
    proc = subprocess.Popen(
        [sys.executable, "-c", _READER_CHILD, str(hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    assert proc.stdin is not None
    deadline = time.monotonic() + 40
    try:
        for _ in range(records):
            r = RNG.random()
            hi = 256 if r < 0.6 else (max_size // 4 if r < 0.9 else max_size)
            size = RNG.randint(0, hi)
            start = RNG.randrange(len(pool) - size)
            data = memoryview(pool)[start : start + size]
            while True:
                try:
                    desc = writer.write_nowait(data)
                    break
                except WouldBlock:
                    assert time.monotonic() < deadline, "reader made no progress"
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    time.sleep(0.0002)
            frame = desc.to_bytes() + struct.pack("<I", zlib.crc32(data))
            proc.stdin.write(struct.pack("<I", len(frame)) + frame)
            proc.stdin.flush()
        proc.stdin.write(struct.pack("<I", 0))
        proc.stdin.flush()
        out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert err == b""
    result = json.loads(out)
    assert result == {"count": records, "errors": 0}
    stats = writer.statistics()
    assert stats.records_released == stats.records_committed == records
    assert stats.used_bytes == 0 and stats.reader_closed
    assert stats.wrap_count > 20  # many laps
    writer.close()
    writer.unlink()
