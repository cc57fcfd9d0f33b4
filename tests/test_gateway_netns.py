"""A link cut between two network namespaces standing in for two hosts.

Node A's gateway (and the signaling server) run in one namespace, node B's in another,
joined by a veth pair; the test's fake supervisors and workers stay in the root
namespace and reach the gateways over ipc sockets (paths in the file system cross
network namespaces). ``ip link set down`` cuts the link for a few seconds: pending
calls fail fast with 503, traffic resumes once the link is back, nothing restarts.
Skipped with the reason when not root or without ``ip netns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc")

from actrhost import NotFound, Unavailable
from actrhost.gateway._testing import (
    FAST_TUNING,
    PACKAGE_ROOT,
    HarnessNode,
    LoopRunner,
    start_nodes,
)

from .utils import wait_until

IP = shutil.which("ip")
ADDR_A, ADDR_B = "10.231.0.1", "10.231.0.2"
ADDR_A6, ADDR_B6 = "fd00:231::1", "fd00:231::2"  # the same veth, IPv6 (unique local)
CUT_S = 4.0


def _ip(*args: str) -> None:
    subprocess.run([str(IP), *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth pair; yields (ns A, ns B, veth in A)."""
    tag = os.urandom(3).hex()
    ns_a, ns_b, veth_a, veth_b = f"ahA{tag}", f"ahB{tag}", f"vA{tag}", f"vB{tag}"
    _first_namespace_or_skip(ns_a)
    try:
        _ip("netns", "add", ns_b)
        _ip(
            "link",
            "add",
            veth_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            veth_b,
            "netns",
            ns_b,
        )
        for ns, veth, addr, addr6 in (
            (ns_a, veth_a, ADDR_A, ADDR_A6),
            (ns_b, veth_b, ADDR_B, ADDR_B6),
        ):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", veth)
            # nodad: usable at once, not after duplicate address detection's second.
            _ip("-n", ns, "addr", "add", f"{addr6}/64", "dev", veth, "nodad")
            _ip("-n", ns, "link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield ns_a, ns_b, veth_a
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run([str(IP), "netns", "del", ns], capture_output=True, timeout=10)


def _first_namespace_or_skip(ns: str) -> None:
    """Create namespace ``ns``, or skip the test where namespaces cannot be made."""
    if IP is None:
        pytest.skip("iproute2's ip is not installed (.ci/install-system-deps installs it)")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.decode().strip()}")


