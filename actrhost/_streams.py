"""Data streams and media samples: the sending and receiving halves of one process.

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
import itertools
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq

from . import _envelope as wire
from ._directory import SHELL_READER_SERIAL
from ._envelope import StreamFrame
from ._errors import ActrError, BadRequest, ClosedResourceError, DeadlineExceeded, Unavailable
from ._ids import ActrId
from ._payload_type import PayloadType
from ._payloads import DataStream, MediaSample
from ._ring_readers import RingReaders
from ._rpc import RpcEndpoint, worth_logging
from .shm import (
    Descriptor,
    RingWriter,
    WouldBlock,
    encode_array_meta,
    list_prefix,
    node_segment_prefix,
    segment_name,
)

log = logging.getLogger(__name__)

#: ``async def cb(chunk, sender)``; a plain function returning None works too.
StreamCallback = Callable[[Any, ActrId | None], Awaitable[None] | None]

#: Lanes that drop under pressure instead of waiting.
LOSSY_LANES = frozenset({PayloadType.STREAM_LATENCY_FIRST, PayloadType.MEDIA_RTP})
#: How a reliable sender polls a full ring: the ring has no wake-up of its own, and the
#: consumer frees space within one callback, so a short capped backoff is enough.
RING_POLL_MIN_S = 0.0002
RING_POLL_MAX_S = 0.005
#: Ring descriptors sent as one ZeroMQ message at most (they are ~100 bytes each).
MAX_BATCH_FRAMES = 64
#: How long queued descriptors may wait for a busy socket before the ring is given up.
FLUSH_WAIT_S = 30.0


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
    malformed: int = 0  # its ring record or array description does not hold up: dropped
    callback_errors: int = 0

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
    """Unlink every ring the instance ``serial`` wrote or read (its process is gone);
    return how many. The supervisor's sweep after each worker exit."""
    prefix = node_segment_prefix(node_prefix)
    tag = f"{serial:x}"
    removed = 0
    for name in list_prefix(prefix):
        # "<prefix><writer serial>.<writer pid>-<reader serial>-<reader pid>" (ring_name)
        parts = name[len(prefix) :].split("-")
        if tag in (parts[0].split(".", 1)[0], parts[1] if len(parts) > 1 else None):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")
                removed += 1
    return removed


