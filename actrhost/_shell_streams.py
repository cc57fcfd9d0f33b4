"""A Shell's data streams and media: chunks and samples it sends to actors, and those it
receives from actors sending to ``Dest.SHELL`` (DESIGN §4, "Shell side")."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

from ._context import DEFAULT_TIMEOUT_S
from ._directory import Directory
from ._envelope import MEDIA, STREAM, StreamFrame
from ._errors import Unavailable
from ._ids import ActrId, ActrType
from ._payload_type import PayloadType
from ._payloads import DataStream, MediaSample
from ._rpc import RpcEndpoint, deadline_after
from ._stream_sender import StreamSender
from ._streams import ChunkCallback, SampleCallback, StreamReceiver, chunk_frame, sample_frame

#: What a Shell call or send may name: an id, a type (or its text), an actor's name, or
#: one instance of it as ``name#index`` (as ``actrhost status`` shows it).
Target = ActrId | ActrType | str


class ShellStreams:
    """Mixin of :class:`~._shell.Shell`: its streams and media."""

    # Set up by Shell.__init__ / Shell.open.
    directory: Directory
    _loop: asyncio.AbstractEventLoop
    _streams_in: StreamReceiver
    _streams_out: StreamSender
    _rpc: RpcEndpoint
    _stream_keys: set[str]
    _node_gone: Unavailable | None
    _check_open: Callable[[], None]
    _send_attach: Callable[[], None]
    _route: Callable[[Target, float], Awaitable[tuple[ActrId, str]]]

    def register_stream(self, stream_id: str, callback: ChunkCallback) -> None:
        """Receive chunks actors send to ``Dest.SHELL`` on ``stream_id`` (as Context's)."""
        self._check_open()
        self._streams_in.register(STREAM, stream_id, callback)
        self._stream_keys.add(f"{STREAM}:{stream_id}")
        self._send_attach()

    def unregister_stream(self, stream_id: str) -> None:
        """Stop receiving ``stream_id``."""
        self._check_open()
        self._streams_in.unregister(STREAM, stream_id)
        self._stream_keys.discard(f"{STREAM}:{stream_id}")
        self._send_attach()

    def register_media_track(self, track_id: str, callback: SampleCallback) -> None:
        """Receive media samples actors send to ``Dest.SHELL`` on ``track_id``."""
        self._check_open()
        self._streams_in.register(MEDIA, track_id, callback)
        self._stream_keys.add(f"{MEDIA}:{track_id}")
        self._send_attach()

    def unregister_media_track(self, track_id: str) -> None:
        """Stop receiving ``track_id``."""
        self._check_open()
        self._streams_in.unregister(MEDIA, track_id)
        self._stream_keys.discard(f"{MEDIA}:{track_id}")
        self._send_attach()

    async def send_data_stream(
        self,
        target: Target,
        chunk: DataStream,
        *,
        payload_type: PayloadType = PayloadType.STREAM_RELIABLE,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> bool:
        """Send one chunk to an actor (as ``Context.send_data_stream``); False if dropped."""
        frame = chunk_frame(chunk, payload_type)
        return await self._send_stream_frame(target, frame, chunk.payload, timeout)

    async def send_media_sample(
        self, target: Target, track_id: str, sample: MediaSample, *, timeout: float = 1.0
    ) -> bool:
        """Send one media sample to an actor; False if it was dropped under pressure."""
        frame = sample_frame(track_id, sample)
        return await self._send_stream_frame(target, frame, sample.data, timeout)

    async def _send_stream_frame(
        self, target: Target, frame: StreamFrame, payload: Any, timeout: float
    ) -> bool:
        self._check_open()
        if self._node_gone is not None:
            # A fresh one each time: raising one object again grows its traceback without end.
            raise copy.copy(self._node_gone)  # before a ring is made that nobody would read
        deadline = deadline_after(self._loop.time(), timeout)
        actr_id, endpoint = await self._route(target, deadline)
        self._rpc.refused.check(actr_id)  # another node's actor its gateway said is gone
        frame.target = actr_id
        return await self._streams_out.send(
            frame,
            payload,
            endpoint=self.directory.stream_endpoint(endpoint, frame.kind),
            target=actr_id,
            target_pid=self.directory.reader_pid(actr_id, endpoint),
            deadline=deadline,
        )

    def _on_stream(self, frame: StreamFrame) -> None:
        self._streams_in.on_frame(frame)

    def stream_statistics(self) -> dict[str, Any]:
        """This Shell's stream counters (sent, received, dropped, ...)."""
        return {
            "streams_in": self._streams_in.counters.as_dict(),
            "streams_out": self._streams_out.counters.as_dict(),
        }
