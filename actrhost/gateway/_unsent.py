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
"""

from __future__ import annotations

from typing import Any


def forget_unsent(sctp: Any) -> None:
    """Remove from ``sctp`` (aiortc's ``RTCSctpTransport``) every message, or rest of a
    message, it has not transmitted yet."""
    remaining = [chunk for chunk in sctp._outbound_queue if chunk._sent_count]
    sctp._outbound_queue.clear()
    sctp._outbound_queue.extend(remaining)
    sctp._data_channel_queue.clear()
