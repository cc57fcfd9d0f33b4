"""Frames between the processes of a node: the only module that touches the protobuf classes.

An :class:`Envelope` is the decoded, plain-Python form of one ``Frame`` carrying an
``RpcEnvelope``. Encoding and decoding are one protobuf call each (≈1 µs with the upb
backend, DESIGN §10), so the hot path pays no more than that.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from ._errors import ActrError, BadRequest, ErrorCode, wire_code
from ._ids import ActrId, ActrType, Realm
from ._payload_type import PayloadType
from .proto import actr_pb2

# Generated code carries no type information.
pb: Any = actr_pb2

REQUEST = pb.RpcEnvelope.REQUEST
RESPONSE = pb.RpcEnvelope.RESPONSE
TELL = pb.RpcEnvelope.TELL
_DIRECTIONS = (REQUEST, RESPONSE, TELL)
STREAM = "stream"
MEDIA = "media"
_MEDIA_TYPES = {0: "video", 1: "audio", 2: "video"}
_MEDIA_TYPE_NUMBERS = {"audio": 1, "video": 2}
_LANES = frozenset(int(p) for p in PayloadType)


def checked_key(what: str, key: object) -> str:
    """``key`` (a route key, stream id or track id), or the error a sender gets at once:
    a receiver drops a frame without one as malformed, and a call would wait its deadline."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} must not be empty")
    return key


def checked_rpc_lane(payload_type: object) -> PayloadType:
    """``payload_type`` of a call or tell, or the error its sender gets at once: a frame
    on another lane was dropped as malformed by its receiver (a call then waited for its
    deadline, a tell was lost), and a stream lane made an ordinary call."""
    for lane in (PayloadType.RPC_RELIABLE, PayloadType.RPC_SIGNAL):
        if payload_type == lane:
            return lane
    try:
        name = PayloadType(payload_type).name  # type: ignore[arg-type]
    except ValueError:
        name = repr(payload_type)
    raise BadRequest(f"calls and tells use RPC_RELIABLE or RPC_SIGNAL, not {name}")


