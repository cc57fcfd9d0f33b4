"""Where a tell to another node came from, so that its actor takes it once even when it
comes again after a gateway died: the receiving node's, or the sending node's.

**Origins.** A process (a worker or a Shell) stamps each tell it sends to another node
with its origin (module ``_tells_sent``, ``Frame.tell_origin``): its own random key, the
lane, its count of such tells, and the pid of the gateway it hands the tell to. Both
gateways pass it on; the receiving one mixes the sending node's id into the key (so
that no node can name another's sender) and marks it ``in_doubt`` when the tell came
again. The worker keeps the highest origin it read per sender and lane
(:class:`TellsRead`) and takes a tell in doubt only if it is past that mark: tells from
one sender reach one worker in the order they were sent (one socket, one data channel,
one queue per target), so one at or below the mark was read. One in doubt from a sender
the worker never heard of is dropped too when the worker may not know all that was read
(it is a restarted process of its instance, whose predecessor may have read it, or it
forgot senders): a tell runs at most once. They are counted apart (:class:`Verdict`:
``tells_duplicates_dropped``, read before; ``tells_in_doubt_dropped``, maybe lost).
The first process of an instance that forgot no sender takes it: nobody read it.

**The receiving gateway dies.** The sending node keeps a tell until the receiving
gateway confirms it, which it does only once the worker has read it
(``gateway/_carry.py``, ``gateway/_feed_reads.py``). After a kill the sending node sends
the unconfirmed tells again, behind an ``again`` naming the connection they first went
on; the gateway that takes over cannot know whether the worker had them (some were in
its own queue at the kill), so it hands them on in doubt.

**The sending gateway dies.** The tells it held, and those still in the sender's socket
for it, die with it, and nobody can say which those were. So the sender keeps its tells
to other nodes for a while (module ``_tells_sent``) and sends them all again, in doubt, to
the gateway that takes over; that gateway drops the ones stamped for the dead one that
it still finds in its socket (``stale_tells_dropped``: they are among those sent again).

A tell without a sender's origin (from an older sender) gets the receiving gateway's
instead: a hash of the connection's session id, the call channel, the message index and
the tell's place among that message's tells. Reliable stream chunks from another node
get that one too (the stream channel, the frame's index, position 0;
``chunks_duplicates_dropped``, ``chunks_in_doubt_dropped``): a chunk is confirmed to its
sending node only once the worker has read it, and one in doubt that the worker had is
dropped.

History (docs/gateway.md, Limits): until 2026-12-05 a new gateway dropped and counted
every tell in doubt and delivered every chunk in doubt, and the tells a sending gateway
held when it died were lost.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections import OrderedDict
from typing import Any

#: Senders (or connections) and lanes a worker remembers its last tell of (the oldest is
#: forgotten first; a tell in doubt from a forgotten one is dropped, as from one never
#: heard of). Each costs ≈ 0.2 KB.
SESSIONS_KEPT = 4096


def session_key(session_id: str) -> int:
    """The 64-bit number a connection's session id travels as in a tell's origin."""
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "little")


# ``Frame.tell_origin`` (field 7, length-delimited) holding a TellOrigin's five fields,
# each behind its tag: written with one pack, ten times faster than building the two
# messages (0.13 against 1.4 µs, once per tell from another node).
# tests/test_tell_origin.py checks that protobuf reads it as the message.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_FIELD = struct.Struct("<BB BQ BI BQ BI BB BI")


def _tag(number: int, wire_type: int) -> int:
    return number << 3 | wire_type


_TAG_ORIGIN = _tag(7, _LENGTH_DELIMITED)
_TAG_SESSION, _TAG_CHANNEL, _TAG_INDEX = _tag(1, _FIXED64), _tag(2, _FIXED32), _tag(3, _FIXED64)
_TAG_POSITION, _TAG_IN_DOUBT = _tag(4, _FIXED32), _tag(5, _VARINT)
_TAG_GATEWAY = _tag(6, _FIXED32)


def origin_field(
    session: int, channel: int, index: int, position: int, in_doubt: bool, gateway: int = 0
) -> bytes:
    """A serialized ``Frame`` holding only ``tell_origin``: appended to a serialized frame,
    protobuf reads the two as one frame with it. Every field is written, so that it also
    replaces an origin the frame held already (protobuf merges the two)."""
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
        _TAG_GATEWAY,
        gateway,
    )


def appended(origin: Any) -> bytes:
    """A decoded ``TellOrigin`` as :func:`origin_field` writes it, to append again."""
    fields = (origin.session, origin.channel, origin.index, origin.position, origin.in_doubt)
    return origin_field(*fields, origin.gateway)


def without_appended_origin(frame: bytes) -> bytes:
    """``frame`` without the origin appended to it last (as :func:`origin_field` writes
    it), if it ends with one: a gateway replaces the origin a reliable chunk came with by
    its own, and the worker gets one (appending a second works too, 37 bytes more)."""
    if len(frame) > _FIELD.size and frame[-_FIELD.size] == _TAG_ORIGIN:
        if frame[1 - _FIELD.size] == _FIELD.size - 2:
            return frame[: -_FIELD.size]
    return frame


class Verdict(enum.Enum):
    """:meth:`TellsRead.judge` of a tell (or reliable chunk) from another node."""

    #: Run it: not in doubt, or in doubt and past what was read.
    TAKE = "take"
    #: In doubt and at or below the sender's mark: read before, a duplicate (counted in
    #: ``tells_duplicates_dropped`` / ``chunks_duplicates_dropped``).
    READ = "read"
    #: In doubt from a sender this memory does not know, and it may not know all that was
    #: read (a restarted process, senders forgotten): dropped, as it may have run, but it
    #: may also be lost (``tells_in_doubt_dropped`` / ``chunks_in_doubt_dropped``).
    MAYBE_READ = "maybe read"


class TellsRead:
    """A worker's memory of the tells from other nodes it read: the highest origin per
    sender (or connection) and lane (or call channel), for the last
    :data:`SESSIONS_KEPT` of them.

    ``complete``: this memory holds every tell any process of the actor instance read,
    so a sender it never heard of sent it nothing it read. True in the first process of
    an instance (no earlier one, ``WorkerSpec.incarnation`` 0) until it forgets a sender
    (beyond ``kept``); a tell in doubt from a sender never heard of is then taken, not
    dropped (the first tells of a new sender, all in a gateway that died, arrive).
    """

    def __init__(self, kept: int = SESSIONS_KEPT, *, complete: bool = False) -> None:
        self._kept = kept
        self._complete = complete
        #: (session key, channel) -> (message index, position) of the highest tell read.
        self._last: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()

    def judge(self, origin: Any) -> Verdict:
        """What to do with a tell with this ``origin`` (a ``TellOrigin``): run it, or drop
        it as one read already, or as one that may have been."""
        key = (origin.session, origin.channel)
        mark = (origin.index, origin.position)
        last = self._last.get(key)
        if origin.in_doubt:
            if last is not None and mark <= last:
                return Verdict.READ
            if last is None and not self._complete:
                return Verdict.MAYBE_READ
        if last is None:
            self._last[key] = mark
            if len(self._last) > self._kept:
                self._last.popitem(last=False)
                self._complete = False  # a sender forgotten is one never heard of now
        elif mark > last:
            self._last[key] = mark
            self._last.move_to_end(key)
        return Verdict.TAKE
