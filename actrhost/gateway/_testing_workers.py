"""The fake workers of :class:`actrhost.gateway._testing.HarnessNode`.

Each is one actor instance with a real ROUTER and feed (an ``RpcEndpoint``), as a worker
process has, serving the harness's routes: ``echo`` (answers the payload), ``sleep``
(answers after ``int(payload)`` ms), ``deadline`` (answers the milliseconds left),
``repeat`` (answers ``int(payload)`` bytes), ``fail`` (answers a 500); everything else is
404. What each got is in its :class:`Received`.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import zmq

from .. import _envelope as wire
from .._directory import gateway_feed_endpoint
from .._envelope import RESPONSE, STREAM, TELL, Envelope, StreamFrame
from .._errors import ActrError, HandlerError, NotFound
from .._ids import ActrId
from .._payload_type import PayloadType
from .._rpc import RpcEndpoint
from ..shm import decode_array_meta


class OwnId:
    """``HarnessNode.call``/``tell`` ``source=``: the sending actor's own id (the default)."""


OWN_ID = OwnId()


@dataclass
class Received:
    """What one fake worker got."""

    tells: list[tuple[str, bytes, ActrId | None]] = field(default_factory=list)
    #: (route, payload) of every request, answered or not.
    calls: list[tuple[str, bytes]] = field(default_factory=list)
    chunks: dict[str, list[tuple[int, bytes]]] = field(default_factory=lambda: defaultdict(list))
    media: list[tuple[str, Any, int, str, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class FakeWorker:
    """One actor instance: an inbound ROUTER and feed (the RpcEndpoint) that serve the
    routes."""

    def __init__(
        self, zctx: zmq.Context, endpoint: str, name: str, hwm: int, first_of_instance: bool
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.received = Received()
        self.rpc = RpcEndpoint(
            zctx,
            endpoint,
            self._on_request,
            hwm=hwm,
            name=name,
            on_stream=self._on_stream,
            # The first process of its instance (as a worker is until it is restarted)
            # takes a tell in doubt from a sender it never heard of: nothing read it.
            first_of_instance=first_of_instance,
        )
        # As a worker does once the directory names a gateway: frames from other nodes
        # come on the feed the gateway binds for it.
        self.rpc.open_feed(gateway_feed_endpoint(endpoint))
        self.actr_id: ActrId | None = None

    def _on_request(self, env: Envelope, routing_id: bytes) -> None:
        if env.direction == TELL:
            self.received.tells.append((env.route_key, bytes(env.payload), env.source))
            self.received.event.set()
            return
        self.received.calls.append((env.route_key, bytes(env.payload)))
        if env.route_key == "echo":
            self._answer(env, routing_id, bytes(env.payload))
        elif env.route_key == "sleep":
            delay_s = int(env.payload or b"0") / 1000
            asyncio.get_running_loop().call_later(delay_s, self._answer, env, routing_id, b"slept")
        elif env.route_key == "deadline":
            remaining_ms = (env.deadline_ns - time.monotonic_ns()) // 1_000_000
            self._answer(env, routing_id, str(remaining_ms).encode())
        elif env.route_key == "repeat":  # a large answer to a small request
            self._answer(env, routing_id, b"r" * int(env.payload))
        elif env.route_key == "fail":
            self._error(env, routing_id, HandlerError("ValueError: asked to fail"))
        else:
            self._error(env, routing_id, NotFound(f"no route {env.route_key!r}"))

    def _answer(self, env: Envelope, routing_id: bytes, payload: bytes) -> None:
        self.rpc.reply(routing_id, Envelope(RESPONSE, payload=payload, request_id=env.request_id))

    def _error(self, env: Envelope, routing_id: bytes, exc: ActrError) -> None:
        self.rpc.reply(routing_id, wire.error_response(env.request_id, exc))

    def _on_stream(self, frame: StreamFrame) -> None:
        if frame.kind == STREAM:
            self.received.chunks[frame.key].append((frame.sequence, bytes(frame.payload)))
        else:
            value: Any = bytes(frame.payload)
            if frame.array_meta:
                import numpy as np

                dtype, shape = decode_array_meta(frame.array_meta)
                value = np.frombuffer(frame.payload, dtype=dtype).reshape(shape)
            self.received.media.append(
                (frame.key, value, frame.timestamp, frame.codec, frame.media_type)
            )
        self.received.event.set()


def chunk_frame(
    worker: FakeWorker,
    target: ActrId,
    stream_id: str,
    sequence: int,
    payload: bytes,
    lane: PayloadType,
    source: ActrId | OwnId | None = OWN_ID,
) -> bytes:
    """An encoded data-stream chunk from ``worker`` with the payload inline (``source`` as
    for ``HarnessNode.call``)."""
    frame = StreamFrame(
        STREAM,
        stream_id,
        source=worker.actr_id if isinstance(source, OwnId) else source,
        target=target,
        payload_type=lane,
        sequence=sequence,
        payload=payload,
    )
    return wire.encode_stream(frame)
