"""What a handler sees: its identity, the caller, and the ways to reach other actors."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, overload

from ._envelope import MEDIA, STREAM, StreamFrame, checked_key, checked_rpc_lane
from ._errors import BadRequest, DeadlineExceeded, HandlerError
from ._ids import ActrId, ActrType
from ._payload_type import PayloadType
from ._payloads import DataStream, MediaSample
from ._rpc import deadline_after
from ._streams import ChunkCallback, SampleCallback, chunk_frame, sample_frame

if TYPE_CHECKING:
    from google.protobuf.message import Message

DEFAULT_TIMEOUT_S = 30.0

#: What a call's ``response_type`` makes of its answer: ``bytes`` or a message class.
Answer = TypeVar("Answer")


class Dest:
    """Where a message goes: ``Dest.SHELL``, ``Dest.LOCAL`` or ``Dest.actor(actr_id)``."""

    __slots__ = ("actr_id", "kind")

    SHELL: ClassVar[Dest]
    LOCAL: ClassVar[Dest]

    def __init__(self, kind: str, actr_id: ActrId | None = None) -> None:
        self.kind = kind
        self.actr_id = actr_id

    @classmethod
    def actor(cls, actr_id: ActrId) -> Dest:
        """Any actor, on this node or another, by id."""
        if not isinstance(actr_id, ActrId):
            raise TypeError(f"Dest.actor() takes an ActrId, got {type(actr_id).__name__}")
        return cls("actor", actr_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dest) and (self.kind, self.actr_id) == (other.kind, other.actr_id)

    def __hash__(self) -> int:
        return hash((self.kind, self.actr_id))

    def __repr__(self) -> str:
        return f"Dest.actor({self.actr_id})" if self.kind == "actor" else f"Dest.{self.kind}"


Dest.SHELL = Dest("SHELL")
Dest.LOCAL = Dest("LOCAL")


class _Runtime(Protocol):
    """What a Context needs from the process hosting it (the worker)."""

    self_id: ActrId

    async def send_request(
        self,
        ctx: Context,
        dest: Dest,
        route_key: str,
        payload: bytes,
        deadline: float,
        payload_type: PayloadType,
    ) -> bytes: ...

    async def send_tell(
        self, ctx: Context, dest: Dest, route_key: str, payload: bytes, payload_type: PayloadType
    ) -> None: ...

    async def discover(self, actr_type: ActrType, deadline: float | None) -> ActrId: ...

    async def send_stream_frame(
        self, dest: Dest, frame: StreamFrame, payload: Any, deadline: float
    ) -> bool: ...

    def register_stream_callback(self, kind: str, key: str, callback: Any) -> None: ...

    def unregister_stream_callback(self, kind: str, key: str) -> None: ...

    def now(self) -> float: ...


def checked_dest(dest: Dest) -> Dest:
    """``dest``, or a TypeError that says what to pass instead."""
    if isinstance(dest, Dest):
        return dest
    if isinstance(dest, ActrId):
        raise TypeError(f"dest must be a Dest: Dest.actor({dest}) for that actor, not an ActrId")
    raise TypeError(f"dest must be a Dest (Dest.actor(id), Dest.LOCAL, Dest.SHELL), not {dest!r}")


def encode_message(message: bytes | bytearray | memoryview | Message | None) -> bytes:
    """bytes for a request or response: bytes pass through, protobuf messages serialize."""
    if message is None:
        return b""
    if isinstance(message, bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    serialize = getattr(message, "SerializeToString", None)
    if serialize is None and inspect.iscoroutine(message):
        raise BadRequest("cannot send a coroutine: an `await` is missing")
    if serialize is None:
        raise BadRequest(
            f"cannot send a value of type {type(message).__name__}: use bytes or a protobuf message"
        )
    return serialize()


def decode_message(data: bytes, message_type: type | None) -> Any:
    """Decode ``data`` into ``message_type`` (a protobuf class) or return the bytes."""
    if message_type is None:
        return data
    message = message_type()
    try:
        message.ParseFromString(data)
    except Exception as exc:
        raise BadRequest(f"cannot decode {message_type.__name__}: {exc}") from None
    return message


def decode_answer(data: bytes, response_type: type | None, route_key: str) -> Any:
    """A call's answer as ``response_type`` asks (``bytes`` or None: as it came). One
    that does not decode is ``HandlerError``: the callee ran, so it was not a bad request
    (it raised ``BadRequest``, which read as the callee refusing the request, QA)."""
    if response_type is None or response_type is bytes:
        return data
    try:
        return decode_message(data, response_type)
    except BadRequest as exc:
        raise HandlerError(f"the answer to {route_key!r}: {exc.message}") from None


def new_span_id() -> str:
    """16 hex digits for the parent-id field of a W3C traceparent."""
    return os.urandom(8).hex()


class Context:
    """Per-message context handed to every handler and hook.

    ``caller_id`` is None for calls from a Shell client and in ``on_start``/``on_stop``.
    ``deadline`` (loop time, or None) is the incoming request's deadline: nested calls
    never wait past it. ``traceparent`` / ``tracestate`` are the W3C trace headers the
    caller sent; outgoing calls continue the same trace.
    """

    __slots__ = (
        "_runtime",
        "caller_id",
        "deadline",
        "metadata",
        "request_id",
        "self_id",
        "traceparent",
        "tracestate",
    )

    def __init__(
        self,
        runtime: _Runtime,
        *,
        caller_id: ActrId | None = None,
        request_id: str = "",
        deadline: float | None = None,
        traceparent: str = "",
        tracestate: str = "",
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._runtime = runtime
        self.self_id: ActrId = runtime.self_id
        self.caller_id = caller_id
        self.request_id = request_id
        self.deadline = deadline
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"Context(self={self.self_id} caller={self.caller_id} request={self.request_id!r})"

    def outgoing_traceparent(self) -> str:
        """The traceparent for a call made from this context: same trace, new parent."""
        parts = self.traceparent.split("-")
        if len(parts) != 4:
            return ""
        return f"{parts[0]}-{parts[1]}-{new_span_id()}-{parts[3]}"

    @overload
    async def call(
        self,
        dest: Dest,
        route_key: str,
        request: bytes | Message | None = ...,
        *,
        timeout: float = ...,
        payload_type: PayloadType = ...,
        response_type: None = ...,
    ) -> bytes: ...

    @overload
    async def call(
        self,
        dest: Dest,
        route_key: str,
        request: bytes | Message | None = ...,
        *,
        timeout: float = ...,
        payload_type: PayloadType = ...,
        response_type: type[Answer],
    ) -> Answer: ...

    async def call(
        self,
        dest: Dest,
        route_key: str,
        request: bytes | Message | None = b"",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        payload_type: PayloadType = PayloadType.RPC_RELIABLE,
        response_type: type[Answer] | None = None,
    ) -> bytes | Answer:
        """Call ``route_key`` on ``dest`` and wait for the answer.

        Returns bytes, or a ``response_type`` message when one is given. Waits at most
        ``timeout`` seconds and never past this context's own deadline. Raises
        ``DeadlineExceeded`` (504), ``NotFound`` (404), ``Unavailable`` (503),
        ``PermissionDenied`` (403), ``BadRequest`` (400) or ``HandlerError`` (500) with
        the callee's message. Cancelling the call forgets it; a late answer is dropped.
        """
        deadline = self._call_deadline(timeout)
        data = await self._runtime.send_request(
            self,
            checked_dest(dest),
            checked_key("route_key", route_key),
            encode_message(request),
            deadline,
            checked_rpc_lane(payload_type),
        )
        return decode_answer(data, response_type, route_key)

    async def tell(
        self,
        dest: Dest,
        route_key: str,
        message: bytes | Message | None = b"",
        *,
        payload_type: PayloadType = PayloadType.RPC_RELIABLE,
    ) -> None:
        """Send a message that is never answered. Returns once it is handed to the transport.

        Raises ``NotFound`` / ``Unavailable`` when the destination cannot take it, and
        ``DeadlineExceeded`` when its queue stays full past this context's deadline (5 s
        in ``on_start`` and other code outside a handler); the handler's own failures are
        never reported back. One that reaches an actor still starting is held, up to its
        ``mailbox_capacity``, the rest dropped there and counted (``tells_dropped``), as
        at a stopping one (docs/node.md). For an actor on another node,
        that is known once a tell has been dropped there: the tells (and stream frames) to
        it raise for the next second (docs/gateway.md, "Frames that cannot be
        delivered").
        """
        await self._runtime.send_tell(
            self,
            checked_dest(dest),
            checked_key("route_key", route_key),
            encode_message(message),
            checked_rpc_lane(payload_type),
        )

    async def discover(self, actr_type: ActrType | str) -> ActrId:
        """An instance of ``actr_type``: local instances first, round-robin among them;
        else, through signaling, the best ranked on other nodes (compatible, available,
        the shortest mailbox backlog; ties at random, so equal ones share the load).

        Instances of this node that are still starting are waited for, as a call to one
        would be (at most 10 s, and never past this context's deadline). Raises
        ``NotFound`` when no instance is known, ``Unavailable`` when none runs.
        """
        if isinstance(actr_type, str):
            actr_type = ActrType.parse(actr_type)
        return await self._runtime.discover(actr_type, self.deadline)

    # -- data streams and media --------------------------------------------------------

    async def register_stream(self, stream_id: str, callback: ChunkCallback) -> None:
        """Call ``await callback(chunk: DataStream, sender: ActrId | None)`` for each chunk.

        Chunks of one stream run one at a time, in order; different streams concurrently.
        ``chunk.payload`` is a zero-copy view valid until the callback returns. A callback
        that raises (a ``CancelledError`` of its own code too) is logged and counted, and
        the stream goes on. A plain (not async) function works too, run as the chunk
        arrives; what it returns is ignored.
        """
        self._runtime.register_stream_callback(STREAM, stream_id, callback)

    async def unregister_stream(self, stream_id: str) -> None:
        """Stop receiving ``stream_id``; later chunks are dropped and counted."""
        self._runtime.unregister_stream_callback(STREAM, stream_id)

    async def send_data_stream(
        self,
        dest: Dest,
        chunk: DataStream,
        *,
        payload_type: PayloadType = PayloadType.STREAM_RELIABLE,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> bool:
        """Send one chunk; the payload may be bytes, a memoryview or a numpy array.

        STREAM_RELIABLE waits (at most ``timeout``, and never past this context's deadline)
        while the receiver is behind, then raises ``DeadlineExceeded``; nothing is lost
        while both ends live (chunks accepted for a receiver that dies, a node given up
        on after the reconnect window, or a gateway restart can be: docs/gateway.md,
        limits).
        STREAM_LATENCY_FIRST never waits: returns False when the chunk was dropped here
        (no room in the ring or the socket to the receiver, ``dropped_sender``). One
        dropped further on returned True and is counted where it was dropped: by the
        receiver, which keeps the newest (``dropped_receiver``), or by a gateway on the
        way to another node (its lane's ``dropped``).
        Raises ``BadRequest`` for a payload larger than ``[shm] ring_bytes`` less the
        ring record's 16-byte header, and
        ``NotFound`` / ``Unavailable`` when the destination is unknown or down (on
        another node: once a frame has been dropped there, as for ``tell``).
        """
        frame = chunk_frame(chunk, payload_type)
        return await self._runtime.send_stream_frame(
            checked_dest(dest), frame, chunk.payload, self._deadline(timeout)
        )

    async def register_media_track(self, track_id: str, callback: SampleCallback) -> None:
        """Call ``await callback(sample: MediaSample, sender)`` for each sample of the track."""
        self._runtime.register_stream_callback(MEDIA, track_id, callback)

    async def unregister_media_track(self, track_id: str) -> None:
        """Stop receiving ``track_id``."""
        self._runtime.unregister_stream_callback(MEDIA, track_id)

    async def send_media_sample(
        self, dest: Dest, track_id: str, sample: MediaSample, *, timeout: float = 1.0
    ) -> bool:
        """Send one media sample (real time: dropped and counted under pressure).

        Returns False when the sample was dropped here (as for a latency-first chunk of
        :meth:`send_data_stream`: one dropped further on returned True and is counted
        there); never waits for a slow receiver.
        """
        frame = sample_frame(track_id, sample)
        return await self._runtime.send_stream_frame(
            checked_dest(dest), frame, sample.data, self._deadline(timeout)
        )

    def _deadline(self, timeout: float) -> float:
        deadline = deadline_after(self._runtime.now(), timeout)
        if self.deadline is not None and self.deadline < deadline:
            return self.deadline
        return deadline

    def _call_deadline(self, timeout: float) -> float:
        """A call's deadline; a context whose own deadline has passed says so (the call
        failed with "deadline passed before it was sent", which puzzled users who kept a
        handler's ctx for a background task)."""
        deadline = self._deadline(timeout)
        if deadline == self.deadline and deadline <= self._runtime.now():
            raise DeadlineExceeded(
                f"the deadline of request {self.request_id!r}, which this context was "
                "given to handle (its calls inherit it), has passed: use the ctx of "
                "on_start for work that outlives a request"
            )
        return deadline
