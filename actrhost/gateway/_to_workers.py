"""Handing frames to local workers, each on a socket bound for it (its feed,
``_directory.gateway_feed_endpoint``). A worker whose socket is full (it reads slowly, or
is still connecting), or that has ``_feed_reads.FEED_BYTES_MAX`` handed over and not
read, gets its frames in order, each waiting up to its own time; calls and tells beyond
``Tuning.worker_backlog_bytes`` are refused at once (docs/gateway.md, Backpressure).

Reliable stream chunks beyond ``Tuning.stream_target_bytes`` waiting for one worker are
acknowledged to their sender at once, and its gateway is told to keep that target's
chunks (``full``) until they are down to half (``room``): a slow actor does not take the
link's window from the other actors of its node.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import zmq

from .._directory import LIVE_STATES, gateway_feed_endpoint
from .._errors import ActrError, Unavailable
from .._rpc import configure_socket
from .._zmqloop import LoopSocket
from ._carry import Receipt
from ._counters import GatewayCounters
from ._feed_reads import FeedReads, sync_frame
from ._types import LinkState, Tuning

if TYPE_CHECKING:
    from .._directory import Directory
    from ._confirming import WindowShare
    from ._peer import PeerConnection

#: Frames ZeroMQ may queue in this process for one worker. Beyond this (or past
#: ``_feed_reads.FEED_BYTES_MAX`` not read yet), frames wait in a ``Backlog`` here.
WORKER_SEND_HWM = 1024
#: What a frame waiting in a ``Backlog`` costs beyond its bytes, at most: its entry,
#: and for a call its pending entry and what answers it if it cannot be handed on
#: (``scripts/gateway_memory.py``, 2026-12-07: ≈ 360 bytes for a tell, ≈ 1,050 for a
#: call). Counted against ``Tuning.worker_backlog_bytes``, which bounded the bytes alone
#: before: 50,000 tiny calls for a worker that read nothing took 139 MiB of a gateway.
WAITING_COST_BYTES = 1024


def with_origin(data: bytes, receipt: Receipt | None) -> bytes:
    """A frame from another node as its worker gets it: a tell or reliable chunk with
    where it first arrived appended, for the worker to take it once even if it comes
    again after this gateway died (protobuf reads the two as one frame; module
    ``actrhost._tell_origin``). Its size for windows and caps is the frame's alone.
    (A chunk may be a view into the data-channel message: joined, not added.)"""
    return data if receipt is None else b"".join((data, receipt.origin))


class Backlog(deque["Waiting"]):
    """Frames waiting for one local worker's socket, in order, and their size."""

    def __init__(self) -> None:
        super().__init__()
        self.size_bytes = 0
        #: The connections told "full" for a target (as their side names it), to be told
        #: "room" once this backlog is down to half of ``Tuning.stream_target_bytes``.
        self.told_full: set[tuple[PeerConnection, str]] = set()

    def append(self, item: Waiting) -> None:
        """Queue ``item`` last."""
        super().append(item)
        self.size_bytes += len(item.data)

    def popleft(self) -> Waiting:
        """Take the first item."""
        item = super().popleft()
        self.size_bytes -= len(item.data)
        return item

    def cost_bytes(self) -> int:
        """What the items cost this process, at most (:data:`WAITING_COST_BYTES`)."""
        return self.size_bytes + len(self) * WAITING_COST_BYTES


class Waiting:
    """A frame waiting for a local worker's socket (connecting, or its queue full)."""

    __slots__ = ("came_on", "data", "expires_at", "on_fail", "receipt", "renew_s", "window")

    def __init__(
        self,
        data: bytes,
        expires_at: float,
        on_fail: Callable[[], None] | None,
        window: WindowShare | None,
        receipt: Receipt | None,
        renew_s: float,
        came_on: PeerConnection | None,
    ) -> None:
        self.data = data
        self.expires_at = expires_at
        self.on_fail = on_fail
        self.window = window  # given back to its sender once handed on or given up
        self.receipt = receipt  # its message (chunk) is not confirmed while it waits
        #: A stream chunk's wait, counted again from each take of the worker's (0: not).
        self.renew_s = renew_s
        #: The link it came on: its sender is told there if it is given up (a Shell's
        #: frames name no source, so that nothing else says which node sent them).
        self.came_on = came_on


