"""Calls and tells between real worker processes and Shell clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import actrhost
from actrhost import (
    ActrId,
    ActrType,
    BadRequest,
    DataStream,
    DeadlineExceeded,
    HandlerError,
    MediaSample,
    NotFound,
    PayloadType,
    Unavailable,
    _envelope,
)
from actrhost._envelope import checked_rpc_lane
from actrhost._rpc_receiving import MALFORMED_LOGGED

from .utils import RECORDER, run, wait_until
from .utils import actrhost_command as cli

ACTORS = """
[[actor]]
name = "echo"
type = "test+Echo"
handler = "actors:Echo"

[[actor]]
name = "relay"
type = "test+Relay"
handler = "actors:Relay"
instances = 2
"""


@pytest.fixture
def node(node_factory):
    return node_factory(ACTORS)


def test_shell_call_by_name_type_and_id(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            assert await shell.call("echo", "test.Echo.Say", b"by name") == b"by name"
            assert await shell.call("test+Echo", "test.Echo.Say", b"by type") == b"by type"
            echo_id = await shell.discover(ActrType("test", "Echo"))
            assert await shell.call(echo_id, "test.Echo.Say", b"by id") == b"by id"
            assert await shell.call(str(echo_id), "test.Echo.Say", b"by text") == b"by text"
            assert await shell.call("echo", "test.Echo.Say", b"") == b""
            big = bytes(range(256)) * 4096  # 1 MiB inline
            assert await shell.call("echo", "test.Echo.Say", big) == big

    run(go())


def test_shell_call_to_one_instance_by_the_name_status_shows(node):
    relays = [i.actr_id for i in node.actors() if i.name == "relay"]

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for index, relay_id in enumerate(relays * 2):
                index %= 2
                answer = await shell.call(
                    f"relay#{index}", "test.Relay.Forward", b"test+Echo test.Echo.Whoami x"
                )
                assert answer.decode().split("|")[1] == str(relay_id)  # that one, each time
            # The name was right: the index is what is out of range (QA).
            bad_index = "no instance 'relay#2' on this node: 'relay' has 2, relay#0 to relay#1"
            with pytest.raises(NotFound, match=bad_index):
                await shell.call("relay#2", "test.Relay.Leaf", b"")
            with pytest.raises(NotFound, match="no actor of name 'relays#0' on this node"):
                await shell.call("relays#0", "test.Relay.Leaf", b"")

    run(go())


def test_actors_lists_every_instance_with_its_own_id(node):
    infos = node.actors()
    assert [(i.name, str(i.type), i.state) for i in infos] == [
        ("echo", "test+Echo", "running"),
        ("relay", "test+Relay", "running"),
        ("relay", "test+Relay", "running"),
    ]
    assert len({i.actr_id for i in infos}) == 3
    assert len({i.pid for i in infos}) == 3


def test_actor_to_actor_call_and_caller_identity(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            answer = await shell.call(
                "relay", "test.Relay.Forward", b"test+Echo test.Echo.Whoami x"
            )
            self_id, caller_id, request_id, *_ = answer.decode().split("|")
            assert ActrId.parse(self_id).type == ActrType("test", "Echo")
            assert ActrId.parse(caller_id).type == ActrType("test", "Relay")
            assert request_id
            # A Shell caller has no ActrId.
            direct = await shell.call("echo", "test.Echo.Whoami", b"")
            assert direct.decode().split("|")[1] == "None"

    run(go())


def test_nested_call_back_into_the_caller_does_not_deadlock(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            relays = [i.actr_id for i in await shell.actors() if i.name == "relay"]
            # relay#0 -> relay#1 (Back) -> relay#0 (Leaf) while relay#0's handler waits.
            answer = await shell.call(relays[0], "test.Relay.PingPong", b"test+Relay")
            assert answer == b"leaf:x"
            assert await shell.call("relay", "test.Relay.Local", b"me") == b"leaf:me"

    run(go())


def test_handler_exception_reaches_caller_with_its_message(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            with pytest.raises(HandlerError) as info:
                await shell.call("echo", "test.Echo.Fail", b"xyz")
            assert info.value.code == 500
            assert info.value.message == "ValueError: boom: xyz"
            with pytest.raises(Unavailable, match="not today"):
                await shell.call("echo", "test.Echo.Unavailable", b"")
            # Through an intermediate actor the original code and message survive.
            with pytest.raises(HandlerError, match="boom: deep"):
                await shell.call("relay", "test.Relay.Forward", b"test+Echo test.Echo.Fail deep")
            # The worker lives on.
            assert await shell.call("echo", "test.Echo.Say", b"alive") == b"alive"

    run(go())


def test_a_handler_failure_always_answers_its_caller(node_factory):
    # Each of these once left the caller waiting for its deadline (QA).
    node = node_factory(
        '[[actor]]\nname = "oddly"\ntype = "test+Oddly"\nhandler = "actors:Oddly"\n'
    )
    (before,) = [i.pid for i in node.actors()]

    async def go() -> None:
        async with actrhost.connect(node.config_path) as shell:
            with pytest.raises(NotFound, match=r"] no file /tmp/caf\\udce9\.txt$"):
                await shell.call("oddly", "test.Oddly.Fail", b"surrogate", timeout=5)
            with pytest.raises(HandlerError, match=r"] _Unprintable: <str\(\) of it raised Runt"):
                await shell.call("oddly", "test.Oddly.Fail", b"unprintable", timeout=5)
            with pytest.raises(HandlerError) as info:
                await shell.call("oddly", "test.Oddly.Fail", b"long", timeout=5)
            assert info.value.message.startswith("ValueError: xxx")  # type and text kept
            assert info.value.message.endswith("… (4998012 more characters)")
            assert await shell.call("oddly", "test.Oddly.Fail", b"alive") == b"alive"
            # A call with a ctx kept past its request's deadline says why it fails.
            assert await shell.call("oddly", "test.Oddly.CallLater", b"0.5", timeout=0.2)
            await asyncio.sleep(0.8)
            later = (await shell.call("oddly", "test.Oddly.Later", b"")).decode()
            assert later.startswith("DeadlineExceeded: [504] the deadline of request "), later
            assert "use the ctx of on_start" in later
            # Like SystemExit: the worker ends and its caller learns at once.
            started = time.monotonic()
            with pytest.raises(Unavailable, match="died before answering"):
                await shell.call("oddly", "test.Oddly.Fail", b"generator-exit", timeout=20)
            assert time.monotonic() - started < 10

    run(go(), 60)
    wait_until(lambda: [i.state for i in node.actors()] == ["running"], 10, "a restart")
    assert [i.pid for i in node.actors()] != [before]


def test_sys_exit_0_in_a_handler_answers_its_caller(node_factory):
    # A clean exit is a stop: the caller gave such a process's answers half a second to
    # come, and then failed the call as "stopped before answering" (QA). The worker
    # answers the call whose handler ended it.
    node = node_factory(
        '[[actor]]\nname = "oddly"\ntype = "test+Oddly"\nhandler = "actors:Oddly"\n'
    )
    (before,) = [i.pid for i in node.actors()]

    async def go() -> None:
        async with actrhost.connect(node.config_path) as shell:
            with pytest.raises(Unavailable, match=r"ended \(SystemExit\(0\)\) before answering"):
                await shell.call("oddly", "test.Oddly.Fail", b"exit-0", timeout=20)

    run(go(), 60)
    # (The answer comes before the process has exited: it may still show as running.)
    wait_until(
        lambda: [(i.state, i.pid != before) for i in node.actors()] == [("running", True)],
        10,
        "a restart",
    )


def test_a_call_or_tell_on_a_lane_they_cannot_use_fails_at_the_sender(node):
    # Lane 7 was dropped as malformed by the receiver: the call waited for its deadline,
    # the tell was lost; a stream lane made an ordinary call (QA).
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            started = time.monotonic()
            for lane in (7, PayloadType.STREAM_RELIABLE, PayloadType.MEDIA_RTP):
                with pytest.raises(BadRequest, match="use RPC_RELIABLE or RPC_SIGNAL, not"):
                    await shell.call("echo", "test.Echo.Say", b"x", payload_type=lane)
                with pytest.raises(BadRequest, match="use RPC_RELIABLE or RPC_SIGNAL, not"):
                    await shell.tell("echo", "test.Echo.Say", b"x", payload_type=lane)
            assert time.monotonic() - started < 1
            signal = PayloadType.RPC_SIGNAL
            assert await shell.call("echo", "test.Echo.Say", b"s", payload_type=signal) == b"s"

    run(go())
    assert checked_rpc_lane(int(PayloadType.RPC_SIGNAL)) is PayloadType.RPC_SIGNAL


def test_unknown_route_type_and_actor_fail_at_once(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            started = time.monotonic()
            # A typo shows: the error lists the routes the actor serves.
            served = r"\(it serves: test\.Echo\.CallShell, test\.Echo\.Fail, .*test\.Echo\.Say"
            with pytest.raises(NotFound, match=r"no route 'test\.Echo\.Nope' " + served):
                await shell.call("echo", "test.Echo.Nope", b"")
            with pytest.raises(NotFound):
                await shell.call("test+Nobody", "test.Echo.Say", b"")
            with pytest.raises(NotFound):
                await shell.call("nobody", "test.Echo.Say", b"")
            with pytest.raises(NotFound):
                await shell.call("ffff@1:test+Echo", "test.Echo.Say", b"")
            with pytest.raises(NotFound):
                await shell.call("relay", "test.Relay.Forward", b"test+Nobody test.X.Y z")
            assert time.monotonic() - started < 2.0

    run(go())


def test_deadline_exceeded_on_time_and_late_response_dropped(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                await shell.call("echo", "test.Echo.Sleep", b"1.0", timeout=0.2)
            elapsed = time.monotonic() - started
            assert 0.19 <= elapsed < 0.8
            assert isinstance(info.value, TimeoutError)
            assert info.value.code == 504
            # What, to whom, after how long (it said "no answer to request 7b34-1", QA).
            said = r"no answer to 'test\.Echo\.Sleep' from \S+@\d+:test\+Echo within 0\.2\d* s"
            assert re.match(said, info.value.message), info.value.message
            # A timer that fires late (a blocked loop) still names the time given, and
            # says the wait apart ("within 0.00202 s" read as a wrong timeout, QA).
            late_call = asyncio.create_task(
                shell.call("echo", "test.Echo.Sleep", b"1.0", timeout=0.1)
            )
            await asyncio.sleep(0.02)
            time.sleep(0.4)  # blocks this loop past the call's deadline
            with pytest.raises(DeadlineExceeded) as info:
                await late_call
            waited = r"(0\.[4-9]|[1-9])[\d.]*"  # 0.4 s or more
            said = rf".* within 0\.1 s \(request \S+; the loop let it wait {waited} s\)$"
            assert re.match(said, info.value.message), info.value.message
            # As given, in plain notation (".2g" said 1e+02 for 105, 12 for 12.5, QA).
            with pytest.raises(DeadlineExceeded) as info:
                await shell.call("echo", "test.Echo.Sleep", b"1.0", timeout=0.125)
            assert " within 0.125 s (request " in info.value.message, info.value.message
            await asyncio.sleep(1.0)  # the late answers arrive and are dropped
            assert shell._rpc.counters.late_responses == 3
            assert await shell.call("echo", "test.Echo.Say", b"next") == b"next"

    run(go())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_answers_that_came_while_the_callers_loop_was_blocked_are_read_first(node, loop):
    # Due timers ran before the answers waiting in the socket were read (uvloop polls
    # after its timers, asyncio reads one batch of 256 first): of 1,000 calls answered
    # during a 1.5 s block, 488 (asyncio) and 723 (uvloop) failed with 504.
    uvloop = pytest.importorskip("uvloop")

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            calls = [shell.call("echo", "test.Echo.Say", b"x", timeout=1.0) for _ in range(1000)]
            tasks = [asyncio.ensure_future(call) for call in calls]
            await asyncio.sleep(0)  # the calls go out
            await asyncio.sleep(0)
            time.sleep(2.0)  # the caller's loop blocked past their deadlines
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failed = [repr(r) for r in results if isinstance(r, Exception)]
            assert not failed, (len(failed), failed[:3])
            assert shell._rpc.counters.late_responses == 0

    if loop == "uvloop":
        uvloop.run(asyncio.wait_for(go(), 60))
    else:
        run(go())


def test_nested_call_inherits_the_smaller_deadline(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            started = time.monotonic()
            # relay's own call has timeout=30 s but must give up at the shell's 0.3 s.
            with pytest.raises(DeadlineExceeded):
                await shell.call(
                    "relay", "test.Relay.Forward", b"test+Echo test.Echo.Sleep 2", timeout=0.3
                )
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.5)
            status = await shell.status()
            relays = [a for a in status["actors"] if a["name"] == "relay"]
            assert sum(a["stats"]["errors"] for a in relays) == 1  # its call raised 504 too

    run(go())


def test_expired_requests_are_skipped_by_the_callee(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        max_concurrency = 1
        """
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            blocker = asyncio.ensure_future(shell.call("echo", "test.Echo.Sleep", b"0.5"))
            await asyncio.sleep(0.05)
            # Queued behind the blocker; their deadline passes before they could start.
            for _ in range(5):
                with pytest.raises(DeadlineExceeded):
                    await shell.call("echo", "test.Echo.Say", b"late", timeout=0.05)
            assert await blocker == b"slept"
            await asyncio.sleep(0.1)
            stats = (await shell.status())["actors"][0]["stats"]
            assert stats["expired_skipped"] == 5
            assert stats["calls_served"] == 1

    run(go())


