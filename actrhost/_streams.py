"""Data streams and media samples: what both halves share, and the receiving half
(the sending half is :mod:`._stream_sender`).

Payloads below ``[shm] threshold_bytes`` travel inline in the ZeroMQ frame. Larger ones
are copied once into a single-producer/single-consumer ring shared with the receiver
(one ring per directed pair, created lazily by the sender) and only a descriptor travels
over ZeroMQ; the receiver's callback gets a zero-copy view, and the record is released
when the callback returns (DESIGN §6).

Lanes decide what happens under pressure (DESIGN §3): STREAM_RELIABLE waits for room,
bounded by the send's timeout, and loses nothing; STREAM_LATENCY_FIRST and MEDIA_RTP
drop and count — the sender drops a sample it has no room for, the receiver keeps only
the newest sample queued behind a slow callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import _envelope as wire
from ._actor import check_callback
from ._envelope import StreamFrame
from ._errors import ActrError, BadRequest, Unavailable, cancelled_from_outside
from ._linux import process_gone
from ._payload_type import PayloadType
from ._payloads import DataStream, MediaSample
from ._ring_readers import RingOfAnotherProcess, RingReaders
from ._rpc_receiving import worth_logging
from .shm import (
    Descriptor,
    encode_array_meta,
    list_prefix,
    node_segment_prefix,
    segment_name,
)

log = logging.getLogger(__name__)

#: ``async def on_chunk(chunk: DataStream, sender: ActrId)`` (DESIGN §4); a plain
#: function returning None works too. The sender is typed Any so that a callback may
#: annotate it as DESIGN writes it: it is None for a chunk a Shell sent.
ChunkCallback = Callable[[DataStream, Any], Awaitable[None] | None]
#: ``async def on_sample(sample: MediaSample, sender: ActrId)``, as ChunkCallback.
SampleCallback = Callable[[MediaSample, Any], Awaitable[None] | None]
#: Either, as the receiver keeps them (it hands each the kind it was registered for).
StreamCallback = Callable[[Any, Any], Awaitable[None] | None]

#: Lanes that drop under pressure instead of waiting.
LOSSY_LANES = frozenset({PayloadType.STREAM_LATENCY_FIRST, PayloadType.MEDIA_RTP})
#: A lossy chunk (or sample) that has waited this long behind its stream's callback is
#: stale once a newer one of that stream waits too, and is dropped. A burst that reaches
#: an idle callback is delivered whole (audio frames sent back to back lost all but the
#: newest, QA); a callback slower than its stream skips to the newest.
LOSSY_STALE_S = 0.02
#: At most this many lossy chunks wait per stream, however fresh (the oldest go first).
LOSSY_QUEUE_MAX = 64
#: A stream's task hands the loop back after this long of callbacks that did not: the
#: actor's other streams and its calls go on meanwhile (QA: with 1 ms callbacks that
#: never awaited, a backlog of 2,000 chunks held up another stream's chunk for 1.85 s).
YIELD_AFTER_S = 0.002


@dataclass
class StreamCounters:
    """Stream and media counters, reported by ``actrhost status``."""

    chunks_sent: int = 0
    chunks_received: int = 0
    # Payload bytes sent (streams_out) or handed to a callback (streams_in), by the way
    # they went: through a shared-memory ring, or inside the frame.
    bytes_via_shm: int = 0
    bytes_inline: int = 0
    dropped_sender: int = 0  # lossy lanes: no room in the ring or the socket
    dropped_receiver: int = 0  # lossy lanes: replaced by a newer sample
    unregistered: int = 0  # no callback for the stream / track
    not_running: int = 0  # arrived while the actor stopped, or beyond what on_start holds
    previous_process: int = 0  # sent to this instance's previous process (it died)
    malformed: int = 0  # its ring record or array description does not hold up: dropped
    # Its ring was gone before this process mapped it: its sender died long before (its
    # rings are kept WRITER_GONE_GRACE_S for their reader), lost with it.
    ring_gone: int = 0
    callback_errors: int = 0
    # Reliable chunks to other nodes sent again, in doubt, after the node's gateway died;
    # and those that could not go again.
    chunks_sent_again: int = 0
    chunks_not_sent_again: int = 0

    def as_dict(self) -> dict[str, int]:
        """A JSON-ready copy."""
        return dict(vars(self))


def chunk_frame(chunk: DataStream, payload_type: int) -> StreamFrame:
    """The routing frame for a data-stream chunk (payload added when it is sent)."""
    if payload_type not in (PayloadType.STREAM_RELIABLE, PayloadType.STREAM_LATENCY_FIRST):
        raise BadRequest(
            f"send_data_stream uses a STREAM_* lane, not {PayloadType(payload_type).name}"
        )
    return StreamFrame(
        wire.STREAM,
        wire.checked_key("stream_id", chunk.stream_id),
        payload_type=payload_type,
        sequence=wire.checked_int("sequence", chunk.sequence, 64),
        timestamp=wire.checked_int("timestamp_ms", chunk.timestamp_ms, 64, signed=True),
        metadata=checked_metadata(chunk.metadata),
    )


def checked_metadata(metadata: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A chunk's metadata as the frame carries it; TypeError unless str to str."""
    items = tuple(metadata.items())
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"stream metadata maps str to str, not {key!r}: {value!r}")
    return items


