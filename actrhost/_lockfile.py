"""``Actr.lock.toml`` (locked dependency fingerprints) and ``compat.lock.toml`` (cache of
negotiated compatible fingerprints), DESIGN §7.

``Actr.lock.toml``::

    # Written by `actrhost lock`. ...
    version = 1

    [[dependency]]
    name = "echo"
    actr_type = "demo+Echo"
    fingerprint = "service_semantic:<sha256 hex>"
    cached_at = 2025-01-01T12:00:00Z

``compat.lock.toml`` (beside it, written by discovery when the server only had a
backward-compatible version of a dependency)::

    version = 1

    [[negotiation]]
    actr_type = "demo+Echo"
    locked_fingerprint = "service_semantic:..."    # what Actr.lock.toml said
    resolved_fingerprint = "service_semantic:..."  # the compatible version found
    compatibility = "backward_compatible"
    negotiated_at = 2025-01-01T12:00:00Z
    expires_at = 2025-01-02T12:00:00Z

Files are replaced atomically (written beside, then renamed), so a reader never sees a
half-written file; with two concurrent writers the last one wins, which for a cache is
harmless.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._errors import ActrError, ConfigError, NotFound
from ._fingerprint import is_fingerprint
from ._ids import ActrType

__all__ = [
    "ACTR_LOCK_NAME",
    "COMPAT_LOCK_NAME",
    "DEFAULT_COMPAT_TTL_S",
    "CompatEntry",
    "CompatLock",
    "LockFile",
    "LockedDependency",
]

ACTR_LOCK_NAME = "Actr.lock.toml"
COMPAT_LOCK_NAME = "compat.lock.toml"
DEFAULT_COMPAT_TTL_S = 24 * 3600.0
_VERSION = 1


@dataclass(frozen=True, slots=True)
class LockedDependency:
    """One ``[[dependency]]`` of ``Actr.lock.toml``."""

    name: str
    actr_type: ActrType
    fingerprint: str
    cached_at: datetime


@dataclass(slots=True)
class LockFile:
    """The contents of ``Actr.lock.toml``."""

    dependencies: list[LockedDependency] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LockFile:
        """Read a lock file; raises :class:`ConfigError` naming the file and key.

        A missing file raises ConfigError too, telling the user to run ``actrhost lock``.
        """
        path = Path(path)
        data = _read_toml(path, missing_hint="run `actrhost lock CONFIG` to create it")
        _check_keys(path, "", data, {"version", "dependency"})
        _check_version(path, data)
        raw = data.get("dependency", [])
        if not isinstance(raw, list):
            raise ConfigError(str(path), "dependency", "expected an array of [[dependency]] tables")
        deps: list[LockedDependency] = []
        names: set[str] = set()
        for i, item in enumerate(raw):
            where = f"dependency[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError(str(path), where, "expected a table")
            _check_keys(path, where, item, {"name", "actr_type", "fingerprint", "cached_at"})
            name = _string(path, f"{where}.name", item.get("name"))
            if name in names:
                raise ConfigError(str(path), f"{where}.name", f"dependency {name!r} listed twice")
            names.add(name)
            actr_type = _actr_type(path, f"{where}.actr_type", item.get("actr_type"))
            fingerprint = _fingerprint(path, f"{where}.fingerprint", item.get("fingerprint"))
            cached_at = _datetime(path, f"{where}.cached_at", item.get("cached_at"))
            deps.append(LockedDependency(name, actr_type, fingerprint, cached_at))
        return cls(deps)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the lock file atomically (dependencies sorted by name)."""
        lines = [
            "# Written by `actrhost lock`: the service fingerprint each dependency was built",
            "# against. Commit it; regenerate it when a dependency's schema changes.",
            f"version = {_VERSION}",
        ]
        for dep in sorted(self.dependencies, key=lambda d: d.name):
            lines += [
                "",
                "[[dependency]]",
                f"name = {_toml_str(dep.name)}",
                f"actr_type = {_toml_str(str(dep.actr_type))}",
                f"fingerprint = {_toml_str(dep.fingerprint)}",
                f"cached_at = {_toml_datetime(dep.cached_at)}",
            ]
        _atomic_write(Path(path), "\n".join(lines) + "\n")

    def find(self, target: ActrType | str) -> LockedDependency | None:
        """The dependency for an actor type (or its text, or a dependency name)."""
        for dep in self.dependencies:
            if dep.name == target or dep.actr_type == target or str(dep.actr_type) == target:
                return dep
        return None

    def fingerprint_for(self, target: ActrType | str) -> str:
        """The locked fingerprint of a dependency.

        Raises :class:`NotFound` naming the command to run when it is not locked.
        """
        dep = self.find(target)
        if dep is None:
            raise NotFound(
                f"dependency {target} is not in {ACTR_LOCK_NAME}: declare it under "
                "[dependencies] and run `actrhost lock CONFIG`"
            )
        return dep.fingerprint

    def with_dependency(self, dep: LockedDependency) -> LockFile:
        """A copy with ``dep`` added, replacing any dependency of the same name."""
        others = [d for d in self.dependencies if d.name != dep.name]
        return LockFile([*others, dep])


@dataclass(frozen=True, slots=True)
class CompatEntry:
    """One cached negotiation of ``compat.lock.toml``."""

    actr_type: ActrType
    locked_fingerprint: str
    resolved_fingerprint: str
    compatibility: str
    negotiated_at: datetime
    expires_at: datetime

    def is_valid(self, now: datetime) -> bool:
        """True until ``expires_at``."""
        return now < self.expires_at


