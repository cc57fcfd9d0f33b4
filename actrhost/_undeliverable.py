"""Telling an actor that its tells and stream frames to an actor on another node are not
delivered, so that its next one raises, as it would for a local actor that is gone.

A tell or a stream frame gets no answer. Between local actors the sender learns from the
directory that its target is gone: its next send raises ``NotFound`` or ``Unavailable``.
Toward another node, the gateway that drops such a frame (node A's: the actor is not
found; node B's: the actor is unknown there, or failed or stopped for good) sends the
sender's worker a **notice** on the worker's feed (``_rpc_receiving.FEED_ROUTE``). The worker then
refuses the sender's tells and stream frames to that actor with the notice's error for
:data:`KEPT_S`; the first one sent after that goes out again, and finds out.

Frames sent before the notice arrives (a round trip to the other node) are lost, and
counted as ``undeliverable`` where they were dropped. A Shell has no feed: it is told on
the connection its frames came on (the gateway's calls socket for tells, its streams
socket for chunks), and ``RpcEndpoint`` learns it there.
docs/gateway.md, "Frames that cannot be delivered".
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from . import _envelope as wire
from ._envelope import Envelope
from ._errors import ActrError, error_from_code
from ._ids import ActrId

#: The route of a notice: a RESPONSE without a request id, with the target it is about.
NOTICE_ROUTE = "actrhost.gateway.Undeliverable"
#: How long a worker refuses sends to a target after a notice: long enough that a sender
#: retrying at once learns without another frame lost each time, short enough that a
#: target that comes back is reached soon (its gateway says so again otherwise).
KEPT_S = 1.0
#: Targets (in a worker) or (source, target) pairs (in a gateway) remembered at most.
KEPT_MAX = 1024
#: A gateway sends one notice per pair at most this often (a flood of chunks to a gone
#: target is dropped chunk by chunk; one notice per round is enough).
NOTICE_EVERY_S = KEPT_S / 2


def notice(target: ActrId, error: ActrError) -> bytes:
    """The encoded notice that frames for ``target`` were dropped with ``error``."""
    env = wire.error_response("", error)
    env.route_key = NOTICE_ROUTE
    env.target = target
    return wire.encode(env)


def is_notice(env: Envelope) -> bool:
    """Whether a RESPONSE that came on the feed is a notice (not an answer)."""
    return not env.request_id and env.route_key == NOTICE_ROUTE


class RefusedTargets:
    """The targets a worker's senders were told about, and until when they are refused."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until: dict[ActrId, tuple[float, ActrError]] = {}

    def learn(self, env: Envelope) -> bool:
        """Take a notice; False if it is malformed (no target, or no error)."""
        if env.target is None or not env.error_code:
            return False
        if len(self._until) >= KEPT_MAX:
            del self._until[next(iter(self._until))]
        error = error_from_code(env.error_code, env.error_message)
        self._until[env.target] = (self._clock() + KEPT_S, error)
        return True

    def check(self, target: ActrId | None) -> None:
        """Raise the error of a notice about ``target`` that is still recent."""
        if not self._until or target is None:  # the common case: one dict test
            return
        refused = self._until.get(target)
        if refused is None:
            return
        until, error = refused
        if self._clock() >= until:
            del self._until[target]
            return
        raise error


class NoticeLimiter:
    """When a gateway may send the next notice for a key: one per :data:`NOTICE_EVERY_S`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sent_at: dict[Hashable, float] = {}

    def due(self, key: Hashable) -> bool:
        """True (and noted) if no notice for ``key`` went within the interval."""
        now = self._clock()
        sent_at = self._sent_at.get(key)
        if sent_at is not None and now - sent_at < NOTICE_EVERY_S:
            return False
        if len(self._sent_at) >= KEPT_MAX:
            del self._sent_at[next(iter(self._sent_at))]
        self._sent_at.pop(key, None)  # re-inserted last: the oldest go first
        self._sent_at[key] = now
        return True
