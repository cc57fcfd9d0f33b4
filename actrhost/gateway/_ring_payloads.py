"""Stream frames whose payload is still in their local sender's shared-memory ring.

Rings don't cross hosts: before a frame goes to another node its descriptor is replaced
by the payload itself (:func:`inline`). A frame that must wait first (in the stream
hold, for a full link) keeps its ring attached while it waits (:func:`keep_ring`): its
sender may exit meanwhile, as an ``actrhost load`` does, and the ring was dropped as
its writer's; 517,000 frames the load had counted as sent were lost that way (QA).
A frame whose ring is gone is counted as ``sender_gone``, one that is not ours as
``malformed_local``; neither stops the gateway.
"""

from __future__ import annotations

import contextlib
import logging

from .._envelope import StreamFrame
from .._errors import ActrError, Unavailable
from .._ring_readers import RingReaders
from .._rpc_receiving import worth_logging
from ..shm import Descriptor
from ._counters import GatewayCounters

log = logging.getLogger(__name__)


def keep_ring(rings: RingReaders, counters: GatewayCounters, sf: StreamFrame) -> bool:
    """Attach the ring of ``sf`` (a frame about to wait) and keep it until the frame is
    read by :func:`inline` with ``kept=True``. False: the frame was dropped (counted)."""
    try:
        rings.arrived(Descriptor.from_bytes(sf.shm))
    except ActrError as exc:
        _count_unreadable(counters, sf, exc)
        return False
    return True


def inline(
    rings: RingReaders, counters: GatewayCounters, sf: StreamFrame, kept: bool = False
) -> bool:
    """Replace the ring descriptor of ``sf`` by the payload itself and release the
    record. ``kept``: its ring was kept by :func:`keep_ring`. False: the frame was
    dropped (counted)."""
    try:
        # In the try: a frame whose descriptor does not decode is dropped and counted
        # (it raised out of the socket's handler, logging a traceback for each, uncounted,
        # and lost the rest of its message: QA).
        desc = Descriptor.from_bytes(sf.shm)
        reader = rings.get(desc.ring)
        view = reader.read(desc)
    except ActrError as exc:
        if kept:  # (let go of it: its descriptor decoded, keep_ring did that)
            with contextlib.suppress(ActrError):
                rings.retire(Descriptor.from_bytes(sf.shm))
        _count_unreadable(counters, sf, exc)
        return False
    try:
        sf.payload = bytes(view)
    finally:
        view.release()
        if kept:
            rings.retire(desc)
        else:
            reader.retire(desc)
    if desc.meta:
        sf.array_meta = desc.meta
    sf.shm = b""
    return True


def _count_unreadable(counters: GatewayCounters, sf: StreamFrame, exc: ActrError) -> None:
    if isinstance(exc, Unavailable):  # its ring went with its sender
        counters.sender_gone += 1
        count = counters.sender_gone
    else:  # the descriptor is not one of ours
        counters.malformed_local += 1
        count = counters.malformed_local
    if worth_logging(count):  # one per frame: a flood
        log.warning("could not read %r from its ring (#%d): %s", sf, count, exc.message)