@dataclass(slots=True)
class CompatLock:
    """The contents of ``compat.lock.toml``: at most one entry per actor type."""

    entries: dict[ActrType, CompatEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompatLock:
        """Read the cache; a missing file is an empty cache. Raises :class:`ConfigError`."""
        path = Path(path)
        if not path.exists():
            return cls()
        data = _read_toml(path)
        _check_keys(path, "", data, {"version", "negotiation"})
        _check_version(path, data)
        raw = data.get("negotiation", [])
        if not isinstance(raw, list):
            raise ConfigError(str(path), "negotiation", "expected an array of tables")
        entries: dict[ActrType, CompatEntry] = {}
        keys = {
            "actr_type",
            "locked_fingerprint",
            "resolved_fingerprint",
            "compatibility",
            "negotiated_at",
            "expires_at",
        }
        for i, item in enumerate(raw):
            where = f"negotiation[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError(str(path), where, "expected a table")
            _check_keys(path, where, item, keys)
            actr_type = _actr_type(path, f"{where}.actr_type", item.get("actr_type"))
            entries[actr_type] = CompatEntry(
                actr_type=actr_type,
                locked_fingerprint=_fingerprint(
                    path, f"{where}.locked_fingerprint", item.get("locked_fingerprint")
                ),
                resolved_fingerprint=_fingerprint(
                    path, f"{where}.resolved_fingerprint", item.get("resolved_fingerprint")
                ),
                compatibility=_string(path, f"{where}.compatibility", item.get("compatibility")),
                negotiated_at=_datetime(path, f"{where}.negotiated_at", item.get("negotiated_at")),
                expires_at=_datetime(path, f"{where}.expires_at", item.get("expires_at")),
            )
        return cls(entries)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the cache atomically."""
        lines = [
            "# Cache of compatible-but-not-exact service versions found by discovery.",
            "# Safe to delete. Entries expire; an exact match removes its entry.",
            f"version = {_VERSION}",
        ]
        for entry in sorted(self.entries.values(), key=lambda e: str(e.actr_type)):
            lines += [
                "",
                "[[negotiation]]",
                f"actr_type = {_toml_str(str(entry.actr_type))}",
                f"locked_fingerprint = {_toml_str(entry.locked_fingerprint)}",
                f"resolved_fingerprint = {_toml_str(entry.resolved_fingerprint)}",
                f"compatibility = {_toml_str(entry.compatibility)}",
                f"negotiated_at = {_toml_datetime(entry.negotiated_at)}",
                f"expires_at = {_toml_datetime(entry.expires_at)}",
            ]
        _atomic_write(Path(path), "\n".join(lines) + "\n")

    def find_valid(
        self, actr_type: ActrType, locked_fingerprint: str, now: datetime
    ) -> CompatEntry | None:
        """The unexpired entry for ``actr_type`` negotiated for this locked fingerprint.

        An entry recorded for another locked fingerprint (the lock file changed since)
        does not count.
        """
        entry = self.entries.get(actr_type)
        if entry is None or not entry.is_valid(now):
            return None
        if entry.locked_fingerprint != locked_fingerprint:
            return None
        return entry

    def record(
        self,
        actr_type: ActrType,
        locked_fingerprint: str,
        resolved_fingerprint: str,
        *,
        now: datetime,
        ttl_s: float = DEFAULT_COMPAT_TTL_S,
        compatibility: str = "backward_compatible",
    ) -> CompatEntry:
        """Add or replace the entry of ``actr_type``; also drops expired entries."""
        self.prune(now)
        entry = CompatEntry(
            actr_type,
            locked_fingerprint,
            resolved_fingerprint,
            compatibility,
            negotiated_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        self.entries[actr_type] = entry
        return entry

    def clear(self, actr_type: ActrType) -> bool:
        """Remove the entry of ``actr_type``; True if there was one."""
        return self.entries.pop(actr_type, None) is not None

    def prune(self, now: datetime) -> int:
        """Remove expired entries; return how many."""
        expired = [t for t, e in self.entries.items() if not e.is_valid(now)]
        for actr_type in expired:
            del self.entries[actr_type]
        return len(expired)


# -- helpers -------------------------------------------------------------------------------


def _read_toml(path: Path, missing_hint: str = "") -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        hint = f": {missing_hint}" if missing_hint else ""
        raise ConfigError(str(path), "", f"file not found{hint}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))  # (a BOM read past)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None


def _check_keys(path: Path, where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(str(path), key, "unknown key")


def _check_version(path: Path, data: Mapping[str, Any]) -> None:
    version = data.get("version", _VERSION)
    if version != _VERSION:
        raise ConfigError(str(path), "version", f"unsupported version {version!r} (expected 1)")


def _string(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(str(path), key, "expected a non-empty string")
    return value


def _actr_type(path: Path, key: str, value: object) -> ActrType:
    try:
        return ActrType.parse(_string(path, key, value))
    except ActrError as exc:
        raise ConfigError(str(path), key, exc.message) from None


def _fingerprint(path: Path, key: str, value: object) -> str:
    text = _string(path, key, value)
    if not is_fingerprint(text):
        raise ConfigError(
            str(path), key, "expected 'service_semantic:' and 64 lowercase hex digits"
        )
    return text


def _datetime(path: Path, key: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigError(
            str(path), key, "expected a date-time with offset, e.g. 2025-01-01T00:00:00Z"
        )
    return value


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (the same escapes, \\u ones included).
    return json.dumps(value, ensure_ascii=False)


def _toml_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