class StreamSender:
    """Sends chunks and samples for one process; owns the rings it writes."""

    def __init__(
        self,
        rpc: RpcEndpoint,
        *,
        node_prefix: str,
        self_tag: str,
        threshold_bytes: int,
        ring_bytes: int,
    ) -> None:
        self._rpc = rpc
        self._node_prefix = node_prefix
        self._self_tag = self_tag
        self.threshold_bytes = threshold_bytes
        self.ring_bytes = ring_bytes
        self._writers: dict[tuple[int, int], RingWriter] = {}
        self._ring_numbers = itertools.count()
        self._gateway_pid: int | None = None  # see set_gateway_pid
        # Endpoints a frame already went to: a lossy lane drops when one of those is busy,
        # but waits for a first connection instead of dropping everything until it is up.
        self._connected: set[str] = set()
        self._batches: dict[str, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = StreamCounters()
        self._loop = asyncio.get_running_loop()

    def _writer(self, reader_serial: int, target_pid: int) -> RingWriter:
        key = (reader_serial, target_pid)
        writer = self._writers.get(key)
        if writer is None:
            # The receiver's pid is part of the name: a restarted receiver gets a fresh
            # ring instead of one holding records its predecessor never released.
            # A number of its own too: a ring made again for the same reader (a Shell that
            # re-registered its stream) must not take the name the reader still knows.
            tag = f"{self._self_tag}.{next(self._ring_numbers):x}"
            name = ring_name(self._node_prefix, tag, reader_serial, target_pid)
            writer = RingWriter.create(name, self.ring_bytes)
            self._writers[key] = writer
        return writer

    def set_gateway_pid(self, pid: int | None) -> None:
        """The directory's gateway changed (restarted, stopped): its rings are dead."""
        old, self._gateway_pid = self._gateway_pid, pid
        if old is not None and old != pid:
            for key in [k for k in self._writers if k[1] == old]:
                writer = self._writers.pop(key)
                writer.unlink(missing_ok=True)
                writer.close()

    def forget_target(self, serial: int, *, unlink: bool = True) -> None:
        """Close (and unlink) the rings to an instance that went away."""
        for key in [k for k in self._writers if k[0] == serial]:
            self.forget_reader(*key, unlink=unlink)

    def forget_reader(self, serial: int, pid: int, *, unlink: bool = True) -> None:
        """Close (and unlink) the ring to one reading process (a Shell that left)."""
        writer = self._writers.pop((serial, pid), None)
        if writer is not None:
            if unlink:
                writer.unlink(missing_ok=True)
            writer.close()

    def close(self, *, unlink: bool = True) -> None:
        """Close every ring this process created.

        With ``unlink`` also remove the names of rings whose reader has not attached yet
        (a stopping worker: frames to it are lost anyway). A Shell closes without: its
        last frames may still be on their way, and the reader removes the name when it
        attaches (or the supervisor, at shutdown).
        """
        for endpoint in list(self._batches):
            self._flush(endpoint, -1)
        for task in self._tasks:
            task.cancel()
        for serial, _pid in list(self._writers):
            self.forget_target(serial, unlink=unlink)

    async def send(
        self,
        frame: StreamFrame,
        payload: Any,
        *,
        endpoint: str,
        target: ActrId | None,
        target_pid: int | None,
        deadline: float,
    ) -> bool:
        """Send one chunk or sample; return False if a lossy lane dropped it.

        Raises ``DeadlineExceeded`` when a reliable send finds no room before ``deadline``,
        ``Unavailable`` when the receiver is gone, ``BadRequest`` for a payload larger than
        the ring.
        """
        buffer, array_meta = payload_buffer(payload)
        size = nbytes_of(buffer)
        lossy = frame.payload_type in LOSSY_LANES
        if size < self.threshold_bytes or target_pid is None:
            frame.payload = buffer.tobytes() if array_meta else bytes(buffer)
            frame.array_meta = array_meta
            sent = await self._send_frame(endpoint, wire.encode_stream(frame), deadline, lossy)
            if sent:
                self.counters.bytes_inline += size
            return sent
        # A Shell (no target id) reads its rings as any process does (SHELL_READER_SERIAL).
        serial = target.serial_number if target is not None else SHELL_READER_SERIAL
        writer = self._writer(serial, target_pid)
        if size > writer.max_record_bytes:
            raise BadRequest(
                f"a {size}-byte payload never fits the {writer.capacity_bytes}-byte ring "
                f"(at most {writer.max_record_bytes} bytes): raise [shm] ring_bytes or send "
                "smaller chunks"
            )
        link = self._rpc.link(endpoint)
        # A committed record that never reaches the reader would block the ring's release
        # order for good. A lossy lane, which must not wait after writing, checks first
        # that the frame can go out; a reliable one waits for the socket after writing
        # (below) and only checks before its first frame (the link may still connect).
        if (lossy or endpoint not in self._connected) and not link.writable():
            if lossy and endpoint in self._connected:
                self.counters.dropped_sender += 1
                return False
            if not await link.wait_writable(deadline):
                raise self._timeout_or_gone(deadline, endpoint)
        descriptor = await self._write_record(writer, buffer, array_meta, lossy, deadline)
        if descriptor is None:
            self.counters.dropped_sender += 1
            # The ring is full, maybe of records whose descriptors still wait here for the
            # end of this loop iteration: a sender that never yields (a lossy send does
            # not) would keep them from the receiver, which could free nothing, and drop
            # all that follows (5 of 100 samples went out). Send them now.
            if endpoint in self._batches:
                self._flush(endpoint, serial)
            return False
        frame.shm = descriptor.to_bytes()
        self._queue_frame(endpoint, wire.encode_stream(frame), serial)
        self._connected.add(endpoint)
        self.counters.chunks_sent += 1
        self.counters.bytes_via_shm += size
        return True

    def _queue_frame(self, endpoint: str, data: bytes, target_serial: int) -> None:
        """Queue a ring descriptor; descriptors queued in one loop iteration go out as one
        ZeroMQ message. A send wakes ZeroMQ's I/O thread, which at 1 MiB chunks cost more
        than the bookkeeping around the copy (scripts/bench_stream.py profile)."""
        frames = self._batches.get(endpoint)
        if frames is None:
            frames = self._batches[endpoint] = []
            self._loop.call_soon(self._flush, endpoint, target_serial)
        frames.append(data)
        if len(frames) >= MAX_BATCH_FRAMES:
            self._flush(endpoint, target_serial)

    def _flush(self, endpoint: str, target_serial: int) -> None:
        frames = self._batches.pop(endpoint, None)
        if not frames:
            return
        try:
            self._rpc.link(endpoint).send_multipart_nowait([*frames])
        except zmq.Again:
            # The records are committed: the frames must reach the reader, or the ring
            # could never release them. Wait for the socket (bounded) in the background.
            task = self._loop.create_task(self._flush_later(endpoint, frames, target_serial))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except zmq.ZMQError as exc:
            log.warning("stream frames to %s lost: %s", endpoint, exc)
            self.forget_target(target_serial)

    async def _flush_later(self, endpoint: str, frames: list[bytes], target_serial: int) -> None:
        link = self._rpc.link(endpoint)
        deadline = self._loop.time() + FLUSH_WAIT_S
        while await link.wait_writable(deadline):
            try:
                link.send_multipart_nowait(frames)
                return
            except zmq.Again:
                continue
        # The receiver is gone or stuck: this ring can never be released in order again;
        # the next send starts a new one (and the directory tells the sender if it died).
        log.warning(
            "%d stream frame(s) to %s not delivered in %.0fs", len(frames), endpoint, FLUSH_WAIT_S
        )
        self.forget_target(target_serial)

    async def _write_record(
        self, writer: RingWriter, buffer: Any, array_meta: bytes, lossy: bool, deadline: float
    ) -> Descriptor | None:
        pause = RING_POLL_MIN_S
        while True:
            try:
                if array_meta:
                    return writer.write_array_nowait(buffer)
                return writer.write_nowait(buffer)
            except ClosedResourceError:
                # forget_target() closed it: the receiver went away while we waited.
                raise Unavailable(f"the receiver of ring {writer.name} went away") from None
            except WouldBlock:
                if lossy:
                    return None
                if self._loop.time() + pause > deadline:
                    raise DeadlineExceeded(
                        f"ring {writer.name} stayed full until the deadline (receiver too slow)"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, RING_POLL_MAX_S)

    async def _send_frame(self, endpoint: str, data: bytes, deadline: float, lossy: bool) -> bool:
        if endpoint in self._batches:
            # Descriptors are waiting to go out: queue behind them, or chunks of one
            # stream would overtake each other.
            self._batches[endpoint].append(data)
            self.counters.chunks_sent += 1
            return True
        if lossy and endpoint in self._connected:
            try:
                self._rpc.link(endpoint).send_nowait(data)
            except zmq.Again:
                self.counters.dropped_sender += 1
                return False
        else:
            try:
                await self._rpc.send(endpoint, data, deadline)
            except Unavailable:
                raise self._timeout_or_gone(deadline, endpoint) from None
        self._connected.add(endpoint)
        self.counters.chunks_sent += 1
        return True

    def _timeout_or_gone(self, deadline: float, endpoint: str) -> Exception:
        if self._loop.time() >= deadline:
            return DeadlineExceeded(f"{endpoint} did not take the stream frame before the deadline")
        return Unavailable(f"{endpoint} is not accepting stream frames")


class _Queue:
    """Pending chunks of one stream (or samples of one track): run one at a time, in order."""

    __slots__ = ("callback", "items", "running")

    def __init__(self, callback: StreamCallback) -> None:
        self.callback = callback
        self.items: deque[tuple[StreamFrame, Descriptor | None]] = deque()
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
        descriptor = self._descriptor(frame)
        if descriptor is not None:
            self._retire(descriptor)

    def on_frame(self, frame: StreamFrame) -> None:
        """Take one frame off the socket (synchronous: nothing is awaited)."""
        descriptor = self._descriptor(frame)
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
        if queue is None or queue.callback is not callback:
            queue = self._queues[key] = _Queue(callback)
        if frame.payload_type in LOSSY_LANES and queue.items:
            # Newest wins: lossy chunks still waiting behind a slow callback are stale
            # now. Reliable ones of the same stream id stay: they promise delivery (until
            # 2026-12-02 a latency-first chunk dropped them too).
            kept: deque[tuple[StreamFrame, Descriptor | None]] = deque()
            for old, old_descriptor in queue.items:
                if old.payload_type not in LOSSY_LANES:
                    kept.append((old, old_descriptor))
                    continue
                self._backlog -= 1
                self.counters.dropped_receiver += 1
                if old_descriptor is not None:
                    self._retire(old_descriptor)
            queue.items = kept
        queue.items.append((frame, descriptor))
        self._backlog += 1
        if not queue.running:
            queue.running = True
            task = self._loop.create_task(self._run(queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self._full and self._backlog >= self.capacity:
            self._full = True
            self._on_full()

    async def _run(self, queue: _Queue) -> None:
        try:
            while queue.items:
                frame, descriptor = queue.items.popleft()
                self._backlog -= 1
                if self._full and self._backlog <= self.capacity // 2:
                    self._full = False
                    self._on_space()
                try:
                    try:
                        value = self._view(frame, descriptor)
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
                    pending = queue.callback(item, frame.source)
                    if pending is not None:  # None: a plain function, done already
                        await pending
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.counters.callback_errors += 1
                    log.exception(
                        "%s callback for %r raised; the stream goes on", frame.kind, frame.key
                    )
                finally:
                    # Drop our references before the slot is reused.
                    value = None
                    item = None  # type: ignore[assignment]
                    if descriptor is not None:
                        self._retire(descriptor)
        finally:
            queue.running = False

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

    def close(self) -> None:
        """Cancel callbacks and close every ring reader."""
        for task in list(self._tasks):
            task.cancel()
        self._rings.close()
