"""Two real nodes (``actrhost run``) and a signaling server: actors call across nodes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import zmq

import actrhost
from actrhost import ActrId, DataStream, MediaSample
from actrhost._fingerprint import service_fingerprint
from actrhost._node_status import STATS_TIMEOUT_S
from actrhost.signaling._testing import ServerProcess

from .utils import Node, actrhost_command, pid_alive, run, signal_server, wait_until

pytest.importorskip("aiortc")


async def actrhost_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``actrhost ARGS`` in a child process without blocking the loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "actrhost", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


RELAY = '[[actor]]\nname = "relay"\ntype = "test+Relay"\nhandler = "actors:Relay"\n'


def relay_and_echo_nodes(node_factory, signaling_url, more_on_b=""):
    """Node A runs a Relay (it forwards calls to a type it discovers), node B an Echo."""
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    node_a = node_factory(
        """
        [[actor]]
        name = "relay"
        type = "test+Relay"
        handler = "actors:Relay"
        """,
        signaling,
    )
    node_b = node_factory(
        """
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        """
        + more_on_b,
        signaling,
    )
    return node_a, node_b


def test_a_discovery_signaling_does_not_answer_says_so(node_factory):
    # It said "no answer to 'actrhost.gateway.Discover' from ipc://…/gateway.sock" (QA).
    with ServerProcess() as server:
        node = node_factory(
            '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n',
            f'[signaling]\nurl = "{server.url}"\n',
        )
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:

            async def go() -> None:
                async with actrhost.connect(node.config_path) as shell:
                    with pytest.raises(actrhost.DeadlineExceeded) as info:
                        await shell.call("test+Nowhere", "x.Y", b"", timeout=0.5)
                    assert info.value.message.startswith(
                        "no test+Nowhere on this node, and none found through signaling within "
                    ), info.value.message
                    assert "(is the signaling server reachable?)" in info.value.message

            run(go(), 30)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)


def source_and_sink_nodes(node_factory, signaling_url):
    """Node A runs a StreamSource (``test+Source``), node B a StreamSink (``test+Sink``)."""
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    source = node_factory(
        '[[actor]]\nname = "source"\ntype = "test+Source"\nhandler = "actors:StreamSource"\n',
        signaling,
    )
    sink = node_factory(
        '[[actor]]\nname = "sink"\ntype = "test+Sink"\nhandler = "actors:StreamSink"\n',
        signaling,
    )
    return source, sink


def echo_and_sink_nodes(node_factory, signaling_url):
    """Node A runs an Echo (a sender's node), node B a StreamSink (``test+Sink``)."""
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    node_a = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n', signaling
    )
    node_b = node_factory(
        '[[actor]]\nname = "sink"\ntype = "test+Sink"\nhandler = "actors:StreamSink"\n',
        signaling,
    )
    return node_a, node_b


def test_actors_on_two_nodes_discover_call_and_tell_each_other(node_factory, signaling_url):
    recorder = """
        [[actor]]
        name = "rec"
        type = "test+Recorder"
        handler = "actors:Recorder"
        """
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url, recorder)

    async def go():
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            echo_id = (await shell_b.actors())[0].actr_id
            # An actor on A discovers test+Echo (not local: through signaling) and calls it.
            answer = await shell_a.call(
                "relay", "test.Relay.Forward", b"test+Echo test.Echo.Say hi", timeout=20
            )
            assert answer == b"hi"
            # The caller on the other node is seen with its own id.
            who = await shell_a.call(
                "relay", "test.Relay.Forward", b"test+Echo test.Echo.Whoami x", timeout=10
            )
            self_id, caller, request_id, *_ = who.decode().split("|")
            assert ActrId.parse(self_id) == echo_id
            relay_id = (await shell_a.actors())[0].actr_id
            assert ActrId.parse(caller) == relay_id
            # The callee's request id starts with the caller's (it was "g3" alone, QA);
            # each gateway adds its own part (/o, /g), which keeps it unique there.
            assert re.fullmatch(r"[0-9a-f]+-\d+/o\d+/g\d+", request_id), request_id
            # A Shell on A reaches B's actor by id, or by type through signaling; errors
            # keep code and message.
            assert await shell_a.call(echo_id, "test.Echo.Say", b"direct", timeout=10) == b"direct"
            assert await shell_a.call("test+Echo", "test.Echo.Say", b"by type") == b"by type"
            # Kept a second: not one discovery through signaling per call (QA: 10,007
            # discoveries for 10,000 calls).
            before = (await shell_a.status())["gateway"]["stats"]["discoveries"]
            for n in range(20):
                said = await shell_a.call("test+Echo", "test.Echo.Say", b"%d" % n, timeout=10)
                assert said == b"%d" % n
            after = (await shell_a.status())["gateway"]["stats"]["discoveries"]
            assert after - before <= 2, (before, after)
            with pytest.raises(actrhost.HandlerError, match="boom: far"):
                await shell_a.call(echo_id, "test.Echo.Fail", b"far", timeout=10)
            started = time.monotonic()
            with pytest.raises(actrhost.DeadlineExceeded):
                await shell_a.call(echo_id, "test.Echo.Sleep", b"2", timeout=0.3)
            assert time.monotonic() - started < 1.5
            # Tells cross too, in order.
            rec_id = await shell_a.discover("test+Recorder")
            for n in range(20):
                await shell_a.tell(rec_id, "test.Recorder.Note", str(n).encode())
            for _ in range(100):
                seen = await shell_b.call("rec", "test.Recorder.Seen", b"")
                if seen.count(b",") == 19:
                    break
                await asyncio.sleep(0.05)
            assert seen.decode().split(",") == [str(n) for n in range(20)]
            status = await shell_a.status()
            assert status["gateway"]["state"] == "running"
            # `actrhost status` shows the remote node, its candidate type and lane traffic.
            table = await actrhost_cli("status", str(node_a.config_path))
            assert table.returncode == 0, table.stderr
            lines = table.stdout.splitlines()
            remote = [line for line in lines if "remote node" in line]
            assert len(remote) == 1 and "connected, candidate host" in remote[0], table.stdout
            # Two nodes on one host: large SCTP packets (gateway/_sctp_packets.py).
            assert "candidate host (packets of 16 KiB)," in remote[0], table.stdout
            # ... by the name in its config (its gateway's hello), not only by its id.
            assert f"remote node {node_b.config.node.name} (" in remote[0], table.stdout
            # No ice_host_addresses in the config: the address that reaches signaling.
            assert ", ICE host 127.0.0.1" in table.stdout
            rpc = next(line for line in lines if line.strip().startswith("rpc_reliable"))
            out_msgs, in_msgs = (int(rpc.split(k)[1].split()[0]) for k in (" out ", " in "))
            assert out_msgs >= 24 and in_msgs >= 4, rpc  # 20 tells, 4+ calls and answers

    run(go(), 90)