def checked_int(what: str, value: object, bits: int, *, signed: bool = False) -> int:
    """``value`` if it fits a protobuf integer field of ``bits``, else a clear error."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not lo <= value < hi:
        raise ValueError(f"{what} must be in [{lo}, {hi - 1}], not {value}")
    return value


class Envelope:
    """One RPC message (request, response or tell) with its local routing header."""

    __slots__ = (
        "deadline_ns",
        "direction",
        "error_code",
        "error_message",
        "metadata",
        "payload",
        "payload_type",
        "request_id",
        "route_key",
        "source",
        "target",
        "timeout_ms",
        "traceparent",
        "tracestate",
    )

    def __init__(
        self,
        direction: int,
        route_key: str = "",
        payload: bytes = b"",
        *,
        request_id: str = "",
        source: ActrId | None = None,
        target: ActrId | None = None,
        payload_type: int = PayloadType.RPC_RELIABLE,
        deadline_ns: int = 0,
        timeout_ms: int = 0,
        traceparent: str = "",
        tracestate: str = "",
        metadata: tuple[tuple[str, str], ...] = (),
        error_code: int = 0,
        error_message: str = "",
    ) -> None:
        self.direction = direction
        self.route_key = route_key
        self.payload = payload
        self.request_id = request_id
        self.source = source
        self.target = target
        self.payload_type = payload_type
        self.deadline_ns = deadline_ns
        self.timeout_ms = timeout_ms
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.metadata = metadata
        self.error_code = error_code
        self.error_message = error_message

    def __repr__(self) -> str:
        kind = {REQUEST: "request", RESPONSE: "response", TELL: "tell"}.get(self.direction, "?")
        return f"Envelope({kind} {self.route_key!r} id={self.request_id!r} from={self.source})"


#: Longest error text sent in a response; the rest is cut (and the cut said).
ERROR_TEXT_MAX_CHARS = 2000


def error_response(request_id: str, error: ActrError) -> Envelope:
    """The response that fails request ``request_id`` with ``error`` (code and text).

    A code the wire cannot carry as an error (0 reads as success; the field is a uint32)
    becomes a 500 that says so: ``raise ActrError("…", code=0)`` in a handler used to
    reach its caller as a successful empty answer.
    """
    code, message = wire_code(error), _error_text(error.message)
    if code is None:
        message = f"{message} (raised with code {error.code!r}, which is not an error code)"
        code = ErrorCode.HANDLER_ERROR
    return Envelope(RESPONSE, request_id=request_id, error_code=code, error_message=message)


def _error_text(message: object) -> str:
    """An error's text as the wire can carry it: a string (protobuf refused anything
    else), valid UTF-8 (a lone surrogate, from ``os.fsdecode`` say, made the encoding
    fail, and the caller got no answer at all), and at most ERROR_TEXT_MAX_CHARS long (a
    longer one could exceed ``max_message_bytes`` and lose the error's type and text)."""
    text = message if isinstance(message, str) else repr(message)
    if len(text) > ERROR_TEXT_MAX_CHARS:
        cut = len(text) - ERROR_TEXT_MAX_CHARS
        text = f"{text[:ERROR_TEXT_MAX_CHARS]}… ({cut} more characters)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# ActrId <-> bytes conversions are cached: a worker talks to a handful of peers, and
# building a validated ActrId per frame would cost more than the whole decode.
_id_by_bytes: dict[bytes, ActrId] = {}
_bytes_by_id: dict[ActrId, bytes] = {}
_CACHE_LIMIT = 65536


def id_to_bytes(actr_id: ActrId) -> bytes:
    """The serialized protobuf ``ActrId`` (cached)."""
    found = _bytes_by_id.get(actr_id)
    if found is None:
        found = pb.ActrId(
            realm=pb.Realm(realm_id=actr_id.realm.realm_id),
            serial_number=actr_id.serial_number,
            type=pb.ActrType(manufacturer=actr_id.type.manufacturer, name=actr_id.type.name),
        ).SerializeToString()
        if len(_bytes_by_id) < _CACHE_LIMIT:
            _bytes_by_id[actr_id] = found
    return found


def id_from_bytes(data: bytes) -> ActrId:
    """Parse a serialized protobuf ``ActrId`` (cached); raise BadRequest if invalid."""
    found = _id_by_bytes.get(data)
    if found is None:
        msg = pb.ActrId()
        try:
            msg.ParseFromString(data)
            found = ActrId(
                Realm(msg.realm.realm_id),
                msg.serial_number,
                ActrType(msg.type.manufacturer, msg.type.name),
            )
        except (DecodeError, ValueError, TypeError) as exc:
            raise BadRequest(f"invalid actor id: {exc}") from None
        if len(_id_by_bytes) < _CACHE_LIMIT:
            _id_by_bytes[data] = found
    return found


def encode(env: Envelope) -> bytes:
    """Serialize an envelope into one frame."""
    frame = pb.Frame(payload_type=env.payload_type, deadline_ns=env.deadline_ns)
    if env.source is not None:
        frame.source = id_to_bytes(env.source)
    if env.target is not None:
        frame.target = id_to_bytes(env.target)
    rpc = frame.rpc
    rpc.direction = env.direction
    rpc.route_key = env.route_key
    rpc.payload = env.payload
    rpc.request_id = env.request_id
    if env.timeout_ms:
        rpc.timeout_ms = env.timeout_ms
    if env.traceparent:
        rpc.traceparent = env.traceparent
    if env.tracestate:
        rpc.tracestate = env.tracestate
    for key, value in env.metadata:
        rpc.metadata.add(key=key, value=value)
    if env.error_code:
        rpc.error.code = env.error_code
        rpc.error.message = env.error_message
    return frame.SerializeToString()


def decode(data: bytes) -> Envelope | StreamFrame:
    """Parse one frame; raise BadRequest when it is not a well-formed frame."""
    try:
        frame = _parse_frame(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise BadRequest(f"undecodable frame ({len(data)} bytes): {exc}") from None
    if not frame.HasField("rpc"):
        if frame.HasField("stream") or frame.HasField("media"):
            return _decode_stream(frame)
        raise BadRequest("frame carries no RPC envelope, stream chunk or media sample")
    rpc = frame.rpc
    direction = rpc.direction
    if direction not in _DIRECTIONS:
        raise BadRequest(f"frame has no valid direction ({direction})")
    payload_type = frame.payload_type
    if payload_type not in _LANES:
        raise BadRequest(f"frame has an unknown payload type ({payload_type})")
    route_key = rpc.route_key
    if direction != RESPONSE and not route_key:
        raise BadRequest("request or tell without a route key")
    # Built field by field, skipping __init__: this runs once per message. Fields most
    # messages leave empty are read only when asked for (_Decoded's properties): each
    # protobuf field read costs ~0.15 µs, a third of the decode.
    env = _new_envelope(_Decoded)
    env._frame = frame
    env._rpc = rpc
    env.direction = direction
    env.route_key = route_key
    env.payload = rpc.payload
    env.request_id = rpc.request_id
    source = frame.source
    target = frame.target
    try:
        env.source = env._source = (
            (_id_by_bytes.get(source) or id_from_bytes(source)) if source else None
        )
        env.target = env._target = (
            (_id_by_bytes.get(target) or id_from_bytes(target)) if target else None
        )
    except BadRequest as exc:
        raise BadRequest(f"frame has {exc.message}") from None
    env.payload_type = payload_type
    env.deadline_ns = frame.deadline_ns
    if direction == RESPONSE:
        error = rpc.error
        env.error_code = error.code
        env.error_message = error.message
    else:
        env.error_code = 0
        env.error_message = ""
    return env


class _Decoded(Envelope):
    """An envelope read off the wire; its rarely set fields are read on first use."""

    __slots__ = ("_frame", "_rpc", "_source", "_target")
    _frame: Any
    _rpc: Any
    _source: ActrId | None
    _target: ActrId | None

    # Setters write through, so a decoded envelope can be edited and re-encoded (the
    # gateway rewrites deadlines).
    @property  # type: ignore[override]
    def timeout_ms(self) -> int:
        return self._rpc.timeout_ms

    @timeout_ms.setter
    def timeout_ms(self, value: int) -> None:
        self._rpc.timeout_ms = value

    @property  # type: ignore[override]
    def traceparent(self) -> str:
        return self._rpc.traceparent

    @traceparent.setter
    def traceparent(self, value: str) -> None:
        self._rpc.traceparent = value

    @property  # type: ignore[override]
    def tracestate(self) -> str:
        return self._rpc.tracestate

    @tracestate.setter
    def tracestate(self, value: str) -> None:
        self._rpc.tracestate = value

    @property  # type: ignore[override]
    def metadata(self) -> tuple[tuple[str, str], ...]:
        entries = self._rpc.metadata
        return tuple((m.key, m.value) for m in entries) if len(entries) else ()

    @metadata.setter
    def metadata(self, value: tuple[tuple[str, str], ...]) -> None:
        del self._rpc.metadata[:]
        for key, item in value:
            self._rpc.metadata.add(key=key, value=item)


def reencode(env: Envelope, keep_origin: bool = False) -> bytes:
    """Serialize an envelope that was decoded and then had only its routing fields
    changed (``request_id``, ``deadline_ns``, ``timeout_ms``, ``source``, ``target``), as
    a gateway does to every call it passes on: the parsed frame is edited and serialized
    again, about a third of what building it anew costs (:func:`encode`). Anything else
    is encoded anew. The result reads the same as ``encode(env)``'s (no ``tell_origin``
    either, unless ``keep_origin``: a tell from our worker to another node)."""
    if type(env) is not _Decoded:
        return encode(env)
    frame = env._frame
    env._rpc.request_id = env.request_id
    frame.deadline_ns = env.deadline_ns
    frame.payload_type = env.payload_type
    if env.source is not env._source:
        frame.source = id_to_bytes(env.source) if env.source is not None else b""
    if env.target is not env._target:
        frame.target = id_to_bytes(env.target) if env.target is not None else b""
    # What encode() would not carry: an error without a code, fields of stream frames,
    # unknown fields.
    if env.error_message and not env.error_code:
        env._rpc.ClearField("error")
    if frame.shm or frame.array_meta:
        frame.shm = frame.array_meta = b""
    if not keep_origin and frame.HasField("tell_origin"):  # a gateway sets its own
        frame.ClearField("tell_origin")
    frame.DiscardUnknownFields()
    return frame.SerializeToString()


def tell_origin(env: Envelope) -> Any | None:
    """The ``TellOrigin`` a gateway set on a decoded tell from another node, or None
    (module ``actrhost._tell_origin``)."""
    if type(env) is not _Decoded or not env._frame.HasField("tell_origin"):
        return None
    return env._frame.tell_origin


_parse_frame = pb.Frame.FromString
_new_envelope = object.__new__


class StreamFrame:
    """One data-stream chunk or media sample with its routing header (``kind`` says which).

    ``key`` is the stream id or the track id. The payload is inline in ``payload``, or in
    a shared-memory ring that ``shm`` (a ring descriptor) points to.
    """

    __slots__ = (
        "array_meta",
        "codec",
        "key",
        "kind",
        "media_type",
        "metadata",
        "origin",
        "payload",
        "payload_type",
        "sequence",
        "shm",
        "source",
        "target",
        "timestamp",
    )

    def __init__(
        self,
        kind: str,
        key: str,
        *,
        source: ActrId | None = None,
        target: ActrId | None = None,
        payload_type: int = PayloadType.STREAM_RELIABLE,
        sequence: int = 0,
        timestamp: int = 0,
        metadata: tuple[tuple[str, str], ...] = (),
        payload: bytes = b"",
        shm: bytes = b"",
        array_meta: bytes = b"",
        codec: str = "",
        media_type: str = "video",
    ) -> None:
        self.kind = kind
        self.key = key
        self.source = source
        self.target = target
        self.payload_type = payload_type
        self.sequence = sequence
        self.timestamp = timestamp
        self.metadata = metadata
        self.payload = payload
        self.shm = shm
        self.array_meta = array_meta
        self.codec = codec
        self.media_type = media_type
        #: Where a reliable chunk to or from another node first came from (a
        #: ``TellOrigin`` its sender or the receiving gateway set; module
        #: ``actrhost._tell_origin``), or None.
        self.origin: Any = None

    def __repr__(self) -> str:
        where = "shm" if self.shm else f"{len(self.payload)} bytes inline"
        return (
            f"StreamFrame({self.kind} {self.key!r} #{self.sequence}, {where}, from={self.source})"
        )


def encode_stream(sf: StreamFrame) -> bytes:
    """Serialize a stream chunk or media sample into one frame."""
    frame = pb.Frame(payload_type=sf.payload_type, shm=sf.shm, array_meta=sf.array_meta)
    if sf.source is not None:
        frame.source = id_to_bytes(sf.source)
    if sf.target is not None:
        frame.target = id_to_bytes(sf.target)
    if sf.kind == STREAM:
        body = frame.stream
        body.stream_id = sf.key
        body.sequence = sf.sequence
        body.timestamp_ms = sf.timestamp
        body.payload = sf.payload
        for key, value in sf.metadata:
            body.metadata.add(key=key, value=value)
    else:
        media = frame.media
        media.track_id = sf.key
        media.timestamp = sf.timestamp & 0xFFFFFFFF  # an RTP timestamp wraps at 32 bits
        media.codec = sf.codec
        media.media_type = _MEDIA_TYPE_NUMBERS.get(sf.media_type, 2)
        media.data = sf.payload
    return frame.SerializeToString()


def _decode_stream(frame: Any) -> StreamFrame:
    payload_type = frame.payload_type
    if payload_type not in _LANES:
        raise BadRequest(f"frame has an unknown payload type ({payload_type})")
    try:
        source = id_from_bytes(frame.source) if frame.source else None
        target = id_from_bytes(frame.target) if frame.target else None
    except BadRequest as exc:
        raise BadRequest(f"frame has {exc.message}") from None
    if frame.HasField("stream"):
        body = frame.stream
        if not body.stream_id:
            raise BadRequest("stream chunk without a stream id")
        chunk = StreamFrame(
            STREAM,
            body.stream_id,
            source=source,
            target=target,
            payload_type=payload_type,
            sequence=body.sequence,
            timestamp=body.timestamp_ms,
            metadata=tuple((m.key, m.value) for m in body.metadata),
            payload=body.payload,
            shm=frame.shm,
            array_meta=frame.array_meta,
        )
        if frame.HasField("tell_origin"):
            chunk.origin = frame.tell_origin
        return chunk
    media = frame.media
    if not media.track_id:
        raise BadRequest("media sample without a track id")
    return StreamFrame(
        MEDIA,
        media.track_id,
        source=source,
        target=target,
        payload_type=payload_type,
        timestamp=media.timestamp,
        payload=media.data,
        shm=frame.shm,
        array_meta=frame.array_meta,
        codec=media.codec,
        media_type=_MEDIA_TYPES.get(media.media_type, "video"),
    )
