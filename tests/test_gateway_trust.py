"""Who a frame from another node may claim to come from (docs/gateway.md, Trust).

Real gateways and a real signaling server. One connection carries every actor pair of two
nodes, so the source id on a frame is the sending node's word: the receiving gateway takes
it only for actors that node introduced through signaling (a relay the server
authenticated), asks for the introduction of any other, and refuses what stays
unintroduced. A frame without a source (a Shell on that node) passes only ACL rules
without ``types``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from actrhost import PermissionDenied, Unavailable
from actrhost._ids import ActrId, ActrType, Realm
from actrhost.gateway._identity import create_identity, load_identity
from actrhost.gateway._testing import HarnessNode, LoopRunner, start_nodes
from actrhost.gateway._trust import INTRODUCE_WAIT_S
from actrhost.signaling import SdpAnswer, SdpOffer, SignalingClient
from actrhost.signaling._testing import ServerProcess

VAULT_ACL = '[[actor.acl]]\npermission = "allow"\ntypes = ["t+Client"]\n'
NO_CLIENTS_ACL = (
    '[[actor.acl]]\npermission = "deny"\ntypes = ["t+Client"]\n'
    '[[actor.acl]]\npermission = "allow"\n'
)
NOBODY_ACL = '[[actor.acl]]\npermission = "allow"\ntypes = ["t+Nobody"]\n'


class Nodes:
    """Node A (client, client2, other), node B (echo; vault for clients only; picky for
    all but clients; safe for nobody of ours), node C (friend)."""

    def __init__(self, runner: LoopRunner, a: HarnessNode, b: HarnessNode, c: HarnessNode):
        self.runner = runner
        self.a = a
        self.b = b
        self.c = c


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    folder: Path = tmp_path_factory.mktemp("gw-trust")
    runner = LoopRunner()
    with ServerProcess() as server:
        a_actors = [("client", "t+Client"), ("client2", "t+Client"), ("other", "t+Other")]
        a = HarnessNode(folder / "a", server.url, a_actors)
        b_actors = [
            ("echo", "t+Echo"),
            ("vault", "t+Vault", VAULT_ACL),
            ("picky", "t+Picky", NO_CLIENTS_ACL),
            ("safe", "t+Safe", NOBODY_ACL),
        ]
        b = HarnessNode(folder / "b", server.url, b_actors)
        c = HarnessNode(folder / "c", server.url, [("friend", "t+Friend")])
        runner.run(start_nodes(a, b, c))
        try:
            yield Nodes(runner, a, b, c)
        finally:
            for node in (a, b, c):
                runner.run(node.stop())
            runner.close()


def test_another_actor_of_a_connected_node_is_introduced_on_its_first_frame(nodes: Nodes) -> None:
    a, b, run = nodes.a, nodes.b, nodes.runner.run
    assert run(a.call("client", b.ids["echo"], "echo", b"first")) == b"first"
    # client2 never relayed to node B: its first call waits for node A to introduce it.
    assert run(a.call("client2", b.ids["echo"], "echo", b"second")) == b"second"
    run(a.tell("client2", b.ids["echo"], "note", b"from client2"))
    run(b.workers["echo"].received.event.wait())
    assert ("note", b"from client2", a.ids["client2"]) in b.workers["echo"].received.tells
    assert run(b.stats())["unintroduced_sources"] == 0


def test_a_node_cannot_speak_for_actors_it_does_not_host(nodes: Nodes) -> None:
    a, b, c, run = nodes.a, nodes.b, nodes.c, nodes.runner.run
    assert run(a.call("client", b.ids["echo"], "echo", b"link up")) == b"link up"
    refused_before = run(b.stats())["unintroduced_sources"]
    made_up = ActrId(Realm(1), 0xDEAD, ActrType("t", "Client"))

    async def forged_calls() -> list[BaseException | bytes]:
        calls = [
            a.call("client", b.ids["echo"], "echo", b"as C's friend", source=c.ids["friend"]),
            a.call("client", b.ids["echo"], "echo", b"as B's own echo", source=b.ids["echo"]),
            a.call("client", b.ids["echo"], "echo", b"as nobody", source=made_up),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    started = time.monotonic()
    results = run(forged_calls())
    for result in results:
        assert isinstance(result, PermissionDenied), result
        assert "did not introduce" in result.message
    # Refused once node A had its chance to introduce them, not at the calls' deadlines.
    assert time.monotonic() - started < INTRODUCE_WAIT_S + 3
    run(a.tell("client", b.ids["echo"], "note", b"forged", source=c.ids["friend"]))
    assert run(b.stats())["unintroduced_sources"] >= refused_before + 3
    sources = {source for _route, _payload, source in b.workers["echo"].received.tells}
    assert c.ids["friend"] not in sources and made_up not in sources
    # The link and the honest actors are unaffected.
    assert run(a.call("client", b.ids["echo"], "echo", b"still fine")) == b"still fine"


def test_a_shell_on_another_node_meets_only_acl_rules_without_types(nodes: Nodes) -> None:
    a, b, run = nodes.a, nodes.b, nodes.runner.run
    # A client may call the vault, so node A knows where it is.
    assert run(a.call("client", b.ids["vault"], "echo", b"client")) == b"client"
    # The same node's Shell (no actor id) may not: the vault admits clients only.
    with pytest.raises(PermissionDenied, match="without an actor id"):
        run(a.call("client", b.ids["vault"], "echo", b"shell", source=None))
    run(a.tell("client", b.ids["vault"], "note", b"shell", source=None))
    run(a.tell("client", b.ids["vault"], "note", b"client"))
    vault = b.workers["vault"].received

    async def wait_for_note() -> None:
        while not vault.tells:
            vault.event.clear()
            await vault.event.wait()

    run(wait_for_note())
    assert vault.tells == [("note", b"client", a.ids["client"])]
    # An actor without ACL rules takes calls from anyone, a Shell's too.
    assert run(a.call("client", b.ids["echo"], "echo", b"shell", source=None)) == b"shell"


def test_a_shell_locates_through_any_actor_type_its_target_admits(nodes: Nodes) -> None:
    a, b, run = nodes.a, nodes.b, nodes.runner.run
    # Node A's first actor (a client) may not relay to picky, its "other" may: the Shell's
    # call is located through that one, then judged on its own (no types: admitted).
    assert run(a.call("client", b.ids["picky"], "echo", b"shell", source=None)) == b"shell"
    # No actor type of node A is admitted by safe: neither is the Shell, said plainly.
    with pytest.raises(PermissionDenied, match="admits none of this node's actors"):
        run(a.call("client", b.ids["safe"], "echo", b"shell", source=None))


def test_a_claim_the_acl_refuses_anyway_is_refused_at_once(nodes: Nodes) -> None:
    a, b, c, run = nodes.a, nodes.b, nodes.c, nodes.runner.run
    assert run(a.call("client", b.ids["vault"], "echo", b"client")) == b"client"
    # The vault admits clients only: a frame claiming to come from C's friend is refused
    # for what it claims, without waiting for an introduction that could not help.
    started = time.monotonic()
    with pytest.raises(PermissionDenied, match=r"t\+Friend may not call"):
        run(a.call("client", b.ids["vault"], "echo", b"x", source=c.ids["friend"]))
    assert time.monotonic() - started < INTRODUCE_WAIT_S / 2


def test_an_introduction_is_relayed_only_to_an_actor_of_the_asking_node() -> None:
    """The guard itself, without processes: a node may not use 'introduce' to make us
    relay (and maybe connect) to an actor on some other node."""
    from types import SimpleNamespace

    from actrhost.gateway._trust import Trust
    from actrhost.gateway._types import LinkCounters

    ours = ActrId(Realm(1), 1, ActrType("t", "Client"))
    theirs = ActrId(Realm(1), 2, ActrType("t", "Echo"))
    elsewhere = ActrId(Realm(1), 3, ActrType("t", "Echo"))
    spawned: list[object] = []

    class Gateway(Trust):
        def __init__(self) -> None:
            self._regs = {ours: object()}
            self._node_of = {theirs: "node-b", elsewhere: "node-c"}
            self._introducing = set()
            self._spawn = spawned.append
            self.node_id = "node-a"

    gateway = Gateway()
    pc = SimpleNamespace(remote_node="node-b", counters=LinkCounters())
    gateway._introduce(pc, {"op": "introduce", "source": str(ours), "target": str(elsewhere)})
    assert spawned == [] and pc.counters.malformed == 1
    gateway._introduce(pc, {"op": "introduce", "source": str(ours), "target": str(theirs)})
    assert len(spawned) == 1
    spawned[0].close()  # the relay coroutine, not run here
    # Malformed requests are counted and change nothing.
    for bad in ({"op": "introduce"}, {"op": "introduce", "source": 7, "target": [1]}):
        gateway._introduce(pc, bad)
    assert len(spawned) == 1 and pc.counters.malformed == 3


def test_an_offer_in_another_nodes_name_is_refused(nodes: Nodes, tmp_path: Path) -> None:
    """An actor of the realm relays an SDP offer that names node A as its sender: node B
    must not take it for node A starting over (drop the real link, connect to the
    impostor), because the offer does not carry node A's certificate."""
    a, b, run = nodes.a, nodes.b, nodes.runner.run
    assert run(a.call("client", b.ids["echo"], "echo", b"link up")) == b"link up"
    before = run(b.stats())
    connects = before["remote_nodes"][a.node_id]["connects"]
    # The impostor's certificate, in an SDP as aiortc writes one (offer and answer).
    create_identity(tmp_path / "mallory.pem")
    _key, cert = load_identity(tmp_path / "mallory.pem")
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=application 9 DTLS/SCTP 5000\r\nc=IN IP4 127.0.0.1\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\n"
    )

    async def forge() -> None:
        async with SignalingClient(a.signaling_url) as client:
            mallory = await client.register("t+Mallory", 1)
            await mallory.relay(
                b.ids["echo"], SdpOffer(sdp), session_id=f"pc|{a.node_id}|{b.node_id}|f00d"
            )
            await mallory.relay(  # an answer to an offer of B's it never saw
                b.ids["echo"], SdpAnswer(sdp), session_id=f"pc|{b.node_id}|{a.node_id}|f00d"
            )

    async def refused() -> dict:
        deadline = time.monotonic() + 10
        while (stats := await b.stats())["unproven_sdp"] < before["unproven_sdp"] + 2:
            assert time.monotonic() < deadline, "the forged offer and answer were not refused"
            await asyncio.sleep(0.05)
        return stats

    run(forge())
    after = run(refused())
    assert after["remote_nodes"][a.node_id]["state"] == "connected"
    assert after["remote_nodes"][a.node_id]["connects"] == connects  # the real link stayed
    assert "is not that node's" in b.log_text()
    assert run(a.call("client", b.ids["echo"], "echo", b"still A")) == b"still A"