def test_nodes_reach_each_other_over_ipv6(node_factory):
    # Signaling on [::1]: each gateway offers ::1, the address that reaches signaling, as
    # its ICE host candidate; the two connect host to host, in 16 KiB packets (one host).
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with signal_server(host="[::1]") as url:
        node_a, node_b = relay_and_echo_nodes(node_factory, url)
        answer = node_a_call(node_a, b"test+Echo test.Echo.Say over six")
        assert answer == b"over six"
        gateway = node_a.status()["gateway"]
        assert gateway["stats"]["ice_host_addresses"] == ["::1"], gateway
        (remote,) = gateway["stats"]["remote_nodes"].values()
        assert remote["state"] == "connected" and remote["candidate_type"] == "host", remote
        assert remote["connection"]["sctp_packet_bytes"] == 16384, remote
        node_a.stop()
        node_b.stop()


def node_a_call(node: Node, request: bytes) -> bytes:
    """``test.Relay.Forward`` of ``node``'s relay, from a Shell."""

    async def call() -> bytes:
        async with actrhost.connect(node.config_path) as shell:
            return await shell.call("relay", "test.Relay.Forward", request, timeout=20)

    return run(call(), 30)


def test_embedded_signaling_registers_the_node_with_the_ids_its_actors_use(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        instances = 2
        """,
        '[signaling]\nurl = "embedded"\n',
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            status = await shell.status()
            url = status["gateway"]["signaling"]
            assert url.startswith("ws://127.0.0.1:")
            local_ids = {a.actr_id for a in await shell.actors()}
            result = await actrhost_cli("status", "--signaling", url)
            assert result.returncode == 0, result.stderr
            listed = {ActrId.parse(line.split()[0]) for line in result.stdout.splitlines()[2:]}
            assert listed == local_ids
            # The CLI status table shows the gateway too.
            table = await actrhost_cli("status", str(node.config_path))
            assert "gateway" in table.stdout and "running" in table.stdout

    run(go(), 60)
    # Connections to the embedded server are not logged one by one (QA: any client could
    # grow the node's log at will).
    assert "websockets.server" not in node.log()


SCHEMA = """
syntax = "proto3";
package test;
message Text { string value = 1; }
service Echo { rpc Say(Text) returns (Text); }
"""


def test_dependency_discovery_uses_the_lock_file(node_factory, signaling_url, tmp_path):
    schema = tmp_path / "echo.proto"
    schema.write_text(SCHEMA)
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    node_factory(
        f"""
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        service_schema = "{schema}"
        """,
        signaling,
    )
    node_a = node_factory(
        """
        [[actor]]
        name = "relay"
        type = "test+Relay"
        handler = "actors:Relay"

        [dependencies]
        echo = { actr_type = "test+Echo" }
        """,
        signaling,
    )

    async def go():
        async with actrhost.connect(node_a.config_path) as shell:
            # A dependency with no lock file: a clear NotFound naming the command to run.
            with pytest.raises(actrhost.NotFound, match="run `actrhost lock "):
                await shell.call("relay", "test.Relay.Forward", b"test+Echo test.Echo.Say hi")
            lock = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "actrhost",
                    "lock",
                    str(node_a.config_path),
                    "--signaling",
                    signaling_url,
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert lock.returncode == 0, lock.stderr
            locked = (node_a.config_path.parent / "Actr.lock.toml").read_text()
            assert service_fingerprint(SCHEMA) in locked
            answer = await shell.call("relay", "test.Relay.Forward", b"test+Echo test.Echo.Say hi")
            assert answer == b"hi"

    run(go(), 60)


def test_three_nodes_calls_streams_and_media_across(node_factory, signaling_url):
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    source = node_factory(
        """
        [[actor]]
        name = "source"
        type = "test+Source"
        handler = "actors:StreamSource"

        [[actor]]
        name = "relay"
        type = "test+Relay"
        handler = "actors:Relay"
        """,
        signaling,
    )
    sink = node_factory(
        """
        [[actor]]
        name = "sink"
        type = "test+Sink"
        handler = "actors:StreamSink"
        """,
        signaling,
    )
    node_factory(
        """
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        """,
        signaling,
    )

    async def go():
        async with (
            actrhost.connect(source.config_path) as shell,
            actrhost.connect(sink.config_path) as sink_shell,
        ):
            # Node A reaches B and C: one peer connection each.
            assert (
                await shell.call("relay", "test.Relay.Forward", b"test+Echo test.Echo.Say c")
                == b"c"
            )
            sizes = [10, 70_000, 300_000, 1_000_000] * 5
            sent = json.loads(
                await shell.call(
                    "source",
                    "test.Source.Send",
                    json.dumps({"target": "test+Sink", "sizes": sizes, "frames": 5}).encode(),
                    timeout=60,
                )
            )
            chunks = [s for s in sent if "seq" in s]
            frames = [s for s in sent if "ts" in s]
            # Payloads from [shm] threshold_bytes up went to the gateway through a ring of
            # the source (read straight from it by the gateway), smaller ones inline.
            (source_info,) = [a for a in (await shell.status())["actors"] if a["name"] == "source"]
            streams_out = source_info["stats"]["streams_out"]
            large = sum(size for size in sizes if size >= 65536)
            assert streams_out["bytes_via_shm"] >= large and streams_out["bytes_inline"] > 0
            # Bounded in time, not in attempts: a loaded machine makes each one slower.
            deadline = time.monotonic() + 40
            resend_at = time.monotonic() + 2
            last_ts = frames[-1]["ts"]
            while time.monotonic() < deadline:
                got = json.loads(await sink_shell.call("sink", "test.Sink.Results", b""))
                if len(got.get("s0", [])) == len(chunks) and got.get("video"):
                    break
                if time.monotonic() > resend_at and not got.get("video"):
                    # Media is lossy: frames sent while the stream filled the UDP socket
                    # may all be lost, keyframe included. A camera keeps sending; so do we,
                    # two seconds of it: the receiver gives a lost packet 0.5 s, then asks
                    # for a keyframe (gateway.md, Lost video packets).
                    again = {"target": "test+Sink", "sizes": [], "frames": 60}
                    request = json.dumps(again).encode()
                    sent = json.loads(await shell.call("source", "test.Source.Send", request))
                    last_ts = max([last_ts] + [f["ts"] for f in sent if "ts" in f])
                    resend_at = time.monotonic() + 2
                await asyncio.sleep(0.05)
            assert [(c["seq"], c["crc"]) for c in got["s0"]] == [
                (s["seq"], s["crc"]) for s in chunks
            ]
            # The gateway removed the name of the source's ring when it attached it: a
            # SIGKILL of the whole node now cannot leave it behind.
            assert source.segments() == []
            if not got.get("video"):  # say what the gateways counted, for the next one
                media = [
                    (node_id[:6], node["media"])
                    for sh in (shell, sink_shell)
                    for node_id, node in (await sh.status())["gateway"]["stats"][
                        "remote_nodes"
                    ].items()
                ]
                pytest.fail(f"no video frame arrived; media counters: {media}")
            assert got["video"][-1]["ts"] <= last_ts  # a retry's frames count up again
            # Raw frames (codec "raw") went on the video track, VP8-encoded: lossy.
            assert got["video"][-1]["codec"] == "raw" and got["video"][-1]["shape"] == [48, 64, 3]
            sent_on_tracks = sum(
                node["media"]["samples_sent"]
                for node in (await shell.status())["gateway"]["stats"]["remote_nodes"].values()
            )
            # Each frame went on a track or was counted as dropped: a frame that reaches
            # the gateway while it still locates the target's node is (media is lossy,
            # and the stream's chunks, through a ring now, are quick to arrive first).
            dropped = (await shell.status())["gateway"]["stats"]["dropped_media"]
            assert sent_on_tracks + dropped >= len(frames) and sent_on_tracks >= 1
            sent_crcs = {f["crc"] for f in frames}
            assert not any(v["crc"] in sent_crcs for v in got["video"])  # decoded, not copied
            status = await shell.status()
            remote = status["gateway"]["stats"]["remote_nodes"]
            assert len(remote) == 2 and all(n["state"] == "connected" for n in remote.values())

    run(go(), 90)


def test_a_node_that_cannot_reach_its_signaling_server_says_why_and_leaves_nothing(
    node_factory,
):
    from actrhost.signaling._testing import pick_port

    url = f"ws://127.0.0.1:{pick_port()}"  # nobody listens there
    node = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n',
        f'[signaling]\nurl = "{url}"\n',
        start=False,
    )
    result = actrhost_command("run", str(node.config_path), timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "could not register the node's actors: cannot connect to signaling server" in last
    assert url in last and "Connection refused" in last
    assert "restarting it" not in result.stderr  # it does not pretend to retry
    assert not node.run_dir.exists()


def test_sigkill_of_a_supervisor_with_a_gateway_leaves_nothing(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        """,
        '[signaling]\nurl = "embedded"\n',
    )

    async def pids():
        async with actrhost.connect(node.config_path) as shell:
            status = await shell.status()
            return [a["pid"] for a in status["actors"]] + [status["gateway"]["pid"]]

    children = run(pids())
    node.seen_pids.update(children)
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(5)
    wait_until(lambda: not any(pid_alive(p) for p in children), 2.5, "the node's processes to exit")
    wait_until(lambda: not node.run_dir.exists(), 2.0, "the run dir to be removed")


