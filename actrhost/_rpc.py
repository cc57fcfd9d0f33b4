"""Request/response and tell over ZeroMQ, shared by workers and Shell clients.

Each participant binds one ROUTER socket (its inbound endpoint) and opens one DEALER per
peer it sends to, so every message goes one hop, straight to the receiver. A request goes
out on the caller's DEALER and its response comes back on the same DEALER, addressed by
the routing id the callee's ROUTER saw; tells are never answered.

A worker takes frames from other nodes on one more socket, its *feed*: a DEALER it
connects to a socket the gateway binds for it (``_directory.gateway_feed_endpoint``), so
that a killed gateway's frames are all read before its successor's.

Failure is fast: the directory refuses sends to an instance that is not running, and the
owner calls :meth:`RpcEndpoint.peer_gone` as soon as the supervisor reports a peer dead,
failing its pending calls with ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import logging
import os
from dataclasses import dataclass

import zmq

from . import _envelope as wire
from ._config import DEFAULT_MAX_MESSAGE_BYTES
from ._envelope import Envelope
from ._errors import (
    ActrError,
    BadRequest,
    DeadlineExceeded,
    HandlerError,
    Unavailable,
    error_from_code,
)
from ._gateway_credit import GatewayCredit
from ._held_targets import HeldTargets
from ._replies import Replies
from ._rpc_receiving import (
    FEED_ROUTE,
    Receiving,
    RequestHandler,
    StreamHandler,
)
from ._tell_origin import TellsRead
from ._tells_sent import TellsSent
from ._undeliverable import RefusedTargets
from ._zmqloop import LoopSocket

log = logging.getLogger(__name__)

#: How long a send may wait for a peer that is still (re)connecting, at most; the call's
#: own deadline bounds it further. A restarted worker binds within ~150 ms.
CONNECT_WAIT_S = 1.0

#: How long answers of a gracefully stopped peer may trail its "stopped" notice.
GRACEFUL_ANSWER_WAIT_S = 0.5
#: How often a send waiting for a full socket checks whether its peers went down.
DOWN_CHECK_S = 0.1
#: A deadline's timer this late means the loop was blocked (or far behind): answers that
#: came meanwhile may still wait in the sockets, read first (see RpcEndpoint._expire).
LATE_TIMER_S = 0.05
#: A blocked loop's due timers fire together: the sockets are read for them once per this.
CATCH_UP_EVERY_S = 0.01

#: Frames the feed's queue holds, at most (``hwm_messages`` if lower): beyond, frames
#: from other nodes wait in the gateway, bounded in bytes, where a slow actor's stream
#: is held back at its sender (docs/gateway.md, Backpressure). With ``hwm_messages``
#: (10,000 by default) a slow actor took a whole remote stream into its memory.
FEED_RECEIVE_HWM = 1024

#: Frames the queue to the node's gateway holds, at most (``hwm_messages`` if lower).
#: What a worker has on its way to the gateway when the gateway tells it to wait for an
#: actor on another node (its link full, ``_held_targets``) is what this queue and the
#: gateway's socket (``gateway._gateway.ROUTER_RECEIVE_HWM``) hold: with
#: ``hwm_messages`` (10,000) a flood of 4 KiB tells had 40 MiB on its way, past the
#: gateway's hold, which then stopped reading for every node (QA, 2026-12-07). 256 cost
#: a flood of remote tells ≈ 18 % of its rate (the sender waits for room by polling),
#: 1,024 nothing measurable (``scripts/bench_feed_cap.py``, alternated with the code
#: before).
GATEWAY_SEND_HWM = 1024


@dataclass
class Counters:
    """What an endpoint counts; exported by ``actrhost status``."""

    malformed_frames: int = 0
    late_responses: int = 0
    undeliverable_replies: int = 0
    calls_sent: int = 0
    tells_sent: int = 0
    #: Tells from other nodes that came again after a gateway died and had been read:
    #: duplicates, dropped (module ``_tell_origin``, ``Verdict.READ``).
    tells_duplicates_dropped: int = 0
    #: Tells that came again from a sender this process cannot tell apart from one it
    #: read (restarted, or too many senders since): dropped, maybe lost (``MAYBE_READ``).
    tells_in_doubt_dropped: int = 0
    #: Reliable stream chunks from other nodes likewise.
    chunks_duplicates_dropped: int = 0
    chunks_in_doubt_dropped: int = 0
    #: Tells to other nodes sent again, in doubt, after the node's gateway died; and
    #: those that could not go again (their target gone, or no room before the deadline).
    tells_sent_again: int = 0
    tells_not_sent_again: int = 0

    def as_dict(self) -> dict[str, int]:
        """A JSON-ready copy."""
        return {
            "malformed_frames": self.malformed_frames,
            "late_responses": self.late_responses,
            "undeliverable_replies": self.undeliverable_replies,
            "calls_sent": self.calls_sent,
            "tells_sent": self.tells_sent,
            "tells_duplicates_dropped": self.tells_duplicates_dropped,
            "tells_in_doubt_dropped": self.tells_in_doubt_dropped,
            "chunks_duplicates_dropped": self.chunks_duplicates_dropped,
            "chunks_in_doubt_dropped": self.chunks_in_doubt_dropped,
            "tells_sent_again": self.tells_sent_again,
            "tells_not_sent_again": self.tells_not_sent_again,
        }


class _Pending:
    __slots__ = ("endpoint", "env", "future", "sent_at", "timer")

    def __init__(
        self, endpoint: str, future: asyncio.Future[Envelope], env: Envelope, sent_at: float
    ) -> None:
        self.endpoint = endpoint
        self.future = future
        self.env = env  # for the deadline's message
        self.sent_at = sent_at
        self.timer: asyncio.TimerHandle | None = None


#: The longest timeout a call, tell or send accepts (deadlines travel as int64 ns).
MAX_TIMEOUT_S = 365 * 24 * 3600.0


def deadline_after(now: float, timeout: float) -> float:
    """``now + timeout``; raises ValueError for a timeout that is not a number of seconds
    up to :data:`MAX_TIMEOUT_S` (NaN, infinite, huge). Zero or less is a deadline that
    has passed: the call fails with DeadlineExceeded, as any late one."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if not timeout <= MAX_TIMEOUT_S:  # also NaN
        raise ValueError(f"timeout must be a number of seconds up to 1 year, not {timeout!r}")
    return now + timeout


