"""A typed service: `Greeter` serves the `demo.Greeter` service of greeter.proto, and
`Visitor` calls it through a `ServiceClient`. No route key or message type is written
by hand: both come from the service's descriptor in greeter_pb2."""

from __future__ import annotations

from actrhost import Actor, Context, ServiceClient, service

from . import greeter_pb2 as pb


@service(pb, "Greeter")
class Greeter(Actor):
    """Serves demo.Greeter.SayHello and demo.Greeter.Count."""

    def __init__(self) -> None:
        self.greeted = 0

    async def say_hello(self, ctx: Context, request: pb.HelloRequest) -> pb.HelloReply:
        self.greeted += 1
        return pb.HelloReply(message=" ".join([f"hello, {request.name}"] * max(1, request.times)))

    async def Count(self, ctx: Context, request: pb.Tally) -> pb.Tally:
        return pb.Tally(greeted=self.greeted)


class Visitor(Actor):
    """Greets the Greeter twice when it starts, then asks how many it greeted."""

    async def on_start(self, ctx: Context) -> None:
        greeter = ServiceClient(ctx, await ctx.discover("demo+Greeter"), pb, "Greeter")
        for name, times in (("visitor", 1), ("again", 2)):
            reply = await greeter.SayHello(pb.HelloRequest(name=name, times=times), timeout=5)
            print(f"visitor got: {reply.message}", flush=True)
        tally = await greeter.Count(pb.Tally())
        print(f"visitor: the greeter greeted {tally.greeted} time(s)", flush=True)
