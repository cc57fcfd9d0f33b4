"""Frames for an actor whose node is not known yet: located, and kept meanwhile.

A target's node is learnt by a *locate*: a RoleNegotiation relayed through signaling with
an open destination, which the target's gateway answers with its own node id
(``_nodes.Nodes._on_relay``). Meanwhile the target's frames wait here, in order, for at
most :data:`LOCATE_TIMEOUT_S`: calls and tells as they came, their senders told to wait
past :data:`LOCATE_WAIT_BYTES` (``_sender_waits``), and reliable stream chunks in their
senders' rings, unread (a stream to a node that does not answer costs the gateway no
memory, and fills its sender's ring, which makes that sender wait). Once the node
answers they go on, in order; if none does, calls fail, the rest is dropped and counted,
and the senders are told (``_notices``). Past :data:`LOCATE_QUEUE_BYTES` waiting in all
the workers' sockets are not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .._envelope import StreamFrame
from .._errors import ActrError, NotFound, PermissionDenied, Unavailable
from .._ids import ActrId
from .._ring_readers import RingReaders
from .._rpc_receiving import worth_logging
from ..shm import Descriptor
from ..signaling import RoleNegotiation
from . import _ring_payloads as ring_payloads
from ._counters import GatewayCounters
from ._discovery import maybe_reregistering
from ._remote import RemoteNode, session_id
from ._sender_waits import SenderWaits
from ._stream_hold import StreamHold

log = logging.getLogger(__name__)

#: A frame for an actor not yet located waits at most this long (bounded by its deadline).
LOCATE_TIMEOUT_S = 10.0
#: Actor types a Shell's locate tries as the relay's source before it gives up (403).
LOCATE_TYPES_TRIED = 8
#: Bytes of frames waiting for one target's location before their senders are told to
#: wait for it (``_sender_waits``): a locate takes a signaling round trip when the
#: target's node answers, 10 s when its gateway is stuck.
LOCATE_WAIT_BYTES = 256 * 1024
#: Bytes of frames waiting for a location, all targets together, before the gateway
#: stops reading its sockets (plus room for what told senders may still have on its
#: way, ``SenderWaits.room_bytes``), as in ``_call_hold``. Before senders were told, 4 MiB
#: of a Shell's tells to a node whose gateway was stuck stopped every call to the other
#: nodes for the locate's 10 s (QA, 2026-12-07).
LOCATE_QUEUE_BYTES = 8 * 1024 * 1024
#: A target signaling said is registered nowhere stays so for this long: frames for it
#: fail or drop at once instead of each asking signaling again. An actor that died keeps
#: getting tells from senders holding its id; each was one relay and one log line (QA:
#: 250 a second, for as long as the sender went on).
NOT_FOUND_KEPT_S = 2.0
#: At most this many such targets are kept (the oldest go first).
NOT_FOUND_KEPT_MAX = 1024


class _Locate:
    """Frames waiting to learn which node hosts ``target``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.frames: list[tuple[int, bytes, str]] = []  # (lane, frame, request id or "")
        self.size_bytes = 0
        #: The senders of tells and stream frames among the frames, told if the target is
        #: not found (module _notices): (our actor or None, routing id of a Shell's).
        self.senders: set[tuple[ActrId | None, bytes]] = set()
        #: Reliable stream chunks that came while locating, their rings kept unread, and
        #: those that came inline behind them (their bytes counted in ``size_bytes``).
        self.chunks: list[tuple[StreamFrame, bytes]] = []
        self.found: asyncio.Future[str] = loop.create_future()


