"""Telling the sender of tells and stream frames that could not be delivered to an actor
on another node (module ``actrhost._undeliverable`` says what the sender does then).

Two gateways take part. The one of the target's node (B) drops a frame for an actor it
does not host, or that is not running, or that failed or stopped for good while frames
waited for it, and says ``gone`` to the sender's node over the link::

    {"op": "gone", "t": "<target as the sender named it>", "s": "<source>",
     "code": 404, "m": "<why>"}

The sender's gateway (A) passes that on to the source's worker as a notice on its feed,
as it does for the frames it drops itself (an actor no node hosts). A Shell's tells and
stream frames name no source: their ``gone`` has no ``"s"``, and A passes it on to each
Shell that sent that target some lately, on the connection they came on
(:class:`ShellTellers`). Each side sends one notice per (source, target) per
``_undeliverable.NOTICE_EVERY_S`` at most. A ``gone`` about another node's actor, or for
a source that is not ours, is counted as malformed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from .. import _envelope as wire
from .._directory import Directory
from .._envelope import TELL, StreamFrame
from .._errors import ActrError, BadRequest, NotFound, Unavailable, error_from_code
from .._held_targets import flow_notice
from .._ids import ActrId
from .._undeliverable import NoticeLimiter, notice
from .._zmqloop import LoopSocket
from ._counters import GatewayCounters
from ._peer import PeerConnection
from ._remote import RemoteNode
from ._types import CALLS, LinkState

log = logging.getLogger(__name__)

#: The longest reason a ``gone`` carries (it ends up in an exception's text).
REASON_MAX_CHARS = 300
#: The errors a sender is told about: its target is unknown or not running. (An ACL's
#: refusal is not said: a local sender's tell is not told either.)
TOLD_ERRORS = (NotFound, Unavailable)
#: Targets on other nodes whose Shell tellers node A remembers, and Shells per target
#: (the most recent ones): enough for load generators and clients, bounded against a
#: Shell that tells a million ids once each.
SHELL_TARGETS_MAX = 1024
SHELLS_PER_TARGET_MAX = 8
#: Dropped frames looked at per loop turn to find their senders (each is decoded, ≈ 3 µs:
#: the 80,000 tiny tells 8 MiB can hold kept the loop ≈ 0.25 s in one turn).
DROPPED_FRAMES_PER_TURN = 2000


#: A Shell's connection to the gateway: the socket (CALLS, STREAMS, MEDIA) and its
#: routing id there.
ShellConnection = tuple[str, bytes]


class ShellTellers:
    """The Shells that sent each target on another node tells or stream frames lately, by
    connection: a ``gone`` for a Shell's frame names no source, so it goes to each of
    them."""

    def __init__(self) -> None:
        self._by_target: OrderedDict[ActrId, OrderedDict[ShellConnection, None]] = OrderedDict()

    def remember(self, target: ActrId, sender: ShellConnection) -> None:
        """A Shell sent ``target`` a tell or stream frame on connection ``sender``."""
        senders = self._by_target.get(target)
        if senders is None:
            senders = self._by_target[target] = OrderedDict()
            if len(self._by_target) > SHELL_TARGETS_MAX:
                self._by_target.popitem(last=False)
        else:
            self._by_target.move_to_end(target)
        if sender in senders:
            senders.move_to_end(sender)
        else:
            senders[sender] = None
            if len(senders) > SHELLS_PER_TARGET_MAX:
                senders.popitem(last=False)

    def of(self, target: ActrId) -> list[ShellConnection]:
        """The Shells' connections that sent ``target`` frames lately, oldest first."""
        return list(self._by_target.get(target, ()))


