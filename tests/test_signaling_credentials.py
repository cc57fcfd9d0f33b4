"""Credentials: forgery, other actors' and other realms' credentials, expiry, renewal, keys."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actrhost._errors import ConfigError, ErrorCode, PermissionDenied, Unauthorized
from actrhost._ids import ActrId, ActrType, Realm
from actrhost.signaling import KeyRing, SignalingClient, write_key_file
from actrhost.signaling import _wire as wire
from actrhost.signaling.__main__ import main as signaling_main
from actrhost.signaling._testing import RawPeer, ServerProcess

from .utils import run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as proc:
        yield proc


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


async def _ping(peer: RawPeer, actr_id: ActrId, token: bytes, key_id: int) -> Any:
    return await peer.ask(RawPeer.authed("ping", actr_id, token, key_id))


def test_forged_and_misused_credentials_are_refused(server: ServerProcess) -> None:
    async def main() -> None:
        peer = await RawPeer.open(server.url)
        try:
            before = await _stats(peer)
            me, token, key_id = await peer.register("cred+A", 60)
            _, other_token, _ = await peer.register("cred+B", 60)
            assert (await _ping(peer, me, token, key_id)).WhichOneof("flow") == "pong"
            forged = {
                "tag": _flip(token, len(token) - 1),
                "serial": _flip(token, 10),
                "expiry": _flip(token, 20),
                "empty": b"",
                "truncated": token[:20],
            }
            for what, bad in forged.items():
                reply = await _ping(peer, me, bad, key_id)
                assert reply.error.code == ErrorCode.UNAUTHORIZED, what
            assert (await _ping(peer, me, token, key_id + 1)).error.code == ErrorCode.UNAUTHORIZED
            # A genuine credential, but of another actor.
            reply = await _ping(peer, me, other_token, key_id)
            assert reply.error.code == ErrorCode.UNAUTHORIZED
            assert "belongs to" in reply.error.message
            # A genuine credential used for another realm.
            elsewhere = dataclasses.replace(me, realm=Realm(61))
            reply = await _ping(peer, elsewhere, token, key_id)
            assert reply.error.code == ErrorCode.PERMISSION_DENIED
            # A made-up id that was never registered.
            ghost = ActrId(Realm(60), 7, ActrType("cred", "A"))
            assert (await _ping(peer, ghost, token, key_id)).error.code == 401
            # The connection and the genuine credential still work.
            assert (await _ping(peer, me, token, key_id)).WhichOneof("flow") == "pong"
            after = await _stats(peer)
            assert after["unauthorized"] - before.get("unauthorized", 0) == 8
            assert after["forbidden"] - before.get("forbidden", 0) == 1
        finally:
            await peer.close()
        assert "refused ping (401)" in server.stderr_text()  # refusals are logged

    run(main())


async def _stats(peer: RawPeer) -> dict[str, int]:
    env = wire.new_envelope()
    env.stats_request.SetInParent()
    return dict((await peer.ask(env)).stats_response.counters)


def test_credential_expires(tmp_path: Path) -> None:
    with ServerProcess(credential_ttl=0.5, reregister_grace=0) as server:

        async def main() -> None:
            peer = await RawPeer.open(server.url)
            try:
                started = time.monotonic()
                me, token, key_id = await peer.register("exp+A", 62)
                while True:  # bounded by run()'s timeout
                    reply = await _ping(peer, me, token, key_id)
                    if reply.WhichOneof("flow") == "error":
                        break
                    await asyncio.sleep(0.05)
                assert reply.error.code == ErrorCode.UNAUTHORIZED
                assert "expired" in reply.error.message
                assert time.monotonic() - started >= 0.4
                # Past the grace period the old credential no longer reclaims the id.
                again, _, _ = await peer.register("exp+A", 62, previous=(me, token, key_id))
                assert again != me
            finally:
                await peer.close()

        run(main())


def test_client_renews_before_expiry() -> None:
    with ServerProcess(credential_ttl=0.6, heartbeat_interval=0.2) as server:

        async def main() -> None:
            async with SignalingClient(server.url) as client:
                reg = await client.register("ren+A", 63)
                probe = await client.register("ren+Probe", 63)
                first_id = reg.actr_id
                seen = {reg.credential_expires_at_ms}
                while len(seen) < 4:  # three renewals; bounded by run()'s timeout
                    await asyncio.sleep(0.05)
                    seen.add(reg.credential_expires_at_ms)
                    # Always usable: discovery authenticates with the current credential.
                    assert (await probe.discover("ren+A")).best == first_id
                assert reg.actr_id == first_id
                stats = await client.server_stats()
                assert stats["credential_renewals"] >= 3
                assert stats["unauthorized"] == 0  # never a lapse
                assert stats["reregistrations_kept_id"] == 0  # every counter, even at 0

        run(main())


def test_lapsed_credential_is_replaced_keeping_the_id() -> None:
    # The client renews too late on purpose: its heartbeats are refused as expired, and
    # it registers again with the lapsed credential (within the grace period): same id.
    with ServerProcess(credential_ttl=0.4, heartbeat_interval=0.1) as server:

        async def main() -> None:
            async with SignalingClient(server.url, renew_fraction=1.5) as client:
                reg = await client.register("lapse+A", 64)
                first_id = reg.actr_id
                while (await client.server_stats()).get("reregistrations_kept_id", 0) < 2:
                    await asyncio.sleep(0.05)  # bounded by run()'s timeout
                assert reg.actr_id == first_id
                stats = await client.server_stats()
                assert stats["unauthorized"] >= 2  # the refused heartbeats
                assert stats.get("registrations", 0) == 1

        run(main())


def test_a_restarted_process_gets_its_id_back_with_its_saved_credential(
    server: ServerProcess,
) -> None:
    # What a respawned gateway does: a new client, the previous id and credential.
    async def main() -> None:
        async with SignalingClient(server.url) as first:
            reg = await first.register("back+A", 65)
            saved_id, saved_credential = reg.actr_id, reg.credential
        assert saved_id is not None
        async with SignalingClient(server.url) as second:
            again = await second.register(
                "back+A", 65, previous_id=saved_id, previous_credential=saved_credential
            )
            assert again.actr_id == saved_id
            forged = (bytes(len(saved_credential[0])), saved_credential[1])
            other = await second.register(
                "back+A", 65, previous_id=saved_id, previous_credential=forged
            )
            assert other.actr_id != saved_id  # a wrong credential gets a new id
            with pytest.raises(ValueError, match="go together"):
                await second.register("back+A", 65, previous_id=saved_id)

    run(main())


def test_keys_from_config_and_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    ring = write_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = KeyRing.from_file(path)
    with_bom = tmp_path / "bom.toml"  # as a Windows editor saves it
    with_bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert KeyRing.from_file(with_bom).current_key_id == loaded.current_key_id
    actr_id = ActrId(Realm(1), 5, ActrType("k", "A"))
    cred = ring.issue(actr_id, expires_at_ms=int(time.time() * 1000) + 60_000)
    now = int(time.time() * 1000)
    assert loaded.verify(cred.token, cred.key_id, now_ms=now).actr_id == actr_id
    assert loaded.check(cred.token, cred.key_id, actr_id, now_ms=now).expires_at_ms > now
    with pytest.raises(PermissionDenied):
        loaded.check(
            cred.token, cred.key_id, dataclasses.replace(actr_id, realm=Realm(2)), now_ms=now
        )
    with pytest.raises(Unauthorized):
        KeyRing.generate().verify(cred.token, cred.key_id, now_ms=now)
    with pytest.raises(FileExistsError):
        write_key_file(path)
    assert "secret" not in repr(loaded) and ring.to_config()["key"][0]["secret_hex"] not in repr(
        loaded
    )

    # Rotation: a new current key, the old one kept for verification.
    rotated = KeyRing.from_config(
        {
            "current_key_id": 2,
            "key": [*ring.to_config()["key"], {"id": 2, "secret_hex": "ab" * 32}],
        }
    )
    assert rotated.verify(cred.token, cred.key_id, now_ms=now).actr_id == actr_id
    assert rotated.issue(actr_id, now + 1000).key_id == 2


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"key": []}, "key"),
        ({"key": [{"id": 1, "secret_hex": "zz"}]}, "key[0].secret_hex"),
        ({"key": [{"id": 1, "secret_hex": "ab" * 8}]}, "key[0].secret_hex"),
        ({"key": [{"id": -1, "secret_hex": "ab" * 32}]}, "key[0].id"),
        ({"key": [{"id": 1, "secret": "ab" * 32}]}, "key[0]"),
        ({"current_key_id": 3, "key": [{"id": 1, "secret_hex": "ab" * 32}]}, "current_key_id"),
        ({"keys": []}, "keys"),
    ],
)
def test_bad_key_config_names_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.from_config(config, source="keys.toml")
    assert info.value.key == key


def test_new_key_file_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k.toml"
    assert signaling_main(["--new-key-file", str(path)]) == 0
    assert KeyRing.from_file(path).current_key_id == 1
    assert signaling_main(["--new-key-file", str(path)]) == 1  # never overwritten
    assert "exists" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("key = 1\n")
    assert (
        signaling_main(["--listen", "127.0.0.1:0", "--key-file", str(bad)]) == 2
    )  # a bad key file: exit 2, as any bad config
    assert "bad.toml: key:" in capsys.readouterr().err