@pytest.fixture
def routed_hosts() -> Iterator[tuple[str, str, str, str, str]]:
    """Namespaces A and B, each joined to a third one, a router, by a veth pair: A's
    link with an MTU of 1,500, B's with 1,280. Yields (ns A, ns B, A's address, B's,
    the router's ns)."""
    tag = os.urandom(3).hex()
    ns_a, ns_r, ns_b = f"ahA{tag}", f"ahR{tag}", f"ahB{tag}"
    addr_a, addr_b = "10.233.1.1", "10.233.2.1"
    _first_namespace_or_skip(ns_a)
    try:
        _ip("netns", "add", ns_r)
        _ip("netns", "add", ns_b)
        for ns in (ns_a, ns_r, ns_b):
            _ip("-n", ns, "link", "set", "lo", "up")
        for ns, host, router, subnet, mtu in (
            (ns_a, f"rA{tag}", f"rRa{tag}", "10.233.1", 1500),
            (ns_b, f"rB{tag}", f"rRb{tag}", "10.233.2", 1280),
        ):
            pair = ("type", "veth", "peer", "name", router, "netns", ns_r)
            _ip("link", "add", host, "netns", ns, *pair)
            _ip("-n", ns, "addr", "add", f"{subnet}.1/24", "dev", host)
            _ip("-n", ns_r, "addr", "add", f"{subnet}.2/24", "dev", router)
            _ip("-n", ns, "link", "set", host, "mtu", str(mtu), "up")
            _ip("-n", ns_r, "link", "set", router, "mtu", str(mtu), "up")
            _ip("-n", ns, "route", "add", "default", "via", f"{subnet}.2")
        forwarding = Path("/proc/sys/net/ipv4/ip_forward")
        _ip("netns", "exec", ns_r, "sh", "-c", f"echo 1 > {forwarding}")
        yield ns_a, ns_b, addr_a, addr_b, ns_r
    finally:
        for ns in (ns_a, ns_r, ns_b):
            subprocess.run([str(IP), "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def signaling_in(namespaces: tuple[str, str, str]) -> Iterator[str]:
    """A signaling server inside namespace A, on its veth address; yields its URL."""
    with signaling_server_in(namespaces[0], ADDR_A) as url:
        yield url


@contextlib.contextmanager
def signaling_server_in(ns: str, address: str) -> Iterator[str]:
    """A signaling server inside namespace ``ns`` on ``address``; yields its URL."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    command = [str(IP), "netns", "exec", ns, sys.executable, "-m", "actrhost.signaling"]
    proc = subprocess.Popen(
        [*command, "--listen", f"{address}:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else ""
    try:
        if "listening on " not in line:
            pytest.fail(f"signaling server in {ns} did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def own_address(extra: str = "") -> Callable[[str], str]:
    """``two_hosts``'s ``webrtc`` for nodes that offer their own veth address as their ICE
    host candidate, with ``extra`` [webrtc] keys."""

    def webrtc(address: str) -> str:
        return f'ice_host_addresses = ["{address}"]\n{extra}'

    return webrtc


@contextlib.contextmanager
def two_hosts(
    tmp_path: Path,
    namespaces: tuple[str, str, str],
    signaling_url: str,
    webrtc: Callable[[str], str] | None = None,
    log_level: str = "warning",
    tuning: dict[str, float] | None = None,
    addresses: tuple[str, str] = (ADDR_A, ADDR_B),
) -> Iterator[tuple[LoopRunner, HarnessNode, HarnessNode]]:
    """Node A (a client) in namespace A, node B (an echo) in namespace B, started; both
    stopped afterwards. ``webrtc(address)`` gives a node's [webrtc] table (default: the
    harness's, with ice_host_addresses = ["127.0.0.1"]); ``tuning``: the gateways'
    Tuning fields (default: the harness's FAST_TUNING); ``addresses``: A's and B's."""
    ns_a, ns_b, _veth_a = namespaces
    runner = LoopRunner()
    nodes = []
    for name, ns, address, actor in (
        ("a", ns_a, addresses[0], ("client", "t+C")),
        ("b", ns_b, addresses[1], ("echo", "t+E")),
    ):
        extra: dict[str, Any] = {} if webrtc is None else {"webrtc_toml": webrtc(address)}
        node = HarnessNode(
            tmp_path / name,
            signaling_url,
            [actor],
            netns=ns,
            log_level=log_level,
            tuning=tuning,
            **extra,
        )
        nodes.append(node)
    try:
        runner.run(start_nodes(*nodes))
        yield runner, nodes[0], nodes[1]
    finally:
        for node in nodes:
            runner.run(node.stop())
        runner.close()


@contextlib.contextmanager
def hosts_on_their_own_addresses(
    tmp_path: Path, ns_a: str, ns_b: str, addr_a: str, addr_b: str
) -> Iterator[tuple[LoopRunner, HarnessNode, HarnessNode]]:
    """``two_hosts`` in namespaces A and B that offer their own addresses (IPv4 or IPv6)
    as ICE host candidates, with a signaling server in A on A's address."""
    listen = f"[{addr_a}]" if ":" in addr_a else addr_a
    with signaling_server_in(ns_a, listen) as url:
        hosts = (ns_a, ns_b, "")
        addresses = (addr_a, addr_b)
        with two_hosts(tmp_path, hosts, url, own_address(), addresses=addresses) as started:
            yield started


def test_link_cut_fails_pending_calls_then_traffic_resumes(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    ns_a, _ns_b, veth_a = namespaces

    webrtc = own_address("connect_timeout_s = 4.0")

    tuning = {**FAST_TUNING, "reconnect_call_wait_s": 0.5}
    with two_hosts(tmp_path, namespaces, signaling_in, webrtc, tuning=tuning) as (runner, a, b):
        assert runner.run(a.call("client", b.ids["echo"], "echo", b"up")) == b"up"
        assert a.process is not None and b.process is not None
        pids = (a.process.pid, b.process.pid)

        async def scenario() -> tuple[float, float, float]:
            pending = asyncio.ensure_future(
                a.call("client", b.ids["echo"], "sleep", b"8000", timeout_s=30)
            )
            await asyncio.sleep(0.3)
            _ip("-n", ns_a, "link", "set", veth_a, "down")
            cut_at = time.monotonic()
            try:
                with pytest.raises(Unavailable):
                    await pending
                failed_after = time.monotonic() - cut_at
                # A call made while the link is down waits reconnect_call_wait_s for it,
                # not the reconnect attempt's connect timeout (4 s) or its own deadline.
                started = time.monotonic()
                with pytest.raises(Unavailable, match="reconnecting after its link failed"):
                    await a.call("client", b.ids["echo"], "echo", b"during", timeout_s=30)
                during_failed_after = time.monotonic() - started
                await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
            finally:
                _ip("-n", ns_a, "link", "set", veth_a, "up")
            restored_at = time.monotonic()
            while True:
                try:
                    assert (
                        await a.call("client", b.ids["echo"], "echo", b"back", timeout_s=5)
                        == b"back"
                    )
                    return failed_after, during_failed_after, time.monotonic() - restored_at
                except Unavailable:
                    if time.monotonic() - restored_at > 30:
                        raise
                    await asyncio.sleep(0.2)

        failed_after, during_failed_after, resumed_after = runner.run(scenario(), timeout_s=60)
        print(f"pending call failed {failed_after:.2f} s after the cut;", end=" ")
        print(f"traffic resumed {resumed_after:.2f} s after the link came back")
        assert failed_after < 4.0  # keepalive_timeout_s 1.5 s, not the call's 30 s deadline
        assert during_failed_after < 2.0
        assert (a.process.pid, b.process.pid) == pids
        assert a.process.poll() is None and b.process.poll() is None
        (remote,) = runner.run(a.stats())["remote_nodes"].values()
        assert remote["failures"] >= 1 and remote["state"] == "connected"
        assert remote["links_lost"] == 1  # the cut; the failed attempts during it are not
        assert remote["candidate_type"] == "host"


async def given_up(node: HarnessNode, timeout_s: float) -> None:
    """Until ``node`` has given up on every other node (its reconnect window ended)."""
    deadline = time.monotonic() + timeout_s
    while (await node.stats())["remote_nodes"]:
        assert time.monotonic() < deadline, f"{node!r} never gave the other node up"
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def quick_to_give_up(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str, connect_timeout_s: float
) -> Iterator[tuple[LoopRunner, HarnessNode, HarnessNode]]:
    """Two hosts whose gateways give each other up after 1 s of trying to reconnect (a
    call meanwhile waits 0.5 s), connected by a first call."""
    webrtc = own_address(f"connect_timeout_s = {connect_timeout_s}")
    tuning = {**FAST_TUNING, "reconnect_for_s": 1.0, "reconnect_call_wait_s": 0.5}
    with two_hosts(tmp_path, namespaces, signaling_in, webrtc, tuning=tuning) as (runner, a, b):
        assert runner.run(a.call("client", b.ids["echo"], "echo", b"up")) == b"up"
        yield runner, a, b


def test_a_cut_longer_than_the_reconnect_window_heals_through_signaling(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # A partition longer than the time a gateway tries to reconnect (reconnect_for_s,
    # 60 s by default; 1 s here): node A forgets node B, and node B is cut off from the
    # signaling server (in A's namespace) too. Once the link is back, a call to B's actor finds
    # its node anew through signaling and is answered; nothing restarted.
    ns_a, _ns_b, veth_a = namespaces
    with quick_to_give_up(tmp_path, namespaces, signaling_in, 2.0) as (runner, a, b):
        assert a.process is not None and b.process is not None
        pids = (a.process.pid, b.process.pid)

        async def scenario() -> float:
            _ip("-n", ns_a, "link", "set", veth_a, "down")
            try:
                await given_up(a, 20)
            finally:
                _ip("-n", ns_a, "link", "set", veth_a, "up")
            restored_at = time.monotonic()
            while True:
                try:
                    reply = await a.call("client", b.ids["echo"], "echo", b"back", timeout_s=5)
                    assert reply == b"back"
                    return time.monotonic() - restored_at
                except (Unavailable, NotFound):
                    # (B's gateway notices the cut later than A's and reconnects to
                    # signaling: a call meanwhile may find no node for the id.)
                    if time.monotonic() - restored_at > 30:
                        raise
                    await asyncio.sleep(0.2)

        resumed_after = runner.run(scenario(), timeout_s=60)
        print(f"answered {resumed_after:.2f} s after the link came back")
        assert (a.process.pid, b.process.pid) == pids
        assert a.process.poll() is None and b.process.poll() is None
        (remote,) = runner.run(a.stats())["remote_nodes"].values()
        assert remote["state"] == "connected"
        assert "gave up reconnecting" in a.log_text()


def test_a_call_to_a_node_given_up_on_and_found_again_waits_only_the_call_wait(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # UDP between the hosts is cut, signaling (TCP) is not: node A gives B up after its
    # reconnect window, then finds it again through signaling for the next call, whose
    # attempt cannot connect. The call waited for the whole attempt (connect_timeout_s,
    # 10 s by default: QA saw 7.6 s); it fails after reconnect_call_wait_s, as calls
    # made while reconnecting do.
    ns_a, _ns_b, _veth_a = namespaces
    with quick_to_give_up(tmp_path, namespaces, signaling_in, 4.0) as (runner, a, b):
        _nft(
            ns_a,
            "add table inet cut",
            "add chain inet cut out { type filter hook output priority 0 ; }",
            "add rule inet cut out meta l4proto udp drop",
        )
        try:

            async def given_up_then_called() -> float:
                await given_up(a, 30)
                started = time.monotonic()
                with pytest.raises(Unavailable, match=r"given up on\): no connection within"):
                    await a.call("client", b.ids["echo"], "echo", b"again", timeout_s=10)
                return time.monotonic() - started

            assert runner.run(given_up_then_called(), timeout_s=60) < 2.5
        finally:
            _nft(ns_a, "delete table inet cut")


def test_without_ice_host_addresses_a_gateway_offers_the_address_that_reaches_signaling(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    def webrtc(_address: str) -> str:
        return "connect_timeout_s = 4.0"  # no ice_host_addresses: as most configs

    with two_hosts(tmp_path, namespaces, signaling_in, webrtc, "info") as (runner, a, b):
        assert runner.run(a.call("client", b.ids["echo"], "echo", b"hi")) == b"hi"
        assert f"ICE host address {ADDR_A}, the one that reaches signaling" in a.log_text()
        assert f"ICE host address {ADDR_B}, the one that reaches signaling" in b.log_text()
        (remote,) = runner.run(a.stats())["remote_nodes"].values()
        assert remote["candidate_type"] == "host"
        # Another host joined directly (a veth, MTU 1,500): packets of 16 KiB once the
        # probe came back, in IP fragments (_sctp_path).
        assert remote["name"]
        probed = "SCTP packets of 16384 bytes (a probe came back)"
        wait_until(lambda: probed in a.log_text(), 10, "the probe's answer")


@pytest.mark.parametrize("large_packets", [True, False])
def test_a_stream_between_two_hosts_goes_in_large_packets_cut_into_ip_fragments(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str, large_packets: bool
) -> None:
    # Two hosts joined directly: 16 KiB packets, more than the veth's MTU of 1,500, go as
    # IP fragments once a probe came back (_sctp_path); `large_packets = false` keeps
    # aiortc's 1,189 bytes. Either way the stream arrives whole and in order.
    webrtc = own_address(f"large_packets = {str(large_packets).lower()}")
    with two_hosts(tmp_path, namespaces, signaling_in, webrtc) as (runner, a, b):
        stream_arrives_whole(runner, a, b, 16384 if large_packets else 1189)


def test_large_packets_go_in_ipv6_fragments_too(
    tmp_path: Path, namespaces: tuple[str, str, str]
) -> None:
    # The same between two hosts that reach each other over IPv6 (signaling too): only
    # the sender cuts IPv6 packets (a fragment header, no router on the way may), and
    # aiortc's 1,189 bytes are sized for IPv6's minimum MTU; 16 KiB once probed.
    hosts = (namespaces[0], namespaces[1], ADDR_A6, ADDR_B6)
    with hosts_on_their_own_addresses(tmp_path, *hosts) as (runner, a, b):
        stream_arrives_whole(runner, a, b, 16384)


def test_large_packets_cross_a_router_to_a_smaller_mtu(
    tmp_path: Path, routed_hosts: tuple[str, str, str, str, str]
) -> None:
    # A router between the two hosts, whose link to B has an MTU of 1,280 (the IPv6
    # minimum) while A's is 1,500: A's fragments are too large for the second link. The
    # router fragments them again, or drops them and tells A (ICMP "fragmentation
    # needed") so that A's kernel cuts smaller from then on; either way they arrive.
    with hosts_on_their_own_addresses(tmp_path, *routed_hosts[:4]) as (runner, a, b):
        stream_arrives_whole(runner, a, b, 16384)


def test_a_router_that_drops_ip_fragments_leaves_the_link_at_aiortcs_size(
    tmp_path: Path, routed_hosts: tuple[str, str, str, str, str]
) -> None:
    # A firewall on the way that drops IP fragments (any but the first, as many do):
    # the large probes never come back, the small ones do, and the link keeps aiortc's
    # 1,189-byte packets, which need no fragments; what it carries arrives whole.
    _drop_ip_fragments_in(routed_hosts[4])
    with hosts_on_their_own_addresses(tmp_path, *routed_hosts[:4]) as (runner, a, b):
        echo = b.ids["echo"]
        assert runner.run(a.call("client", echo, "echo", b"up", timeout_s=10)) == b"up"

        async def probe_finding() -> str | None:
            (remote,) = (await a.stats())["remote_nodes"].values()
            return remote["connection"]["sctp_packets_why"]  # type: ignore[no-any-return]

        async def wait_for_the_probes() -> str | None:
            # Three probes, a second each, once the other gateway's hello came.
            deadline = time.monotonic() + 15
            while (found := await probe_finding()) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return found

        assert runner.run(wait_for_the_probes(), timeout_s=20) == "no answer to a probe"
        stream_arrives_whole(runner, a, b, 1189)


def _drop_ip_fragments_in(ns: str) -> None:
    """Make namespace ``ns`` (a router) drop the IP fragments it forwards, all but each
    datagram's first (skips the test without nftables' ``nft``)."""
    _nft(
        ns,
        "add table ip firewall",
        "add chain ip firewall forwarded { type filter hook forward priority 0 ; }",
        "add rule ip firewall forwarded ip frag-off & 0x1fff != 0 drop",
    )


def _nft(ns: str, *rules: str) -> None:
    """Run nftables ``rules`` in namespace ``ns`` (skips the test without ``nft``)."""
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nftables' nft is not installed (.ci/install-system-deps installs it)")
    for rule in rules:
        subprocess.run(
            [str(IP), "netns", "exec", ns, nft, *rule.split()],
            check=True,
            capture_output=True,
            timeout=10,
        )


def stream_arrives_whole(runner: LoopRunner, a: HarnessNode, b: HarnessNode, size: int) -> None:
    """Once A's link sends SCTP packets of ``size`` bytes (within 10 s), a 16 MiB stream
    from A's client to B's echo arrives whole and in order, the link at that size still."""
    echo = b.ids["echo"]
    assert runner.run(a.call("client", echo, "echo", b"up", timeout_s=10)) == b"up"

    async def packet_bytes() -> int:
        (remote,) = (await a.stats())["remote_nodes"].values()
        return int(remote["connection"]["sctp_packet_bytes"])

    async def scenario() -> list[tuple[int, bytes]]:
        deadline = time.monotonic() + 10
        while await packet_bytes() != size and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for sequence in range(256):  # 16 MiB
            await a.send_chunk("client", echo, "s", sequence, _payload(sequence))
        received = b.workers["echo"].received.chunks
        await b.wait_for(lambda: len(received["s"]) >= 256, 60, "the stream")
        return received["s"]

    got = runner.run(scenario(), timeout_s=90)
    assert [sequence for sequence, _ in got] == list(range(256))
    assert all(payload == _payload(sequence) for sequence, payload in got)
    assert runner.run(packet_bytes()) == size


def _payload(sequence: int) -> bytes:
    return hashlib.sha256(b"%d" % sequence).digest() * 2048  # 64 KiB


def test_a_stream_in_large_packets_survives_a_short_cut(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # Chunks cut for 16 KiB packets cannot be cut again: those in flight when the link
    # goes down for 2 s (less than the keepalive timeout) are sent again as they are, in
    # fragments, once it is back, while the link falls back to small packets for what it
    # cuts next (the cut's timeouts count as losses). The stream arrives whole.
    ns_a, _ns_b, veth_a = namespaces
    tuning = dict(FAST_TUNING, keepalive_timeout_s=10.0)
    with two_hosts(tmp_path, namespaces, signaling_in, own_address(), tuning=tuning) as (
        runner,
        a,
        b,
    ):
        echo = b.ids["echo"]
        assert runner.run(a.call("client", echo, "echo", b"up")) == b"up"
        count = 512  # 32 MiB
        received = b.workers["echo"].received.chunks

        async def scenario() -> None:
            while (await a.stats())["remote_nodes"][b.node_id]["connection"][
                "sctp_packet_bytes"
            ] != 16384:
                await asyncio.sleep(0.05)

            async def send() -> None:
                for sequence in range(count):
                    await a.send_chunk("client", echo, "s", sequence, _payload(sequence))

            sending = asyncio.ensure_future(send())
            while len(received["s"]) < 32:
                await asyncio.sleep(0.005)
            _ip("-n", ns_a, "link", "set", veth_a, "down")
            try:
                assert len(received["s"]) < count - 64, "the stream was over: tests nothing"
                await asyncio.sleep(2.0)
            finally:
                _ip("-n", ns_a, "link", "set", veth_a, "up")
            await sending
            await b.wait_for(lambda: len(received["s"]) >= count, 60, "the stream")

        runner.run(scenario(), timeout_s=90)
        got = received["s"]
        assert [sequence for sequence, _ in got] == list(range(count))
        assert all(payload == _payload(sequence) for sequence, payload in got)
        (remote,) = runner.run(a.stats())["remote_nodes"].values()
        print(
            "after the cut:",
            remote["connection"]["sctp_packet_bytes"],
            remote["connection"]["sctp"],
        )
        assert remote["failures"] == 0 and remote["state"] == "connected"


def test_two_hosts_left_on_loopback_addresses_are_told_to_set_ice_host_addresses(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # The harness's [webrtc]: ice_host_addresses = ["127.0.0.1"], what a config for one
    # machine says. Signaling works across the veth pair; ICE cannot.
    with two_hosts(tmp_path, namespaces, signaling_in) as (runner, a, b):
        with pytest.raises(Unavailable, match=r"set \[webrtc\] ice_host_addresses"):
            runner.run(a.call("client", b.ids["echo"], "echo", b"hi", timeout_s=20), timeout_s=30)


def test_two_hosts_whose_addresses_do_not_reach_each_other_are_told_what_was_offered(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # A offers its veth address, B its loopback one: not "both on loopback", and no path.
    # The call failed with "no connection within 4 s" alone (QA).
    def webrtc(address: str) -> str:
        offered = address if address == ADDR_A else "127.0.0.1"
        return f'ice_host_addresses = ["{offered}"]\nconnect_timeout_s = 4.0'

    with two_hosts(tmp_path, namespaces, signaling_in, webrtc) as (runner, a, b):
        with pytest.raises(Unavailable) as info:
            runner.run(a.call("client", b.ids["echo"], "echo", b"hi", timeout_s=20), timeout_s=30)
    message = info.value.message
    assert "ICE found no path between our candidates " in message, message
    assert f"{ADDR_A} (host)" in message and "127.0.0.1 (host)" in message, message
    assert "set [webrtc] ice_host_addresses" in message, message


def test_traffic_resumes_at_once_when_a_short_cut_ends(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # A cut shorter than the keepalive timeout fails nothing; what was sent meanwhile
    # waited for SCTP's retransmission timer (1 s, at least) after the link came back,
    # so calls with short deadlines failed with 504 for up to a second more.
    ns_a, _ns_b, veth_a = namespaces
    tuning = dict(FAST_TUNING, keepalive_timeout_s=10.0)

    webrtc = own_address()

    with two_hosts(tmp_path, namespaces, signaling_in, webrtc, tuning=tuning) as (runner, a, b):
        assert runner.run(a.call("client", b.ids["echo"], "echo", b"up")) == b"up"

        async def scenario() -> list[float]:
            delays = []
            for cut_s in (1.3, 1.7, 2.1):
                _ip("-n", ns_a, "link", "set", veth_a, "down")
                try:
                    await asyncio.sleep(0.1)
                    sent = a.call("client", b.ids["echo"], "echo", b"in the cut", timeout_s=10)
                    pending = asyncio.ensure_future(sent)
                    await asyncio.sleep(cut_s)
                finally:
                    _ip("-n", ns_a, "link", "set", veth_a, "up")
                restored_at = time.monotonic()
                assert await pending == b"in the cut"
                delays.append(time.monotonic() - restored_at)
            return delays

        delays = runner.run(scenario(), timeout_s=60)
        (remote,) = runner.run(a.stats())["remote_nodes"].values()
        (remote_of_b,) = runner.run(b.stats())["remote_nodes"].values()
        sctp = [r["connection"]["sctp"] for r in (remote, remote_of_b)]
        print("answers came", ", ".join(f"{d:.2f}" for d in delays), "s after the link;", sctp)
        assert max(delays) < 0.5, (delays, sctp)  # with how each side recovered
        assert sctp[0]["stall_probes"] >= 3, sctp  # (what was lost may also come back by
        # a fast retransmit: a keepalive sent after the cut makes the gap known)
        assert remote["failures"] == 0 and remote["state"] == "connected"


def test_a_call_beside_a_stream_on_a_slow_link_waits_for_little_of_it(
    tmp_path: Path, namespaces: tuple[str, str, str], signaling_in: str
) -> None:
    # The kernel's token bucket makes the veth pair a 1 Mbit/s link with a 0.2 s queue
    # each way. aiortc's send FIFO held 256 KiB of stream ahead of every call: 2.1 s on
    # this link. It now holds ≈ 50 ms of what the link takes (gateway/_pacing.py).
    ns_a, ns_b, veth_a = namespaces
    veth_b = "vB" + veth_a[2:]
    for ns, veth in ((ns_a, veth_a), (ns_b, veth_b)):
        tbf = ["rate", "1mbit", "burst", "16kbit", "latency", "200ms"]
        _ip_tc("-n", ns, "qdisc", "add", "dev", veth, "root", "tbf", *tbf)

    webrtc = own_address()

    tuning = dict(FAST_TUNING, keepalive_timeout_s=5.0)
    with two_hosts(tmp_path, namespaces, signaling_in, webrtc, tuning=tuning) as (runner, a, b):
        echo = b.ids["echo"]
        assert runner.run(a.call("client", echo, "echo", b"up")) == b"up"

        async def stream() -> None:
            for sequence in range(64):
                await a.send_chunk("client", echo, "s", sequence, bytes([sequence]) * 65536)

        async def scenario() -> list[float]:
            streaming = asyncio.ensure_future(stream())
            try:
                delays = []
                for n in range(4):
                    await asyncio.sleep(0.7)  # the stream fills the link meanwhile
                    started = time.monotonic()
                    said = b"call %d" % n
                    assert await a.call("client", echo, "echo", said, timeout_s=10) == said
                    delays.append(time.monotonic() - started)
                return delays
            finally:
                streaming.cancel()

        delays = runner.run(scenario(), timeout_s=60)
        print("calls beside the stream took", ", ".join(f"{d:.2f}" for d in delays), "s")
        # Two hosts joined directly, but a slow link: aiortc's packets (_sctp_path). With
        # 16 KiB ones (131 ms each here, their fragments overflowing the queue) the first
        # call took 1.6 s once (session 47).
        (remote,) = runner.run(a.stats())["remote_nodes"].values()
        connection = remote["connection"]
        assert connection["sctp_packet_bytes"] == 1189, connection
        assert max(delays) < 1.5, (delays, connection)
        chunks = b.workers["echo"].received.chunks
        (got,) = chunks.values()
        assert len(got) >= 4 and [seq for seq, _ in got] == list(range(len(got)))


def _ip_tc(*args: str) -> None:
    tc = shutil.which("tc")
    if tc is None:
        pytest.skip("iproute2's tc is not installed")
    result = subprocess.run([tc, *args], capture_output=True, timeout=10)
    if result.returncode != 0:
        pytest.skip(f"tc cannot shape the link here: {result.stderr.decode().strip()}")