class Notices:
    """Mixin of :class:`~._gateway.Gateway`: the two halves above."""

    # Set up by Gateway.__init__.
    node_id: str
    counters: GatewayCounters
    directory: Directory
    _nodes: dict[str, RemoteNode]
    _node_of: dict[ActrId, str]
    _notices: NoticeLimiter
    _to_signaling: dict[ActrId, ActrId]  # Gateway._refresh_aliases
    _to_worker: dict[ActrId, ActrId]  # and back
    _dealer: Callable[[str], LoopSocket]  # _to_workers.ToWorkers: a worker's feed
    _routers: dict[str, LoopSocket]  # the three sockets workers and Shells send to, by name
    _shell_tellers: ShellTellers

    # -- node B: the target's -----------------------------------------------------------

    def _say_gone(
        self, pc: PeerConnection | None, source: ActrId | None, target: Any, error: ActrError
    ) -> None:
        """Frames from ``source`` (another node's actor, None for a Shell attached to that
        node) for ``target`` (as that node names it) were dropped with ``error``: say so
        to its node, on ``pc`` (the link they came on) or on the node's live link (a
        Shell's frames need ``pc``: nothing else says which node they came from)."""
        if target is None or not isinstance(error, TOLD_ERRORS):
            return
        entry = self.directory.get(target)
        if entry is not None and entry.comes_back:
            # Starting, or restarting: a lossy frame (sample, latency-first chunk) for it
            # was dropped, as under pressure, but its sender's next may arrive. Told, it
            # raised for a second (KEPT_S), where between local actors nothing did (QA).
            return
        if pc is None or pc.state is not LinkState.CONNECTED:
            # (Frames that waited here: their node may be on a new link since.)
            node_id = pc.remote_node if pc is not None else None
            if node_id is None and source is not None:
                node_id = self._node_of.get(source)
            node = self._nodes.get(node_id) if node_id is not None else None
            pc = node.pc if node is not None else None
        if pc is None or pc.state is not LinkState.CONNECTED:
            return
        target = self._to_signaling.get(target, target)  # (frames were readdressed)
        if not self._notices.due((source if source is not None else pc.remote_node, target)):
            return
        message: dict[str, Any] = {
            "op": "gone",
            "t": str(target),
            "code": int(error.code),
            "m": error.message[:REASON_MAX_CHARS],
        }
        if source is not None:  # (a Shell's: none, and its node passes it to its Shells)
            message["s"] = str(source)
        pc.send_control(message)

    def _say_gone_for_frames(
        self, frames: Iterable[tuple[bytes, PeerConnection | None]], error: ActrError
    ) -> None:
        """The tells and stream frames among ``frames`` (encoded, waiting for a worker
        that will not be back, each with the link it came on) were dropped: tell their
        senders (a Shell's, which name none, on that link)."""
        told: set[tuple[ActrId | PeerConnection, ActrId]] = set()
        for data, came_on in frames:
            pair = _told_pair(data)
            if pair is None:
                continue
            source, target = pair
            sender = source if source is not None else came_on
            if sender is not None and (sender, target) not in told:
                told.add((sender, target))
                self._say_gone(came_on, source, target, error)

    # -- node A: the sender's -----------------------------------------------------------

    def _on_gone(self, pc: PeerConnection, message: dict[str, Any]) -> None:
        """The other node dropped frames of one of our actors, or of our Shells (no
        ``"s"``)."""
        target, code, reason = _actor_id(message.get("t")), message.get("code"), message.get("m")
        shells = "s" not in message
        source = None if shells else _actor_id(message["s"])
        if source is not None:  # named as other nodes know it (Gateway._refresh_aliases)
            source = self._to_worker.get(source, source)
        if (
            target is None
            or not isinstance(code, int)
            or not isinstance(reason, str)
            or self._node_of.get(target, pc.remote_node) != pc.remote_node
            or (not shells and (source is None or self.directory.get(source) is None))
        ):
            # (a node speaks for its own actors only, and to ours only)
            pc.counters.malformed += 1
            return
        error = error_from_code(code, reason[:REASON_MAX_CHARS])
        if source is not None:
            self._notify_sender(source, target, error, b"")
            return
        self._notify_shells(target, error)

    def _tell_senders_of_dropped(self, frames: Iterable[bytes], error: ActrError) -> None:
        """The tells and stream frames among ``frames`` (encoded, as they went to another
        node) were dropped here with ``error``: tell our actors and Shells that sent
        them, once per (source, target). ``DROPPED_FRAMES_PER_TURN`` frames now, the rest
        in the loop's next turns."""
        self._tell_some_senders_of_dropped(iter(frames), error, set())

    def _tell_some_senders_of_dropped(
        self,
        frames: Iterator[bytes],
        error: ActrError,
        told: set[tuple[ActrId | None, ActrId]],
    ) -> None:
        for looked, data in enumerate(frames, 1):
            pair = _told_pair(data)
            if pair is not None and pair not in told:
                told.add(pair)
                source, target = pair
                if source is not None:
                    self._notify_sender(source, target, error, b"")
                else:
                    self._notify_shells(target, error)
            if looked == DROPPED_FRAMES_PER_TURN:
                loop = asyncio.get_running_loop()
                loop.call_soon(self._tell_some_senders_of_dropped, frames, error, told)
                return

    def _notify_sender(
        self, source: ActrId | None, target: ActrId, error: ActrError, sender: bytes
    ) -> None:
        """Tell the sender of frames for ``target`` that were dropped with ``error``: its
        next ones raise it for a while. Our actor ``source`` on its worker's feed (the
        other node's ``gone`` names the actor, not a connection), a frame without one (a
        Shell's tell) on the connection it came on, ``sender`` (its routing id)."""
        if not isinstance(error, TOLD_ERRORS):
            return
        if source is not None:
            # Frames left with the id other nodes know; the worker has its own (QA: its
            # sender was never told, after a signaling restart that gave new ids).
            source = self._to_worker.get(source, source)
            # (If its queue is full, the next dropped frame tells it.)
            data = notice(target, error)
            if self._notices.due((source, target, "local")) and self._to_worker_of(source, data):
                self.counters.senders_told += 1
        elif sender:
            self._notify_connection(CALLS, sender, target, error)

    def _notify_shells(self, target: ActrId, error: ActrError) -> None:
        """Tell each Shell that sent ``target`` tells or stream frames lately (they name no
        source) that those were dropped with ``error``, on the connection they came on."""
        if isinstance(error, TOLD_ERRORS):
            for via, sender in self._shell_tellers.of(target):
                self._notify_connection(via, sender, target, error)

    def _notify_connection(self, via: str, sender: bytes, target: ActrId, error: ActrError) -> None:
        """The notice for a Shell: on socket ``via`` to routing id ``sender``."""
        if self._notices.due((via, sender, target)):
            with contextlib.suppress(zmq.ZMQError):  # (as above; one gone is gone)
                self._routers[via].send_multipart_nowait([sender, notice(target, error)])
                self.counters.senders_told += 1

    def _tell_sender_to_wait(self, sender: bytes, target: ActrId, wait: bool) -> None:
        """Tell the worker or Shell whose connection to the calls socket is ``sender``
        (its routing id) that its calls and tells to ``target`` must wait, its node's
        link being full (``wait``), or may go on (module ``actrhost._held_targets``;
        ``_call_hold`` says how often). On that connection, not on a worker's feed:
        Shells have none, and a load generator's flood is a Shell's."""
        try:
            # (If its queue is full, its sends wait for that anyway; one gone is gone.)
            self._routers[CALLS].send_multipart_nowait([sender, flow_notice(target, wait)])
        except zmq.ZMQError:
            return
        if wait:
            self.counters.senders_told_to_wait += 1

    def _to_worker_of(self, actor: ActrId, data: bytes) -> bool:
        """Send ``data`` on the feed of the worker of ``actor`` (one of ours) if there is
        room; True if it went."""
        entry = self.directory.get(actor)
        if entry is None:
            return False
        try:
            self._dealer(entry.endpoint).send_nowait(data)
        except zmq.ZMQError:
            return False
        return True


def _actor_id(text: object) -> ActrId | None:
    try:
        return ActrId.parse(text) if isinstance(text, str) else None
    except BadRequest:
        return None


def _told_pair(frame: bytes) -> tuple[ActrId | None, ActrId] | None:
    """(source, target) of an encoded tell or stream frame, whose sender may be told it
    was dropped; None for a call or answer (its caller gets the error as an answer), a
    frame without target, or one that does not decode."""
    try:
        item = wire.decode(frame)
    except BadRequest:
        return None
    if not isinstance(item, StreamFrame) and item.direction != TELL:
        return None
    return None if item.target is None else (item.source, item.target)