def sample_frame(track_id: str, sample: MediaSample) -> StreamFrame:
    """The routing frame for a media sample (payload added when it is sent)."""
    return StreamFrame(
        wire.MEDIA,
        wire.checked_key("track_id", track_id),
        payload_type=PayloadType.MEDIA_RTP,
        timestamp=wire.checked_int("timestamp", sample.timestamp, 32),
        codec=sample.codec,
        media_type=str(sample.media_type),
    )


def payload_buffer(payload: Any) -> tuple[Any, bytes]:
    """(a buffer for ``payload``, its array meta or b"") for bytes, memoryview or ndarray."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return payload, b""
    if hasattr(payload, "__array_interface__") and hasattr(payload, "dtype"):
        return payload, encode_array_meta(payload.dtype, payload.shape)
    raise BadRequest(
        "a stream payload must be bytes, a memoryview or a numpy array, "
        f"not {type(payload).__name__}"
    )


def nbytes_of(buffer: Any) -> int:
    """Size in bytes of a buffer or array."""
    size = getattr(buffer, "nbytes", None)
    return len(buffer) if size is None else int(size)


def ring_name(node_prefix: str, writer_tag: str, reader_serial: int, reader_pid: int) -> str:
    """The segment name of the ring from ``writer_tag`` (a worker's ``<serial>.<pid>`` in
    hex, or a Shell's ``s<pid>.<token>``, then the ring's number in that process) to one
    process of the instance ``reader_serial``. Both pids and the number are in it: a
    restarted writer or reader, or a ring made again, gets a name of its own, never one
    whose other end still holds records of the ring before."""
    return segment_name(node_prefix, writer_tag, f"{reader_serial:x}", f"{reader_pid:x}")


def unlink_rings_of(node_prefix: str, serial: int) -> int:
    """Unlink the rings the instance ``serial`` read, and those it wrote to a reader that
    is gone too (its process is gone); return how many. The supervisor's sweep after each
    worker exit.

    Its rings to a reader that still runs are left to that reader: their descriptors may
    wait in its socket (a full backlog pauses its reading), and it removes the name when
    it maps the ring. Unlinked at the writer's exit, a first ring's chunks were lost, as
    "malformed" (QA). The supervisor removes those still there later
    (:func:`rings_of_gone_writers`)."""
    tag = f"{serial:x}"

    def whose(writer: tuple[str, str], reader: tuple[str, str]) -> bool:
        return reader[0] == tag or (writer[0] == tag and _gone(reader[1]))

    return _unlink_rings(node_prefix, whose)


def unlink_rings_of_process(node_prefix: str, pid: int) -> int:
    """Unlink every ring the worker process ``pid`` wrote or read; return how many. Its
    last resort when its supervisor died and its loop could not (``_orphan_guard``)."""
    tag = f"{pid:x}"

    def whose(writer: tuple[str, str], reader: tuple[str, str]) -> bool:
        # A Shell's writer tag is "s<pid>.<token>": its second part is no pid.
        return reader[1] == tag or (writer[1] == tag and not writer[0].startswith("s"))

    return _unlink_rings(node_prefix, whose)


def rings_of_gone_writers(node_prefix: str) -> dict[str, bool]:
    """The node's rings whose writer's process (a worker's, a Shell's) is gone, none of
    them mapped by its reader yet (that removes the name): name -> whether that reader
    still runs. The supervisor's sweep removes them (``_supervisor``)."""
    prefix = node_segment_prefix(node_prefix)
    found: dict[str, bool] = {}
    for name in list_prefix(prefix):
        writer, reader = _ends(name[len(prefix) :])
        writer_pid = writer[0][1:] if writer[0].startswith("s") else writer[1]
        if _gone(writer_pid):
            found[name] = not _gone(reader[1])
    return found