def test_a_sigterm_to_the_whole_process_group_stops_the_node_cleanly(node_factory):
    # As systemd, `timeout` or `kill -TERM -PGID` stop it: every process gets the signal
    # at once. The gateway, ending first, was "restarted" by the stopping supervisor, its
    # heartbeat task logged a traceback, and so did the forkserver's exit (QA).
    node = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\ninstances = 2\n',
        '[signaling]\nurl = "embedded"\n',
    )
    time.sleep(1.0)  # heartbeats going
    os.killpg(node.process.pid, signal.SIGTERM)
    assert node.process.wait(20) == 0
    log = node.log()
    for trouble in ("ERROR", "Traceback", "restarting it", "Exception ignored"):
        assert trouble not in log, log
    wait_until(lambda: not node.run_dir.exists(), 10, "the run dir to be removed")


def test_another_connection_cannot_take_the_gateways_place_on_the_control_socket(node_factory):
    # A "hello" naming the gateway's pid from another connection took its place: stats
    # requests and the stop went there, status said the gateway did not answer, and the
    # stop took 7 s (QA).
    node = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n',
        '[signaling]\nurl = "embedded"\n',
    )
    gateway_pid = node.status()["gateway"]["pid"]
    ctx = zmq.Context()
    try:
        intruder = ctx.socket(zmq.DEALER)
        intruder.setsockopt(zmq.ROUTING_ID, b"g:intruder")
        intruder.connect(f"ipc://{node.run_dir / 'control.sock'}")
        intruder.send(json.dumps({"op": "hello", "pid": gateway_pid}).encode())
        assert not intruder.poll(1000), "the supervisor answered the intruder's hello"
        assert node.status()["gateway"]["stats"], "the gateway's stats did not come"
        for _ in range(300):  # counted, logged sparingly (a line each, QA)
            intruder.send(json.dumps({"op": "state", "state": "running"}).encode())
        wait_until(lambda: node.status()["malformed_control"] == 301, 10, "301 counted")
        assert node.log().count("not the gateway") <= 8  # the first 5, every 100th
    finally:
        ctx.destroy(linger=0)
    started = time.monotonic()
    node.stop()
    assert time.monotonic() - started < 4.0


def test_a_sigkilled_gateway_is_restarted_and_calls_work_again(node_factory, signaling_url):
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)
    forward = b"test+Echo test.Echo.Say again"

    async def go():
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            assert await shell_a.call("relay", "test.Relay.Forward", forward, timeout=20)
            before = await shell_b.status()
            gateway_pid = before["gateway"]["pid"]
            title = Path(f"/proc/{gateway_pid}/cmdline").read_bytes().rstrip(b"\0")
            assert title == f"actrhost gateway ({node_b.config.node.name})".encode()  # in ps
            os.kill(gateway_pid, signal.SIGKILL)
            # A status asked at once waited its whole timeout for the dead gateway's
            # counters, then showed it running with its old pid (QA).
            asked = time.monotonic()
            gateway = (await shell_b.status())["gateway"]
            assert time.monotonic() - asked < 0.9 * STATS_TIMEOUT_S
            assert (gateway["pid"], gateway["state"]) != (gateway_pid, "running"), gateway
            # The supervisor restarts it; it registers B's actor again with the same id.
            for _ in range(200):
                status = await shell_b.status()
                gateway = status["gateway"]
                if gateway["pid"] != gateway_pid and gateway["state"] == "running":
                    break
                await asyncio.sleep(0.05)
            assert gateway["pid"] != gateway_pid and gateway["restarts"] == 1, gateway
            assert [a["id"] for a in status["actors"]] == [a["id"] for a in before["actors"]]
            assert [a["pid"] for a in status["actors"]] == [a["pid"] for a in before["actors"]]
            # A's gateway connects to the new one; the call goes through again.
            deadline = time.monotonic() + 20
            while True:
                try:
                    answer = await shell_a.call("relay", "test.Relay.Forward", forward, timeout=3)
                    break
                except actrhost.ActrError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            assert answer == b"again"

    run(go(), 90)


