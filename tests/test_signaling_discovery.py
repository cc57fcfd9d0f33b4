"""Discovery ranking by service fingerprint, and the Actr.lock.toml / compat.lock.toml flow."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actrhost._errors import NotFound
from actrhost._fingerprint import service_fingerprint
from actrhost._ids import ActrType
from actrhost._lockfile import CompatLock, LockedDependency, LockFile
from actrhost.signaling import (
    AclPermission,
    AclRule,
    Availability,
    CandidateCompatibility,
    SignalingClient,
    discover_locked,
)
from actrhost.signaling._testing import ServerProcess

from .utils import run

pytestmark = pytest.mark.timeout(60)


V1 = """syntax = "proto3"; package shop;
message Order { string id = 1; uint32 count = 2; }
message Receipt { string id = 1; }
service Store { rpc Buy(Order) returns (Receipt); }
"""
# Backward compatible: a field and a method added.
V2 = V1.replace("uint32 count = 2;", "uint32 count = 2; string note = 3;").replace(
    "rpc Buy(Order) returns (Receipt);",
    "rpc Buy(Order) returns (Receipt); rpc Refund(Receipt) returns (Receipt);",
)
# Breaking: a field renumbered.
V3 = V1.replace("uint32 count = 2;", "uint32 count = 4;")
# Older than V1: V1 only added a field to it.
V0 = V1.replace(" uint32 count = 2;", "")
FP0, FP1, FP2, FP3 = (service_fingerprint(v) for v in (V0, V1, V2, V3))
FP_UNKNOWN = "service_semantic:" + "e" * 64  # registered without its schema
STORE = ActrType("shop", "Store")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as proc:
        yield proc


def test_ranking_exact_then_compatible_then_unknown_never_breaking(server: ServerProcess) -> None:
    realm = 80

    async def main() -> None:
        async with SignalingClient(server.url) as client:
            exact_busy = await client.register(STORE, realm, schema_text=V1)
            exact_idle = await client.register(STORE, realm, schema_text=V1)
            compatible = await client.register(STORE, realm, schema_text=V2)
            breaking = await client.register(STORE, realm, schema_text=V3)
            unknown = await client.register(STORE, realm, fingerprint=FP_UNKNOWN)
            await exact_busy.heartbeat(mailbox_backlog=9)
            await exact_idle.heartbeat(mailbox_backlog=2)
            probe = await client.register("shop+Client", realm)

            result = await probe.discover(STORE, client_fingerprint=FP1, candidate_count=10)
            assert [c.actr_id for c in result.candidates] == [
                exact_idle.actr_id,
                exact_busy.actr_id,
                compatible.actr_id,
                unknown.actr_id,
            ]
            assert [c.compatibility for c in result.candidates] == [
                CandidateCompatibility.EXACT,
                CandidateCompatibility.EXACT,
                CandidateCompatibility.BACKWARD_COMPATIBLE,
                CandidateCompatibility.UNKNOWN,
            ]
            assert result.has_exact_match and not result.is_sub_healthy
            assert result.excluded_breaking == 1
            assert breaking.actr_id not in {c.actr_id for c in result.candidates}
            reasons = result.candidates[2].reasons
            assert "field shop.Order.note (number 3) added" in reasons
            assert "method shop.Store.Refund added" in reasons
            assert result.candidates[2].fingerprint == FP2

            # Without a fingerprint nothing is checked and everyone is offered.
            unchecked = await probe.discover(STORE, candidate_count=10)
            assert len(unchecked.candidates) == 5
            assert {c.compatibility for c in unchecked.candidates} == {
                CandidateCompatibility.UNCHECKED
            }

            # Only compatible versions left: sub-healthy.
            await exact_busy.unregister()
            await exact_idle.unregister()
            result = await probe.discover(STORE, client_fingerprint=FP1, candidate_count=10)
            assert result.best == compatible.actr_id
            assert not result.has_exact_match and result.is_sub_healthy

            # A client built against a version the server never saw sends its schema.
            result = await probe.discover(
                STORE, client_fingerprint=FP0, client_schema_text=V0, candidate_count=10
            )
            assert [c.compatibility for c in result.candidates] == [
                CandidateCompatibility.BACKWARD_COMPATIBLE,  # V2 serves a V0 client
                CandidateCompatibility.BACKWARD_COMPATIBLE,  # so does V3
                CandidateCompatibility.UNKNOWN,
            ]

    run(main())


def test_an_empty_answer_counts_the_draining_and_the_refusing(server: ServerProcess) -> None:
    # The caller's error then says why (gateway: 503 when some restart, 403 when their
    # ACLs refuse it), not just "nothing found".
    realm = 81

    async def main() -> None:
        async with SignalingClient(server.url) as client:
            await client.register(STORE, realm, availability=Availability.DRAINING)
            only_friends = AclRule(AclPermission.ALLOW, types=(ActrType.parse("shop+Friend"),))
            await client.register(STORE, realm, acl=[only_friends])
            await client.register(STORE, realm, acl=[only_friends])
            probe = await client.register("shop+Client", realm)
            result = await probe.discover(STORE, candidate_count=10)
            assert result.candidates == ()
            assert (result.excluded_draining, result.excluded_denied) == (1, 2)

    run(main())


def _write_lock(folder: Path, fingerprint: str) -> LockFile:
    lock = LockFile([LockedDependency("store", STORE, fingerprint, datetime.now(UTC))])
    lock.save(folder / "Actr.lock.toml")
    return LockFile.load(folder / "Actr.lock.toml")


def test_compat_lock_fast_path(server: ServerProcess, tmp_path: Path) -> None:
    realm = 81
    lock = _write_lock(tmp_path, FP1)
    compat_path = tmp_path / "compat.lock.toml"
    now = [datetime(2030, 1, 1, tzinfo=UTC)]

    async def main() -> None:
        async with SignalingClient(server.url) as client:
            probe = await client.register("shop+Client", realm)
            newer = await client.register(STORE, realm, schema_text=V2)

            # 1. Only a compatible version runs: it is used and the choice is cached. (The
            # server learns the locked version's schema from this request.)
            result = await discover_locked(
                probe,
                STORE,
                lock=lock,
                compat_lock_path=compat_path,
                client_schema_text=V1,
                clock=lambda: now[0],
            )
            assert result.best == newer.actr_id and result.is_sub_healthy
            entry = CompatLock.load(compat_path).find_valid(STORE, FP1, now[0])
            assert entry is not None and entry.resolved_fingerprint == FP2

            # 2. An exact version appears, but the cached negotiation is used first.
            exact = await client.register(STORE, realm, schema_text=V1)
            result = await discover_locked(
                probe, STORE, lock=lock, compat_lock_path=compat_path, clock=lambda: now[0]
            )
            assert result.best == newer.actr_id
            assert result.candidates[0].compatibility is CandidateCompatibility.BACKWARD_COMPATIBLE
            assert not result.has_exact_match and result.is_sub_healthy  # relative to the lock

            # 3. Once the entry expires, full discovery finds the exact match and the
            # entry is removed.
            now[0] += timedelta(days=2)
            result = await discover_locked(
                probe, STORE, lock=lock, compat_lock_path=compat_path, clock=lambda: now[0]
            )
            assert result.best == exact.actr_id and result.has_exact_match
            assert CompatLock.load(compat_path).entries == {}

            # 4. A valid entry is also cleared as soon as a full discovery sees an exact
            # match (here: no instance of the cached version runs, so the fast path
            # falls back).
            cache = CompatLock()
            cache.record(STORE, FP1, FP3, now=now[0])
            cache.save(compat_path)
            result = await discover_locked(
                probe, STORE, lock=lock, compat_lock_path=compat_path, clock=lambda: now[0]
            )
            assert result.best == exact.actr_id and result.has_exact_match
            assert CompatLock.load(compat_path).entries == {}

            # 5. An entry negotiated for another locked fingerprint is ignored.
            cache.record(STORE, FP0, FP2, now=now[0])
            cache.save(compat_path)
            result = await discover_locked(
                probe, STORE, lock=lock, compat_lock_path=compat_path, clock=lambda: now[0]
            )
            assert result.best == exact.actr_id

            # 6. Not locked: a clear NotFound naming the command to run.
            with pytest.raises(NotFound, match="actrhost lock"):
                await discover_locked(probe, "shop+Other", lock=lock, compat_lock_path=compat_path)
            # No cache path: plain locked discovery, nothing written.
            result = await discover_locked(probe, STORE, lock=lock, compat_lock_path=None)
            assert result.best == exact.actr_id

    run(main())


def test_compat_lock_not_written_for_unknown_compatibility(
    server: ServerProcess, tmp_path: Path
) -> None:
    realm = 82
    lock = _write_lock(tmp_path, FP1)
    compat_path = tmp_path / "compat.lock.toml"

    async def main() -> None:
        async with SignalingClient(server.url) as client:
            probe = await client.register("shop+Client", realm)
            unknown = await client.register(STORE, realm, fingerprint=FP_UNKNOWN)
            result = await discover_locked(probe, STORE, lock=lock, compat_lock_path=compat_path)
            assert result.best == unknown.actr_id and result.is_sub_healthy
            assert not compat_path.exists()  # only a proven-compatible version is cached

    run(main())


def test_equal_candidates_share_the_load(server: ServerProcess) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as client:
            same = [await client.register(STORE, 83, schema_text=V1) for _ in range(3)]
            probe = await client.register("shop+Client", 83)
            picks = {(await probe.discover(STORE, client_fingerprint=FP1)).best for _ in range(40)}
            # Ties are broken at random: all three are picked (a miss has p < 1e-6).
            assert picks == {r.actr_id for r in same}

    run(main())
