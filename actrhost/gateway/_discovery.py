"""Discovery of other nodes' actors for our workers (the ``actrhost.gateway.Discover``
route, module ``_outbound``): through signaling, as locked in ``Actr.lock.toml`` for the
config's dependencies; the error when it finds nothing; and, while signaling is away or
slow, the last actor it named when the link to that actor's node is up (docs/gateway.md,
"Frames from workers").
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._config import Config
from .._errors import (
    ActrError,
    ConfigError,
    DeadlineExceeded,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from .._ids import ActrId, ActrType
from .._lockfile import ACTR_LOCK_NAME, COMPAT_LOCK_NAME, LockFile
from ..signaling import DiscoveryResult
from ._counters import GatewayCounters


async def discover_dependency(config: Config, reg: Any, actr_type: ActrType) -> Any:
    """Discovery through signaling; a type the config lists in ``[dependencies]`` is
    discovered as locked in ``Actr.lock.toml`` (exact fingerprint first, then the
    compatible one cached in ``compat.lock.toml``), as actr's ``discover_route_candidate``.
    """
    from ..signaling import discover_locked

    if not any(dep.actr_type == actr_type for dep in config.dependencies):
        return await reg.discover(actr_type)
    lock_path = config.base_dir / ACTR_LOCK_NAME
    try:
        lock = LockFile.load(lock_path)
    except ConfigError:
        raise NotFound(
            f"{actr_type} is a dependency of {config.path} but {lock_path} is missing: "
            f"run `actrhost lock {config.path}`"
        ) from None
    return await discover_locked(
        reg, actr_type, lock=lock, compat_lock_path=config.base_dir / COMPAT_LOCK_NAME
    )


def maybe_reregistering(error: ActrError, since_s: float) -> ActrError:
    """A 404 just after our signaling connection came back, as 503: the server may have
    restarted, and other nodes register their actors again a few seconds after it (their
    reconnects back off up to 5 s). Until 2026-12-03 callers got a 404 (kept 2 s for
    calls to a known id) for an actor that was about to be back."""
    if not isinstance(error, (NotFound, PermissionDenied)):  # (the allowed may be back)
        return error
    return Unavailable(
        f"{error.message}; the connection to signaling came back {since_s:.1f} s ago, and "
        "other nodes may still be registering their actors again"
    )


def nothing_found(actr_type: ActrType, result: DiscoveryResult, caller: str) -> ActrError:
    """The error of a discovery that found no candidate, by why: 503 when instances exist
    but none runs (as local discovery says it), 403 when their ACLs refuse ``caller``."""
    if result.excluded_draining:
        return Unavailable(
            f"no running actor of type {actr_type} found through signaling "
            f"({result.excluded_draining} not running: restarting, stopping or given up)"
        )
    if result.excluded_denied:
        return PermissionDenied(
            f"{caller} may not call any of the {result.excluded_denied} actor(s) of type "
            f"{actr_type} found through signaling (their ACL)"
        )
    return NotFound(f"no actor of type {actr_type} found through signaling")


#: Discovery answers kept for while signaling is away (the oldest go first).
LAST_DISCOVERED_MAX = 1024
#: How long a discovery waits for a connected signaling server before it takes the last
#: answer (when that actor's node is connected): a server that stopped (SIGSTOP, a long
#: GC) keeps its connection open, and the request would wait its 10 s timeout. Signaling
#: answers in ≈ 1 ms here.
SIGNALING_PATIENCE_S = 1.0

Key = tuple[int, str, str]  # realm, caller type, target type


class Discoverer:
    """Signaling's best candidate of a type, with a memory for when signaling is away.

    The last actor signaling named is kept per (realm, caller type, target type): its
    answer depends on the target's ACL, which names caller types. It answers a discovery
    while signaling is not connected, slower than :data:`SIGNALING_PATIENCE_S`, or failing
    with 503/504, if the link to that actor's node is connected (``link_up``): a link that
    is up says that node runs; nothing says where else the type runs now. A slow request
    goes on in the background (one per key), and its answer is kept when it comes.

    When signaling finds none of the type while the last actor's node may be back in a
    moment (``node_may_be_back`` says why: its link is reconnecting, or is being checked
    after its actors left signaling), the answer is 503 instead of 404.
    """

    def __init__(
        self,
        config: Config,
        link_up: Callable[[ActrId], bool],
        node_may_be_back: Callable[[ActrId], str],
        signaling_up: Callable[[], bool],
        reconnected_s_ago: Callable[[], float | None],
        counters: GatewayCounters,
        max_entries: int = LAST_DISCOVERED_MAX,
    ) -> None:
        self._config = config
        self._link_up = link_up
        self._node_may_be_back = node_may_be_back
        self._signaling_up = signaling_up
        self._reconnected_s_ago = reconnected_s_ago
        self._max_entries = max_entries
        self._last: OrderedDict[Key, ActrId] = OrderedDict()
        self._slow: dict[Key, asyncio.Task[Any]] = {}
        self._counters = counters

    async def best(self, reg: Any, actr_type: ActrType, caller: str) -> ActrId:
        """The actor a discovery of ``actr_type`` by ``reg`` (a registration of ours)
        gets; raises the :class:`ActrError` to answer instead. ``caller``: who asks, for
        the 403's message."""
        key = (reg.realm, str(reg.actr_type), str(actr_type))
        last = self._last.get(key)
        if last is not None and self._link_up(last):
            if not self._signaling_up() or key in self._slow:
                return self._remembered(last)
            asking = asyncio.ensure_future(discover_dependency(self._config, reg, actr_type))
            done, _ = await asyncio.wait([asking], timeout=SIGNALING_PATIENCE_S)
            if not done:
                self._slow[key] = asking
                asking.add_done_callback(functools.partial(self._slow_answer, key))
                return self._remembered(last)
            result = await self._or_last(asking, key)
        else:
            result = await self._or_last(discover_dependency(self._config, reg, actr_type), key)
        if isinstance(result, ActrId):
            return result
        if result.best is None:
            raise self._nothing_found(key, actr_type, result, caller)
        self._remember(key, result.best)
        return result.best

    async def _or_last(self, asking: Any, key: Key) -> Any:
        """Signaling's result, or on 503/504 the last answer if its node is up."""
        try:
            return await asking
        except (Unavailable, DeadlineExceeded):
            last = self._last.get(key)
            if last is None or not self._link_up(last):
                raise
            return self._remembered(last)

    def _nothing_found(
        self, key: Key, actr_type: ActrType, result: DiscoveryResult, caller: str
    ) -> ActrError:
        error = nothing_found(actr_type, result, caller)
        since = self._reconnected_s_ago()
        if since is not None:
            return maybe_reregistering(error, since)
        last = self._last.get(key)
        why = self._node_may_be_back(last) if last is not None else ""
        if isinstance(error, (NotFound, PermissionDenied)) and why:
            # Its node's gateway died (or restarts) and unregistered its actors: it may be
            # back in a moment, and a 404 says "gone for good" (chaos_remote.py: 12 of them
            # while the other node's gateway restarted after a SIGKILL; 14-15 more, in
            # session 48, from before the link's probe had failed). So does a 403 from
            # the instances left, which deny the caller, while the one it may call is
            # away (QA: 28 discoveries in a row during a planned `restart --gateway`).
            return Unavailable(f"{error.message}; the node of the last one ({last}) {why}")
        return error

    def _remembered(self, last: ActrId) -> ActrId:
        self._counters.discoveries_remembered += 1
        return last

    def _remember(self, key: Key, actr_id: ActrId) -> None:
        self._last[key] = actr_id
        self._last.move_to_end(key)
        while len(self._last) > self._max_entries:
            self._last.popitem(last=False)

    def _slow_answer(self, key: Key, asking: asyncio.Task[Any]) -> None:
        """A request that outlived the patience ended: keep what it found."""
        self._slow.pop(key, None)
        if asking.cancelled() or asking.exception() is not None:
            return  # (retrieved: asyncio would log it)
        result = asking.result()
        if result.best is not None:
            self._remember(key, result.best)
