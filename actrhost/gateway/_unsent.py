"""Taking back, from a failed connection's aiortc, the data-channel messages that never
left this process.

Our sender keeps aiortc's own buffer short (``Tuning.buffer_high_bytes``), but what is in
it when a link fails is lost with the connection: up to 256 KiB of messages, ≈ 1,500
small tells (QA measured 645 to 1,472 per failure in a tell flood), although their senders
were told they went. Two places in ``RTCSctpTransport`` hold messages that were never
transmitted:

* ``_data_channel_queue``: whole messages ``RTCDataChannel.send`` queued, not yet moved
  into SCTP (aiortc moves the next one only once the outbound queue is empty);
* ``_outbound_queue``: the DATA chunks of the last message moved in that the congestion
  window did not let out yet.

A message that has a chunk never transmitted cannot have reached the other side's
application: SCTP delivers a message only once all its chunks are there, and the failed
association will not send the rest. So such a message is taken back whole, its chunks
already sent included (they are still in ``_sent_queue``, unacknowledged or not), unless
its first chunks were acknowledged and freed. A message all of whose chunks were sent
stays: it may have arrived, and sending a tell twice would run it twice.
:func:`take_unsent` removes what it returns from aiortc, so the failed association cannot
send it after all while it closes.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiortc.rtcsctptransport import WEBRTC_BINARY

# RFC 9260 §3.3.1: the B and E bits of a DATA chunk.
_FIRST_FRAGMENT = 0x02
_LAST_FRAGMENT = 0x01


def take_unsent(sctp: Any) -> dict[int, list[bytes]]:
    """Remove and return, per data-channel id (SCTP stream id), the messages ``sctp``
    (aiortc's ``RTCSctpTransport``) never transmitted, in the order they were sent."""
    unsent: dict[int, list[bytes]] = {}
    # The chunks in SCTP came out of the channel queue earlier: they go first.
    taken: set[int] = set()  # id() of the chunks of messages taken back
    message: list[Any] = []
    for chunk in itertools.chain(sctp._sent_queue, sctp._outbound_queue):
        if chunk.flags & _FIRST_FRAGMENT:
            message = []
        message.append(chunk)
        if chunk.flags & _LAST_FRAGMENT and _undelivered(message):
            unsent.setdefault(chunk.stream_id, []).append(b"".join(c.user_data for c in message))
            taken.update(id(c) for c in message)
    remaining = [c for c in sctp._outbound_queue if id(c) not in taken]
    sctp._outbound_queue.clear()
    sctp._outbound_queue.extend(remaining)
    for channel, protocol, data in sctp._data_channel_queue:
        if channel.id is not None and protocol == WEBRTC_BINARY:
            unsent.setdefault(channel.id, []).append(data)
    sctp._data_channel_queue.clear()
    return unsent


def _undelivered(message: list[Any]) -> bool:
    """Whether the chunks of one message (from its first) are all here and one of them
    was never transmitted."""
    first = message[0]
    return bool(
        first.flags & _FIRST_FRAGMENT
        and first.protocol == WEBRTC_BINARY
        and any(c._sent_count == 0 for c in message)
        and not any(c._abandoned for c in message)
    )
