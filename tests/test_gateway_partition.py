"""A node that cannot be reached does not hold up its node's calls and tells to the others
(real gateway processes): while its link reconnects, what exceeds that link's RPC lane
is refused at once, the sender told, and the workers' socket read on; while its link is
full, its calls and tells wait in the gateway and their senders, actors and Shells
alike, are told to wait (docs/gateway.md, Backpressure)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc")

import actrhost
from actrhost import ActrError, ActrId, DataStream, NotFound, Unavailable
from actrhost.gateway._testing import FAST_TUNING, OWN_ID, HarnessNode, LoopRunner, start_nodes
from actrhost.signaling._testing import ServerProcess

from .utils import run


@contextlib.contextmanager
def three_nodes(
    tmp_path: Path, a_tuning: dict[str, float], called: str = "bc", a_actors: int = 1
) -> Iterator[tuple[LoopRunner, HarnessNode, HarnessNode, HarnessNode]]:
    """Nodes A (actors a1 … a<a_actors>, with ``a_tuning``), B (b1) and C (c1), a1 having
    called the actors of the ``called`` nodes; B's gateway continued if stopped, and all
    stopped, after the block."""
    runner = LoopRunner()
    with ServerProcess() as server:
        actors = [(f"a{n}", "t+A") for n in range(1, a_actors + 1)]
        a = HarnessNode(tmp_path / "a", server.url, actors, name="a", tuning=a_tuning)
        b = HarnessNode(tmp_path / "b", server.url, [("b1", "t+B")], name="b")
        c = HarnessNode(tmp_path / "c", server.url, [("c1", "t+C")], name="c")
        try:
            runner.run(start_nodes(a, b, c))
            for node in (b, c):
                if node.name in called:
                    actor = f"{node.name}1"
                    assert runner.run(a.call("a1", node.ids[actor], "echo", b"up")) == b"up"
            yield runner, a, b, c
        finally:
            if b.process is not None and b.process.poll() is None:
                os.kill(b.process.pid, signal.SIGCONT)
            for node in (a, b, c):
                runner.run(node.stop())
            runner.close()


def flood_while_b_stops(
    nodes: tuple[LoopRunner, HarnessNode, HarnessNode, HarnessNode],
    tell: Callable[[int], Awaitable[None]],
    most: int,
) -> dict[str, Any]:
    """With B's gateway stopped, a1 ``tell``s b1 until it is told to wait (at most
    ``most``); a call to c1 is then answered at once; once B goes on, 100 more tells
    (they wait for room first), and every one arrives at b1, once and in order. Returns A's
    stats from while B was stopped."""
    runner, a, b, c = nodes
    assert b.process is not None
    held = a.workers["a1"].rpc.held  # what an actor's next ctx.tell to b1 checks

    async def flood() -> tuple[int, float, dict[str, Any]]:
        sent = 0
        while not held.holds(b.ids["b1"]):
            assert sent < most, "never told to wait"
            await tell(sent)
            sent += 1
        started = time.monotonic()
        assert await a.call("a1", c.ids["c1"], "echo", b"on", timeout_s=5) == b"on"
        call_s = time.monotonic() - started
        stats = await a.stats()
        assert b.process is not None
        os.kill(b.process.pid, signal.SIGCONT)
        for n in range(sent, sent + 100):
            await tell(n)
        return sent + 100, call_s, stats

    os.kill(b.process.pid, signal.SIGSTOP)
    try:
        count, call_s, stats = runner.run(flood(), timeout_s=60)
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
    assert call_s < 2, call_s
    tells = b.workers["b1"].received.tells
    runner.run(b.wait_for(lambda: len(tells) >= count, 20, "every tell"))
    assert [int(payload[:5]) for _route, payload, _source in tells] == list(range(count))
    assert not held.holds(b.ids["b1"])  # told there is room
    return stats


def test_a_flood_to_an_unreachable_node_does_not_hold_up_calls_to_another(
    tmp_path: Path,
) -> None:
    # Tells to a node whose gateway stopped (SIGSTOP) filled its link's RPC lane while the
    # link reconnected; the gateway then stopped reading the calls socket, and a call to a
    # third node waited until the stopped one was given up (60 s as shipped): here the
    # call's 5 s deadline passed. Now what exceeds the lane is refused, the sender told.
    tuning = {**FAST_TUNING, "queue_high_bytes": 64 * 1024, "reconnect_queue_bytes": 128 * 1024}
    with three_nodes(tmp_path, tuning) as (runner, a, b, c):
        assert b.process is not None
        os.kill(b.process.pid, signal.SIGSTOP)

        async def flood() -> tuple[int, Unavailable, float, Unavailable]:
            while (await a.stats())["remote_nodes"][b.node_id]["state"] == "connected":
                await asyncio.sleep(0.1)
            sent = 0
            while True:  # 128 KiB are taken, then the sender is told
                tell = b"%05d" % sent + bytes(4096)
                await a.tell("a1", b.ids["b1"], "note", tell, timeout_s=2)
                sent += 1
                await asyncio.sleep(0)  # (the notice comes on the worker's feed)
                try:  # what an actor's next ctx.tell to b1 checks
                    a.workers["a1"].rpc.refused.check(b.ids["b1"])
                except Unavailable as exc:
                    told = exc
                    break
            started = time.monotonic()
            assert await a.call("a1", c.ids["c1"], "echo", b"on", timeout_s=5) == b"on"
            call_s = time.monotonic() - started
            with pytest.raises(Unavailable) as refused:
                await a.call("a1", b.ids["b1"], "echo", b"b?", timeout_s=5)
            assert (await a.stats())["remote_nodes"][b.node_id]["refusing"]
            assert not (await a.stats())["remote_nodes"][c.node_id]["refusing"]
            return sent, told, call_s, refused.value

        try:
            sent, told, call_s, refused = runner.run(flood(), timeout_s=60)
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        assert call_s < 2, call_s
        for error in (told, refused):
            assert f"node {b.node_id} is reconnecting" in error.message
            assert "128 KiB wait for it already" in error.message

        async def delivered() -> tuple[int, list[int]]:
            lanes = (await a.stats())["remote_nodes"][b.node_id]["lanes"]
            dropped = int(lanes["rpc_reliable"]["dropped"])
            tells = b.workers["b1"].received.tells
            while len(tells) < sent - dropped:
                await asyncio.sleep(0.05)
            return dropped, [int(payload[:5]) for _route, payload, _source in tells]

        dropped, got = runner.run(delivered(), timeout_s=30)
        # The first ones, once each and in order, after the link came back; the rest
        # were refused and counted.
        assert dropped >= 1 and got == list(range(sent - dropped))
        assert 30 <= len(got) < 100  # 4 KiB each: 128 KiB, and a batch
        # The link came back with its lane full: the socket waited for it to drain
        # (the node's tells are not refused any more), then read on.
        for node, actor in ((b, "b1"), (c, "c1")):
            assert runner.run(a.call("a1", node.ids[actor], "echo", b"back")) == b"back"

        async def refusal_forgotten() -> None:  # the worker's own memory of it: 1 s
            while True:
                try:
                    return a.workers["a1"].rpc.refused.check(b.ids["b1"])
                except Unavailable:
                    await asyncio.sleep(0.05)

        runner.run(refusal_forgotten(), timeout_s=5)
        runner.run(a.tell("a1", b.ids["b1"], "note", b"99999"))
        tells = b.workers["b1"].received.tells
        runner.run(b.wait_for(lambda: len(tells) > len(got), 10, "the tell after"))
        assert tells[-1][1] == b"99999"


@pytest.mark.parametrize("size", [4096, 32768])
def test_a_flood_to_a_node_whose_link_is_full_waits_alone(tmp_path: Path, size: int) -> None:
    # Node B's gateway stops reading (SIGSTOP; the keepalive timeout is long, so the link
    # stays up) and A's RPC lane to it fills. A's gateway stopped reading the calls
    # socket: a call to node C waited as long as B did. Now B's calls and tells are kept
    # in A's gateway and their sender told to wait; C's call is answered at once, and
    # once B reads again every tell arrives, once and in order. The sender floods as fast
    # as it can: what it has on its way when told is bounded in bytes (_gateway_credit),
    # not only in frames, which for 32 KiB tells were 40 MiB, past the hold's 2 MiB here.
    tuning = {**FAST_TUNING, "queue_high_bytes": 1024 * 1024, "keepalive_timeout_s": 30.0}
    with three_nodes(tmp_path, tuning) as nodes:
        runner, a, b, _c = nodes

        async def tell(n: int) -> None:
            await a.tell("a1", b.ids["b1"], "note", b"%05d" % n + bytes(size))

        # (SCTP's window, the lane's 1 MiB, then told)
        stats = flood_while_b_stops(nodes, tell, most=5_000)
        assert stats["calls_held"] >= 1 and stats["senders_told_to_wait"] >= 1
        assert stats["remote_nodes"][b.node_id]["state"] == "connected"
        lanes = runner.run(a.stats())["remote_nodes"][b.node_id]["lanes"]
        assert lanes["rpc_reliable"]["dropped"] == 0


def test_floods_from_many_senders_to_a_node_whose_link_is_full_wait_alone(
    tmp_path: Path,
) -> None:
    # Each sender told to wait for a full link may still have what its credit allows on
    # its way (1 MiB, _gateway_credit). Eight senders flooding at once brought the hold
    # past its bound (2 MiB here, 8 MiB as shipped): the gateway stopped reading the
    # calls socket, and a call to node C waited as long as B did. The bound now keeps
    # room for what each sender told to wait may have on its way.
    tuning = {**FAST_TUNING, "queue_high_bytes": 1024 * 1024, "keepalive_timeout_s": 30.0}
    senders = [f"a{n}" for n in range(1, 9)]
    with three_nodes(tmp_path, tuning, a_actors=len(senders)) as (runner, a, b, c):
        assert b.process is not None
        target = b.ids["b1"]

        async def flood(name: str) -> int:
            held = a.workers[name].rpc.held  # what an actor's next ctx.tell to b1 checks
            sent = 0
            while not held.holds(target):
                assert sent < 5_000, f"{name} was never told to wait"
                await a.tell(
                    name, target, "note", b"%s %05d " % (name.encode(), sent) + bytes(32768)
                )
                sent += 1
            return sent

        async def go() -> tuple[list[int], float, dict[str, Any]]:
            counts = await asyncio.gather(*(flood(name) for name in senders))
            started = time.monotonic()
            assert await a.call("a1", c.ids["c1"], "echo", b"on", timeout_s=5) == b"on"
            return list(counts), time.monotonic() - started, await a.stats()

        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            counts, call_s, stats = runner.run(go(), timeout_s=60)
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        assert call_s < 2, (call_s, stats["calls_held"])
        tells = b.workers["b1"].received.tells
        runner.run(b.wait_for(lambda: len(tells) >= sum(counts), 30, "every tell"))
        for name, count in zip(senders, counts, strict=True):  # once each, in order, per sender
            numbers = [
                int(p.split()[1]) for _r, p, _s in tells if p.startswith(name.encode() + b" ")
            ]
            assert numbers == list(range(count)), name


def real_nodes(node_factory, signaling_url: str, b_actor: str, more: str = "") -> tuple[Any, Any]:
    """Real nodes (``actrhost run``) A (an Echo), B (``b_actor``: "name type handler")
    and C (an Echo, ``test+Far``), ``more`` in each config; returns A and B."""

    def node(name: str, actor_type: str, handler: str) -> Any:
        actor = f'[[actor]]\nname = "{name}"\ntype = "{actor_type}"\nhandler = "{handler}"\n'
        return node_factory(actor, f'[signaling]\nurl = "{signaling_url}"\n{more}')

    node_a = node("echo", "test+Echo", "actors:Echo")
    node_b = node(*b_actor.split())
    node("far", "test+Far", "actors:Echo")
    return node_a, node_b


async def call_node_c(shell: actrhost.Shell) -> tuple[float, dict[str, Any]]:
    """How long a call from ``shell`` to node C's actor took (it must be answered within
    5 s), and the stats of the Shell's node's gateway right after."""
    far = await shell.discover("test+Far")
    started = time.monotonic()
    assert await shell.call(far, "test.Echo.Say", b"on", timeout=5) == b"on"
    call_s = time.monotonic() - started
    return call_s, (await shell.status())["gateway"]["stats"]


def test_a_shells_flood_to_a_node_whose_link_is_full_waits_alone(node_factory, signaling_url):
    # Real nodes. A Shell on node A (as `actrhost load` runs) floods tells to an actor on
    # node B whose gateway stopped reading (SIGSTOP; long keepalive timeouts keep the link
    # up). Shells were never told to wait: their flood filled A's hold past its bound
    # and A's gateway stopped reading for every node, so a call to node C waited as long
    # as B did. Now the Shell is told on its own connection, like a worker; its next tells
    # wait, the call to C is answered at once, and every tell arrives once, in order.
    keepalive = "[webrtc]\nkeepalive_timeout_s = 30.0\n"
    node_a, node_b = real_nodes(
        node_factory, signaling_url, "rec test+Recorder actors:Recorder", keepalive
    )

    def note(n: int) -> bytes:
        return b"%05d" % n + bytes(4091)

    async def go() -> None:
        async with (
            actrhost.connect(node_a.config_path) as shell,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            rec = await shell.discover("test+Recorder")
            far = await shell.discover("test+Far")
            assert await shell.call(far, "test.Echo.Say", b"up", timeout=20) == b"up"
            # A call, not a tell: answered once B is located and connected (a tell to a
            # node still being located waits in the locate, another test's case).
            assert await shell.call(rec, "test.Recorder.Note", note(0), timeout=20) == b"ok"
            b_gateway = (await shell_b.status())["gateway"]["pid"]
            held = shell._rpc.held  # what the Shell's next tell to rec checks
            os.kill(b_gateway, signal.SIGSTOP)
            try:
                sent = 1
                while not held.holds(rec):  # SCTP's window, the lane's 4 MiB, then told
                    assert sent < 5_000, "the Shell was never told to wait"
                    await shell.tell(rec, "test.Recorder.Note", note(sent))
                    sent += 1
                    await asyncio.sleep(0.0005)  # (a Shell faster than its gateway: below)
                call_s, stats = await call_node_c(shell)
            finally:
                os.kill(b_gateway, signal.SIGCONT)
            assert call_s < 2, call_s
            assert stats["calls_held"] >= 1 and stats["senders_told_to_wait"] >= 1
            for n in range(sent, sent + 100):  # these wait for room first
                await shell.tell(rec, "test.Recorder.Note", note(n))
            count = sent + 100
            deadline = time.monotonic() + 30
            while True:
                heads = await shell_b.call("rec", "test.Recorder.Heads", b"5", timeout=10)
                got = [int(head) for head in heads.decode().split(",")]
                if len(got) >= count or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert got == list(range(count))
            assert not held.holds(rec)  # told there is room

    run(go(), 120)


@pytest.mark.parametrize("shell", [False, True], ids=["actor", "shell"])
def test_a_flood_to_a_node_still_being_located_waits_alone(tmp_path: Path, shell: bool) -> None:
    # Node B's gateway is stuck (SIGSTOP) before node A ever reached it: A's locate of b1
    # (through signaling, which B answers) waits, and so do the tells for b1. Past 4 MiB
    # of them A's gateway stopped reading, and a call to node C waited for B (QA: 9 s,
    # from a Shell's `actrhost load --tell`). Now their sender, an actor's or a Shell's,
    # is told to wait; the call to C is answered at once, and once B answers every tell
    # arrives, once and in order.
    tuning = {**FAST_TUNING, "keepalive_timeout_s": 30.0}
    with three_nodes(tmp_path, tuning, called="c") as nodes:
        _runner, a, b, _c = nodes
        source = None if shell else OWN_ID

        async def tell(n: int) -> None:
            await a.tell("a1", b.ids["b1"], "note", b"%05d" % n + bytes(4096), source=source)

        # (256 KiB wait for the locate, then told)
        stats = flood_while_b_stops(nodes, tell, most=1_000)
        assert stats["senders_told_to_wait"] >= 1 and stats["undeliverable"] == 0


def test_a_shells_tells_and_chunks_to_an_actor_no_node_hosts_raise_at_the_shell(
    tmp_path: Path,
) -> None:
    # An actor's next tell to such a target raised (the notice on its worker's feed); a
    # Shell's went on into the void, as it has no feed. It is told on its connection now,
    # for its stream chunks on the streams socket they came on.
    with three_nodes(tmp_path, FAST_TUNING, called="") as (runner, a, b, _c):
        nobody = ActrId(b.ids["b1"].realm, b.ids["b1"].serial_number + 999, b.ids["b1"].type)
        rpc = a.workers["a1"].rpc

        async def until_refused() -> tuple[int, ActrError]:
            for sent in range(1, 200):
                try:
                    await a.tell("a1", nobody, "note", b"x", source=None)
                except ActrError as exc:
                    return sent, exc
                await asyncio.sleep(0.05)
            raise AssertionError("never refused")

        sent, error = runner.run(until_refused(), timeout_s=30)
        assert isinstance(error, (NotFound, Unavailable)) and sent < 50, (sent, error)
        with pytest.raises(type(error)):
            rpc.refused.check(nobody)
        # Its stream chunks too, on the socket they came on (the streams socket).
        elsewhere = ActrId(nobody.realm, nobody.serial_number + 1, nobody.type)

        async def chunks_until_refused() -> int:
            for sent in range(1, 200):
                await a.send_chunk("a1", elsewhere, "s0", sent, b"x", source=None)
                await asyncio.sleep(0.05)
                try:
                    rpc.refused.check(elsewhere)
                except ActrError:
                    return sent
            raise AssertionError("never refused")

        assert runner.run(chunks_until_refused(), timeout_s=30) < 50


def test_a_stream_to_a_node_still_being_located_waits_in_its_ring(node_factory, signaling_url):
    # Real nodes. A Shell on node A streams to an actor on node B, whose gateway is stuck
    # (SIGSTOP) before A ever reached it: A's locate waits. The chunks were read from the
    # Shell's ring into A's gateway, and past 4 MiB of them A stopped reading its sockets:
    # a call to node C waited for B. Now they stay in the Shell's ring, unread, until B
    # answers; the call to C is answered at once, and every chunk arrives, in order.
    node_a, node_b = real_nodes(node_factory, signaling_url, "sink test+Sink actors:StreamSink")
    payloads = [bytes([n % 251]) * 65536 for n in range(160)]  # 10 MiB

    async def go() -> None:
        async with (
            actrhost.connect(node_a.config_path) as shell,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            far = await shell.discover("test+Far")
            assert await shell.call(far, "test.Echo.Say", b"up", timeout=20) == b"up"
            sink = await shell.discover("test+Sink")  # (signaling answers; B not reached)
            b_gateway = (await shell_b.status())["gateway"]["pid"]
            os.kill(b_gateway, signal.SIGSTOP)
            try:
                for n, payload in enumerate(payloads):
                    await shell.send_data_stream(sink, DataStream("s0", n, payload), timeout=5)
                call_s, stats = await call_node_c(shell)
            finally:
                os.kill(b_gateway, signal.SIGCONT)
            assert call_s < 2, call_s
            assert stats["undeliverable"] == 0
            deadline = time.monotonic() + 30
            while True:
                got = json.loads(await shell_b.call("sink", "test.Sink.Results", b"", timeout=10))
                got = got.get("s0", [])
                if len(got) >= len(payloads) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert [c["seq"] for c in got] == list(range(len(payloads)))
            assert all(c["crc"] == zlib.crc32(payloads[c["seq"]]) for c in got)

    run(go(), 120)