def test_tells_in_a_killed_sending_gateway_arrive_once_after_its_restart(
    node_factory, signaling_url
):
    # Tells to another node that the sending node's gateway held, or that waited in the
    # sender's socket for it, died with it (QA, 2026-12-03). The sender (here a Shell,
    # as a worker does) keeps them and sends them again, in doubt, once the supervisor
    # has restarted the gateway; the receiving worker drops those it had read.
    recorder = '[[actor]]\nname = "rec"\ntype = "test+Recorder"\nhandler = "actors:Recorder"\n'
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url, recorder)
    count = 5000

    async def go() -> list[str]:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            rec_id = await shell_a.discover("test+Recorder")
            await shell_a.tell(rec_id, "test.Recorder.Note", b"first", timeout=20)
            # Read first: tells in doubt from a sender the worker never heard of are
            # dropped (it may have been restarted since it read them: docs/gateway.md).
            while await shell_b.call("rec", "test.Recorder.Seen", b"") != b"first":
                await asyncio.sleep(0.05)
            gateway_pid = (await shell_a.status())["gateway"]["pid"]
            for n in range(count):
                await shell_a.tell(rec_id, "test.Recorder.Note", b"%d" % n)
            os.kill(gateway_pid, signal.SIGKILL)  # thousands still on their way
            seen = (await shell_b.call("rec", "test.Recorder.Seen", b"")).decode()
            assert seen.count(",") < count, "all arrived before the kill: tests nothing"
            deadline = time.monotonic() + 30
            while True:
                seen = (await shell_b.call("rec", "test.Recorder.Seen", b"")).decode()
                if seen.count(",") >= count or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # anything that came twice would be here by now
            seen = (await shell_b.call("rec", "test.Recorder.Seen", b"")).decode()
            assert (await shell_a.status())["gateway"]["restarts"] == 1
            return seen.split(",")

    seen = run(go(), 90)
    assert seen == ["first"] + [str(n) for n in range(count)], f"{len(seen) - 1} of {count}"


@pytest.mark.parametrize("count, pieces", [(1500, 512), (1200, 2048)])  # 16 / 64 KiB
def test_chunks_in_a_killed_sending_gateway_arrive_once_after_its_restart(
    node_factory, signaling_url, count, pieces
):
    # Reliable chunks to another node that the sending node's gateway held, or that
    # waited in the sender's ring and socket for it, died with it. The sender (here a
    # Shell, as a worker does) keeps copies of the newest and sends them again, in doubt,
    # once the supervisor has restarted the gateway; the receiving worker drops those
    # it had read. Before: 1,2xx of 1,500 lost. With 64 KiB chunks (75 MiB) the ring to
    # the gateway held more than the sender keeps (32 MiB): ≈ 500 were lost until
    # session 34 bounded what may wait there (GATEWAY_RINGS_MAX_BYTES).
    node_a, node_b = echo_and_sink_nodes(node_factory, signaling_url)
    payloads = [hashlib.sha256(b"%d" % n).digest() * pieces for n in range(count)]

    async def go() -> list[int]:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            sink = await shell_a.discover("test+Sink")

            async def received() -> list[dict]:
                got = json.loads(await shell_b.call("sink", "test.Sink.Results", b""))
                return got.get("s0", [])

            async def sink_stats() -> dict:
                (stats,) = [a["stats"] for a in (await shell_b.status())["actors"]]
                return stats

            gateway_pid = (await shell_a.status())["gateway"]["pid"]
            # 2 ms a chunk: the stream is still on its way at the kill (between two nodes
            # on one host it would otherwise have arrived whole before it, in < 0.5 s).
            await shell_b.call("sink", "test.Sink.Configure", b'{"delay_s": 0.002}')
            for n, payload in enumerate(payloads):
                await shell_a.send_data_stream(sink, DataStream("s0", n, payload), timeout=20)
            # Some read, most still on their way: those read come again and are dropped.
            while len(await received()) < 100:
                await asyncio.sleep(0.005)
            os.kill(gateway_pid, signal.SIGKILL)
            assert len(await received()) < count, "all arrived before the kill: tests nothing"
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                if (
                    len(await received()) >= count
                    and (await sink_stats())["chunks_duplicates_dropped"]
                ):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # anything that came twice would be here by now
            got = await received()
            assert (await shell_a.status())["gateway"]["restarts"] == 1
            assert (await sink_stats())["chunks_duplicates_dropped"] > 0  # those read before
            crcs = [zlib.crc32(p) for p in payloads]
            assert all(c["crc"] == crcs[c["seq"]] for c in got)
            return [c["seq"] for c in got]

    seen = run(go(), 90)
    assert seen == list(range(count)), f"{len(seen)} of {count}"


def test_chunks_a_killed_sending_gateway_never_passed_on_reach_a_restarted_actor(
    node_factory, signaling_url
):
    # The chunks a stopped, then killed, sending gateway held never reached node B; its
    # sender sends them again, in doubt. A restarted receiving worker that never heard of
    # that sender cannot know that its predecessor did not read them, and dropped all
    # (chunks_in_doubt_dropped) until 2026-12-07: B's gateway, the first of its node,
    # knows it never received them and hands them on as new (gateway/_tells_received.py).
    node_a, node_b = echo_and_sink_nodes(node_factory, signaling_url)
    count = 400  # 6.4 MiB: all kept, and within what may wait for the gateway
    payloads = [hashlib.sha256(b"%d" % n).digest() * 512 for n in range(count)]

    async def go() -> tuple[list[int], dict]:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            assert await shell_b.restart_actors("sink", timeout=30) == ["sink#0"]
            sink = await shell_a.discover("test+Sink")
            gateway_pid = (await shell_a.status())["gateway"]["pid"]
            os.kill(gateway_pid, signal.SIGSTOP)
            for n, payload in enumerate(payloads):
                await shell_a.send_data_stream(sink, DataStream("s0", n, payload), timeout=20)
            os.kill(gateway_pid, signal.SIGKILL)
            deadline = time.monotonic() + 40
            got: list[dict] = []
            while len(got) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                got = json.loads(await shell_b.call("sink", "test.Sink.Results", b"")).get("s0", [])
            await asyncio.sleep(0.5)  # anything that came twice would be here by now
            got = json.loads(await shell_b.call("sink", "test.Sink.Results", b"")).get("s0", [])
            (sink_entry,) = (await shell_b.status())["actors"]
            assert sink_entry["restarts"] == 1
            crcs = [zlib.crc32(p) for p in payloads]
            assert all(c["crc"] == crcs[c["seq"]] for c in got)
            return [c["seq"] for c in got], sink_entry["stats"]

    seen, stats = run(go(), 90)
    dropped = {k: v for k, v in stats.items() if k.startswith("chunks_")}
    assert seen == list(range(count)), f"{len(seen)} of {count}: {dropped}"


