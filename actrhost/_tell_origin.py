"""Where a tell from another node first arrived, so that its actor takes it once even
when it comes again after this node's gateway died.

A tell's sending node keeps it until the receiving gateway confirms it, and the
receiving gateway confirms it only once the worker has read it (``gateway/_carry.py``,
``gateway/_feed_reads.py``). When that gateway is killed, the sending node sends the
unconfirmed tells again, each behind an ``again`` naming its **origin**: the connection
it first arrived on and its message's index there. Some of them the worker had read
already (they were in its own queue at the kill), the others died with the gateway; the
gateway that takes over cannot tell which.

The worker can: every tell a gateway hands it from another node carries its origin
(``Frame.tell_origin``: a hash of the connection's session id, the call channel, the
message index, and the tell's place among that message's tells), and the worker keeps
the highest origin it read per connection and channel (:class:`TellsRead`). A tell that
comes again is marked ``in_doubt``; the worker takes it only if it is past that mark.
Tells from one connection reach one worker in the order they arrived (one queue, in
order per target), so a tell at or below the mark was read. One from a connection the
worker never heard of is dropped too: the worker may have been restarted since, and a
tell runs at most once. Both are counted (``tells_in_doubt_dropped``).

Reliable stream chunks from another node go the same way (the stream channel, the
frame's index there, position 0; ``chunks_in_doubt_dropped``): a chunk is confirmed to
its sending node only once the worker has read it, and one in doubt that the worker had
is dropped.

Until 2026-12-05 the new gateway dropped and counted every tell in doubt, those the
worker never got included, and delivered every chunk in doubt, those it had included
(docs/gateway.md, Limits).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from typing import Any

#: Connections a worker remembers its last tell of (the oldest is forgotten first; a tell
#: in doubt from a forgotten one is dropped, as from one never heard of).
SESSIONS_KEPT = 256


def session_key(session_id: str) -> int:
    """The 64-bit number a connection's session id travels as in a tell's origin."""
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "little")


# ``Frame.tell_origin`` (field 7, length-delimited) holding a TellOrigin's five fields,
# each behind its tag: written with one pack, ten times faster than building the two
# messages (0.13 against 1.4 µs, once per tell from another node).
# tests/test_tell_origin.py checks that protobuf reads it as the message.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_FIELD = struct.Struct("<BB BQ BI BQ BI BB")


def _tag(number: int, wire_type: int) -> int:
    return number << 3 | wire_type


_TAG_ORIGIN = _tag(7, _LENGTH_DELIMITED)
_TAG_SESSION, _TAG_CHANNEL, _TAG_INDEX = _tag(1, _FIXED64), _tag(2, _FIXED32), _tag(3, _FIXED64)
_TAG_POSITION, _TAG_IN_DOUBT = _tag(4, _FIXED32), _tag(5, _VARINT)


def origin_field(session: int, channel: int, index: int, position: int, in_doubt: bool) -> bytes:
    """A serialized ``Frame`` holding only ``tell_origin``: appended to a serialized frame
    (which must not hold one already), protobuf reads the two as one frame with it."""
    return _FIELD.pack(
        _TAG_ORIGIN,
        _FIELD.size - 2,  # the message's length: all but this and the tag
        _TAG_SESSION,
        session,
        _TAG_CHANNEL,
        channel,
        _TAG_INDEX,
        index,
        _TAG_POSITION,
        position,
        _TAG_IN_DOUBT,
        in_doubt,
    )


class TellsRead:
    """A worker's memory of the tells from other nodes it read: the highest origin per
    connection and call channel, for the last :data:`SESSIONS_KEPT` of them."""

    def __init__(self, kept: int = SESSIONS_KEPT) -> None:
        self._kept = kept
        #: (session key, channel) -> (message index, position) of the highest tell read.
        self._last: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()

    def take(self, origin: Any) -> bool:
        """Whether to run a tell with this ``origin`` (a ``TellOrigin``); False: it is in
        doubt and was read already, or may have been."""
        key = (origin.session, origin.channel)
        mark = (origin.index, origin.position)
        last = self._last.get(key)
        if origin.in_doubt and (last is None or mark <= last):
            return False
        if last is None:
            self._last[key] = mark
            if len(self._last) > self._kept:
                self._last.popitem(last=False)
        elif mark > last:
            self._last[key] = mark
            self._last.move_to_end(key)
        return True
