"""What the two sides of a :class:`~._peer.PeerConnection` confirm to each other, and how
a receiver recognises what comes again after a failure.

* ``ack`` with ``n`` and ``r``: the receiving gateway handed ``n`` bytes of reliable
  stream frames to its workers (the sender's end-to-end window, module ``_sending``) and
  has ``r`` stream frames of this connection (the sender lets go of its copies);
* ``ack`` with ``m``: per call channel, how many messages the receiver has and holds no
  tell of any more (module ``_carry``, :class:`~._carry.HeldTells`);
* ``again``: the items that follow went on an earlier connection first; those we have
  are dropped (module ``_carry``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ._carry import HeldTells, Named, Receipt, named_indices
from ._handover import Handover
from ._sending import _STREAM
from ._types import LinkState

if TYPE_CHECKING:
    from ._peer import Callbacks

# The connection's log: these lines are about one connection.
log = logging.getLogger("actrhost.gateway._peer")

#: Reliable stream bytes delivered before an ``ack`` goes at once, and how long a smaller
#: amount waits for more.
_ACK_EVERY_BYTES = 1024 * 1024
_ACK_DELAY_S = 0.01
#: How soon messages received on the call channels are confirmed: only so that their
#: sender can let go of its copies (module ``_carry``), so not in a hurry.
_CALLS_ACK_DELAY_S = 0.05


class Confirming(Handover):
    """Mixin of :class:`~._peer.PeerConnection`: acks, confirmations and ``again``."""

    # Set up by PeerConnection.__init__.
    _loop: asyncio.AbstractEventLoop
    _cb: Callbacks
    _stream_acked_bytes: int
    stream_frames_in: int
    messages_in: list[int]
    _named: list[Named | None]
    _held_tells: HeldTells
    _delivering: tuple[int, int] | None
    _calls_ack_handle: asyncio.TimerHandle | None
    _ack_handle: asyncio.TimerHandle | None
    _stream_delivered_bytes: int
    _stream_ack_sent: int

    def _on_ack(self, message: dict[str, Any]) -> None:
        acked = message.get("n")
        if isinstance(acked, int) and acked > self._stream_acked_bytes:
            self._stream_acked_bytes = acked
            self._wake.set()
        received = message.get("r")
        if isinstance(received, int):
            self.stream_frames_confirmed(received)
        counts = message.get("m")
        if isinstance(counts, list) and all(isinstance(n, int) for n in counts):
            self.messages_confirmed(counts)

    def _on_again(self, message: dict[str, Any], slot: int) -> None:
        """What follows on this channel went on the failed connection ``session`` first:
        drop what we have of it (module ``_carry``)."""
        session = message.get("session")
        indices = named_indices(message)
        if indices is None or not isinstance(session, str):
            self.counters.malformed += 1
            return
        earlier = self._cb.earlier_connection(session)
        if earlier is None and slot != _STREAM:
            # Our gateway restarted since (or forgot that node): its tells may have run
            # already, and a tell runs at most once (those that never left come after,
            # without "again", and are delivered).
            log.info(
                "%r: dropping %d tell messages sent again from an unknown connection",
                self,
                len(indices),
            )
        elif earlier is None:
            # Stream chunks may have reached the actor already, or not: delivering them
            # again beats losing them (a chunk carries its sequence).
            log.info("%r: stream frames sent again from an unknown connection", self)
        call_channel = None if slot == _STREAM else slot
        self._named[slot] = Named(earlier, indices, call_channel) if indices else None

    def _had_it(self, slot: int, named: Named) -> bool:
        """Whether the item that came now, which the last ``again`` named, is one we have."""
        had = named.had_next()
        if named.done:
            self._named[slot] = None
        return had

    def _drop_duplicate(self, slot: int, frames: list[bytes], named: Named) -> None:
        if named.earlier is None:  # from a connection we do not know: it may have run
            self.counters.unsure_tells_dropped += len(frames)
        else:
            self.counters.duplicates_dropped += len(frames)
        if slot == _STREAM:
            self.stream_delivered(len(frames[0]))  # the sender's window counts it

    def receipt(self) -> Receipt | None:
        """For the owner, from inside ``on_frame`` of a tell it keeps for now: the tell's
        message is not confirmed to its sender while the receipt is alive (module
        ``_carry``, :class:`~._carry.HeldTells`)."""
        if self._delivering is None:
            return None
        return self._held_tells.receipt(*self._delivering)

    def _schedule_calls_ack(self) -> None:
        # (Also from a receipt's __del__, which may come at any time: even at exit.)
        if (
            self._calls_ack_handle is None
            and self._state is LinkState.CONNECTED
            and not self._loop.is_closed()
        ):
            self._calls_ack_handle = self._loop.call_later(_CALLS_ACK_DELAY_S, self._send_calls_ack)

    def _send_calls_ack(self) -> None:
        self._calls_ack_handle = None
        if self._state is LinkState.CONNECTED:
            confirmed = [self._held_tells.confirmed(s, n) for s, n in enumerate(self.messages_in)]
            self.send_control({"op": "ack", "m": confirmed})

    def stream_delivered(self, size_bytes: int) -> None:
        """The owner handed ``size_bytes`` of STREAM_RELIABLE frames to a local worker:
        acknowledge them to the sender (batched)."""
        self._stream_delivered_bytes += size_bytes
        if self._stream_delivered_bytes - self._stream_ack_sent >= _ACK_EVERY_BYTES:
            self._send_ack()
        elif self._ack_handle is None:
            self._ack_handle = self._loop.call_later(_ACK_DELAY_S, self._send_ack)

    def _send_ack(self) -> None:
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        if self._stream_delivered_bytes != self._stream_ack_sent:
            self._stream_ack_sent = self._stream_delivered_bytes
            ack = {"op": "ack", "n": self._stream_delivered_bytes, "r": self.stream_frames_in}
            self.send_control(ack)