class Locates:
    """Mixin of :class:`~._gateway.Gateway`: frames for a target on a node not known yet."""

    # Set up by Gateway.__init__.
    node_id: str
    counters: GatewayCounters
    _loop: asyncio.AbstractEventLoop
    _regs: dict[ActrId, Any]
    _nodes: dict[str, RemoteNode]
    _node_of: dict[ActrId, str]
    _locating: dict[ActrId, _Locate]
    _not_found: dict[ActrId, tuple[float, ActrError]]  # until when, the locate's error
    _missing_drops: int
    _rings: RingReaders
    _stream_hold: StreamHold
    _locate_waits: SenderWaits  # senders of a target being located, told to wait
    _spawn: Callable[[Any], None]
    _notify_sender: Callable[[ActrId | None, ActrId, ActrError, bytes], None]  # _notices
    _notify_shells: Callable[[ActrId, ActrError], None]  # _notices
    _to_node: Callable[..., None]  # _to_nodes.ToNodes: onto a known node's link
    _fail_out: Callable[[str, ActrError], None]  # _outbound
    _on_pressure: Callable[[object, bool], None]  # _outbound
    _reconnected_s_ago: Callable[[], float | None]  # _outbound

    def _to_actor(
        self,
        target: ActrId,
        lane: int,
        frame: bytes,
        request_id: str,
        source: ActrId | None,
        sender: bytes = b"",
    ) -> None:
        """A frame for ``target`` onto its node's link, or waiting for its node to be
        located (``sender``: the routing id of the connection it came on, or none)."""
        locate = self._locating.get(target)
        node_id = self._node_of.get(target)
        # While a locate is still flushing the frames that waited for it, newer frames
        # queue behind them even if the node is known already (the answer that taught us
        # the node arrives before the locate task resumes): else they overtake.
        if node_id is not None and locate is None:
            if source is not None and source in self._regs:
                self._nodes[node_id].add_pair(source, target)
            self._to_node(node_id, lane, frame, request_id, source, target, sender)
            return
        if locate is None:
            known_missing = self._not_found.get(target)
            if known_missing is not None:
                until, error = known_missing
                if self._loop.time() < until:
                    self._drop_for_missing(target, [request_id], error, [(source, sender)])
                    return
                del self._not_found[target]
            locate = self._locating[target] = _Locate(self._loop)
            self._spawn(self._locate(target, source, locate))
        locate.frames.append((lane, frame, request_id))
        locate.size_bytes += len(frame)
        if not request_id and (source is not None or sender):
            locate.senders.add((source, sender))
        if locate.size_bytes > LOCATE_WAIT_BYTES:
            self._locate_waits.wait(target, sender, target)
        room = self._locate_waits.room_bytes()  # (what told senders still have on its way)
        if sum(x.size_bytes for x in self._locating.values()) > LOCATE_QUEUE_BYTES + room:
            self._on_pressure("locate", True)

    def _locate_only(self, target: ActrId, source: ActrId | None) -> None:
        if target not in self._locating:
            locate = self._locating[target] = _Locate(self._loop)
            self._spawn(self._locate(target, source, locate))

    async def _locate(self, target: ActrId, source: ActrId | None, locate: _Locate) -> None:
        """Find the node of ``target``: a RoleNegotiation with an open destination; the
        target's gateway answers with its own (see _on_relay)."""
        self.counters.locates += 1
        error: ActrError | None = None
        node_id = ""
        try:
            await self._relay_locate(target, source)
            async with asyncio.timeout(LOCATE_TIMEOUT_S):
                node_id = await asyncio.shield(locate.found)
        except ActrError as exc:
            error = exc
        except TimeoutError:
            error = Unavailable(
                f"the node of actor {target} did not answer within {LOCATE_TIMEOUT_S:g} s"
            )
        finally:
            if self._locating.get(target) is locate:
                del self._locating[target]
            if not any(x.size_bytes for x in self._locating.values()):
                self._on_pressure("locate", False)
        if isinstance(error, NotFound) and (since := self._reconnected_s_ago()) is not None:
            error = maybe_reregistering(error, since)
        if error is not None:
            if isinstance(error, NotFound):
                if len(self._not_found) >= NOT_FOUND_KEPT_MAX:
                    del self._not_found[next(iter(self._not_found))]
                self._not_found[target] = (self._loop.time() + NOT_FOUND_KEPT_S, error)
            request_ids = [request_id for *_, request_id in locate.frames]
            self._drop_kept_chunks(locate)
            request_ids += [""] * len(locate.chunks)
            self._drop_for_missing(target, request_ids, error, locate.senders)
            self._locate_waits.end(target)  # (after the refusals: they raise at once)
            return
        self._node_of[target] = node_id
        for lane, frame, request_id in locate.frames:
            self._to_node(node_id, lane, frame, request_id)
        if locate.chunks:  # behind those, as the link takes them
            self._stream_hold.take(node_id, locate.chunks)
        self._locate_waits.end(target)

    async def _relay_locate(self, target: ActrId, source: ActrId | None) -> None:
        """Relay a locate to ``target`` from ``source``, if it is one of ours. A frame
        without one (a Shell's) may use any of our actors that the target's ACL admits:
        the target's gateway judges the Shell's frames on their own (docs/gateway.md,
        Trust). The target's node answers with a relay back to the actor we used, so
        that actor's own ACL must admit the target: an actor whose ACL does not (it may
        still call out, as locally) locates through another of ours."""
        own = self._regs.get(source) if source is not None else None
        if own is not None and own.admits(target):
            regs = [own]
        else:
            # One actor per type: the target's ACL and the server's check judge types.
            answerable = [r for r in self._regs.values() if r.admits(target)]
            by_type = {r.actr_id.type: r for r in reversed(answerable)}
            regs = list(by_type.values())[:LOCATE_TYPES_TRIED]
        if not regs and self._regs:
            raise PermissionDenied(
                f"no actor of node {self.node_id} admits {target.type} in its ACL, so "
                f"{target}'s node cannot answer a relay to find it"
            )
        if not regs:
            raise Unavailable(f"node {self.node_id} has no registered actor to relay through")
        refused: PermissionDenied | None = None
        for reg in regs:
            session = session_id("neg", self.node_id, "-")
            try:
                await reg.relay(target, RoleNegotiation(), session_id=session)
                return
            except PermissionDenied as exc:
                refused = exc
        assert refused is not None
        if source is None:
            # A Shell has no type for the ACL to refuse: say what happened instead.
            raise PermissionDenied(
                f"{target} admits none of this node's actors ({refused.message}), so no "
                "caller without an actor id either"
            )
        if own is not None and source is not None and regs[0] is not own:
            # The caller's own ACL refuses the target, so we tried others: say both.
            raise PermissionDenied(
                f"{target} cannot be located for {source.type}: its ACL does not admit "
                f"{target.type} (the answer is a relay back to it), and {target}'s ACL "
                f"refuses the other actors of this node that do ({refused.message})"
            )
        raise refused

    def _keep_for_locate(self, sf: StreamFrame, data: bytes) -> bool:
        """Keep a reliable stream chunk for a target being located, in its sender's ring
        (unread) until the node answers; False if the target is not being located."""
        locate = self._locating.get(sf.target) if sf.target is not None else None
        if locate is None or not (sf.shm or locate.chunks):
            return False  # (an inline one before any kept: it waits as it came)
        if sf.shm and not ring_payloads.keep_ring(self._rings, self.counters, sf):
            return True  # (its ring is gone: dropped, counted)
        locate.chunks.append((sf, data))
        if not sf.shm:
            locate.size_bytes += len(data)
        if sf.source is not None:
            locate.senders.add((sf.source, b""))
        return True

    def _drop_kept_chunks(self, locate: _Locate) -> None:
        """Let go of the rings of the chunks kept for a locate that failed."""
        for sf, _ in locate.chunks:
            if sf.shm:
                with contextlib.suppress(ActrError):
                    self._rings.retire(Descriptor.from_bytes(sf.shm))

    def _drop_for_missing(
        self,
        target: ActrId,
        request_ids: list[str],
        error: ActrError,
        senders: Iterable[tuple[ActrId | None, bytes]],
    ) -> None:
        """Fail the calls (``request_ids``; "" for a tell or stream frame) of frames for
        ``target``, which could not be located; tell the ``senders`` of the others."""
        dropped = 0
        for request_id in request_ids:
            if request_id:
                self._fail_out(request_id, error)
            else:
                dropped += 1
        if not dropped:
            return
        for source, sender in senders:
            self._notify_sender(source, target, error, sender)
        self._notify_shells(target, error)  # (their stream frames came on another socket)
        self.counters.undeliverable += dropped
        self._missing_drops += 1
        if worth_logging(self._missing_drops):  # a sender that goes on: once per drop
            log.info(
                "%r: %d frame(s) for %s dropped: %s (%d times so far)",
                self,
                dropped,
                target,
                error.message,
                self._missing_drops,
            )
