"""What each route of an actor did: messages served, outcomes, and how long they took.

A worker keeps one :class:`RouteStats` per route key it served and reports them with its
other counters (``actrhost status``, the node's Prometheus endpoint). Two timings per
message, both in nanoseconds of the monotonic clock:

- *queued*: from the frame's arrival at the worker to the start of its handler (the
  mailbox wait: the part of the latency that grows with load);
- *handled*: from the start of the handler to the reply handed to ZeroMQ (decoding,
  the handler itself, encoding).

Histograms have 5 bits of precision (each value within ≈ 1.6 % of its bucket's midpoint):
a route's report stays a few hundred bytes, and recording costs well under a microsecond
against the ≈ 100 µs of a local call.
"""

from __future__ import annotations

from typing import Any

from .._histogram import Histogram

#: Bits of precision of the per-route histograms (docstring above).
PRECISION_BITS = 5


class RouteStats:
    """Counters and timings of one route of one actor instance."""

    __slots__ = ("calls", "errors", "expired", "handled_ns", "queued_ns", "tells")

    def __init__(self) -> None:
        self.calls = 0  # requests answered with a result
        self.tells = 0  # tells handled without an error
        self.expired = 0  # requests skipped: their deadline passed while they waited
        self.errors: dict[int, int] = {}  # wire error code -> requests and tells that failed
        self.queued_ns = Histogram(PRECISION_BITS)
        self.handled_ns = Histogram(PRECISION_BITS)

    def record(self, queued_ns: int, handled_ns: int, *, request: bool, error_code: int) -> None:
        """One message served: its outcome (``error_code`` 0 for success) and timings."""
        if error_code:
            self.errors[error_code] = self.errors.get(error_code, 0) + 1
        elif request:
            self.calls += 1
        else:
            self.tells += 1
        self.queued_ns.record(queued_ns)
        self.handled_ns.record(handled_ns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (error codes as strings: JSON object keys)."""
        return {
            "calls": self.calls,
            "tells": self.tells,
            "expired": self.expired,
            "errors": {str(code): n for code, n in sorted(self.errors.items())},
            "queued_ns": self.queued_ns.to_dict(),
            "handled_ns": self.handled_ns.to_dict(),
        }