def test_tell_is_never_answered_and_is_handled(node_factory):
    node = node_factory(RECORDER)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for n in range(50):
                await shell.tell("rec", "test.Recorder.Note", str(n).encode())
            for _ in range(300):  # unknown route: dropped, counted, logged sparingly
                await shell.tell("rec", "test.Recorder.Nope", b"")
            seen = await shell.call("rec", "test.Recorder.Seen", b"")
            assert seen.decode().split(",") == [str(n) for n in range(50)]
            assert shell._rpc.counters.late_responses == 0  # no answer ever came for a tell
            stats = (await shell.status())["actors"][0]["stats"]
            assert stats["tells_served"] == 50
            assert stats["unknown_routes"] == 300

    run(go())
    # The first few, then every 100th: a sender's typo does not flood the log (QA: a
    # line per tell).
    logged = node.log().count("tell for unknown route 'test.Recorder.Nope' dropped")
    assert logged == MALFORMED_LOGGED + 3, logged


def test_protobuf_typed_handlers(node_factory):
    node = node_factory(ACTORS)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            answer = await shell.call(
                "echo", "test.Echo.Upper", StringValue(value="typed"), response_type=StringValue
            )
            assert answer == StringValue(value="TYPED")
            with pytest.raises(actrhost.BadRequest, match="cannot decode StringValue"):
                await shell.call("echo", "test.Echo.Upper", b"\xff\xff\xff")
            # An answer that is not the type asked for: the callee ran, not a bad request.
            with pytest.raises(
                HandlerError, match=r"the answer to 'test\.Echo\.Say': cannot decode StringValue"
            ):
                await shell.call("echo", "test.Echo.Say", b"\xff\xff", response_type=StringValue)
            assert await shell.call("echo", "test.Echo.Say", b"raw", response_type=bytes) == b"raw"

    run(go())


