"""Registration at scale, realm isolation, relay and ACL — server in its own process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from actrhost._errors import BadRequest, NotFound, PermissionDenied
from actrhost._fingerprint import service_fingerprint
from actrhost._ids import ActrId, ActrType, Realm
from actrhost.signaling import (
    AclPermission,
    AclRule,
    IceCandidate,
    RelayMessage,
    RoleAssignment,
    RoleNegotiation,
    SdpAnswer,
    SdpOffer,
    SignalingClient,
)
from actrhost.signaling._testing import ClientProcess, RawPeer, ServerProcess

from .utils import run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as proc:
        yield proc


def test_many_registrations_from_several_processes() -> None:
    with ServerProcess() as server:
        clients = [
            ClientProcess(server.url, count=130, realm=10, actr_type="load+Worker")
            for _ in range(4)
        ]
        try:
            results = [c.result(timeout_s=30) for c in clients]
            ids = [ActrId.parse(text) for r in results for text in r["ids"]]
            assert len(ids) == 520
            assert len(set(ids)) == 520  # serial numbers are unique per server
            assert {i.realm for i in ids} == {Realm(10)}
            assert {i.type for i in ids} == {ActrType("load", "Worker")}

            async def probe() -> None:
                async with SignalingClient(server.url) as client:
                    me = await client.register("load+Probe", 10)
                    result = await me.discover("load+Worker", candidate_count=100)
                    assert len(result.candidates) == 100
                    assert {c.actr_id for c in result.candidates} <= set(ids)
                    stats = await client.server_stats()
                    assert stats["actors"] == 521
                    assert stats["connections_open"] == 5

            run(probe())
        finally:
            codes = [c.stop() for c in clients]
        assert codes == [0, 0, 0, 0]

        async def after() -> None:
            # The client processes unregistered on exit.
            async with SignalingClient(server.url) as client:
                me = await client.register("load+Probe", 10)
                assert (await me.discover("load+Worker")).candidates == ()
                stats = await client.server_stats()
                assert stats["unregistrations"] >= 520

        run(after())


def test_realm_isolation(server: ServerProcess) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as client:
            a21 = await client.register("iso+Svc", 21)
            a22 = await client.register("iso+Svc", 22)
            p21 = await client.register("iso+Probe", 21)
            p22 = await client.register("iso+Probe", 22)
            p23 = await client.register("iso+Probe", 23)
            r21 = await p21.discover("iso+Svc", candidate_count=10)
            r22 = await p22.discover("iso+Svc", candidate_count=10)
            assert [c.actr_id for c in r21.candidates] == [a21.actr_id]
            assert [c.actr_id for c in r22.candidates] == [a22.actr_id]
            assert (await p23.discover("iso+Svc")).candidates == ()
            # Listings (what `actrhost status --signaling` shows) stay in the realm too.
            listed, truncated = await p21.list_actors()
            assert {c.actr_id for c in listed} == {a21.actr_id, p21.actr_id}
            assert not truncated
            listed, _ = await p22.list_actors("iso+Svc")
            assert [c.actr_id for c in listed] == [a22.actr_id]
            # Nothing crosses a realm: relay is refused, even to a known id.
            assert a22.actr_id is not None
            with pytest.raises(PermissionDenied, match="realm"):
                await p21.relay(a22.actr_id, SdpOffer("v=0"))

    run(main())


def test_relay_sdp_ice_and_role(server: ServerProcess) -> None:
    async def main() -> None:
        inbox: asyncio.Queue[RelayMessage] = asyncio.Queue(maxsize=100)
        async with (
            SignalingClient(server.url, on_relay=inbox.put_nowait) as node_a,
            SignalingClient(server.url) as node_b,
        ):
            a = await node_a.register("rel+Gateway", 30)
            b = await node_b.register("rel+Gateway", 30)
            assert a.actr_id is not None and b.actr_id is not None
            sent = [
                SdpOffer("v=0 offer"),
                IceCandidate("candidate:1 1 udp 1 127.0.0.1 5000 typ host", "0", 0, "uf"),
                IceCandidate("candidate:2 1 udp 1 127.0.0.1 5001 typ host", "0", 0, "uf"),
                SdpAnswer("v=0 answer"),
                IceCandidate(""),
            ]
            for payload in sent:
                assert (
                    await b.relay(a.actr_id, payload, session_id="s1", traceparent="00-t") is None
                )
            got = [await inbox.get() for _ in sent]
            assert [m.payload for m in got] == sent  # in order, unchanged
            assert {(m.source, m.target, m.session_id, m.traceparent) for m in got} == {
                (b.actr_id, a.actr_id, "s1", "00-t")
            }
            # The server decides who offers, and tells both sides opposite roles.
            mine = await b.relay(a.actr_id, RoleNegotiation(), session_id="s2")
            theirs = await inbox.get()
            assert isinstance(mine, RoleAssignment) and isinstance(theirs.payload, RoleAssignment)
            assert mine.is_offerer != theirs.payload.is_offerer
            assert mine.is_offerer == (b.actr_id.serial_number < a.actr_id.serial_number)
            gone = ActrId(Realm(30), 12345, ActrType("rel", "Gateway"))
            with pytest.raises(NotFound):
                await b.relay(gone, SdpOffer("v=0"))

    run(main())


def test_a_closed_connection_is_announced_to_those_it_relayed_with(
    server: ServerProcess,
) -> None:
    async def main() -> None:
        heard: dict[str, asyncio.Queue[list[ActrId]]] = {
            "a": asyncio.Queue(),
            "c": asyncio.Queue(),
        }
        relayed: asyncio.Queue[RelayMessage] = asyncio.Queue()
        async with (
            SignalingClient(
                server.url, on_relay=relayed.put_nowait, on_actors_left=heard["a"].put_nowait
            ) as node_a,
            SignalingClient(server.url, on_actors_left=heard["c"].put_nowait) as node_c,
        ):
            node_b = SignalingClient(server.url)
            await node_b.connect()
            a = await node_a.register("left+Gateway", 31)
            b1 = await node_b.register("left+Gateway", 31)
            b2 = await node_b.register("left+Gateway", 31)
            c = await node_c.register("left+Gateway", 31)
            assert a.actr_id and b1.actr_id and b2.actr_id and c.actr_id
            await a.relay(b1.actr_id, SdpOffer("v=0"))  # node A and node B have talked
            # B's connection drops without unregistering (its process died).
            await node_b.aclose(unregister=False)
            left = await asyncio.wait_for(heard["a"].get(), 5)
            assert sorted(left, key=str) == sorted([b1.actr_id, b2.actr_id], key=str)
            # C never relayed with B: not told. A is told once. (Each client has read all
            # that came before the relay, on the same connection.)
            await c.relay(a.actr_id, SdpOffer("v=0"))
            await asyncio.wait_for(relayed.get(), 5)
            assert heard["c"].empty() and heard["a"].empty()

    run(main())


def test_acl_filters_discovery_and_relay(server: ServerProcess) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as client:
            rules = [
                AclRule(AclPermission.DENY, types=(ActrType("acl", "Intruder"),)),
                AclRule(AclPermission.ALLOW),
            ]
            guarded = await client.register("acl+Vault", 40, acl=rules)
            intruder = await client.register("acl+Intruder", 40)
            friend = await client.register("acl+Friend", 40)
            assert guarded.actr_id is not None
            assert (await intruder.discover("acl+Vault")).candidates == ()
            with pytest.raises(PermissionDenied):
                await intruder.relay(guarded.actr_id, SdpOffer("v=0"))
            assert (await friend.discover("acl+Vault")).best == guarded.actr_id
            await friend.relay(guarded.actr_id, SdpOffer("v=0"))
            # Only-allow rules are a whitelist.
            only = await client.register(
                "acl+Private", 40, acl=[AclRule(AclPermission.ALLOW, types=(friend.actr_type,))]
            )
            assert (await friend.discover("acl+Private")).best == only.actr_id
            assert (await intruder.discover("acl+Private")).best is None

    run(main())


def test_registration_rejects_bad_input(server: ServerProcess) -> None:
    schema = 'syntax = "proto3"; package p; message A { string x = 1; }'

    async def main() -> None:
        async with SignalingClient(server.url) as client:
            reg = await client.register("bad+Ok", 50, schema_text=schema)
            assert reg.fingerprint == service_fingerprint(schema)
            with pytest.raises(BadRequest, match="does not match"):
                await client.register(
                    "bad+Mismatch",
                    50,
                    fingerprint="service_semantic:" + "0" * 64,
                    schema_text=schema,
                )
            with pytest.raises(BadRequest, match="invalid fingerprint"):
                await client.register("bad+Fp", 50, fingerprint="md5:1234")
            with pytest.raises(BadRequest, match="does not parse"):
                await client.register("bad+Schema", 50, schema_text="message {")
        # A raw peer can send names the client library would refuse locally.
        peer = await RawPeer.open(server.url)
        try:
            with pytest.raises(BadRequest, match="manufacturer"):
                await peer.register("9bad+Name", 50)
            with pytest.raises(BadRequest):
                await peer.register("x+" + "a" * 40, 50)
        finally:
            await peer.close()

    run(main())
