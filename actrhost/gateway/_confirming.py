"""What the two sides of a :class:`~._peer.PeerConnection` confirm to each other, and how
a receiver recognises what comes again after a failure.

* ``ack`` with ``n`` and ``r``: the receiving gateway handed ``n`` bytes of reliable
  stream frames to its workers (the sender's end-to-end window, module ``_sending``) and
  has ``r`` stream frames of this connection, none of them held any more and all read
  by their workers (the sender lets go of its copies);
* ``ack`` with ``m``: per call channel, how many messages the receiver has and holds no
  tell of any more (module ``_carry``, :class:`~._carry.HeldTells`);
* ``again``: the items that follow went on an earlier connection first; those we have
  are dropped (module ``_carry``), tells from one we do not know go on marked in doubt
  (module ``actrhost._tell_origin``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._tell_origin import origin_field, session_key
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


class WindowShare:
    """What one reliable stream chunk from another node holds of its sender's stream
    window (module ``_sending``): the bytes it had on the wire, acknowledged once when
    this gateway has handed the chunk to its worker or given up on it.

    Taken on arrival because the chunk that is handed on differs from the one that was
    sent: its origin is taken off, and a readdressed chunk is encoded again. Acknowledging
    those bytes instead left 37 bytes per chunk in the window for good, which closed it
    after ~227,000 chunks on one connection (QA).
    """

    __slots__ = ("_acks", "size_bytes")

    def __init__(self, acks: Confirming, size_bytes: int) -> None:
        self._acks = acks
        self.size_bytes = size_bytes

    def give_back(self) -> None:
        """Acknowledge the chunk's bytes to its sender (only the first call counts)."""
        if self.size_bytes:
            self._acks.stream_delivered(self.size_bytes)
            self.size_bytes = 0


class Delivering(NamedTuple):
    """The message on a call channel whose frames are being handed to the owner."""

    channel: int
    message_index: int  # on this connection
    #: Where its tells first arrived: a connection's session key, the index there.
    session: int
    origin_index: int
    #: It came again from a connection we do not know: its worker may have had it.
    in_doubt: bool


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
    _delivering: Delivering | None
    _tells_delivered: int
    _calls_ack_handle: asyncio.TimerHandle | None
    _ack_handle: asyncio.TimerHandle | None
    _stream_delivered_bytes: int
    _stream_ack_sent: int
    _session_key: int
    _node_key: int

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
        if earlier is None:
            # Our gateway restarted since (or forgot that node): what follows may have
            # reached its actors already. It goes on in doubt; their workers drop what
            # they had read (module actrhost._tell_origin).
            what = "stream frames" if slot == _STREAM else "tell messages"
            log.info("%r: %d %s sent again from an unknown connection", self, len(indices), what)
        call_channel = None if slot == _STREAM else slot
        named = Named(earlier, indices, call_channel, session_key(session))
        self._named[slot] = named if indices else None

    def _had_it(self, slot: int, named: Named) -> bool:
        """Whether the item that came now, which the last ``again`` named, is one we have."""
        had = named.had_next()
        if named.done:
            self._named[slot] = None
        return had

    def _drop_duplicate(self, slot: int, frames: list[bytes]) -> None:
        self.counters.duplicates_dropped += len(frames)
        if slot == _STREAM:
            self.stream_delivered(len(frames[0]))  # the sender's window counts it

    def _deliver_from(self, slot: int, named: Named | None) -> None:
        """The message that came now on call channel ``slot`` (or stream frame, on the
        stream channel) is handed on: note where its tells (its chunk) first arrived
        (here, or where the last ``again`` named) for receipt()."""
        index = self.stream_frames_in - 1 if slot == _STREAM else self.messages_in[slot] - 1
        if named is None:
            self._delivering = Delivering(slot, index, self._session_key, index, False)
        else:
            in_doubt = named.earlier is None
            self._delivering = Delivering(slot, index, named.session, named.index, in_doubt)
        self._tells_delivered = 0

    def receipt(self, sent: Any, target: Hashable = None) -> Receipt | None:
        """For the owner, from inside ``on_frame`` of a tell or a reliable stream chunk
        for ``target``, once per frame: its message (the chunk) is not confirmed to its
        sender while the receipt is alive (module ``_carry``, :class:`~._carry.HeldTells`),
        and the receipt says where it came from (module ``actrhost._tell_origin``): the
        origin its sending worker stamped on it (``sent``, a tell's), else where it first
        arrived. A stamped one the sender sent again in doubt is not in doubt if this
        gateway never received it (``Callbacks.received_before``)."""
        now = self._delivering
        if now is None:
            return None
        position = self._tells_delivered
        self._tells_delivered += 1
        if sent is not None:
            # The sender's key as that node's alone: another node naming it in a tell
            # of its own cannot move the mark of that sender's tells.
            session = sent.session ^ self._node_key
            seen = self._cb.received_before(
                (session, sent.channel, target), (sent.index, sent.position)
            )
            in_doubt = now.in_doubt or sent.in_doubt
            if in_doubt and seen is False:
                in_doubt = False  # never reached this node before: nobody read it
                self.counters.in_doubt_cleared += 1
            origin = origin_field(session, sent.channel, sent.index, sent.position, in_doubt)
        else:
            in_doubt = now.in_doubt
            session, index = now.session, now.origin_index
            origin = origin_field(session, now.channel, index, position, in_doubt)
        if in_doubt and now.channel != _STREAM:
            self.counters.tells_in_doubt += 1
        return self._held_tells.receipt(now.channel, now.message_index, origin)

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
            self.send_control({"op": "ack", "m": confirmed, "r": self._stream_frames_confirmed()})

    def _stream_frames_confirmed(self) -> int:
        """How many of this connection's stream frames the sender may let go of: those
        received, up to the first a worker has not read yet (a receipt alive)."""
        return self._held_tells.confirmed(_STREAM, self.stream_frames_in)

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
            confirmed = self._stream_frames_confirmed()
            ack = {"op": "ack", "n": self._stream_delivered_bytes, "r": confirmed}
            self.send_control(ack)