def _unlink_rings(
    node_prefix: str, whose: Callable[[tuple[str, str], tuple[str, str]], bool]
) -> int:
    prefix = node_segment_prefix(node_prefix)
    removed = 0
    for name in list_prefix(prefix):
        if whose(*_ends(name[len(prefix) :])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")
                removed += 1
    return removed


def _ends(ring: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(serial, pid) of the writer and of the reader, in hex, of a ring name without the
    node's prefix: ``<writer serial>.<writer pid>.<n>-<reader serial>-<reader pid>``
    (:func:`ring_name`); a Shell writer's are ``s<pid>`` and its token."""
    parts = ring.split("-")
    writer = parts[0].split(".")
    return (
        (writer[0], writer[1] if len(writer) > 1 else ""),
        (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""),
    )


def _gone(pid_hex: str) -> bool:
    try:
        return process_gone(int(pid_hex, 16))
    except ValueError:  # no pid: not one of ours, nobody to wait for
        return True


class _Queue:
    """Pending chunks of one stream (or samples of one track), with their arrival times:
    run one at a time, in order, by whichever callback is registered when their turn
    comes."""

    __slots__ = ("items", "key", "lossy", "running")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.items: deque[tuple[StreamFrame, Descriptor | None, float]] = deque()
        self.lossy = 0  # lossy items among them
        self.running = False


class StreamReceiver:
    """Dispatches incoming chunks and samples to registered callbacks.

    ``capacity`` bounds the chunks queued behind callbacks (all streams together); when it
    is reached ``on_full`` is called (the owner stops reading its socket) and ``on_space``
    once the backlog is down to half.
    """

    def __init__(
        self,
        *,
        node_prefix: str,
        capacity: int,
        on_full: Callable[[], None],
        on_space: Callable[[], None],
    ) -> None:
        self._callbacks: dict[tuple[str, str], StreamCallback] = {}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._rings = RingReaders(node_prefix)
        self._backlog = 0
        self._in_callback = 0  # chunks handed to a callback that has not returned yet
        self._full = False
        self.capacity = capacity
        self._on_full = on_full
        self._on_space = on_space
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = StreamCounters()
        self._loop = asyncio.get_running_loop()

    # -- registration ------------------------------------------------------------------

    def register(self, kind: str, key: str, callback: StreamCallback) -> None:
        """Route chunks of ``key`` (a stream id or track id) to ``callback``."""
        if not callable(callback):
            raise TypeError("a stream callback must be an 'async def cb(chunk, sender)'")
        check_callback(callback, "a stream callback cb(chunk, sender)")
        wire.checked_key("stream_id" if kind == wire.STREAM else "track_id", key)
        self._callbacks[(kind, key)] = callback

    def unregister(self, kind: str, key: str) -> None:
        """Stop routing ``key``; chunks arriving later are dropped and counted."""
        self._callbacks.pop((kind, key), None)

    # -- receiving ---------------------------------------------------------------------

    def _descriptor(self, frame: StreamFrame) -> Descriptor | None:
        if not frame.shm:
            return None
        descriptor = Descriptor.from_bytes(frame.shm)
        self._rings.arrived(descriptor)  # every path from here ends in _retire
        return descriptor

    def discard(self, frame: StreamFrame) -> None:
        """Drop a frame the owner refuses (stopping, ACL), releasing its ring record."""
        try:
            descriptor = self._descriptor(frame)
        except RingOfAnotherProcess:
            self._for_previous_process(frame)
            return
        except BadRequest as exc:
            self._malformed(frame, exc)
            return
        if descriptor is not None:
            self._retire(descriptor)

    def on_frame(self, frame: StreamFrame) -> None:
        """Take one frame off the socket (synchronous: nothing is awaited). One whose
        ring record does not hold up is dropped and counted (``malformed``)."""
        try:
            descriptor = self._descriptor(frame)
        except RingOfAnotherProcess:
            # Sent to this instance's previous process, which died (its successor binds
            # the same address): lost with it, as what it had queued. Reading it killed
            # the worker, which the restart met again; then it was counted "malformed",
            # which looked like corruption (QA).
            self._for_previous_process(frame)
            return
        except BadRequest as exc:  # a ring of another node, a record that does not hold up
            self._malformed(frame, exc)
            return
        self.counters.chunks_received += 1
        key = (frame.kind, frame.key)
        callback = self._callbacks.get(key)
        if callback is None:
            self.counters.unregistered += 1
            if descriptor is not None:
                self._retire(descriptor)
            log.debug("dropped a %s for unregistered %r", frame.kind, frame.key)
            return
        queue = self._queues.get(key)
        if queue is None:
            # One queue (and one task at a time) per stream, whatever its callback: a
            # second register_stream while chunks waited once started a second task, and
            # the two ran callbacks of the stream at once, out of order (QA).
            queue = self._queues[key] = _Queue(key)
        now = self._loop.time()
        if frame.payload_type in LOSSY_LANES:
            if queue.lossy:
                self._drop_stale(queue, now - LOSSY_STALE_S, LOSSY_QUEUE_MAX - 1)
            queue.lossy += 1
        queue.items.append((frame, descriptor, now))
        self._backlog += 1
        if not queue.running:
            queue.running = True
            task = self._loop.create_task(self._run(queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self._full and self._backlog >= self.capacity:
            self._full = True
            self._on_full()

    def _drop_stale(self, queue: _Queue, arrived_before: float, keep_at_most: int) -> None:
        """Newest wins: drop the queue's lossy chunks that arrived before
        ``arrived_before``, and the oldest beyond ``keep_at_most``. Reliable chunks of the
        same stream id stay: they promise delivery (until 2026-12-02 a latency-first chunk
        dropped them too)."""
        kept: deque[tuple[StreamFrame, Descriptor | None, float]] = deque()
        excess = queue.lossy - keep_at_most
        for item in queue.items:
            old, old_descriptor, arrived = item
            if old.payload_type not in LOSSY_LANES or (arrived >= arrived_before and excess <= 0):
                kept.append(item)
                continue
            excess -= 1
            queue.lossy -= 1
            self._backlog -= 1
            self.counters.dropped_receiver += 1
            if old_descriptor is not None:
                self._retire(old_descriptor)
        queue.items = kept

    def _next(self, queue: _Queue) -> tuple[StreamFrame, Descriptor | None] | None:
        """The queue's next chunk to hand over, stale lossy ones dropped first."""
        if queue.lossy > 1:
            # Stale, and a newer one waits (the newest lossy chunk is never stale).
            newest = max(arrived for f, _d, arrived in queue.items if f.payload_type in LOSSY_LANES)
            self._drop_stale(queue, min(newest, self._loop.time() - LOSSY_STALE_S), queue.lossy)
        if not queue.items:
            return None
        frame, descriptor, _arrived = queue.items.popleft()
        if frame.payload_type in LOSSY_LANES:
            queue.lossy -= 1
        self._backlog -= 1
        if self._full and self._backlog <= self.capacity // 2:
            self._full = False
            self._on_space()
        return frame, descriptor

    async def _run(self, queue: _Queue) -> None:
        clock = self._loop.time
        turn_began = clock()
        try:
            while True:
                if clock() - turn_began >= YIELD_AFTER_S:
                    await asyncio.sleep(0)  # (one loop turn: a few microseconds)
                    turn_began = clock()
                taken = self._next(queue)
                if taken is None:
                    break
                frame, descriptor = taken
                callback = self._callbacks.get(queue.key)
                if callback is None:  # unregistered while it waited
                    self.counters.unregistered += 1
                    if descriptor is not None:
                        self._retire(descriptor)
                    continue
                try:
                    try:
                        value = self._view(frame, descriptor)
                    except Unavailable as exc:  # not the sender's fault: it died
                        self._ring_gone(frame, exc)
                        continue
                    except (ActrError, ValueError) as exc:
                        # The sender's fault, not the callback's: dropped, counted apart.
                        self._malformed(frame, exc)
                        continue
                    if descriptor is not None:  # its length checked against the ring now
                        self.counters.bytes_via_shm += descriptor.length
                    else:
                        self.counters.bytes_inline += len(frame.payload)
                    item = (
                        DataStream(
                            frame.key, frame.sequence, value, dict(frame.metadata), frame.timestamp
                        )
                        if frame.kind == wire.STREAM
                        else MediaSample(value, frame.timestamp, frame.codec, frame.media_type)
                    )
                    self._in_callback += 1
                    try:
                        pending = callback(item, frame.source)
                        # A plain function is done already, whatever it returned (a
                        # value was awaited: an error on every chunk, QA).
                        if inspect.isawaitable(pending):
                            await pending
                    finally:
                        self._in_callback -= 1
                except asyncio.CancelledError:
                    if cancelled_from_outside():  # a stop or an unregister
                        raise
                    # The callback's own (a future it awaited was cancelled): as any
                    # exception. It ended this task with chunks queued, and a full
                    # backlog never read the socket again: the actor hung, silently (QA).
                    self._callback_failed(frame)
                except (SystemExit, KeyboardInterrupt):
                    raise  # they end the process, as anywhere in it
                except BaseException:
                    # Exceptions, and GeneratorExit and the like: asyncio kept those in this
                    # task, and the stream stalled. (Not the worker's end, as a handler's:
                    # in a Shell that was the user's program, QA; no caller waits here.)
                    self._callback_failed(frame)
                finally:
                    # Drop our references before the slot is reused.
                    value = None
                    item = None  # type: ignore[assignment]
                    if descriptor is not None:
                        self._retire(descriptor)
        finally:
            queue.running = False
            if not queue.items and self._queues.get(queue.key) is queue:
                del self._queues[queue.key]  # stream ids come and go

    def _callback_failed(self, frame: StreamFrame) -> None:
        self.counters.callback_errors += 1
        # Sparingly: one that raises on every chunk wrote 5 MB of tracebacks in 2 s (QA);
        # the count is in `actrhost status`.
        if worth_logging(self.counters.callback_errors):
            log.exception(
                "%s callback for %r raised; the stream goes on (#%d)",
                frame.kind,
                frame.key,
                self.counters.callback_errors,
            )

    def _for_previous_process(self, frame: StreamFrame) -> None:
        self.counters.previous_process += 1
        count = self.counters.previous_process
        if worth_logging(count):
            log.info(
                "dropped %r: sent to this instance's previous process, which died (#%d)",
                frame,
                count,
            )

    def _ring_gone(self, frame: StreamFrame, exc: Unavailable) -> None:
        self.counters.ring_gone += 1
        if worth_logging(self.counters.ring_gone):
            log.warning(
                "dropped %r: %s: its sender died before this process read it (ring_gone: %d)",
                frame,
                exc.message,
                self.counters.ring_gone,
            )

    def _malformed(self, frame: StreamFrame, exc: Exception) -> None:
        self.counters.malformed += 1
        count = self.counters.malformed
        if worth_logging(count):
            why = exc.message if isinstance(exc, ActrError) else str(exc)
            log.warning("dropped %r: %s (malformed chunk #%d)", frame, why, count)

    def _view(self, frame: StreamFrame, descriptor: Descriptor | None) -> Any:
        if descriptor is not None:
            reader = self._rings.get(descriptor.ring)
            return reader.read_array(descriptor) if descriptor.meta else reader.read(descriptor)
        if frame.array_meta:
            import numpy as np

            from .shm import decode_array_meta

            dtype, shape = decode_array_meta(frame.array_meta)
            return np.frombuffer(frame.payload, dtype=dtype).reshape(shape)
        return memoryview(frame.payload)

    def _retire(self, descriptor: Descriptor) -> None:
        try:
            self._rings.retire(descriptor)
        except Exception as exc:  # a ring of a sender that died meanwhile
            log.debug(
                "could not release record %s of %s: %s", descriptor.sequence, descriptor.ring, exc
            )

    def forget_source(self, tag: str) -> None:
        """Close the rings written by a sender that went away (``tag`` is its name part)."""
        self._rings.forget_writer(tag)

    @property
    def backlog(self) -> int:
        """Chunks queued behind callbacks."""
        return self._backlog

    @property
    def in_callback(self) -> int:
        """Chunks whose callback runs now (a stop that cancels it loses them)."""
        return self._in_callback

    def close(self) -> None:
        """Cancel callbacks and close every ring reader."""
        for task in list(self._tasks):
            task.cancel()
        self._rings.close()
