"""``[webrtc] force_relay``: two gateways that may only use TURN relay candidates, through a
real coturn the test starts on loopback (skipped with the reason when coturn is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aiortc")

from actrhost import Unavailable
from actrhost._config import TurnServer, WebrtcConfig
from actrhost.gateway._ice import TURN_CHECK_S, what_the_turn_server_says
from actrhost.gateway._testing import FAST_TUNING, HarnessNode, LoopRunner, start_nodes
from actrhost.signaling._testing import ServerProcess, pick_port

TURNSERVER = shutil.which("turnserver")
pytestmark = pytest.mark.skipif(
    TURNSERVER is None,
    reason="coturn's turnserver is not installed (.ci/install-system-deps installs it)",
)


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """coturn on 127.0.0.1 with one long-term user; yields (port, log file)."""
    port = pick_port()
    while not _udp_port_free(port):
        port = pick_port()
    relay_min = 40000 + (port % 200) * 100  # a small private range per test run
    log = tmp_path / "turn.log"
    proc = subprocess.Popen(
        [
            str(TURNSERVER),
            "-n",  # no config file
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={relay_min}",
            f"--max-port={relay_min + 99}",
            "--lt-cred-mech",
            "--user=actr:relaypass",
            "--realm=actrhost.test",
            "--fingerprint",
            "--allow-loopback-peers",
            "--verbose",  # the peers are on 127.0.0.1 here
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-stdout-log",
            "--simple-log",
            f"--log-file={log}",
            f"--userdb={tmp_path / 'turndb'}",
            f"--pidfile={tmp_path / 'turn.pid'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while _udp_port_free(port):  # bound once it listens
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"turnserver did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def relayed_pair(
    tmp_path: Path, port: int, credential: str, connect_timeout_s: float
) -> Iterator[tuple[LoopRunner, HarnessNode, HarnessNode]]:
    """Node A (a client) and node B (an echo), started, that may only use relay
    candidates of the TURN server on ``port``, with ``credential``; stopped after."""
    webrtc = (
        f'turn_urls = [{{ url = "turn:127.0.0.1:{port}?transport=udp", username = "actr", '
        f'credential = "{credential}" }}]\n'
        'force_relay = true\nice_host_addresses = ["127.0.0.1"]\n'
        f"connect_timeout_s = {connect_timeout_s}"
    )
    runner = LoopRunner()
    with ServerProcess() as server:
        tuning = {**FAST_TUNING, "connect_timeout_s": connect_timeout_s}
        a = HarnessNode(
            tmp_path / "a", server.url, [("client", "t+C")], webrtc_toml=webrtc, tuning=tuning
        )
        b = HarnessNode(
            tmp_path / "b", server.url, [("echo", "t+E")], webrtc_toml=webrtc, tuning=tuning
        )
        try:
            runner.run(start_nodes(a, b))
            yield runner, a, b
        finally:
            runner.run(a.stop())
            runner.run(b.stop())
            runner.close()


def test_force_relay_goes_through_turn(tmp_path: Path, turn: tuple[int, Path]) -> None:
    port, turn_log = turn
    with relayed_pair(tmp_path, port, "relaypass", 8.0) as (runner, a, b):
        assert runner.run(a.call("client", b.ids["echo"], "echo", b"relayed")) == b"relayed"
        big = bytes(300_000)
        assert runner.run(a.call("client", b.ids["echo"], "echo", big)) == big
        for node in (a, b):
            (remote,) = runner.run(node.stats())["remote_nodes"].values()
            assert remote["candidate_type"] == "relay", remote
            # Its hello came (the name), yet a relay is a path through a server: aiortc's
            # packet size (_sctp_packets).
            assert remote["name"] and remote["connection"]["sctp_packet_bytes"] == 1189
    log = turn_log.read_text(errors="replace")
    # Both gateways allocated a relay and bound a channel to the other's relay address.
    assert log.count("ALLOCATE processed, success") >= 2, log[-2000:]
    assert "CHANNEL_BIND processed, success" in log or "CREATE_PERMISSION processed" in log


def test_a_refused_turn_credential_is_named(tmp_path: Path, turn: tuple[int, Path]) -> None:
    # It said to set ice_host_addresses, which force_relay does not use (QA).
    port, _turn_log = turn
    with relayed_pair(tmp_path, port, "wrong", 4.0) as (runner, a, b):
        with pytest.raises(Unavailable) as info:
            runner.run(a.call("client", b.ids["echo"], "echo", b"relayed", timeout_s=10))
        # The node that was to offer says why (the other waited for its offer).
        errors = [info.value.message]
        for node in (a, b):
            for remote in runner.run(node.stats())["remote_nodes"].values():
                errors.append(remote.get("connection", {}).get("error", ""))
        assert any("turn_username and turn_credential" in e for e in errors), errors
        # What the server said: it asked whether the server was reachable (QA).
        refused = "no relay candidate from the TURN server (force_relay): it refused the "
        assert any(refused + "allocation (401 " in e for e in errors), errors


def test_what_the_turn_server_says_of_an_allocation(turn: tuple[int, Path]) -> None:
    # aioice drops why it got no relay candidate; the gateway asks the server itself when
    # force_relay left it none (a refused credential read as an unreachable server, QA).
    port, _turn_log = turn
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        silent_port = probe.getsockname()[1]  # nothing listens there once it is closed

    def said(server_port: int, credential: str) -> str:
        url = f"turn:127.0.0.1:{server_port}?transport=udp"
        webrtc = WebrtcConfig(turn_servers=(TurnServer(url, "actr", credential),))
        return asyncio.run(what_the_turn_server_says(webrtc))

    assert said(port, "relaypass") == ""
    assert said(port, "wrong") == "it refused the allocation (401 Unauthorized)"
    assert said(silent_port, "any") == f"it did not answer within {TURN_CHECK_S:g} s"
