"""aiortc's SCTP looks for chunks to send again only when some are marked (the CPU of a
sending gateway).

On every SACK that frees room in the window and on every message sent, aiortc's
``RTCSctpTransport._transmit`` walks its whole queue of chunks in flight, looking for ones
marked to go again (``DataChunk._retransmit``: found lost by fast retransmit or by the
retransmission timer). Nearly always none is, and in a stream that queue holds hundreds
of chunks: py-spy put a sixth of a sending gateway's samples on that walk (session 44).

Here each chunk's mark is kept in a process-wide weak set as aiortc sets and clears it,
and while that set is empty ``_transmit``'s walk is skipped, which is exactly what it would
have found. A marked chunk that leaves the queue still marked (acknowledged after all)
stays in the set until it is freed; until then every walk happens, as before. Only
the gateway process calls :func:`install`, with the other tunings (module ``_sctp``).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

from ._aiortc_parts import require

#: The DataChunks marked to go again, in every association of this process.
_marked: weakref.WeakSet[Any] = weakref.WeakSet()
#: Where a chunk keeps its mark (the class attribute is the property below).
_MARK = "_actrhost_retransmit"
_installed = False


class _RetransmitMark:
    """``DataChunk._retransmit``: a bool, kept in :data:`_marked` as it changes."""

    def __get__(self, chunk: Any, owner: Any = None) -> Any:
        if chunk is None:
            return self
        return chunk.__dict__.get(_MARK, False)

    def __set__(self, chunk: Any, marked: bool) -> None:
        was = chunk.__dict__.get(_MARK, False)
        if marked and not was:
            _marked.add(chunk)
        elif was and not marked:
            _marked.discard(chunk)
        chunk.__dict__[_MARK] = marked


class SentQueue(deque[Any]):
    """aiortc's queue of chunks in flight, whose next walk can be made empty."""

    #: Set just before aiortc's walk for retransmissions when nothing is marked.
    skip_next_walk = False
    #: Walks skipped so far (in all queues of this process), for tests and curiosity.
    walks_skipped = 0

    def __iter__(self) -> Iterator[Any]:
        if self.skip_next_walk:
            self.skip_next_walk = False
            SentQueue.walks_skipped += 1
            return iter(())
        return super().__iter__()


def marked_chunks() -> int:
    """How many chunks of this process are marked to go again (and not freed)."""
    return len(_marked)


def install() -> None:
    """Patch aiortc's SCTP transport in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from aiortc import rtcsctptransport as sctp

    cls: Any = sctp.RTCSctpTransport
    require("aiortc's SCTP transport changed", (cls, ("_transmit",)), (sctp, ("DataChunk",)))
    original_init = cls.__init__
    original_transmit = cls._transmit

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if not isinstance(self._sent_queue, deque) or not hasattr(self, "_forward_tsn_chunk"):
            raise RuntimeError("aiortc's SCTP transport changed: its sent queue or FORWARD TSN")
        self._sent_queue = SentQueue(self._sent_queue)

    async def _transmit(self: Any) -> None:
        queue = self._sent_queue
        if not isinstance(queue, SentQueue):  # (made before install(): walked as ever)
            await original_transmit(self)
            return
        # aiortc awaits nothing before its walk unless it sends a FORWARD TSN first, so
        # the first walk over the queue after this line is that one.
        if not _marked and self._forward_tsn_chunk is None:
            queue.skip_next_walk = True
        try:
            await original_transmit(self)
        finally:
            queue.skip_next_walk = False

    sctp.DataChunk._retransmit = _RetransmitMark()  # type: ignore[assignment]
    cls.__init__ = __init__
    cls._transmit = _transmit
    _installed = True
