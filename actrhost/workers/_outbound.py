"""What an actor's contexts send, through their worker: calls, tells, discovery, stream
chunks and media samples, each to its destination's endpoint (another worker, a Shell,
the gateway), waiting for a destination that is still starting."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from .._context import Context, Dest
from .._directory import ActorState, Directory, discover_via, shell_pid
from .._envelope import REQUEST, TELL, Envelope, StreamFrame
from .._errors import NotFound, Unavailable
from .._ids import ActrId, ActrType
from .._payload_type import PayloadType
from .._rpc import RpcEndpoint
from .._stream_sender import StreamSender

if TYPE_CHECKING:
    from ._process import WorkerSpec


class Outbound:
    """Mixin of :class:`~._worker.Worker`: the sending half of the ``_Runtime`` its
    contexts call."""

    # Set up by Worker.__init__.
    spec: WorkerSpec
    self_id: ActrId
    directory: Directory
    rpc: RpcEndpoint
    streams_out: StreamSender
    _loop: asyncio.AbstractEventLoop
    _directory_changed: asyncio.Event

    def now(self) -> float:
        """Loop time (CLOCK_MONOTONIC, shared by every process of the machine)."""
        return self._loop.time()

    async def _resolve_when_started(
        self, dest: Dest, route_key: str, deadline: float
    ) -> tuple[str, ActrId | None]:
        """Like :meth:`_resolve`, but a target that is still starting is waited for (until
        ``deadline``) instead of refused.

        A peer may call us from its ``on_start`` (or just after) before the supervisor's
        directory update saying it runs has reached this process; when we then call it
        back (A -> B -> A), it is running already or about to be. Only this rare path
        waits: a running target costs nothing more.
        """
        try:
            return self._resolve(dest, route_key)
        except Unavailable:
            entry = self.directory.get(dest.actr_id) if dest.actr_id is not None else None
            while entry is not None and entry.state is ActorState.STARTING:
                changed = self._directory_changed
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                except TimeoutError:
                    break
                entry = self.directory.get(entry.actr_id)
            try:
                return self._resolve(dest, route_key)
            except Unavailable:
                # Once through the loop first: an actor retrying at once on 503 never
                # let the directory update in that brings the instance back (QA).
                await asyncio.sleep(0)
                raise

    def _resolve(self, dest: Dest, route_key: str) -> tuple[str, ActrId | None]:
        if dest.kind == "actor":
            assert dest.actr_id is not None
            if dest.actr_id == self.self_id:  # also while starting: see _on_request
                return self.spec.endpoint, self.self_id
            return self.directory.endpoint_of(dest.actr_id), dest.actr_id
        if dest.kind == "LOCAL":
            return self.spec.endpoint, self.self_id
        if dest.kind == "SHELL":
            return self.directory.shell_for(route_key), None
        raise NotFound(f"unknown destination {dest!r}")

    async def send_request(
        self,
        ctx: Context,
        dest: Dest,
        route_key: str,
        payload: bytes,
        deadline: float,
        payload_type: PayloadType,
    ) -> bytes:
        """Send a request for a Context; return the response payload."""
        endpoint, target = await self._resolve_when_started(dest, route_key, deadline)
        now = self._loop.time()
        env = Envelope(
            REQUEST,
            route_key,
            payload,
            request_id=self.rpc.next_request_id(),
            source=self.self_id,
            target=target,
            payload_type=payload_type,
            deadline_ns=int(deadline * 1e9),
            timeout_ms=max(0, round((deadline - now) * 1000)),  # (12.5 s, not 12.499)
            traceparent=ctx.outgoing_traceparent(),
            tracestate=ctx.tracestate,
        )
        response = await self.rpc.call(endpoint, env, deadline)
        return response.payload

    async def send_tell(
        self, ctx: Context, dest: Dest, route_key: str, payload: bytes, payload_type: PayloadType
    ) -> None:
        """Send a tell for a Context."""
        deadline = self._loop.time() + (ctx.deadline - self._loop.time() if ctx.deadline else 5.0)
        endpoint, target = await self._resolve_when_started(dest, route_key, deadline)
        env = Envelope(
            TELL,
            route_key,
            payload,
            request_id=self.rpc.next_request_id(),
            source=self.self_id,
            target=target,
            payload_type=payload_type,
            traceparent=ctx.outgoing_traceparent(),
            tracestate=ctx.tracestate,
        )
        await self.rpc.tell(endpoint, env, deadline)

    async def discover(self, actr_type: ActrType, deadline: float | None) -> ActrId:
        """A running local instance of ``actr_type`` (round-robin; one starting waited for),
        else one the gateway finds."""
        return await discover_via(
            self.directory,
            self.rpc,
            actr_type,
            self.self_id,
            deadline,
            changed=lambda: self._directory_changed,
        )

    async def send_stream_frame(
        self, dest: Dest, frame: StreamFrame, payload: Any, deadline: float
    ) -> bool:
        """Send a chunk or sample for a Context; False if a lossy lane dropped it."""
        shell_key = f"{frame.kind}:{frame.key}"
        # A receiver still starting is waited for, as by a call or tell (docs/node.md).
        endpoint, target = await self._resolve_when_started(dest, shell_key, deadline)
        self.rpc.refused.check(target)
        if dest.kind == "LOCAL":
            pid: int | None = os.getpid()
        elif dest.kind == "SHELL":
            pid = shell_pid(endpoint)  # its rings bound what waits for a slow Shell too
        else:
            pid = self.directory.reader_pid(target, endpoint)
            endpoint = self.directory.stream_endpoint(endpoint, frame.kind)
        frame.source = self.self_id
        frame.target = target
        return await self.streams_out.send(
            frame, payload, endpoint=endpoint, target=target, target_pid=pid, deadline=deadline
        )
