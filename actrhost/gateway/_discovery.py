"""Discovery for workers' calls to other nodes' actors: through signaling, as locked in
``Actr.lock.toml`` for the config's dependencies, and the errors of a discovery that
found nothing (module ``_outbound`` asks; docs/gateway.md, "Frames from workers")."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._config import Config
from .._errors import ActrError, ConfigError, NotFound, PermissionDenied, Unavailable
from .._ids import ActrId, ActrType
from .._lockfile import ACTR_LOCK_NAME, COMPAT_LOCK_NAME, LockFile
from ..signaling import DiscoveryResult


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
    if not isinstance(error, NotFound):
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


#: Discovery answers kept for while signaling is unreachable (the oldest go first).
LAST_DISCOVERED_MAX = 1024


class LastDiscovered:
    """The last actor signaling named for each (realm, caller type, target type): the
    answer to a discovery while signaling is unreachable, as long as the link to that
    actor's node is up (docs/gateway.md, "Discovery while signaling is down").

    Keyed by the caller's type too: signaling's answer depends on the target's ACL, which
    names caller types. An answer whose node is not connected is never given: a link
    that is up says that node runs; nothing says where else that type runs now.
    """

    def __init__(self, max_entries: int = LAST_DISCOVERED_MAX) -> None:
        self._max_entries = max_entries
        self._answers: OrderedDict[tuple[int, str, str], ActrId] = OrderedDict()

    def remember(self, key: tuple[int, str, str], actr_id: ActrId) -> None:
        """Signaling named ``actr_id`` for ``key`` (realm, caller type, target type)."""
        self._answers[key] = actr_id
        self._answers.move_to_end(key)
        while len(self._answers) > self._max_entries:
            self._answers.popitem(last=False)

    def answer(self, key: tuple[int, str, str], is_up: Callable[[ActrId], bool]) -> ActrId | None:
        """The actor last named for ``key`` if ``is_up(actor)`` (its node's link is up)."""
        actr_id = self._answers.get(key)
        return actr_id if actr_id is not None and is_up(actr_id) else None