def test_many_small_chunks_give_the_senders_stream_window_back_to_zero(node_factory, signaling_url):
    # The sending gateway counts each chunk as it went on the wire (with the origin its
    # worker appended); the receiving one must acknowledge the same bytes, not the chunk
    # it hands on (origin taken off). Before: 37 bytes per chunk stayed in the 8 MiB
    # window for good, so after ~227,000 chunks on one connection none went any more.
    node_a, node_b = echo_and_sink_nodes(node_factory, signaling_url)
    count = 3000

    async def go() -> dict:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            sink = await shell_a.discover("test+Sink")
            for n in range(count):
                await shell_a.send_data_stream(sink, DataStream("s0", n, bytes(64)), timeout=20)

            async def arrived() -> int:
                got = json.loads(await shell_b.call("sink", "test.Sink.Results", b""))
                return len(got.get("s0", []))

            deadline = time.monotonic() + 30
            while await arrived() < count and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await arrived() == count
            deadline = time.monotonic() + 5  # acknowledgements go within 10 ms
            while True:
                (link,) = (await shell_a.status())["gateway"]["stats"]["remote_nodes"].values()
                if link["connection"]["stream_inflight_bytes"] == 0 or time.monotonic() > deadline:
                    return link
                await asyncio.sleep(0.05)

    link = run(go(), 60)
    connection = link["connection"]
    assert connection["stream_inflight_bytes"] == 0, connection
    assert link["lanes"]["stream_reliable"]["frames_out"] == count


def test_chunks_held_for_a_stopped_remote_actor_arrive_after_their_sender_exits(
    node_factory, signaling_url
):
    # An actor on B that takes nothing (stopped) makes B's gateway say "full": A's
    # gateway then keeps that target's chunks as descriptors into their senders' rings,
    # unread. A sender that starts then (an `actrhost load` process) has all its chunks
    # kept, and exits. Before: nobody had attached its ring, so the supervisor removed it
    # as a gone Shell's, and every chunk the load had counted as sent was lost (counted
    # as malformed).
    node_a, node_b = echo_and_sink_nodes(node_factory, signaling_url)
    # 40 MiB first: B's gateway says "full" once 16 MiB wait in the worker's socket and
    # 2 MiB more for it (FEED_BYTES_MAX, Tuning.stream_target_bytes).
    first, then = 160, 50
    chunk = bytes(256 * 1024)

    async def go() -> tuple[dict[str, list[dict]], dict]:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            sink = await shell_a.discover("test+Sink")
            (sink_pid,) = [a["pid"] for a in (await shell_b.status())["actors"]]
            os.kill(sink_pid, signal.SIGSTOP)
            try:
                for n in range(first):
                    await shell_a.send_data_stream(sink, DataStream("s1", n, chunk), timeout=20)
                load = await actrhost_cli(
                    *("load", str(node_a.config_path), "--target", "test+Sink", "--stream"),
                    *("--stream-id", "s0", "--chunk-size", "64KiB", "--total", str(then)),
                    *("--concurrency", "1", "--workers", "1", "--warmup", "0", "--quiet"),
                    # Its end waits for the stopped target this long (a barrier call),
                    # then 5 s for a node that does not move (`_load._main`, "settle").
                    *("--timeout", "2"),
                )
                assert load.returncode == 0, load.stderr
                # Its client cannot see what the target took: it says where to look.
                assert "NOTE: ok means sent; what the target took" in load.stdout, load.stdout
                held = (await shell_a.status())["gateway"]["stats"]["streams_held"]
                assert held >= then, f"A's gateway held {held}: the test tests nothing"
                await asyncio.sleep(5)  # two of the supervisor's sweeps for gone Shells
            finally:
                os.kill(sink_pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = json.loads(await shell_b.call("sink", "test.Sink.Results", b""))
                if len(got.get("s1", [])) + len(got.get("s0", [])) >= first + then:
                    break
                await asyncio.sleep(0.2)
            return got, (await shell_a.status())["gateway"]["stats"]

    got, gateway = run(go(), 60)
    assert len(got.get("s1", [])) == first
    assert len(got.get("s0", [])) == then, f"{len(got.get('s0', []))} of {then}: {gateway}"
    assert gateway["sender_gone"] == 0 and gateway["malformed_local"] == 0, gateway


@pytest.mark.parametrize("restarted", [False, True], ids=["first", "restarted"])
def test_the_first_tells_of_a_new_sender_in_a_killed_gateway_arrive(
    node_factory, signaling_url, restarted
):
    # Tells in doubt from a sender the receiving worker never heard of were dropped: it
    # may have been restarted since it read them. The first process of an actor
    # instance (nothing read before it) takes them: a new sender's first burst, all in
    # the gateway that died, arrives once. A restarted worker still drops those it
    # gets in doubt, but since 2026-12-07 the receiving gateway (the first of its node)
    # hands those it never received on as new (gateway/_tells_received.py).
    recorder = '[[actor]]\nname = "rec"\ntype = "test+Recorder"\nhandler = "actors:Recorder"\n'
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url, recorder)
    count = 2000

    async def go() -> tuple[list[str], int]:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            if restarted:
                assert await shell_b.restart_actors("rec", timeout=30) == ["rec#0"]
            rec_id = await shell_a.discover("test+Recorder")
            gateway_pid = (await shell_a.status())["gateway"]["pid"]
            for n in range(count):
                await shell_a.tell(rec_id, "test.Recorder.Note", b"%d" % n)
            os.kill(gateway_pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                seen = (await shell_b.call("rec", "test.Recorder.Seen", b"")).decode()
                if seen.count(",") >= count - 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # anything that came twice would be here by now
            seen = (await shell_b.call("rec", "test.Recorder.Seen", b"")).decode()
            (rec,) = [a for a in (await shell_b.status())["actors"] if a["name"] == "rec"]
            assert rec["restarts"] == int(restarted)
            return seen.split(","), rec["stats"]["tells_in_doubt_dropped"]

    seen, dropped = run(go(), 90)
    assert seen == [str(n) for n in range(count)], f"{len(seen)} of {count}, {dropped} dropped"


def test_a_sigkilled_actor_called_from_another_node_is_restarted_and_reached_again(
    node_factory, signaling_url
):
    # The restarted worker connects to the feed its gateway bound for the first one
    # (docs/node.md, Messaging): calls from node A reach it again, with the same id.
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)

    async def calls(count: int) -> None:
        async with actrhost.connect(node_a.config_path) as shell_a:
            for n in range(count):
                text = b"test+Echo test.Echo.Say %d" % n
                answer = await shell_a.call("relay", "test.Relay.Forward", text, timeout=10)
                assert answer == b"%d" % n

    run(calls(1), 30)
    (echo,) = node_b.actors()
    os.kill(echo.pid, signal.SIGKILL)

    def restarted() -> bool:
        (now,) = node_b.actors()
        return now.state == "running" and now.pid not in (None, echo.pid)

    wait_until(restarted, 15.0, "echo to be restarted")
    assert node_b.actors()[0].actr_id == echo.actr_id
    run(calls(20), 30)  # each through the restarted worker's feed


