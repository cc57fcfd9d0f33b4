"""Discovery of a locked dependency, with the ``compat.lock.toml`` fast path.

The behaviour of actr's ``discover_route_candidate`` (kept in
``shared/reference/actr-runtime-context.rs.txt``), written for our client:

1. Fast path: when ``compat.lock.toml`` holds an unexpired entry for the type, made for
   the fingerprint the lock file still names, ask for the compatible fingerprint it
   resolved to. If an instance of exactly that version answers, done.
2. Otherwise ask with the fingerprint locked in ``Actr.lock.toml`` (a dependency that is
   not locked is a :class:`NotFound` naming ``actrhost lock``).
3. If the answer has only backward-compatible candidates, record the first one's
   fingerprint in ``compat.lock.toml`` (and log that the system is sub-healthy); if it
   has an exact match, remove the type's entry.

Unlike actr, a fast-path answer is reported relative to the locked fingerprint: its
candidates say ``backward_compatible`` and ``is_sub_healthy`` is set, so the caller is
never told a compatible version is exact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .._ids import ActrType
from .._lockfile import DEFAULT_COMPAT_TTL_S, CompatLock, LockFile
from ._client import Registration
from ._types import CandidateCompatibility, DiscoveryResult

__all__ = ["discover_locked"]

log = logging.getLogger(__name__)


async def discover_locked(
    registration: Registration,
    target_type: ActrType | str,
    *,
    lock: LockFile,
    compat_lock_path: str | os.PathLike[str] | None,
    candidate_count: int = 1,
    client_schema_text: str = "",
    compat_ttl_s: float = DEFAULT_COMPAT_TTL_S,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    timeout_s: float | None = None,
) -> DiscoveryResult:
    """Discover ``target_type`` as the dependency locked in ``lock``.

    ``compat_lock_path`` (normally ``<config dir>/compat.lock.toml``) enables the
    cache; None disables it. ``client_schema_text``, the locked version's proto schema
    when the node has it, lets a server that never saw that version tell compatible
    candidates from unknown ones (only proven-compatible ones are cached).

    Returns the ranked result (possibly without candidates).
    Raises :class:`NotFound` when the type is not locked, and whatever
    :meth:`Registration.discover` raises. Cache file errors are logged, never raised.
    """
    if isinstance(target_type, str):
        target_type = ActrType.parse(target_type)
    locked = lock.fingerprint_for(target_type)
    path = Path(compat_lock_path) if compat_lock_path is not None else None
    compat = _load(path)

    if compat is not None:
        entry = compat.find_valid(target_type, locked, clock())
        if entry is not None:
            result = await registration.discover(
                target_type,
                client_fingerprint=entry.resolved_fingerprint,
                candidate_count=candidate_count,
                timeout_s=timeout_s,
            )
            # Only instances of exactly the cached version count: others answered for it
            # (compatible with it, or of unknown compatibility) were never checked
            # against the locked version.
            result = _only_fingerprint(result, entry.resolved_fingerprint)
            if result.candidates:
                log.info(
                    "%s: fast path: using cached compatible %s",
                    target_type,
                    entry.resolved_fingerprint[:28],
                )
                return _relative_to_lock(result, entry.resolved_fingerprint)
            log.warning("%s: fast path found nobody; falling back to full discovery", target_type)

    result = await registration.discover(
        target_type,
        client_fingerprint=locked,
        client_schema_text=client_schema_text,
        candidate_count=candidate_count,
        timeout_s=timeout_s,
    )
    if compat is None or path is None:
        return result
    first = result.candidates[0] if result.candidates else None
    if (
        result.is_sub_healthy
        and first is not None
        and first.compatibility is CandidateCompatibility.BACKWARD_COMPATIBLE
    ):
        log.warning(
            "%s: SUB-HEALTHY: no instance serves the locked %s; using compatible %s "
            "(run `actrhost lock CONFIG` to lock the new version)",
            target_type,
            locked[:28],
            first.fingerprint[:28],
        )
        compat.record(target_type, locked, first.fingerprint, now=clock(), ttl_s=compat_ttl_s)
        _save(compat, path)
    elif result.has_exact_match and compat.clear(target_type):
        _save(compat, path)
    return result


def _only_fingerprint(result: DiscoveryResult, fingerprint: str) -> DiscoveryResult:
    return dataclasses.replace(
        result, candidates=tuple(c for c in result.candidates if c.fingerprint == fingerprint)
    )


def _relative_to_lock(result: DiscoveryResult, resolved: str) -> DiscoveryResult:
    """Re-label candidates exact for the cached fingerprint as compatible with the lock."""
    candidates = tuple(
        dataclasses.replace(c, compatibility=CandidateCompatibility.BACKWARD_COMPATIBLE)
        if c.fingerprint == resolved
        else c
        for c in result.candidates
    )
    return DiscoveryResult(
        candidates=candidates,
        has_exact_match=False,
        is_sub_healthy=True,
        excluded_breaking=result.excluded_breaking,
    )


def _load(path: Path | None) -> CompatLock | None:
    if path is None:
        return None
    try:
        return CompatLock.load(path)
    except Exception as exc:  # a broken cache must not break discovery
        log.warning("ignoring unreadable %s: %s", path, exc)
        return CompatLock()


def _save(compat: CompatLock, path: Path) -> None:
    try:
        compat.save(path)
    except OSError as exc:
        log.warning("cannot update %s: %s", path, exc)