@pytest.mark.parametrize("first", ["guarded", "shell"])
def test_first_contact_from_an_actor_whose_acl_refuses_the_other_node_connects(
    tmp_path: Path, first: str
) -> None:
    # QA, 2026-12-03: node A's first traffic to a fresh node B came from an actor whose
    # ACL admits only t+Nobody (it may still call out, as locally), or from a Shell that
    # located through it: B's answer to the locate, a relay back to that actor, was
    # refused, and the call failed after 10 s ("did not answer"). A now locates and
    # negotiates through one of its actors that B's actors may relay to.
    runner = LoopRunner()
    with ServerProcess() as server:
        # The guarded actor last: a Shell's locate tries the last-registered types first.
        a = HarnessNode(
            tmp_path / "a", server.url, [("plain", "t+Plain"), ("guarded", "t+Guard", NOBODY_ACL)]
        )
        b = HarnessNode(tmp_path / "b", server.url, [("echo", "t+Echo")], log_level="info")
        try:
            runner.run(start_nodes(a, b))
            source = None if first == "shell" else a.ids["guarded"]
            started = time.monotonic()
            answer = runner.run(
                a.call("guarded", b.ids["echo"], "echo", b"hi", timeout_s=8, source=source)
            )
            assert answer == b"hi" and time.monotonic() - started < 5
            received = b.workers["echo"].received
            runner.run(a.tell("guarded", b.ids["echo"], "note", b"and a tell"))
            runner.run(b.wait_for(lambda: received.tells, 5, "the tell"))
            # The guarded actor's introduction (it sent frames, another actor located B)
            # is not answered like a locate: that answer, a relay back to it, was refused.
            assert "relay to" not in b.log_text(), b.log_text()
        finally:
            for node in (a, b):
                runner.run(node.stop())
            runner.close()