def test_tells_and_chunks_to_an_actor_gone_on_another_node_raise_at_the_sender(
    node_factory, signaling_url
):
    # Between local actors a tell or chunk to an actor that is gone raises Unavailable;
    # to another node's actor it went on into the void, counted there (docs/gateway.md,
    # "Frames that cannot be delivered"). Now the sender's gateway is told, and its
    # next tell or chunk raises too; also for an actor id that no node hosts.
    temporary = 'restart = "temporary"\n'  # of the echo: not restarted
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url, temporary)

    async def relay(route: str, payload: bytes) -> bytes:
        async with actrhost.connect(node_a.config_path) as shell_a:
            return await shell_a.call("relay", f"test.Relay.{route}", payload, timeout=20)

    assert run(relay("Forward", b"test+Echo test.Echo.Say ok"), 30) == b"ok"
    (echo,) = node_b.actors()
    os.kill(echo.pid, signal.SIGKILL)
    gone = run(relay("TellUntilRefused", str(echo.actr_id).encode()), 30)
    nobody = ActrId(echo.actr_id.realm, echo.actr_id.serial_number + 999, echo.actr_id.type)
    unknown = run(relay("TellUntilRefused", str(nobody).encode()), 30)
    sent, _, error = gone.decode().partition(" ")
    assert error.startswith("Unavailable: "), gone
    assert "echo" in error
    assert int(sent) < 50  # within a second, not never
    sent, _, error = unknown.decode().partition(" ")
    assert error.startswith(("NotFound: ", "Unavailable: ")), unknown


def test_samples_and_latency_first_chunks_to_a_restarting_actor_on_another_node_never_raise(
    node_factory, signaling_url
):
    # Dropped while the echo restarts, as under pressure: node B's gateway said "gone",
    # and the sender raised Unavailable for a second, where between local actors nothing
    # did (QA: the camera example stopped filming for good when a viewer restarted).
    # (A sink whose on_start takes 1.5 s: its restart is long enough to send into.)
    slow = '[[actor]]\nname = "sink"\ntype = "test+Sink"\nhandler = "actors:SlowStartSink"\n'
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    node_a = node_factory(RELAY, signaling)
    node_b = node_factory(slow, signaling)
    (sink,) = node_b.actors()
    lossy = actrhost.PayloadType.STREAM_LATENCY_FIRST

    async def go() -> list[str]:
        async with actrhost.connect(node_a.config_path) as shell:
            await shell.call(sink.actr_id, "test.Sink.Results", b"", timeout=20)  # linked
            os.kill(sink.pid, signal.SIGKILL)
            errors = []
            for n in range(100):  # 2 s: through the restart
                try:
                    await shell.send_media_sample(sink.actr_id, "video", MediaSample(b"x", n))
                    chunk = DataStream("s0", n, b"y")
                    await shell.send_data_stream(sink.actr_id, chunk, payload_type=lossy)
                except actrhost.ActrError as exc:
                    errors.append(repr(exc))
                await asyncio.sleep(0.02)
            return errors

    assert run(go(), 60) == []
    assert node_b.actors()[0].pid != sink.pid


def test_a_shells_tells_and_chunks_to_an_actor_gone_on_another_node_raise_at_the_shell(
    node_factory, signaling_url
):
    # As above for a Shell (what `actrhost load --tell` and `--stream` run): node B's
    # `gone` named the source actor, which a Shell's frames have none of, so the Shell
    # sent into the void. Now node A's gateway passes it on to the Shells that sent that
    # actor frames lately, on the socket they came on (tells, chunks and samples each
    # have their own).
    temporary = 'restart = "temporary"\n'
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url, temporary)
    (echo,) = node_b.actors()

    async def send_until_refused(what: str) -> tuple[int, Exception, dict]:
        async with actrhost.connect(node_a.config_path) as shell:
            for sent in range(1, 200):
                try:
                    if what == "tells":
                        await shell.tell(echo.actr_id, "test.Echo.Say", b"x")
                    elif what == "chunks":
                        chunk = DataStream("s0", sent, bytes(64))
                        await shell.send_data_stream(echo.actr_id, chunk, timeout=5)
                    else:
                        sample = MediaSample(b"x", sent * 3000)
                        await shell.send_media_sample(echo.actr_id, "t0", sample)
                except actrhost.ActrError as exc:
                    return sent, exc, (await shell.status())["gateway"]["stats"]
                await asyncio.sleep(0.05)
            raise AssertionError(f"the Shell's {what} were never refused")

    async def call() -> bytes:
        async with actrhost.connect(node_a.config_path) as shell:
            return await shell.call(echo.actr_id, "test.Echo.Say", b"ok", timeout=20)

    assert run(call(), 30) == b"ok"  # the link is up
    os.kill(echo.pid, signal.SIGKILL)
    wait_until(lambda: node_b.actors()[0].state != "running", 15.0, "echo to fail")
    told = 0
    for what in ("tells", "chunks", "samples"):
        sent, error, stats = run(send_until_refused(what), 60)
        # Node B said so (its reason names the actor), not node A for an id nobody hosts.
        assert isinstance(error, actrhost.Unavailable) and "echo" in str(error), (what, error)
        assert sent < 50 and stats["senders_told"] > told, (what, sent, stats)
        told = stats["senders_told"]


def test_calls_pending_in_the_callers_own_gateway_fail_fast_when_it_is_killed(
    node_factory, signaling_url
):
    node_a, _node_b = relay_and_echo_nodes(node_factory, signaling_url)
    forward = b"test+Echo test.Echo.Sleep 5"  # the relay's call waits on node B

    async def go():
        async with actrhost.connect(node_a.config_path) as shell_a:
            ok = b"test+Echo test.Echo.Say ok"
            assert await shell_a.call("relay", "test.Relay.Forward", ok, timeout=20) == b"ok"
            gateway_pid = (await shell_a.status())["gateway"]["pid"]
            pending = asyncio.ensure_future(
                shell_a.call("relay", "test.Relay.Forward", forward, timeout=20)
            )
            await asyncio.sleep(1.0)
            started = time.monotonic()
            os.kill(gateway_pid, signal.SIGKILL)
            # The relay's call waited in that gateway: a new one knows nothing of it.
            with pytest.raises(actrhost.Unavailable, match=r"gateway .* went away"):
                await pending
            assert time.monotonic() - started < 3  # not the 30 s of the relay's call

    run(go(), 60)


