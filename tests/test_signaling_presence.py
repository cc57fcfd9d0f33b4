"""Presence: heartbeats, load, silence, unregister, and reconnecting after a server restart."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actrhost._errors import ErrorCode, Unavailable
from actrhost._ids import ActrId
from actrhost.signaling import (
    Availability,
    ConnectionState,
    Registration,
    SignalingClient,
    write_key_file,
)
from actrhost.signaling._testing import RawPeer, ServerProcess, pick_port

from .utils import run

pytestmark = pytest.mark.timeout(60)

HEARTBEAT_S = 0.2  # silence limit: 3 intervals = 0.6 s


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(heartbeat_interval=HEARTBEAT_S) as proc:
        yield proc


def test_silent_actor_leaves_discovery_and_gets_its_id_back(server: ServerProcess) -> None:
    async def main() -> None:
        peer = await RawPeer.open(server.url)
        try:
            async with SignalingClient(server.url) as client:
                probe = await client.register("pres+Probe", 70)
                alive = await client.register("pres+Alive", 70)  # heartbeats by itself
                silent, token, key_id = await peer.register("pres+Silent", 70)
                started = time.monotonic()
                assert (await probe.discover("pres+Silent")).best == silent
                while (await probe.discover("pres+Silent")).best is not None:
                    await asyncio.sleep(0.05)  # bounded by run()'s timeout
                gone_after = time.monotonic() - started
                assert gone_after >= 2 * HEARTBEAT_S
                # The heartbeating actor, registered before, is still there.
                assert (await probe.discover("pres+Alive")).best == alive.actr_id
                # The silent one's next ping is refused: it must register again, and its
                # (still valid) credential gets it the same id.
                reply = await peer.ask(RawPeer.authed("ping", silent, token, key_id))
                assert reply.error.code == ErrorCode.UNAUTHORIZED
                again, _, _ = await peer.register(
                    "pres+Silent", 70, previous=(silent, token, key_id)
                )
                assert again == silent
                assert (await probe.discover("pres+Silent")).best == silent
                stats = await client.server_stats()
                assert stats["presence_expired"] >= 1
        finally:
            await peer.close()

    run(main())


def test_heartbeats_carry_load_and_availability(server: ServerProcess) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as client:
            probe = await client.register("load+Probe", 71)
            workers = [await client.register("load+Worker", 71) for _ in range(4)]
            for worker, backlog in zip(workers, [5, 1, 3, 0], strict=True):
                await worker.heartbeat(mailbox_backlog=backlog)
            await workers[3].heartbeat(availability=Availability.DEGRADED)
            result = await probe.discover("load+Worker", candidate_count=10)
            order = [workers.index(_reg_of(workers, c.actr_id)) for c in result.candidates]
            assert order == [1, 2, 0, 3]  # available by backlog, then the degraded one
            assert [c.mailbox_backlog for c in result.candidates] == [1, 3, 5, 0]
            assert result.candidates[3].availability is Availability.DEGRADED
            # Draining: not offered at all. set_load() is reported by the next heartbeat.
            workers[1].set_load(availability=Availability.DRAINING)
            await workers[1].heartbeat()
            result = await probe.discover("load+Worker", candidate_count=10)
            assert workers[1].actr_id not in {c.actr_id for c in result.candidates}
            assert len(result.candidates) == 3
            # Ranking factors can be reordered: backlog first ignores availability.
            result = await probe.discover(
                "load+Worker", candidate_count=1, ranking=["mailbox_backlog"]
            )
            assert result.best == workers[3].actr_id

    run(main())


def _reg_of(regs: list[Registration], actr_id: ActrId) -> Registration:
    return next(r for r in regs if r.actr_id == actr_id)


def test_unregister_and_disconnect_leave_discovery(server: ServerProcess) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as watcher:
            probe = await watcher.register("bye+Probe", 72)
            client = SignalingClient(server.url)
            await client.connect()
            regs = [await client.register("bye+Svc", 72) for _ in range(3)]
            assert len((await probe.discover("bye+Svc", candidate_count=5)).candidates) == 3
            await regs[0].unregister()
            await regs[0].unregister()  # idempotent
            assert len((await probe.discover("bye+Svc", candidate_count=5)).candidates) == 2
            await client.aclose()  # unregisters the rest before closing
            assert client.state is ConnectionState.CLOSED
            assert (await probe.discover("bye+Svc")).candidates == ()
            # A peer that just drops its connection is removed as well.
            peer = await RawPeer.open(server.url)
            dropped, _, _ = await peer.register("bye+Svc", 72)
            assert (await probe.discover("bye+Svc")).best == dropped
            peer.ws.transport.abort()
            while (await probe.discover("bye+Svc")).best is not None:
                await asyncio.sleep(0.02)  # bounded by run()'s timeout

    run(main())


async def _wait_reconnected(client: SignalingClient, reconnects: int) -> None:
    while client.reconnects < reconnects or not client.connected:
        await asyncio.sleep(0.02)  # bounded by the caller's timeout


def test_connection_drop_reconnects_keeping_ids(server: ServerProcess) -> None:
    connected: list[bool] = []

    async def main() -> None:
        # Each connection is announced once it is up (the gateway re-reads its address).
        async with SignalingClient(
            server.url, on_connected=lambda: connected.append(True)
        ) as client:
            assert client.local_address == "127.0.0.1"
            regs = [await client.register("drop+Svc", 75) for _ in range(5)]
            ids = [r.actr_id for r in regs]
            before = (await client.server_stats()).get("reregistrations_kept_id", 0)
            ws = client._ws
            assert ws is not None
            ws.transport.abort()  # a network blip: the server still knows the actors
            await _wait_reconnected(client, 1)
            assert [r.actr_id for r in regs] == ids
            stats = await client.server_stats()
            assert stats["reregistrations_kept_id"] == before + 5
            found = await regs[0].discover("drop+Svc", candidate_count=10)
            assert {c.actr_id for c in found.candidates} == set(ids[1:])

    run(main())
    assert connected == [True, True]


def test_a_request_whose_send_fails_as_the_connection_drops_leaves_no_stray_error(
    server: ServerProcess,
) -> None:
    # The connection dropped while a request was still sending: the client failed the
    # request's reply future, the send then raised, and nobody looked at that future:
    # "Future exception was never retrieved" at ERROR (QA: a gateway back from a 75 s
    # SIGSTOP, its heartbeat in the middle of its send).
    async def main() -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        async with SignalingClient(server.url) as client:
            ws = client._ws
            assert ws is not None
            original = ws.send

            async def send_as_it_drops(message: Any) -> None:
                ws.transport.abort()
                await asyncio.sleep(0.2)  # the client notices the drop meanwhile
                await original(message)

            ws.send = send_as_it_drops  # type: ignore[method-assign]
            with pytest.raises(Unavailable):
                await client.server_stats()
            await _wait_reconnected(client, 1)
        gc.collect()  # a future's unretrieved exception is reported when it goes
        await asyncio.sleep(0)
        return errors

    assert run(main(), 10) == []


def test_heartbeats_without_answer_make_the_client_connect_anew() -> None:
    # A server (or path) that stops answering kept the client on its dead connection
    # until TCP gave up: traffic came back ≈ 10 s after a 20 s outage (QA).
    with ServerProcess(heartbeat_interval=HEARTBEAT_S) as server:

        async def main() -> None:
            async with SignalingClient(server.url, request_timeout_s=0.5) as client:
                reg = await client.register("mute+Svc", 76)
                assert server.proc is not None
                server.proc.send_signal(signal.SIGSTOP)  # silent, the connection intact
                try:
                    async with asyncio.timeout(10):
                        while client.reconnects == 0:
                            await asyncio.sleep(0.05)
                finally:
                    server.proc.send_signal(signal.SIGCONT)
                await _wait_reconnected(client, 1)
                assert (await reg.discover("mute+Svc")) is not None

        run(main())


def test_server_restart_with_same_keys_keeps_ids(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    write_key_file(key_file)
    port = pick_port()
    first = ServerProcess(
        f"127.0.0.1:{port}", key_file=key_file, heartbeat_interval=HEARTBEAT_S
    ).start()
    second: ServerProcess | None = None
    try:

        async def main() -> None:
            nonlocal second
            changed: list[ActrId] = []
            async with SignalingClient(
                first.url, on_reregistered=lambda reg, old: changed.append(old)
            ) as client:
                regs = [await client.register("rs+Svc", 73) for _ in range(20)]
                probe = await client.register("rs+Probe", 73)
                ids = {r.actr_id for r in regs}
                first.kill()  # a crash: no goodbye to anyone
                second = ServerProcess(
                    f"127.0.0.1:{port}", key_file=key_file, heartbeat_interval=HEARTBEAT_S
                ).start()
                await _wait_reconnected(client, 1)
                assert {r.actr_id for r in regs} == ids
                assert changed == []
                found = await probe.discover("rs+Svc", candidate_count=50)
                assert {c.actr_id for c in found.candidates} == ids
                stats = await client.server_stats()
                assert stats["reregistrations_kept_id"] == 21
                assert stats.get("registrations", 0) == 0
                # The heartbeats go on with the new server.
                before = stats.get("pings", 0)
                while (await client.server_stats()).get("pings", 0) < before + 21:
                    await asyncio.sleep(0.05)

        run(main())
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_server_restart_with_new_keys_reports_new_ids() -> None:
    port = pick_port()
    first = ServerProcess(f"127.0.0.1:{port}").start()  # a random key each time
    second: ServerProcess | None = None
    try:

        async def main() -> None:
            nonlocal second
            changed: list[tuple[ActrId | None, ActrId]] = []
            async with SignalingClient(
                first.url, on_reregistered=lambda reg, old: changed.append((reg.actr_id, old))
            ) as client:
                reg = await client.register("rs+Svc", 74)
                old_id = reg.actr_id
                first.stop()  # a clean stop
                second = ServerProcess(f"127.0.0.1:{port}").start()
                await _wait_reconnected(client, 1)
                assert reg.actr_id != old_id
                assert changed == [(reg.actr_id, old_id)]
                assert (await reg.discover("rs+Svc")).candidates == ()  # not itself

        run(main())
    finally:
        first.stop()
        if second is not None:
            second.stop()