class ToWorkers:
    """Mixin of :class:`~._gateway.Gateway`: one DEALER per local worker, and what waits
    for it."""

    # Set up by Gateway.__init__.
    counters: GatewayCounters
    tuning: Tuning
    _loop: asyncio.AbstractEventLoop
    _zctx: zmq.Context
    _hwm: int
    directory: Directory
    _dealers: dict[str, LoopSocket]
    _feeds: dict[str, FeedReads]  # by endpoint, as _dealers
    _syncs: dict[str, str]  # sync id -> endpoint, while outstanding
    _sync_ids: Iterator[int]
    _overflow: dict[str, Backlog]
    _spawn: Callable[[Any], None]
    _on_dealer: Callable[[list[bytes]], None]
    _flush_links: Callable[[], None]
    _count_undeliverable: Callable[[], None]
    # _notices:
    _say_gone_for_frames: Callable[[Iterable[tuple[bytes, PeerConnection | None]], ActrError], None]

    def _workers_changed(self) -> None:
        """After a directory update: bind the feed of every worker listed, before frames
        come for it (its worker connects within ~10 ms, and a lossy frame for a worker not
        yet connected is dropped), and fail what waits for one that will not be back."""
        for entry in self.directory.entries():
            self._dealer(entry.endpoint)
            live = entry.state in LIVE_STATES
            feed = self._feeds[entry.endpoint]
            incarnation = entry.pid if live else None
            if feed.incarnation is not None and incarnation != feed.incarnation:
                self._syncs.pop(feed.syncing[0] if feed.syncing else "", None)
                feed.worker_changed()  # what it had not read went with it
            feed.incarnation = incarnation
            if not live and not entry.comes_back:
                error = Unavailable(f"actor {entry.actr_id} ({entry.name}) is {entry.state.value}")
                self._give_up_backlog(entry.endpoint, error)

    def _dealer(self, endpoint: str) -> LoopSocket:
        """The DEALER bound for the worker at ``endpoint`` (its feed, which it connects
        to: ``_directory.gateway_feed_endpoint`` says why), bound on first use."""
        dealer = self._dealers.get(endpoint)
        if dealer is None:
            sock = self._zctx.socket(zmq.DEALER)
            configure_socket(sock, self._hwm)
            sock.setsockopt(zmq.SNDHWM, min(self._hwm, WORKER_SEND_HWM))
            try:
                sock.bind(gateway_feed_endpoint(endpoint))  # a killed one's file: replaced
            except zmq.ZMQError:
                sock.close(linger=0)
                raise
            dealer = self._dealers[endpoint] = LoopSocket(
                sock, self._on_dealer, f"gateway -> {endpoint}", self._flush_links
            )
            self._feeds[endpoint] = FeedReads()
        return dealer

    def _handed(self, endpoint: str, size_bytes: int, receipt: Receipt | None) -> None:
        """A frame went to ZeroMQ for the worker at ``endpoint``: a tell's ``receipt``
        stays until the worker has read it (module ``_feed_reads``)."""
        feed = self._feeds[endpoint]
        if feed.handed(size_bytes, receipt):
            feed.sync_due = True
            self._loop.call_soon(self._send_sync, endpoint, feed)

    def _send_sync(self, endpoint: str, feed: FeedReads) -> None:
        """Ask the worker at ``endpoint`` to say when it has read what it was handed (once
        per loop turn at most: after the frames this turn handed over)."""
        if feed.syncing is not None or self._feeds.get(endpoint) is not feed:
            feed.sync_due = False
            return
        sync_id = f"sync/{next(self._sync_ids)}"
        data = sync_frame(sync_id)
        try:
            self._dealers[endpoint].send_nowait(data)
        except zmq.ZMQError:
            # Its queue is full: as soon as it is not (still due meanwhile). A backlog
            # waiting for room would otherwise wait for a sync that never went.
            feed.sync_due = True
            self._spawn(self._send_sync_later(endpoint, feed))
            return
        feed.sync_due = False
        feed.sync_sent(sync_id, len(data))
        self._syncs[sync_id] = endpoint

    async def _send_sync_later(self, endpoint: str, feed: FeedReads) -> None:
        dealer = self._dealers[endpoint]
        while not await dealer.wait_writable(self._loop.time() + 1.0):
            if self._feeds.get(endpoint) is not feed or dealer.closed:
                return
        self._send_sync(endpoint, feed)

    def _synced(self, sync_id: str) -> None:
        """A worker sent a sync back."""
        endpoint = self._syncs.pop(sync_id, None)
        feed = self._feeds.get(endpoint) if endpoint is not None else None
        if endpoint is None or feed is None or not feed.synced(sync_id):
            return  # (from an earlier incarnation of the worker)
        if feed.wants_sync():
            self._send_sync(endpoint, feed)

    def _to_local(
        self,
        endpoint: str,
        data: bytes,
        *,
        wait_s: float,
        on_fail: Callable[[], None] | None = None,
        window: WindowShare | None = None,
        bounded: bool = False,
        receipt: Receipt | None = None,
        renew: bool = False,
        came_on: PeerConnection | None = None,
    ) -> None:
        """Send a frame to a local worker, in order with what waits for it already.

        A worker that stops reading fills its queue (the high-water mark): then the frame
        waits up to ``wait_s`` behind earlier ones, and ``on_fail`` runs if it is still
        not sent. A ``bounded`` frame (a call or tell) fails at once when
        ``Tuning.worker_backlog_bytes`` wait already (stream chunks are bounded by their
        window). With ``renew`` (a stream chunk) the wait counts from the worker's last
        take, once the frame is first in line: only a worker that takes nothing loses it.
        A tell's or reliable chunk's ``receipt`` waits with it (module ``_carry``), and
        the link it ``came_on``, to tell its sender if its worker will not be back.
        """
        backlog = self._overflow.get(endpoint)
        dealer = self._dealer(endpoint)
        if not backlog and self._feeds[endpoint].has_room():
            try:
                dealer.send_nowait(with_origin(data, receipt))
            except zmq.ZMQError:
                pass
            else:
                self._handed(endpoint, len(data), receipt)
                if window is not None:
                    window.give_back()
                return
        cost_bytes = len(data) + WAITING_COST_BYTES
        if wait_s <= 0 or (
            bounded
            and backlog
            and backlog.cost_bytes() + cost_bytes > self.tuning.worker_backlog_bytes
        ):
            if on_fail is not None:
                on_fail()
            return
        if backlog is None:
            backlog = self._overflow[endpoint] = Backlog()
        renew_s = wait_s if renew else 0.0
        expires_at = self._loop.time() + wait_s
        backlog.append(Waiting(data, expires_at, on_fail, window, receipt, renew_s, came_on))
        if len(backlog) == 1:
            self._spawn(self._drain(endpoint, backlog))

    def _deliver_reliable(
        self,
        endpoint: str,
        data: bytes,
        pc: PeerConnection,
        sender_target: str,
        receipt: Receipt | None,
        window: WindowShare | None,
    ) -> None:
        """Hand a reliable stream chunk from ``pc`` to a worker: it waits for a worker
        that is slow (the sender's window bounds how much), but past
        ``Tuning.stream_target_bytes`` waiting for that worker, it is acknowledged at once
        and the sender told to keep the target's next chunks (module docstring)."""
        wait_s = self.tuning.stream_wait_s
        self._to_local(
            endpoint, data, wait_s=wait_s, window=window, renew=True, receipt=receipt, came_on=pc
        )
        backlog = self._overflow.get(endpoint)
        if backlog is None or backlog.size_bytes <= self.tuning.stream_target_bytes:
            return
        # Past a window more, the sender ignores "full" (an older gateway): the window
        # bounds what waits here again, as for a whole node.
        bound = self.tuning.stream_target_bytes + self.tuning.stream_window_bytes
        waiting = backlog[-1]
        if window is not None and waiting.window is window and backlog.size_bytes <= bound:
            waiting.window = None
            waiting.on_fail = self._count_undeliverable
            window.give_back()
        told = (pc, sender_target)
        if sender_target and told not in backlog.told_full:
            backlog.told_full.add(told)
            pc.send_control({"op": "full", "t": sender_target})

    def _tell_room(self, backlog: Backlog, ended: bool = False) -> None:
        """Tell the senders told "full" that a backlog is down to half, or gone."""
        if backlog.told_full and (
            ended or backlog.size_bytes <= self.tuning.stream_target_bytes // 2
        ):
            for pc, target in backlog.told_full:
                if pc.state is LinkState.CONNECTED:
                    pc.send_control({"op": "room", "t": target})
            backlog.told_full.clear()

    def waiting_for_workers(self) -> dict[str, int]:
        """Frames and bytes from other nodes waiting here for slow local actors (their
        sockets full), for ``actrhost status``."""
        backlogs = self._overflow.values()
        return {
            "frames_waiting_for_actors": sum(len(backlog) for backlog in backlogs),
            "bytes_waiting_for_actors": sum(backlog.size_bytes for backlog in backlogs),
        }

    def _give_up_backlog(self, endpoint: str, error: ActrError) -> None:
        """The worker at ``endpoint`` will not be back (its actor failed for good, or
        stopped): what waits for it fails now. A call waited for its deadline, and a
        stream chunk held its sender's window for ``Tuning.stream_wait_s`` (30 s), while
        the sender's next sends got 504 (QA)."""
        backlog = self._overflow.pop(endpoint, None)  # its _drain ends when it wakes
        if backlog is None:
            return
        self._say_gone_for_frames(((waiting.data, waiting.came_on) for waiting in backlog), error)
        while backlog:
            self._fail_waiting(backlog.popleft())
        self._tell_room(backlog, ended=True)

    def _fail_waiting(self, waiting: Waiting) -> None:
        if waiting.on_fail is not None:
            waiting.on_fail()
        elif waiting.window is not None:
            self.counters.undeliverable += 1
            waiting.window.give_back()  # don't stall the window

    async def _drain(self, endpoint: str, backlog: Backlog) -> None:
        dealer = self._dealer(endpoint)
        feed = self._feeds[endpoint]
        try:
            while backlog:
                first = backlog[0]
                writable = await feed.wait_room(first.expires_at)
                if writable and backlog and backlog[0] is first:
                    writable = await dealer.wait_writable(first.expires_at)
                if not backlog or backlog[0] is not first:
                    continue  # given up meanwhile (_give_up_backlog)
                if not writable:
                    self._fail_waiting(backlog.popleft())
                    self._tell_room(backlog)
                    continue
                if not feed.has_room():
                    continue  # (a sync went meanwhile)
                try:
                    dealer.send_nowait(with_origin(first.data, first.receipt))
                except zmq.ZMQError:
                    continue
                self._handed(endpoint, len(first.data), first.receipt)
                backlog.popleft()
                if first.window is not None:
                    first.window.give_back()
                self._tell_room(backlog)
                if backlog and backlog[0].renew_s:
                    # A worker that still takes keeps what waits for it: counted from its
                    # arrival, a slow receiver's chunks expired (QA: 820 of 1,000 lost).
                    head = backlog[0]
                    head.expires_at = max(head.expires_at, self._loop.time() + head.renew_s)
        finally:
            if self._overflow.get(endpoint) is backlog:
                del self._overflow[endpoint]
            self._tell_room(backlog, ended=True)
