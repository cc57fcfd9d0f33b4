"""What each worker has read of the frames the gateway handed to its feed.

ZeroMQ says nothing about what the receiving process took: a frame handed to it may still
wait in this process's queue for the worker, or in the worker's. Two things need to know:

* **Tells in doubt.** A tell's message is confirmed to the sending node only once the
  gateway holds none of its tells (``_carry.HeldTells``). Handed to ZeroMQ used to count
  as delivered, and a SIGKILL of the gateway lost unseen what its queue still held for
  the worker (up to 1,024 tells per worker). Now a tell's receipt is kept until the
  worker has read it; unread ones are sent again after the kill, and the gateway in
  its place hands them on in doubt: the worker drops those it had read
  (``actrhost._tell_origin``). Reliable stream chunks likewise.
* **Memory toward a slow worker**, bounded in bytes: at most :data:`FEED_BYTES_MAX`
  handed over and not yet read. Frames beyond it wait in the gateway's backlog, where a
  slow actor's stream is held back at its sender (module ``_to_workers``). The two
  ZeroMQ queues alone (1,024 frames each) let 2 GiB of 1 MiB chunks pile up.

How the worker says what it read: the gateway sends a **sync** on the feed (a RESPONSE
without a request of ours, route ``_rpc_receiving.FEED_SYNC_ROUTE``, its id as request id) and the
worker sends it back once it reads it. The feed is one queue, in order, so the answer
means that everything before the sync was read. One sync per worker is outstanding at a
time, sent when tells wait for it or :data:`SYNC_EVERY_BYTES` are in flight: for a flood,
one per worker round trip; for a lone call, none.

A worker that dies loses what its queue held (a local sender's frames too): when the
directory shows another incarnation (or none) at the endpoint, everything handed over is
taken as read, and the tells' receipts go.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .. import _envelope as wire
from .._envelope import RESPONSE, Envelope
from .._rpc_receiving import FEED_SYNC_ROUTE
from ._carry import Receipt

#: Bytes handed to one worker's feed and not yet read, at most (the worker's queue and
#: ours for it). 16 chunks of 1 MiB; a worker that keeps up reads far ahead of it.
FEED_BYTES_MAX = 16 * 1024 * 1024
#: Bytes in flight after which a sync is sent even with no tell waiting for one.
SYNC_EVERY_BYTES = 1024 * 1024


def sync_frame(sync_id: str) -> bytes:
    """The sync the worker sends back once it has read everything before it."""
    return wire.encode(Envelope(RESPONSE, FEED_SYNC_ROUTE, request_id=sync_id))


class FeedReads:
    """One worker's feed: frames and bytes handed over, bytes read, tells not yet read."""

    __slots__ = (
        "_held",
        "_room",
        "incarnation",
        "read_bytes",
        "sent_bytes",
        "sent_frames",
        "sync_due",
        "syncing",
    )

    def __init__(self) -> None:
        self.sent_frames = 0
        self.sent_bytes = 0
        self.read_bytes = 0
        #: Receipts of tells and reliable chunks handed over, by the number of frames
        #: handed over with them.
        self._held: deque[tuple[int, Receipt]] = deque()
        #: The outstanding sync: (id, frames and bytes handed over with it).
        self.syncing: tuple[str, int, int] | None = None
        self.sync_due = False  # one is scheduled (Gateway._send_sync)
        #: The worker's pid while its directory entry is live, else None.
        self.incarnation: int | None = None
        self._room = asyncio.Event()
        self._room.set()

    def __repr__(self) -> str:
        return (
            f"<FeedReads {self.sent_bytes - self.read_bytes} bytes in flight, "
            f"{len(self._held)} tells unread, syncing {self.syncing}>"
        )

    def has_room(self) -> bool:
        """Whether more may be handed over (:data:`FEED_BYTES_MAX`)."""
        return self.sent_bytes - self.read_bytes < FEED_BYTES_MAX

    def handed(self, size_bytes: int, receipt: Receipt | None) -> bool:
        """A frame was handed to ZeroMQ; True if a sync should follow."""
        self._add(size_bytes)
        if receipt is not None:
            self._held.append((self.sent_frames, receipt))
        return self.wants_sync()

    def _add(self, size_bytes: int) -> None:
        self.sent_frames += 1
        self.sent_bytes += size_bytes
        if not self.has_room():
            self._room.clear()

    def wants_sync(self) -> bool:
        """Whether a sync should go now: none outstanding or scheduled, and tells or
        :data:`SYNC_EVERY_BYTES` wait for one."""
        return (
            self.syncing is None
            and not self.sync_due
            and (
                bool(self._held)
                or self.sent_bytes - self.read_bytes >= SYNC_EVERY_BYTES
                or not self.has_room()
            )
        )

    def sync_sent(self, sync_id: str, size_bytes: int) -> None:
        """The sync ``sync_id`` was handed over (it counts as a frame too)."""
        self._add(size_bytes)
        self.syncing = (sync_id, self.sent_frames, self.sent_bytes)

    def synced(self, sync_id: str) -> bool:
        """The worker sent ``sync_id`` back: everything before it was read. False for
        one that is not outstanding (from an earlier incarnation)."""
        if self.syncing is None or self.syncing[0] != sync_id:
            return False
        _, frames, size_bytes = self.syncing
        self.syncing = None
        self.read_bytes = max(self.read_bytes, size_bytes)
        held = self._held
        while held and held[0][0] <= frames:
            held.popleft()  # the receipt goes: its message may be confirmed
        if self.has_room():
            self._room.set()
        return True

    def worker_changed(self) -> None:
        """The worker died or was replaced: what it had not read is gone with it."""
        self.read_bytes = self.sent_bytes
        self._held.clear()
        self.syncing = None
        self._room.set()

    async def wait_room(self, deadline: float) -> bool:
        """Wait until more may be handed over, or until loop time ``deadline`` (False)."""
        if self._room.is_set():
            return True
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await self._room.wait()
        except TimeoutError:
            return False
        return True