def configure_socket(sock: zmq.Socket, hwm: int) -> None:
    """Options every data socket of a node uses; the high-water marks come from config."""
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    # A restarted peer binds the same ipc path again; notice it quickly. A failed ipc
    # connect is one cheap syscall, so a short, flat interval costs nothing; with
    # libzmq's doubling up to 200 ms, "serving again after SIGKILL" measured ~100 ms
    # longer (scripts/bench_local.py, (g)).
    sock.setsockopt(zmq.RECONNECT_IVL, 5)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 10)


class RpcEndpoint(Receiving):
    """One process's inbound ROUTER, outbound DEALERs and table of pending calls.

    ``on_request(envelope, routing_id)`` receives requests and tells synchronously; the
    owner answers later with :meth:`reply`.
    """

    def __init__(
        self,
        zctx: zmq.Context,
        bind_endpoint: str,
        on_request: RequestHandler,
        *,
        hwm: int,
        name: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_stream: StreamHandler | None = None,
        first_of_instance: bool = False,
    ) -> None:
        self.name = name
        self.max_message_bytes = max_message_bytes
        self._on_stream = on_stream
        self.endpoint = bind_endpoint
        self.counters = Counters()
        self._zctx = zctx
        self._hwm = hwm
        self._on_request = on_request
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, _Pending] = {}
        self._links: dict[str, LoopSocket] = {}
        self._reached: set[str] = set()
        self._down: ActrError | None = None  # see peers_down
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-"
        self._closed = False
        self._caught_up_at = 0.0  # loop time of the last _catch_up
        self._feed: LoopSocket | None = None  # see open_feed
        self._feed_replies: Replies | None = None
        self._reading_paused = False
        #: Actors on other nodes this process's tells and stream frames may not go to
        #: for now: the gateway said it dropped some (module ``_undeliverable``).
        self.refused = RefusedTargets(self._loop.time)
        #: Actors on other nodes whose link is full: sends to them wait (_held_targets).
        self.held = HeldTargets(self._loop.time)
        #: Bytes sent to the node's gateway that it has not read yet (_gateway_credit).
        self.gateway_credit = GatewayCredit()
        #: The last tell from each sender (or connection) on another node read; complete
        #: in the first process of an actor instance (no earlier one read anything).
        self._tells_read = TellsRead(complete=first_of_instance)
        #: Tells to other nodes, kept to go again if the gateway dies (``_tells_sent``).
        self.to_other_nodes = TellsSent(self._loop, self.send, self._count_sent_again)
        router = zctx.socket(zmq.ROUTER)
        configure_socket(router, hwm)
        # Report unroutable replies instead of dropping them silently.
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            router.bind(bind_endpoint)
        except zmq.ZMQError:
            router.close(linger=0)
            raise
        self._router = LoopSocket(router, self._on_router_message, f"{name} in")
        self._replies = Replies(self._router, self._count_undeliverable_replies)

    def __repr__(self) -> str:
        return f"RpcEndpoint({self.name} {self.endpoint})"

    @property
    def inbound(self) -> LoopSocket:
        """The ROUTER socket, for pausing reads under backpressure."""
        return self._router

    def pause_reading(self) -> None:
        """Stop reading requests, tells and stream frames (the ROUTER and the feed)."""
        self._reading_paused = True
        self._router.pause_reading()
        if self._feed is not None:
            self._feed.pause_reading()

    def resume_reading(self) -> None:
        """Read the ROUTER and the feed again."""
        self._reading_paused = False
        self._router.resume_reading()
        if self._feed is not None:
            self._feed.resume_reading()

    def read_now(self) -> None:
        """Take what waits in the ROUTER and the feed now, a batch of each, as a wake-up
        of the loop would (the mailbox's poll: handlers that held the loop a while)."""
        self._router.read_now()
        if self._feed is not None:
            self._feed.read_now()

    def open_feed(self, endpoint: str) -> None:
        """Also take frames from the peer that binds ``endpoint`` for this process alone
        (the node's gateway), answering them there. Idempotent.

        A socket that connects keeps one queue across its peer's restarts: frames a
        killed gateway handed over are read before any of the next one's. On the ROUTER
        the old and the new connection were read in turns, and a reliable stream's
        chunks came out of order.
        """
        if self._feed is not None or self._closed:
            return
        sock = self._zctx.socket(zmq.DEALER)
        configure_socket(sock, self._hwm)
        sock.setsockopt(zmq.RCVHWM, min(self._hwm, FEED_RECEIVE_HWM))
        sock.connect(endpoint)  # no ZMQ_IMMEDIATE: see link()
        self._feed = LoopSocket(sock, self._on_feed_message, f"{self.name} feed")
        self._feed_replies = Replies(self._feed, self._count_undeliverable_replies, addressed=False)
        if self._reading_paused:
            self._feed.pause_reading()

    def next_request_id(self) -> str:
        """A request id unique within this node's lifetime (pid + counter: cheap)."""
        return f"{self._id_prefix}{next(self._ids)}"

    # -- sending -----------------------------------------------------------------------

    def link(self, endpoint: str) -> LoopSocket:
        """The DEALER to ``endpoint``, connected on first use."""
        link = self._links.get(endpoint)
        if link is None:
            if self._closed:
                raise Unavailable(f"{self!r} is closed")
            sock = self._zctx.socket(zmq.DEALER)
            configure_socket(sock, self._hwm)
            if endpoint == self.to_other_nodes.gateway:
                sock.setsockopt(zmq.SNDHWM, min(self._hwm, GATEWAY_SEND_HWM))
            # Not ZMQ_IMMEDIATE: with it, libzmq discards the messages already received
            # from a peer when that peer disconnects before we read them — an answer sent
            # just before a graceful exit was lost in ~10% of trials (reproduced with bare
            # pyzmq). Without it, a frame for a peer that is (re)connecting waits in the
            # pipe (bounded by the high-water mark); death notices fail the calls.
            sock.connect(endpoint)
            on_message = functools.partial(self._on_link_message, endpoint)
            link = LoopSocket(sock, on_message, f"{self.name} -> {endpoint}")
            self._links[endpoint] = link
        return link

    def _count_sent_again(self, sent: bool) -> None:
        if sent:
            self.counters.tells_sent_again += 1
        else:
            self.counters.tells_not_sent_again += 1

    async def send(self, endpoint: str, data: bytes, deadline: float) -> None:
        """Send one frame to ``endpoint``; wait (bounded) only while the peer connects.

        Raises ``DeadlineExceeded`` when a peer reached before (so up, only busy: its
        queue is full) does not take the frame before ``deadline``, ``Unavailable`` when
        one never reached does not take it soon (down, or not started).
        """
        if endpoint == self.to_other_nodes.gateway:  # bounded in bytes too
            credit = self.gateway_credit
            if not credit.room_for(len(data)):
                await credit.wait(len(data), deadline)
            await self._send(endpoint, data, deadline)
            credit.sent(len(data))
        else:
            await self._send(endpoint, data, deadline)

    async def _send(self, endpoint: str, data: bytes, deadline: float) -> None:
        if self._down is not None:
            raise copy.copy(self._down)  # a fresh one: each raise grows a traceback
        link = self.link(endpoint)
        try:
            link.send_nowait(data)
            self._reached.add(endpoint)
            return
        except zmq.Again:
            pass
        # A peer we reached before is only busy (its queue is full): that is backpressure,
        # wait up to the deadline. One never reached may be down: give up sooner.
        busy = endpoint in self._reached
        if busy:
            wait_until = deadline
        else:
            wait_until = min(deadline, self._loop.time() + CONNECT_WAIT_S)
        # In steps, so that peers_down() ends the wait too.
        while self._loop.time() < wait_until and self._down is None:
            step_until = min(wait_until, self._loop.time() + DOWN_CHECK_S)
            if not await link.wait_writable(step_until):
                continue
            try:
                link.send_nowait(data)
                self._reached.add(endpoint)
                return
            except zmq.Again:
                continue
        if self._down is not None:
            raise copy.copy(self._down)  # a fresh one: each raise grows a traceback
        if busy:  # the caller's own deadline: as a call's answer coming too late, 504
            why = "its queue is full: the receiver is busy"
            if endpoint == self.to_other_nodes.gateway:
                # "The receiver is busy" sent people looking at the actor on the other node.
                # It stops reading past its hold for full links (docs/gateway.md).
                why = "the node's gateway reads no more: its links are full, or it is stuck"
            raise DeadlineExceeded(f"{endpoint} took nothing more before the deadline ({why})")
        raise Unavailable(f"{endpoint} is not accepting messages (peer down or overloaded)")

    async def call(self, endpoint: str, env: Envelope, deadline: float) -> Envelope:
        """Send a request and wait for its response until ``deadline`` (loop time).

        Returns the response envelope, or raises the error it carries; raises
        ``DeadlineExceeded`` at the deadline and ``Unavailable`` when the peer is down.
        Cancelling the caller forgets the request; a response arriving later is dropped.
        """
        if self.held.holds(env.target):  # its node's link is full (_held_targets)
            await self.held.wait(env.target, deadline)
        if self._loop.time() >= deadline:
            raise DeadlineExceeded(f"deadline passed before {env.route_key!r} was sent")
        data = self._encode_within_limit(env, "request")
        future: asyncio.Future[Envelope] = self._loop.create_future()
        pending = _Pending(endpoint, future, env, self._loop.time())
        self._pending[env.request_id] = pending
        pending.timer = self._loop.call_at(deadline, self._expire, env.request_id)
        try:
            await self.send(endpoint, data, deadline)
            self.counters.calls_sent += 1
            response = await future
        finally:
            pending.timer.cancel()
            del self._pending[env.request_id]
            if future.done() and not future.cancelled():
                # A death notice or the deadline may have settled it while the send was
                # still failing; mark it retrieved so asyncio does not warn.
                future.exception()
        if response.error_code:
            raise error_from_code(response.error_code, response.error_message)
        return response

    def _expire(self, request_id: str) -> None:
        pending = self._pending.get(request_id)
        if pending is None or pending.future.done():
            return
        now = self._loop.time()
        if pending.timer is not None and now - pending.timer.when() > LATE_TIMER_S:
            self._catch_up(now)
            if pending.future.done():
                return
        # Which call, to whom, after how long: "no answer to request 7b34-1" alone said
        # nothing a user could act on (QA).
        env, waited = pending.env, now - pending.sent_at
        given = pending.timer.when() - pending.sent_at if pending.timer else waited
        # The time it was given, not the time waited: "within 0.00202 s" for a 0.001 s
        # timeout read as a wrong deadline; a late timer is said apart (QA). As the
        # caller gave it where the request carries it (ms), else to 3 digits.
        shown = f"{env.timeout_ms / 1000:g}" if env.timeout_ms else f"{given:.3g}"
        late = f"; the loop let it wait {waited:.3g} s" if waited - given > LATE_TIMER_S else ""
        error = DeadlineExceeded(
            f"no answer to {env.route_key!r} from {env.target or pending.endpoint} "
            f"within {shown} s (request {request_id}{late})"
        )
        pending.future.set_exception(copy.copy(error))

    def _catch_up(self, now: float) -> None:
        """Read every answer waiting in our sockets before a late deadline fails a call.

        After a blocked loop, answers that came meanwhile wait unread while the timers of
        the calls they answer are due: uvloop runs due timers before it polls, and asyncio
        reads one batch of 256 messages, then runs the timers (QA: of 1,000 calls answered
        during a 1.5 s block, 488 and 723 failed with 504). Once per 10 ms at most, as a
        whole batch of such timers fires together."""
        if now - self._caught_up_at < CATCH_UP_EVERY_S:
            return
        self._caught_up_at = now
        self._router.read_waiting()
        for link in list(self._links.values()):
            link.read_waiting()

    async def tell(self, endpoint: str, env: Envelope, deadline: float) -> None:
        """Send a message that is never answered; returns once ZeroMQ has taken it.

        Raises what the gateway said when it dropped earlier ones to the same target on
        another node (for a while, ``_undeliverable``)."""
        self.refused.check(env.target)
        if self.held.holds(env.target):  # its node's link is full (_held_targets)
            await self.held.wait(env.target, deadline)
        data = self._encode_within_limit(env, "tell")
        if endpoint == self.to_other_nodes.gateway:  # to another node: stamped and kept
            await self.to_other_nodes.send(endpoint, data, env.payload_type, deadline)
        else:
            await self.send(endpoint, data, deadline)
        self.counters.tells_sent += 1

    def _encode_within_limit(self, env: Envelope, what: str) -> bytes:
        """The envelope's bytes; ``BadRequest`` when they exceed ``max_message_bytes``.

        Checked here, at the sender, because a receiver can only drop what is too big
        after it has taken it into memory (and ZeroMQ's own limit drops the connection).
        """
        # The payload alone says so before a copy of it is made (a 600 MB request took
        # 3 s and 2.3 GB of memory to be refused, QA).
        size = len(env.payload)
        if size <= self.max_message_bytes:
            data = wire.encode(env)
            size = len(data)
        if size > self.max_message_bytes:
            raise BadRequest(
                f"{what} {env.route_key!r} of {size} bytes exceeds max_message_bytes "
                f"({self.max_message_bytes}); send large data as a stream"
            )
        return data

    def reply(self, routing_id: bytes, env: Envelope) -> None:
        """Send a response back to whoever sent the request (never blocks). A response
        over ``max_message_bytes`` is replaced by a ``HandlerError`` saying so."""
        data = wire.encode(env)
        # Measured without the request id, which is the caller's: longer through gateways
        # ("…/o1/g2"), it failed an answer for a remote caller that a local one got.
        size = len(data) - len(env.request_id)
        if size > self.max_message_bytes:
            error = (
                f"response of {size} bytes exceeds the callee's max_message_bytes "
                f"({self.max_message_bytes})"
            )
            log.warning("%r: %s (request %s)", self, error, env.request_id)
            data = wire.encode(wire.error_response(env.request_id, HandlerError(error)))
        # A caller whose queue is full gets it when there is room; one that is gone, not.
        if routing_id == FEED_ROUTE and self._feed_replies is not None:
            self._feed_replies.send(routing_id, data)
        else:
            self._replies.send(routing_id, data)

    def _count_undeliverable_replies(self, count: int) -> None:
        self.counters.undeliverable_replies += count

    def peer_gone(self, endpoint: str, error: ActrError, *, graceful: bool) -> None:
        """A peer's process went away: fail its pending calls.

        After a crash at once. After a graceful stop the peer answered everything before it
        said so, but its answers travel on another socket than the supervisor's notice and
        may arrive just after it: give them a moment first.
        """
        if endpoint == self.to_other_nodes.gateway:
            self.gateway_credit.reset()  # (what it had not read will not be read)
        if graceful:
            # Only the calls pending now: a successor at the same endpoint (a restart)
            # may take new calls meanwhile, which are not the old process's to fail.
            owed = [p for p in self._pending.values() if p.endpoint == endpoint]
            self._loop.call_later(GRACEFUL_ANSWER_WAIT_S, self._fail, owed, error)
        else:
            self.fail_endpoint(endpoint, error)

    @staticmethod
    def _fail(pending_calls: list[_Pending], error: ActrError) -> None:
        for pending in pending_calls:
            if not pending.future.done():
                pending.future.set_exception(copy.copy(error))

    def fail_endpoint(self, endpoint: str, error: ActrError) -> int:
        """Fail every pending call to ``endpoint`` with ``error``; return how many."""
        failed = 0
        for pending in self._pending.values():
            if pending.endpoint == endpoint and not pending.future.done():
                pending.future.set_exception(copy.copy(error))
                failed += 1
        return failed

    def peers_down(self, error: ActrError) -> None:
        """Every peer is gone for good (a Shell's node died): fail pending calls, sends
        waiting for room and every later send with ``error``."""
        self._down = error
        self.fail_all(error)

    def fail_all(self, error: ActrError) -> None:
        """Fail every pending call (used when this process stops)."""
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(copy.copy(error))

    @property
    def pending_count(self) -> int:
        """Calls waiting for an answer."""
        return len(self._pending)

    def close(self, linger_ms: int = 0) -> None:
        """Close every socket; pending calls fail with ``Unavailable``. Idempotent.

        ``linger_ms`` lets queued messages (answers, tells, stream frames) go out first;
        ``zmq.Context.term`` then waits at most that long for them.
        """
        if self._closed:
            return
        self._closed = True
        self.fail_all(Unavailable(f"{self.name} is shutting down"))
        self.to_other_nodes.close()
        for link in self._links.values():
            link.close(linger_ms)
        self._links.clear()
        self._replies.close()
        self._router.close(linger_ms)
        if self._feed is not None:
            assert self._feed_replies is not None
            self._feed_replies.close()
            self._feed.close(linger_ms)
        # libzmq leaves the ipc socket file behind when a bound socket closes; remove it so
        # nothing of the node outlives it.
        if self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint.removeprefix("ipc://"))
            except FileNotFoundError:
                pass
