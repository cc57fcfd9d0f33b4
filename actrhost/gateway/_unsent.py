"""Taking out of a failed connection's aiortc the data-channel messages it has not
transmitted, so that it cannot send them after all while it closes.

After a failure, what the other side has not confirmed goes again on the next connection
(module ``_carry``): the messages still in aiortc among it. Were the failed association
to send them meanwhile (a link that failed on its keepalive may still carry packets), the
other side could get one twice: once from each connection, after it had counted what the
old one brought. Two places in ``RTCSctpTransport`` hold messages that were not
transmitted:

* ``_data_channel_queue``: whole messages ``RTCDataChannel.send`` queued, not yet moved
  into SCTP (aiortc moves the next one only once the outbound queue is empty);
* ``_outbound_queue``: the DATA chunks of the last message moved in that the congestion
  window did not let out yet. A message that has a chunk there can no longer complete
  on the other side once those chunks are gone (SCTP delivers a message only whole).

Knowing how many never left matters too: those go again as they are, even to a gateway
that cannot tell what it had received (it restarted), which drops the rest to run no tell
twice (QA: thousands of tells lost so when the other node's gateway was killed).
"""

from __future__ import annotations

from typing import Any

from aiortc.rtcsctptransport import WEBRTC_BINARY

from ._framing import KIND_CONTROL

# RFC 9260 §3.3.1: the B bit of a DATA chunk, set on a message's first chunk.
_FIRST_FRAGMENT = 0x02


def forget_unsent(sctp: Any) -> dict[int, int]:
    """Remove from ``sctp`` (aiortc's ``RTCSctpTransport``) every message, or rest of a
    message, it has not transmitted yet; return, per data-channel id, how many of our
    messages with frames (control messages aside) will therefore never arrive. They are
    the last ones sent on that channel."""
    never: dict[int, int] = {}

    def count(stream_id: int, first_chunk: Any) -> None:
        if first_chunk.protocol == WEBRTC_BINARY and first_chunk.user_data[0] != KIND_CONTROL:
            never[stream_id] = never.get(stream_id, 0) + 1

    unsent = [chunk for chunk in sctp._outbound_queue if not chunk._sent_count]
    for position, chunk in enumerate(unsent):
        if chunk.flags & _FIRST_FRAGMENT:
            count(chunk.stream_id, chunk)
        elif position == 0:  # the rest of a message whose first chunks left
            first = _first_chunk_sent(sctp, chunk)
            if first is not None:  # else acknowledged and freed: its kind is unknown
                count(chunk.stream_id, first)
    remaining = [chunk for chunk in sctp._outbound_queue if chunk._sent_count]
    sctp._outbound_queue.clear()
    sctp._outbound_queue.extend(remaining)
    for channel, protocol, data in sctp._data_channel_queue:
        if channel.id is not None and protocol == WEBRTC_BINARY and data[0] != KIND_CONTROL:
            never[channel.id] = never.get(channel.id, 0) + 1
    sctp._data_channel_queue.clear()
    return never


def _first_chunk_sent(sctp: Any, chunk: Any) -> Any:
    for sent in reversed(sctp._sent_queue):
        if (
            sent.stream_id == chunk.stream_id
            and sent.stream_seq == chunk.stream_seq
            and sent.flags & _FIRST_FRAGMENT
        ):
            return sent
    return None
