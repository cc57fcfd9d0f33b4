"""``actrhost restart`` and the gateway: edits only a new gateway can apply.

Real nodes, a real signaling server: ``--gateway`` restarts the gateway alone (an edited
``[webrtc]`` takes effect, the actors keep running), and a rolling restart whose edit
changes what the gateway registered (an actor's ACL) restarts the gateway after the
actor, so that signaling and the other nodes see the edit.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import actrhost

from .test_remote import relay_and_echo_nodes
from .utils import actrhost_command as cli
from .utils import run

FORWARD = b"test+Echo test.Echo.Say hello"


async def forward_until_answered(shell: actrhost.Shell, timeout_s: float = 20) -> bytes:
    """Node A's relay forwards to node B's echo; retried while the link is made again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await shell.call("relay", "test.Relay.Forward", FORWARD, timeout=3)
        except actrhost.Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def deny_relays_and_restart(node_b) -> subprocess.CompletedProcess[str]:
    """Edit node B's echo to refuse test+Relay callers (and admit the rest), then restart
    it: its ACL changes, so its gateway restarts too."""
    text = node_b.config_path.read_text()
    no_relays = (
        'handler = "actors:Echo"\n'
        '[[actor.acl]]\npermission = "deny"\ntypes = ["test+Relay"]\n'
        '[[actor.acl]]\npermission = "allow"\n'
    )
    node_b.config_path.write_text(text.replace('handler = "actors:Echo"\n', no_relays))
    result = cli("restart", str(node_b.config_path), "echo")
    assert result.returncode == 0, result.stderr
    return result


def test_restart_gateway_applies_an_edited_webrtc_table_and_keeps_the_actors(
    node_factory, signaling_url
):
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)
    before = node_b.status()
    assert before["gateway"]["stats"]["ice_host_addresses"] == ["127.0.0.1"]
    assert run(_forward(node_a)) == b"hello"

    # A new host address for ICE (on loopback): only a new gateway can offer it.
    with node_b.config_path.open("a") as config:
        config.write('\n[webrtc]\nice_host_addresses = ["127.0.0.2"]\n')
    result = cli("restart", str(node_b.config_path), "--gateway")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("restarted gateway in "), result.stdout

    after = node_b.status()
    gateway = after["gateway"]
    assert gateway["pid"] != before["gateway"]["pid"], gateway
    assert gateway["state"] == "running" and gateway["restarts"] == 1, gateway
    assert gateway["stats"]["ice_host_addresses"] == ["127.0.0.2"]
    # The actor kept its process and its id (signaling took its credential again).
    assert [(a["id"], a["pid"]) for a in after["actors"]] == [
        (a["id"], a["pid"]) for a in before["actors"]
    ]
    # Node A connects to the new gateway, at its new address.
    assert run(_forward(node_a)) == b"hello"
    remote = node_b.status()["gateway"]["stats"]["remote_nodes"]
    assert [n["state"] for n in remote.values()] == ["connected"], remote


def test_an_acl_edit_restarts_the_gateway_after_the_actor(node_factory, signaling_url):
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)
    assert run(_forward(node_a)) == b"hello"
    gateway_pid = node_b.status()["gateway"]["pid"]

    result = deny_relays_and_restart(node_b)
    assert result.stdout.startswith("restarted echo#0, gateway in "), result.stdout
    gateway = node_b.status()["gateway"]
    assert gateway["pid"] != gateway_pid and gateway["state"] == "running", gateway

    async def refused() -> actrhost.ActrError:
        async with actrhost.connect(node_a.config_path) as shell:
            deadline = time.monotonic() + 20
            while True:
                try:
                    await shell.call("relay", "test.Relay.Forward", FORWARD, timeout=3)
                except actrhost.Unavailable:
                    assert time.monotonic() < deadline, "node B never came back"
                    await asyncio.sleep(0.1)
                except actrhost.ActrError as exc:
                    return exc
                else:
                    raise AssertionError("the relay still reaches the echo")

    # Signaling registered the new ACL: discovery says the echo it finds refuses the relay
    # (with the old registration it would offer it, and the echo would refuse the call).
    error = run(refused())
    assert isinstance(error, actrhost.PermissionDenied), error
    assert "may not call any of the 1 actor(s) of type test+Echo" in error.message


def test_restart_gateway_refusals(node_factory, signaling_url):
    local = node_factory('[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n')
    result = cli("restart", str(local.config_path), "--gateway")
    assert result.returncode == 1
    assert result.stderr == (
        "actrhost: restart: this node has no gateway (its config has no [signaling])\n"
    )
    result = cli("restart", str(local.config_path), "echo", "--gateway")
    assert result.returncode == 2
    assert "--gateway restarts the gateway only" in result.stderr

    _node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)
    pid = node_b.status()["gateway"]["pid"]
    text = node_b.config_path.read_text()
    edited = text.replace(
        'handler = "actors:Echo"\n', 'handler = "actors:Echo"\nmax_concurrency = 3\n'
    )
    node_b.config_path.write_text(edited)
    # The echo's table is only applied by restarting the echo.
    result = cli("restart", str(node_b.config_path), "--gateway")
    assert result.returncode == 1
    assert "actor 'echo' changed but is not restarted" in result.stderr
    assert node_b.status()["gateway"]["pid"] == pid


async def _forward(node) -> bytes:
    async with actrhost.connect(node.config_path) as shell:
        return await forward_until_answered(shell)


