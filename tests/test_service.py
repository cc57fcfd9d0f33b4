"""Typed services from a .proto service block: ``@service`` on an actor class and
``ServiceClient`` on the calling side (examples/greeter, DESIGN §4)."""

from __future__ import annotations

import re

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

import actrhost
from actrhost import Actor, HandlerError, PayloadType, ServiceClient, rpc, service
from actrhost._actor import collect_routes
from examples.greeter import greeter_pb2 as pb

from .utils import GREETER, run


def test_routes_and_request_types_come_from_the_descriptor():
    @service(pb)
    class Greeter(Actor):
        async def say_hello(self, ctx, request):  # snake_case finds SayHello
            return pb.HelloReply(message=request.name)

        @rpc("demo.Greeter.Count", payload_type=PayloadType.RPC_SIGNAL)
        async def Count(self, ctx, request):  # its own lane is kept
            return pb.Tally()

    routes = collect_routes(Greeter())
    assert sorted(routes) == ["demo.Greeter.Count", "demo.Greeter.SayHello"]
    assert routes["demo.Greeter.SayHello"].request_type is pb.HelloRequest
    assert routes["demo.Greeter.SayHello"].spec.payload_type is PayloadType.RPC_RELIABLE
    assert routes["demo.Greeter.Count"].request_type is pb.Tally
    assert routes["demo.Greeter.Count"].spec.payload_type is PayloadType.RPC_SIGNAL


def test_an_answer_of_another_type_than_the_method_returns_is_the_handlers_error():
    @service(pb)
    class Greeter(Actor):
        async def say_hello(self, ctx, request):
            return pb.Tally()  # a service method's answer has the method's output type

        async def count(self, ctx, request):
            return pb.Tally(greeted=1)

    routes = collect_routes(Greeter())
    with pytest.raises(HandlerError, match="a Tally, not the HelloReply its service method"):
        routes["demo.Greeter.SayHello"].encode_answer(pb.Tally())
    with pytest.raises(HandlerError, match="a bytes, not the HelloReply"):
        routes["demo.Greeter.SayHello"].encode_answer(b"\x08\x05")
    answer = routes["demo.Greeter.Count"].encode_answer(pb.Tally(greeted=1))
    assert pb.Tally.FromString(answer).greeted == 1


def test_a_missing_or_blocking_handler_fails_when_the_class_is_defined():
    with pytest.raises(TypeError) as missing:

        @service(pb, "Greeter")
        class Half(Actor):
            async def SayHello(self, ctx, request):
                return pb.HelloReply()

    assert str(missing.value) == (
        "Half serves demo.Greeter: no method Count or count for demo.Greeter.Count"
    )
    with pytest.raises(TypeError, match=re.escape("say_hello (for demo.Greeter.SayHello) must be")):

        @service(pb)
        class Blocking(Actor):
            def say_hello(self, ctx, request):
                return pb.HelloReply()

            async def count(self, ctx, request):
                return pb.Tally()


def streaming_service():
    """A service with a streaming method, in a pool of its own."""
    file = descriptor_pb2.FileDescriptorProto(name="streaming.proto", package="s", syntax="proto3")
    file.message_type.add(name="M")
    svc = file.service.add(name="Feed")
    svc.method.add(name="Watch", input_type=".s.M", output_type=".s.M", server_streaming=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool.FindServiceByName("s.Feed")


def test_streaming_methods_are_refused_with_the_alternative():
    with pytest.raises(TypeError, match=re.escape("s.Feed.Watch streams (use data streams")):

        @service(streaming_service())
        class Feed(Actor):
            async def watch(self, ctx, request):
                return b""


def test_naming_the_service_wrongly_says_what_there_is():
    with pytest.raises(ValueError, match=re.escape("has no service 'Greeting' (it has Greeter)")):
        service(pb, "Greeting")
    with pytest.raises(ValueError, match="defines no protobuf service"):
        service(actrhost)


def test_a_client_checks_the_method_and_the_request_type_before_sending():
    client = ServiceClient(object(), "greeter", pb)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=re.escape("demo.Greeter.SayHello takes demo.HelloRequest, not Tally")
    ):
        run(client.SayHello(pb.Tally()))
    with pytest.raises(AttributeError, match="has no method 'Wave'"):
        client.Wave  # noqa: B018
    assert repr(client) == "ServiceClient(demo.Greeter -> greeter)"


def test_a_shell_calls_a_typed_service_and_raw_bytes_still_work(node_factory):
    node = node_factory(GREETER)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            greeter = ServiceClient(shell, "demo+Greeter", pb, timeout=5)
            reply = await greeter.SayHello(pb.HelloRequest(name="shell", times=2))
            assert reply == pb.HelloReply(message="hello, shell hello, shell")
            await greeter.tell("SayHello", pb.HelloRequest(name="told"))
            assert (await greeter.call("Count", pb.Tally())).greeted == 2
            # The route is an ordinary route: bytes in, bytes out.
            raw = await shell.call(
                "greeter",
                "demo.Greeter.SayHello",
                pb.HelloRequest(name="raw").SerializeToString(),
                timeout=5,
            )
            assert pb.HelloReply.FromString(raw).message == "hello, raw"

    run(go())
