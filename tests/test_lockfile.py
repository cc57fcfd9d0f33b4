"""Actr.lock.toml and compat.lock.toml: round trips, errors, cache validity and expiry."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actrhost._errors import ConfigError, NotFound
from actrhost._ids import ActrType
from actrhost._lockfile import CompatLock, LockedDependency, LockFile

pytestmark = pytest.mark.timeout(30)

FP1 = "service_semantic:" + "1" * 64
FP2 = "service_semantic:" + "2" * 64
FP3 = "service_semantic:" + "3" * 64
ECHO = ActrType("demo", "Echo")
T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def test_lock_file_round_trip(tmp_path: Path) -> None:
    lock = LockFile(
        [
            LockedDependency("store", ActrType("acme", "Store"), FP2, T0),
            LockedDependency("echo", ECHO, FP1, T0),
        ]
    )
    path = tmp_path / "Actr.lock.toml"
    lock.save(path)
    text = path.read_text()
    assert text.index('name = "echo"') < text.index('name = "store"')  # sorted, stable diffs
    data = tomllib.loads(text)
    assert data["dependency"][0] == {
        "name": "echo",
        "actr_type": "demo+Echo",
        "fingerprint": FP1,
        "cached_at": T0,
    }
    loaded = LockFile.load(path)
    assert sorted(loaded.dependencies, key=lambda d: d.name) == sorted(
        lock.dependencies, key=lambda d: d.name
    )
    assert loaded.fingerprint_for(ECHO) == FP1
    assert loaded.fingerprint_for("demo+Echo") == FP1
    assert loaded.fingerprint_for("echo") == FP1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as a Windows editor saves it
    assert LockFile.load(path).fingerprint_for(ECHO) == FP1


def test_with_dependency_replaces_by_name() -> None:
    lock = LockFile([LockedDependency("echo", ECHO, FP1, T0)])
    updated = lock.with_dependency(LockedDependency("echo", ECHO, FP2, T0))
    assert [d.fingerprint for d in updated.dependencies] == [FP2]
    assert lock.dependencies[0].fingerprint == FP1


def test_missing_dependency_names_the_command() -> None:
    with pytest.raises(NotFound) as info:
        LockFile([]).fingerprint_for(ECHO)
    assert "demo+Echo" in info.value.message
    assert "actrhost lock" in info.value.message


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("version = 2", "version", "unsupported version"),
        ("colour = 1", "colour", "unknown key"),
        (
            '[[dependency]]\nname = "e"\nactr_type = "demo+Echo"\nfingerprint = "x"\n'
            "cached_at = 2025-01-01T00:00:00Z",
            "dependency[0].fingerprint",
            "64 lowercase hex",
        ),
        (
            f'[[dependency]]\nname = "e"\nactr_type = "demo"\nfingerprint = "{FP1}"\n'
            "cached_at = 2025-01-01T00:00:00Z",
            "dependency[0].actr_type",
            "manufacturer+name",
        ),
        (
            f'[[dependency]]\nname = "e"\nactr_type = "demo+Echo"\nfingerprint = "{FP1}"\n'
            "cached_at = 2025-01-01T00:00:00",
            "dependency[0].cached_at",
            "with offset",
        ),
        (
            f'[[dependency]]\nname = "e"\nactr_type = "demo+Echo"\nfingerprint = "{FP1}"\n'
            'cached_at = 2025-01-01T00:00:00Z\nextra = "x"',
            "dependency[0].extra",
            "unknown key",
        ),
        ("dependency = [", "", "invalid TOML"),
    ],
)
def test_lock_file_errors_name_file_and_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "Actr.lock.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        LockFile.load(path)
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(path) in str(info.value)


def test_missing_lock_file_tells_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        LockFile.load(tmp_path / "Actr.lock.toml")
    assert "actrhost lock" in str(info.value)


def test_compat_lock_round_trip_validity_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "compat.lock.toml"
    assert CompatLock.load(path).entries == {}  # missing file: empty cache
    cache = CompatLock()
    cache.record(ECHO, FP1, FP2, now=T0, ttl_s=60)
    cache.save(path)
    loaded = CompatLock.load(path)
    entry = loaded.find_valid(ECHO, FP1, T0 + timedelta(seconds=59))
    assert entry is not None
    assert (entry.resolved_fingerprint, entry.compatibility) == (FP2, "backward_compatible")
    assert entry.negotiated_at == T0 and entry.expires_at == T0 + timedelta(seconds=60)
    # Expired, or negotiated for a fingerprint the lock file no longer names: not used.
    assert loaded.find_valid(ECHO, FP1, T0 + timedelta(seconds=60)) is None
    assert loaded.find_valid(ECHO, FP3, T0) is None
    assert loaded.find_valid(ActrType("demo", "Other"), FP1, T0) is None


def test_compat_lock_clear_and_prune(tmp_path: Path) -> None:
    cache = CompatLock()
    cache.record(ECHO, FP1, FP2, now=T0, ttl_s=10)
    cache.record(ActrType("acme", "Store"), FP1, FP3, now=T0, ttl_s=100)
    assert cache.prune(T0 + timedelta(seconds=50)) == 1
    assert list(cache.entries) == [ActrType("acme", "Store")]
    assert cache.clear(ActrType("acme", "Store")) is True
    assert cache.clear(ActrType("acme", "Store")) is False
    cache.save(tmp_path / "c.toml")
    assert CompatLock.load(tmp_path / "c.toml").entries == {}


def test_compat_lock_errors(tmp_path: Path) -> None:
    path = tmp_path / "compat.lock.toml"
    path.write_text('[[negotiation]]\nactr_type = "demo+Echo"\n')
    with pytest.raises(ConfigError) as info:
        CompatLock.load(path)
    assert info.value.key == "negotiation[0].locked_fingerprint"