def test_a_latency_first_flood_to_another_node_drops_old_chunks_and_keeps_the_link(
    node_factory, signaling_url
):
    # Large latency-first chunks reach the gateway through a ring, far faster than the
    # link carries them: the gateway drops the older ones unread, sends the newest, and
    # stays responsive (a flood once starved it past the keepalive timeout).
    source, sink = source_and_sink_nodes(node_factory, signaling_url)

    async def go():
        async with (
            actrhost.connect(source.config_path) as shell,
            actrhost.connect(sink.config_path) as sink_shell,
        ):
            request = {
                "target": "test+Sink",
                "sizes": [100_000] * 400,  # over [shm] threshold_bytes: through a ring
                "stream": "lossy",
                "lane": "STREAM_LATENCY_FIRST",
            }
            sent = json.loads(
                await shell.call("source", "test.Source.Send", json.dumps(request).encode())
            )
            seen, got = -1, []
            for _ in range(40):  # unordered, no retransmits: until nothing more arrives
                got = json.loads(await sink_shell.call("sink", "test.Sink.Results", b""))
                got = got.get("lossy", [])
                if len(got) == seen:
                    break
                seen = len(got)
                await asyncio.sleep(0.25)
            status = await shell.status()
            (remote,) = status["gateway"]["stats"]["remote_nodes"].values()
            assert remote["failures"] == 0 and remote["state"] == "connected"
            lane = remote["lanes"]["stream_latency_first"]
            assert lane["dropped"] > 0 and 0 < len(got) < len(sent)
            crcs = {s["seq"]: s["crc"] for s in sent}
            assert all(c["crc"] == crcs[c["seq"]] for c in got)  # whole, from the ring
            # Newest wins. The source may drop its last chunks itself (its ring to the
            # gateway full: `ok` false) and some may be lost on the wire (no retransmits: a
            # loaded receiver's socket overflows).
            newest_sent = max(s["seq"] for s in sent if s["ok"])
            assert max(c["seq"] for c in got) >= newest_sent - 40, (newest_sent, got[-5:])
            # And calls still go through at once.
            assert (
                await shell.call("source", "test.Source.Send", b'{"target": "test+Sink"}') == b"[]"
            )

    run(go(), 60)


def test_a_latency_first_burst_to_a_connected_idle_link_arrives_whole(node_factory, signaling_url):
    # Newest wins under pressure only: a burst of 10 small chunks to an idle link all go
    # (QA saw 4 of 10 arrive: sent while the link was still being set up, when a lane
    # keeps only the newest `latency_queue_frames`; docs/gateway.md, Lanes).
    source, sink = source_and_sink_nodes(node_factory, signaling_url)

    async def go() -> tuple[list[Any], list[Any]]:
        async with (
            actrhost.connect(source.config_path) as shell,
            actrhost.connect(sink.config_path) as sink_shell,
        ):
            warm = {"target": "test+Sink", "sizes": [10], "stream": "reliable"}
            await shell.call("source", "test.Source.Send", json.dumps(warm).encode())
            async with asyncio.timeout(10):
                while True:  # the link is up: nothing waits for it
                    remote = (await shell.status())["gateway"]["stats"]["remote_nodes"]
                    if [n["state"] for n in remote.values()] == ["connected"]:
                        break
                    await asyncio.sleep(0.05)
            request = {
                "target": "test+Sink",
                "sizes": [2000] * 10,
                "stream": "lossy",
                "lane": "STREAM_LATENCY_FIRST",
            }
            sent = json.loads(
                await shell.call("source", "test.Source.Send", json.dumps(request).encode())
            )
            got: list[Any] = []
            for _ in range(40):
                got = json.loads(await sink_shell.call("sink", "test.Sink.Results", b""))
                got = got.get("lossy", [])
                if len(got) == len(sent):
                    break
                await asyncio.sleep(0.1)
            return sent, got

    sent, got = run(go(), 60)
    assert all(s["ok"] for s in sent)
    assert sorted(c["seq"] for c in got) == [s["seq"] for s in sent]


def test_discovery_from_another_node_skips_an_instance_whose_process_is_gone(
    node_factory, signaling_url
):
    # B's echo: two instances, not restarted once ended (as during a crash restart's
    # backoff): signaling must not offer the dead one to A.
    more_on_b = 'instances = 2\nrestart = "temporary"\n'
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url, more_on_b)
    (gone, alive) = node_b.actors()
    os.kill(gone.pid, signal.SIGKILL)  # temporary: not restarted
    wait_until(lambda: node_b.actors()[0].state == "failed", 10.0, "echo#0 to be given up")

    async def go() -> None:
        async with actrhost.connect(node_a.config_path) as shell_a:
            deadline = time.monotonic() + 10.0
            while True:  # until signaling has heard (the gateway tells it at once)
                picks = {await shell_a.discover("test+Echo") for _ in range(10)}
                if picks == {alive.actr_id} or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert picks == {alive.actr_id}
            assert await shell_a.call("test+Echo", "test.Echo.Say", b"x", timeout=10) == b"x"

    run(go(), 30)


def test_tells_to_a_remote_actor_during_its_rolling_restart_are_all_handled(
    node_factory, signaling_url, tmp_path, monkeypatch
):
    # Tells from node A every 5 ms while B's actor restarts: A cannot be told that the
    # target is restarting (a tell is on its way), so B's gateway keeps those that arrive
    # meanwhile and hands them to the new instance. Each one is handled, by the old
    # instance or the new one (they were lost before: A saw no error).
    markers = tmp_path / "markers"
    monkeypatch.setenv("ACTRHOST_TEST_MARKERS", str(markers))
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    node_a = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n', signaling
    )
    node_b = node_factory(
        '[[actor]]\nname = "log"\ntype = "test+Hooks"\nhandler = "actors:Hooks"\n', signaling
    )
    count = 400

    async def go() -> None:
        async with (
            actrhost.connect(node_a.config_path) as shell_a,
            actrhost.connect(node_b.config_path) as shell_b,
        ):
            target = await shell_a.discover("test+Hooks")
            await shell_a.call(target, "test.Hooks.Mark", b"first")  # connected
            restart = None
            for n in range(count):
                await shell_a.tell(target, "test.Hooks.Mark", f"tell {n}".encode())
                if n == 50:
                    restart = asyncio.ensure_future(shell_b.restart_actors("log", timeout=30))
                await asyncio.sleep(0.005)
            assert restart is not None
            await restart
            await shell_a.call(target, "test.Hooks.Mark", b"last", timeout=10)

    run(go(), 60)
    lines = markers.read_text().splitlines()
    assert sum(line.startswith("start ") for line in lines) == 2  # it did restart
    told = [line for line in lines if line.startswith("tell ")]
    assert sorted(told, key=lambda t: int(t.split()[1])) == [f"tell {n}" for n in range(count)]