def test_an_edited_proto_file_restarts_the_gateway_with_the_actor(
    node_factory, signaling_url, tmp_path
):
    # The config names the same .proto file; its text changed. The gateway registered the
    # old text with signaling, so the rolling restart restarts it too.
    from actrhost._fingerprint import service_fingerprint

    from .test_remote import SCHEMA

    schema = tmp_path / "echo.proto"
    schema.write_text(SCHEMA)
    node = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n'
        f'service_schema = "{schema}"\n',
        f'[signaling]\nurl = "{signaling_url}"\n',
    )

    def registered() -> str:
        result = cli("status", "--signaling", signaling_url)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert service_fingerprint(SCHEMA) in registered()
    edited = SCHEMA.replace("string value = 1;", "string value = 1;\n  int32 times = 2;")
    schema.write_text(edited)
    result = cli("restart", str(node.config_path), "echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("restarted echo#0, gateway in "), result.stdout
    now = registered()
    assert service_fingerprint(edited) in now and service_fingerprint(SCHEMA) not in now
    # Nothing changed since: a restart leaves the gateway alone.
    result = cli("restart", str(node.config_path), "echo")
    assert result.stdout.startswith("restarted echo#0 in "), result.stdout


def test_callers_on_other_nodes_get_503_not_404_while_a_gateway_restarts(
    node_factory, signaling_url
):
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)
    assert run(_forward(node_a)) == b"hello"
    (echo,) = [a["id"] for a in node_b.status()["actors"]]

    async def go() -> dict[str, int]:
        outcomes: dict[str, int] = {}
        async with actrhost.connect(node_a.config_path) as shell:
            restart = asyncio.ensure_future(
                asyncio.to_thread(cli, "restart", str(node_b.config_path), "--gateway")
            )
            answered_after = False
            deadline = time.monotonic() + 30
            while not answered_after and time.monotonic() < deadline:
                try:  # by id, as an actor that found it earlier calls it
                    await shell.call(echo, "test.Echo.Say", b"x", timeout=3)
                    outcome = "ok"
                    answered_after = restart.done()
                except actrhost.ActrError as exc:
                    outcome = type(exc).__name__
                    await asyncio.sleep(0.02)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            result = await restart
            assert result.returncode == 0, result.stderr
            assert answered_after, outcomes
        return outcomes

    outcomes = run(go(), 60)
    # The node is coming back: a caller may retry. NotFound would say it is gone.
    assert set(outcomes) <= {"ok", "Unavailable"}, outcomes


def test_calls_from_the_node_whose_gateway_restarts_fail_fast_or_go_through(
    node_factory, signaling_url
):
    node_a, node_b = relay_and_echo_nodes(node_factory, signaling_url)
    assert run(_forward(node_a)) == b"hello"
    (echo,) = [a["id"] for a in node_b.status()["actors"]]

    async def go() -> dict[str, int]:
        async with actrhost.connect(node_a.config_path) as shell:

            async def one() -> tuple[str, float]:
                started = time.monotonic()
                try:
                    await shell.call(echo, "test.Echo.Sleep", b"0.3", timeout=15)
                    outcome = "ok"
                except actrhost.ActrError as exc:
                    outcome = type(exc).__name__
                return outcome, time.monotonic() - started

            restart = asyncio.ensure_future(
                asyncio.to_thread(cli, "restart", str(node_a.config_path), "--gateway")
            )
            calls = []
            while not restart.done():  # a call every 10 ms, each waiting on node B
                calls.append(asyncio.ensure_future(one()))
                await asyncio.sleep(0.01)
            assert (await restart).returncode == 0
            results = await asyncio.gather(*calls)
        # Each either went through or failed fast (503): none was sent into the restart
        # and left to its 15 s deadline.
        assert {outcome for outcome, _ in results} <= {"ok", "Unavailable"}, results
        assert max(took for _, took in results) < 5, results
        return {o: sum(1 for x, _ in results if x == o) for o in {x for x, _ in results}}

    outcomes = run(go(), 90)
    assert outcomes.get("Unavailable"), outcomes  # the restart was seen


def test_a_link_whose_known_pairs_an_acl_edit_refuses_comes_back_through_another(
    node_factory, signaling_url
):
    signaling = f'[signaling]\nurl = "{signaling_url}"\n'
    relays = (
        '[[actor]]\nname = "relay"\ntype = "test+Relay"\nhandler = "actors:Relay"\n'
        '[[actor]]\nname = "friend"\ntype = "test+Friend"\nhandler = "actors:Relay"\n'
    )
    node_a = node_factory(relays, signaling)
    node_b = node_factory(
        '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n', signaling
    )
    assert run(_forward(node_a)) == b"hello"  # the link's one known pair: relay -> echo
    (echo,) = [a["id"] for a in node_b.status()["actors"]]
    deny_relays_and_restart(node_b)

    async def by_id() -> float:
        async with actrhost.connect(node_a.config_path) as shell:
            started = time.monotonic()
            while True:  # a Shell's call by id: the existing link, negotiated again
                try:
                    assert await shell.call(echo, "test.Echo.Say", b"hi", timeout=3) == b"hi"
                    return time.monotonic() - started
                except actrhost.Unavailable:
                    assert time.monotonic() - started < 20, "the link never came back"
                    await asyncio.sleep(0.1)

    # The relay may not reach the echo any more, but friend may: the reconnect goes
    # through that pair instead of failing on relay -> echo for the next minute.
    assert run(by_id(), 60) < 15