def test_traceparent_travels_from_caller_to_callee(node):
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            direct = await shell.call(
                "echo", "test.Echo.Whoami", b"", traceparent=trace, tracestate="k=v"
            )
            assert direct.decode().split("|")[3:5] == [trace, "k=v"]
            nested = await shell.call(
                "relay",
                "test.Relay.Forward",
                b"test+Echo test.Echo.Whoami x",
                traceparent=trace,
                tracestate="k=v",
            )
            parent = nested.decode().split("|")[3]
            version, trace_id, span_id, flags = parent.split("-")
            assert (version, trace_id, flags) == ("00", trace.split("-")[1], "01")
            assert span_id != trace.split("-")[2] and len(span_id) == 16
            assert nested.decode().split("|")[4] == "k=v"

    run(go())


def test_discover_round_robins_over_instances(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            picks = [await shell.discover("test+Relay") for _ in range(6)]
            assert len(set(picks)) == 2
            assert picks[:2] == picks[2:4] == picks[4:6]

    run(go())


def test_discover_waits_for_instances_that_are_starting(node_factory):
    # An actor that discovered a peer listed after it in the config (the README's first
    # example, in that order) failed its on_start with 503 "instances are starting"; a
    # Shell's discover did too, while its call by type waited (QA).
    node = node_factory(
        '[[actor]]\nname = "finder"\ntype = "test+Finder"\nhandler = "actors:FindsAtStart"\n'
        '[actor.settings]\nfind = "test+SlowStart"\n'
        '[[actor]]\nname = "slow"\ntype = "test+SlowStart"\nhandler = "actors:SlowStart"\n',
        start=False,
    )
    node.spawn_until_starting()

    async def go() -> None:
        async with actrhost.connect(node.config_path) as shell:
            slow = await shell.discover("test+SlowStart")  # (1.5 s in on_start)
            assert await shell.call("finder", "test.Finder.Found") == str(slow).encode()

    run(go(), 30)
    assert [a["restarts"] for a in node.status()["actors"]] == [0, 0]


def test_actor_calls_the_shell(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            with pytest.raises(NotFound, match="no Shell"):
                await shell.call("echo", "test.Echo.CallShell", b"x")

            @shell.on_rpc("test.Shell.Hello")
            async def hello(request: bytes, caller: ActrId | None) -> bytes:
                return b"shell says hi to " + str(caller).encode() + b": " + request

            # The Shell's call waits until the workers know the new route: the actor can
            # call back at once (it used to get 404 for a few ms).
            answer = await shell.call("echo", "test.Echo.CallShell", b"x")
            assert answer.startswith(b"shell says hi to ") and answer.endswith(b"@1:test+Echo: x")
        for _ in range(10):  # each time a Shell that registers the route anew
            async with actrhost.connect(node.config_path) as shell:
                shell.on_rpc("test.Shell.Hello")(hello)
                assert (await shell.call("echo", "test.Echo.CallShell", b"y")).endswith(b": y")
        async with actrhost.connect(node.config_path) as shell:

            @shell.on_rpc("test.Shell.Hello")
            async def bad_answer(request: bytes, caller: ActrId | None) -> str:
                return "a str"

            # The Shell handler's fault (500), as for an actor's answer; it was 400.
            with pytest.raises(HandlerError, match="the handler's answer: cannot send a value"):
                await shell.call("echo", "test.Echo.CallShell", b"z")
            # One that cannot take (request, caller_id) is refused at once, not with a 500
            # to each actor that calls it (QA).
            with pytest.raises(TypeError, match=r"cannot be called as a Shell handler\("):

                @shell.on_rpc("test.Shell.Other")
                async def one_argument(request: bytes) -> bytes:
                    return request

        async with actrhost.connect(node.config_path) as shell:

            @shell.on_rpc("test.Shell.Hello")
            async def cancelled(request: bytes, caller: ActrId | None) -> bytes:
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                future.cancel()
                return await future

            # Its own CancelledError (a future it awaited was cancelled) is its failure, as
            # an actor handler's: the caller waited for its deadline (QA).
            with pytest.raises(HandlerError, match="CancelledError"):
                await shell.call("echo", "test.Echo.CallShell", b"c", timeout=20)

        async with actrhost.connect(node.config_path) as shell:

            @shell.on_rpc("test.Shell.Hello")
            async def generator_exit(request: bytes, caller: ActrId | None) -> bytes:
                raise GeneratorExit("from a handler")

            with pytest.raises(HandlerError, match="GeneratorExit: from a handler"):
                await shell.call("echo", "test.Echo.CallShell", b"g", timeout=20)

        async with actrhost.connect(node.config_path) as shell:
            # A plain function serves too, as a stream callback may be one (its answer was
            # awaited: a 500 at each call, QA).
            shell.on_rpc("test.Shell.Hello")(lambda request, caller: b"plain: " + request)
            assert await shell.call("echo", "test.Echo.CallShell", b"p") == b"plain: p"

    run(go())


def test_a_shell_used_from_another_event_loop_says_so(node):
    # asyncio's own errors said nothing of it ("attached to a different loop", QA).
    async def go() -> None:
        async with actrhost.connect(node.config_path) as shell:

            def from_another_thread() -> None:
                with pytest.raises(RuntimeError, match="belongs to the event loop that opened"):
                    asyncio.run(shell.call("echo", "test.Echo.Say", b"x"))

            await asyncio.to_thread(from_another_thread)
            assert await shell.call("echo", "test.Echo.Say", b"y") == b"y"

    run(go())


def test_names_and_numbers_a_frame_cannot_carry_fail_at_the_sender(node):
    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for attempt, error, match in [
                (shell.call("echo", ""), ValueError, "route_key must not be empty"),
                (shell.tell("echo", None), TypeError, "route_key must be a str, not NoneType"),
                (shell.send_data_stream("echo", DataStream("")), ValueError, "stream_id"),
                (shell.send_data_stream("echo", DataStream("s", -1)), ValueError, "sequence"),
                (
                    shell.send_data_stream("echo", DataStream("s", 0, b"", {"a": 1})),
                    TypeError,
                    "metadata maps str to str",
                ),
                (shell.send_media_sample("echo", "", MediaSample(b"x")), ValueError, "track_id"),
                (
                    shell.send_media_sample("echo", "t", MediaSample(b"x", 1 << 32)),
                    ValueError,
                    r"timestamp must be in \[0, 4294967295\]",
                ),
                (
                    shell.call("echo", "test.Echo.Say", timeout=None),
                    TypeError,
                    "timeout must be a number of seconds, not None",
                ),
            ]:
                with pytest.raises(error, match=match):
                    await attempt
            with pytest.raises(ValueError, match="route_key must not be empty"):
                shell.on_rpc("")
            with pytest.raises(ValueError, match="stream_id must not be empty"):
                shell.register_stream("", lambda chunk, sender: None)
            assert await shell.call("echo", "test.Echo.Say", b"still fine") == b"still fine"

    run(go())


def test_a_message_over_max_message_bytes_fails_at_its_sender(node_factory):
    # (threshold 0, not the default: every chunk through a ring, a Shell's too)
    node = node_factory(ACTORS, "max_message_bytes = 65536\n[shm]\nthreshold_bytes = 0\n")
    too_big = "exceeds max_message_bytes \\(65536\\); send large data as a stream"

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            fits = b"f" * 65000
            assert await shell.call("echo", "test.Echo.Say", fits) == fits
            with pytest.raises(actrhost.BadRequest, match=r"request .test.Echo.Say. .*" + too_big):
                await shell.call("echo", "test.Echo.Say", b"x" * 65536)
            with pytest.raises(actrhost.BadRequest, match=r"tell .test.Echo.Say. .*" + too_big):
                await shell.tell("echo", "test.Echo.Say", b"x" * 65536)
            # Refused on the payload's size, before a copy of it is encoded (QA: 600 MB
            # took 3 s and 2.3 GB to be refused).
            encode, _envelope.encode = _envelope.encode, None  # type: ignore[assignment]
            try:
                with pytest.raises(actrhost.BadRequest, match=too_big):
                    await shell.call("echo", "test.Echo.Say", b"x" * 10_000_000)
            finally:
                _envelope.encode = encode
            # The callee's answer is held to the same limit: its caller hears why.
            with pytest.raises(HandlerError, match=r"response of .* exceeds the callee's"):
                await shell.call("echo", "test.Echo.Repeat", b"70000")
            assert await shell.call("echo", "test.Echo.Repeat", b"3") == b"rrr"
        # A Shell attached by the control endpoint, with no config to read, goes by the
        # node's limits too (it used the defaults: 64 MiB went through, QA).
        async with actrhost.connect(f"ipc://{node.run_dir / 'control.sock'}") as shell:
            assert shell.max_message_bytes == 65536
            assert (shell.threshold_bytes, shell.ring_bytes) == (0, node.config.shm.ring_bytes)
            with pytest.raises(actrhost.BadRequest, match=too_big):
                await shell.call("echo", "test.Echo.Say", b"x" * 65536)

    run(go())


def test_a_shell_dropped_without_closing_neither_hangs_the_script_nor_leaks(node):
    # The collector ran the context's __del__ (term) before its sockets' (close): the
    # script hung for ever at its next collection (QA).
    script = (
        "import asyncio, gc, sys, actrhost\n"
        "async def once():\n"
        "    shell = actrhost.connect(sys.argv[1])\n"
        "    await shell.open()\n"
        "    await shell.call('echo', 'test.Echo.Say', b'x', timeout=5)\n"
        "for n in range(3):\n"
        "    asyncio.run(once())\n"
        "    gc.collect()\n"
        "    print('collected', n, flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", script, str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"collected {n}" for n in range(3)]
    assert "unclosed Shell(" in result.stderr

    async def go() -> None:
        # Opened twice (open(), then `async with`): a second set of sockets leaked.
        shell = actrhost.connect(node.config_path)
        await shell.open()
        async with shell:
            assert await shell.call("echo", "test.Echo.Say", b"y") == b"y"
        assert list(node.run_dir.glob(f"s{os.getpid():x}.*.sock")) == []
        # By two tasks at once: the second went on before the attach, with no actors.
        shell = actrhost.connect(node.config_path)

        async def user() -> bytes:
            await shell.open()
            return await shell.call("echo", "test.Echo.Say", b"z")

        assert await asyncio.gather(user(), user()) == [b"z", b"z"]
        await shell.aclose()

    run(go())


def test_a_shell_whose_open_failed_opens_once_the_node_runs(node_factory):
    node = node_factory(ACTORS, start=False)

    async def go() -> None:
        shell = actrhost.connect(node.config_path)
        with pytest.raises(Unavailable, match="no node running"):
            await shell.open()
        await asyncio.to_thread(node.start)
        async with shell:  # (the first open's failure is not kept: it tries again)
            assert await shell.call("echo", "test.Echo.Say", b"now") == b"now"

    run(go(), 60)


def test_connect_to_a_node_that_is_not_running(tmp_path):
    config = tmp_path / "n.toml"
    config.write_text(
        f'[node]\nname = "absent"\npython_path = ["{tmp_path}"]\n'
        '[[actor]]\nname = "a"\ntype = "t+A"\nhandler = "m:A"\n'
    )

    async def go():
        with pytest.raises(Unavailable, match=r"no node running .*does not exist"):
            async with actrhost.connect(config):
                pass

    run(go())


def test_what_users_get_wrong_gets_a_clear_answer(node_factory):
    node = node_factory('[[actor]]\nname = "q"\ntype = "test+Quirks"\nhandler = "actors:Quirks"\n')

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            # A tell the actor sent itself from on_start was held until on_start returned.
            for _ in range(100):
                if await shell.call("q", "test.Quirks.Ticks") == b"1":
                    break
                await asyncio.sleep(0.02)
            assert await shell.call("q", "test.Quirks.Ticks") == b"1"
            # An answer that cannot be encoded is the handler's failure (500), not the
            # caller's bad request (400).
            with pytest.raises(
                HandlerError, match="the handler's answer: cannot send a value of type str"
            ):
                await shell.call("q", "test.Quirks.BadAnswer")
            with pytest.raises(
                HandlerError, match="cannot send a coroutine: an `await` is missing"
            ):
                await shell.call("q", "test.Quirks.NoAwait")
            assert (
                await shell.call("q", "test.Quirks.IdAsDest")
                == (
                    f"dest must be a Dest: Dest.actor({(await shell.actors())[0].actr_id}) for "
                    "that actor, not an ActrId"
                ).encode()
            )
            # Empty names fail at once, not at the deadline (a call) or silently (the rest).
            assert json.loads(await shell.call("q", "test.Quirks.EmptyNames")) == [
                "route_key must not be empty",
                "route_key must not be empty",
                "stream_id must not be empty",
                "track_id must not be empty",
            ]
            # A CancelledError of the handler's own (not a stop) is its failure; it lives on.
            with pytest.raises(HandlerError, match="CancelledError"):
                await shell.call("q", "test.Quirks.RaiseCancelled")
            assert await shell.call("q", "test.Quirks.Ticks") == b"1"
            # So were the stream chunks it sent itself, the large one through its ring.
            assert json.loads(await shell.call("q", "test.Quirks.EarlyChunks")) == [
                [0, 1],
                [1, 1 << 20],
            ]
            stats = (await shell.status())["actors"][0]["stats"]
            assert stats["tells_served"] == 1 and stats["tells_dropped"] == 0
            assert stats["streams_in"]["not_running"] == 0
            assert stats["streams_in"]["bytes_via_shm"] == 1 << 20

    run(go())


def test_a_handler_that_blocks_the_loop_is_reported_with_where_it_blocks(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "t"
        type = "test+Load"
        handler = "actors:LoadTarget"
        """,
        "blocked_loop_warning_s = 0.3\n",
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            # A synchronous 1.5 s sleep in the handler: nothing else in that worker runs.
            assert await shell.call("t", "test.Load.StallOnce", b"1.5@0", timeout=10) == b"ok"
            assert await shell.call("t", "test.Load.Say", b"after", timeout=10) == b"after"

    run(go())
    wait_until(lambda: "was blocked for" in node.log(), 5, "the end of the block logged")
    log = node.log()
    assert "t#0" in log and "the event loop has been blocked for" in log
    # The warning shows the line that blocks: the handler's time.sleep.
    assert "in stall_once" in log and "time.sleep(float(stall_s))" in log
    blocked_s = float(log.split("the event loop was blocked for ")[1].split(" s")[0])
    assert 1.0 < blocked_s < 3.0
    stats = node.status()["actors"][0]["stats"]
    assert stats["loop_blocks"] == 1
    assert 1.0 < stats["loop_blocked_seconds"] < 3.0
    text = cli("status", str(node.config_path)).stdout
    (line,) = [line for line in text.splitlines() if "event loop blocked" in line]
    assert "t#0" in line and "loop_blocks 1," in line and "loop_blocked_seconds 1." in line
    assert "refused or lost" not in text


def test_with_the_loop_watch_off_no_loop_counters_are_reported(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "t"
        type = "test+Load"
        handler = "actors:LoadTarget"
        """,
        "blocked_loop_warning_s = 0\n",
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            assert await shell.call("t", "test.Load.StallOnce", b"0.3@0", timeout=10) == b"ok"

    run(go())
    stats = node.status()["actors"][0]["stats"]
    assert stats["calls_served"] >= 1
    assert "loop_blocks" not in stats  # a 0 would say that nothing blocked
    assert "blocked" not in node.log()