def test_a_stalled_stream_to_another_node_does_not_hold_up_calls_or_media(
    node_factory, signaling_url
):
    # A receiver that takes a second per chunk: its stream backs up through both gateways
    # into the sender's ring. Calls to the other node, from the sending actor's node, go
    # on meanwhile (they once queued behind the stream's frames on the way to the gateway:
    # tens of seconds, QA), and so do media samples (they were dropped at the sender while
    # the gateway did not read the streams socket they shared: 398 of 400, QA).
    node = f'[signaling]\nurl = "{signaling_url}"\n\n[shm]\nring_bytes = 4194304\n'
    source = node_factory(
        """
        [[actor]]
        name = "source"
        type = "test+Source"
        handler = "actors:StreamSource"

        [[actor]]
        name = "camera"
        type = "test+Camera"
        handler = "actors:StreamSource"
        """,
        # Video frames (9 KiB) through a ring too, as a camera's would.
        node + "threshold_bytes = 4096\n",
    )
    sink = node_factory(
        """
        [[actor]]
        name = "sink"
        type = "test+Sink"
        handler = "actors:StreamSink"
        mailbox_capacity = 4

        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"

        [[actor]]
        name = "viewer"
        type = "test+Viewer"
        handler = "actors:StreamSink"
        """,
        "hwm_messages = 8\n" + node,
    )

    async def go():
        async with (
            actrhost.connect(source.config_path) as shell,
            actrhost.connect(sink.config_path) as sink_shell,
        ):
            echo_id = await shell.discover("test+Echo")
            assert await shell.call(echo_id, "test.Echo.Say", b"before", timeout=10) == b"before"
            await sink_shell.call("sink", "test.Sink.Configure", b'{"delay_s": 1.0}')
            request = json.dumps({"target": "test+Sink", "sizes": [1 << 20] * 60, "timeout": 90})
            stream = asyncio.ensure_future(
                shell.call("source", "test.Source.Send", request.encode(), timeout=120)
            )
            try:
                await asyncio.sleep(4)  # the stream fills the rings and queues
                assert not stream.done()
                started = time.monotonic()
                for n in range(5):
                    said = await shell.call(echo_id, "test.Echo.Say", b"%d" % n, timeout=2)
                    assert said == b"%d" % n
                print(f"5 calls beside the stalled stream: {time.monotonic() - started:.2f} s")
                assert not stream.done()
                request = json.dumps({"target": "test+Viewer", "frames": 30}).encode()
                answer = await shell.call("camera", "test.Source.Send", request, timeout=30)
                frames = json.loads(answer)
                assert not stream.done(), "the stream was not stalled all along"
                sent = sum(frame["ok"] for frame in frames)
                assert sent >= 25, f"{sent} of 30 video frames left the sender"
                for _ in range(50):
                    seen = json.loads(await sink_shell.call("viewer", "test.Sink.Results", b""))
                    if len(seen.get("video", [])) >= 20:
                        break
                    await asyncio.sleep(0.1)
                assert len(seen.get("video", [])) >= 20, seen.get("video")
            finally:
                # Let the stream finish quickly, and check it lost nothing.
                await sink_shell.call("sink", "test.Sink.Configure", b'{"delay_s": 0}')
                sent = json.loads(await asyncio.wait_for(stream, 60))
            assert all(chunk["ok"] for chunk in sent)

    run(go(), 120)


@pytest.mark.parametrize(
    ("chunk_bytes", "slow_chunks", "fast_chunks", "same_node"),
    [(1 << 20, 60, 24, False), (4096, 8000, 2000, False), (1 << 20, 60, 24, True)],
    ids=["ring-sized", "small", "same-node"],
)
def test_a_stalled_stream_to_one_node_does_not_hold_up_streams_to_another(
    node_factory, signaling_url, chunk_bytes, slow_chunks, fast_chunks, same_node
):
    # A stream to a slow receiver on node B backs up into node A's gateway, which then
    # stopped reading its streams socket (ZeroMQ pauses a socket, not a peer): a stream
    # from node A to node C stood still until B caught up. Now only B's frames wait.
    # Small chunks (below [shm] threshold_bytes) too: they went inline, and past 4 MiB of
    # them held for B the gateway stopped reading the socket after all (QA); 32 MiB of
    # them is more than B's link window, B's queues and that hold together. And a stream
    # to another actor of node B itself: the slow one filled the link's window, and the
    # other waited with it, until B's gateway learned to say which actor is slow.
    node = f'[signaling]\nurl = "{signaling_url}"\n\n[shm]\nring_bytes = 4194304\n'
    source = node_factory(
        """
        [[actor]]
        name = "to_slow"
        type = "test+Source"
        handler = "actors:StreamSource"

        [[actor]]
        name = "to_fast"
        type = "test+Source"
        handler = "actors:StreamSource"
        """,
        node,
    )
    viewer = '[[actor]]\nname = "viewer"\ntype = "test+Viewer"\nhandler = "actors:StreamSink"\n'
    slow = node_factory(
        '[[actor]]\nname = "sink"\ntype = "test+Sink"\nhandler = "actors:StreamSink"\n'
        "mailbox_capacity = 4\n" + (viewer if same_node else ""),
        "hwm_messages = 8\n" + node,
    )
    fast = slow if same_node else node_factory(viewer, node)

    async def go():
        async with (
            actrhost.connect(source.config_path) as shell,
            actrhost.connect(slow.config_path) as slow_shell,
            actrhost.connect(fast.config_path) as fast_shell,
        ):
            await slow_shell.call("sink", "test.Sink.Configure", b'{"delay_s": 1.0}')
            sizes = [chunk_bytes] * slow_chunks
            request = json.dumps({"target": "test+Sink", "sizes": sizes, "timeout": 90})
            stalled = asyncio.ensure_future(
                shell.call("to_slow", "test.Source.Send", request.encode(), timeout=120)
            )
            try:
                await asyncio.sleep(4)  # the stream fills the links, rings and queues
                assert not stalled.done()
                sizes = [chunk_bytes] * fast_chunks
                request = json.dumps({"target": "test+Viewer", "sizes": sizes})
                started = time.monotonic()
                # ~1 s here; held up, it moves at the slow actor's pace (16 s same-node).
                answer = await shell.call(
                    "to_fast", "test.Source.Send", request.encode(), timeout=10
                )
                took = time.monotonic() - started
                print(f"{fast_chunks} chunks to node C beside the stalled stream: {took:.2f} s")
                sent = json.loads(answer)
                assert not stalled.done(), "the stream to node B was not stalled all along"
                for _ in range(100):
                    got = json.loads(await fast_shell.call("viewer", "test.Sink.Results", b""))
                    if len(got.get("s0", [])) == len(sent):
                        break
                    await asyncio.sleep(0.1)
                assert [(c["seq"], c["crc"]) for c in got["s0"]] == [
                    (c["seq"], c["crc"]) for c in sent
                ]
            finally:
                await slow_shell.call("sink", "test.Sink.Configure", b'{"delay_s": 0}')
                sent_slow = json.loads(await asyncio.wait_for(stalled, 60))
            assert all(chunk["ok"] for chunk in sent_slow)
            for _ in range(100):  # (Configure cleared what had arrived before it)
                got = json.loads(await slow_shell.call("sink", "test.Sink.Results", b""))
                if got.get("s0") and got["s0"][-1]["seq"] == slow_chunks - 1:
                    break
                await asyncio.sleep(0.1)
            crcs = [c["crc"] for c in got["s0"]]
            assert crcs == [c["crc"] for c in sent_slow[len(sent_slow) - len(crcs) :]]

    run(go(), 150)