def test_a_locate_the_callers_acl_and_the_targets_both_refuse_says_so(tmp_path: Path) -> None:
    # B's actor admits only t+Guard; t+Guard's own ACL admits only t+Nobody, so B cannot
    # answer it, and A's other actor is not admitted by B. The error used to read
    # "t+Plain may not call …", about an actor the caller had nothing to do with.
    runner = LoopRunner()
    only_guards = '[[actor.acl]]\npermission = "allow"\ntypes = ["t+Guard"]\n'
    with ServerProcess() as server:
        a = HarnessNode(
            tmp_path / "a", server.url, [("plain", "t+Plain"), ("guarded", "t+Guard", NOBODY_ACL)]
        )
        b = HarnessNode(tmp_path / "b", server.url, [("keep", "t+Keep", only_guards)])
        try:
            runner.run(start_nodes(a, b))
            with pytest.raises(PermissionDenied) as info:
                runner.run(a.call("guarded", b.ids["keep"], "echo", b"hi", timeout_s=5))
            assert info.value.message.startswith(
                f"{b.ids['keep']} cannot be located for t+Guard: its ACL does not admit t+Keep"
            )
        finally:
            for node in (a, b):
                runner.run(node.stop())
            runner.close()


def test_calls_to_a_node_whose_acl_now_refuses_the_link_fail_with_403(tmp_path: Path) -> None:
    # Node B's only actor stops admitting A's client (its ACL tightened, B's gateway
    # restarted): signaling refuses every relay that would make a new link, and calls
    # waiting for one got 503 "connection lost" for the 60 s of reconnect attempts, which
    # tells a caller to retry (QA). They get the 403 the link's refusal is.
    runner = LoopRunner()
    with ServerProcess() as server:
        a = HarnessNode(tmp_path / "a", server.url, [("client", "t+Client")])
        b = HarnessNode(tmp_path / "b", server.url, [("echo", "t+Echo")])
        try:
            runner.run(start_nodes(a, b))
            assert runner.run(a.call("client", b.ids["echo"], "echo", b"open")) == b"open"
            b.kill_gateway()
            b.config_path.write_text(b.config_path.read_text() + NOBODY_ACL)
            b.spawn()
            runner.run(b.wait_running())
            b.send_directory()

            async def refused() -> PermissionDenied:
                deadline = time.monotonic() + 15
                while True:
                    try:
                        await a.call("client", b.ids["echo"], "echo", b"again", timeout_s=5)
                    except PermissionDenied as exc:
                        return exc
                    except Unavailable:  # B's link is found dead, or B not back yet
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.2)
                    else:
                        raise AssertionError("the call passed an ACL that refuses it")

            error = runner.run(refused(), timeout_s=30)
            assert "may not" in error.message or "does not admit" in error.message, error
        finally:
            for node in (a, b):
                runner.run(node.stop())
            runner.close()
