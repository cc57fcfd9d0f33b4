"""Typed services from a ``.proto`` ``service`` block (DESIGN §4).

``@service`` makes an actor class serve every method of a protobuf service: route keys
(``package.Service.Method``) and request and response types come from the service's
descriptor, so nothing is spelt twice. :class:`ServiceClient` calls such a service from an
actor or a Shell, typed the same way. Both work on any ``_pb2`` module protoc generated:
the service descriptor is in it even without gRPC.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from ._actor import _ROUTE_ATTR, RouteSpec
from ._payload_type import PayloadType

if TYPE_CHECKING:
    from ._context import Context
    from ._shell import Shell

_C = TypeVar("_C", bound=type)


def service_descriptor(
    proto: ServiceDescriptor | ModuleType, name: str | None = None
) -> ServiceDescriptor:
    """The descriptor of service ``name`` in a ``_pb2`` module (``name`` may be left out
    when the module defines exactly one service), or ``proto`` itself if it is one."""
    if isinstance(proto, ServiceDescriptor):
        if name is not None and name != proto.name:
            raise ValueError(f"the service descriptor is {proto.name!r}, not {name!r}")
        return proto
    file_descriptor = getattr(proto, "DESCRIPTOR", None)
    services = dict(getattr(file_descriptor, "services_by_name", {}) or {})
    if not services:
        raise ValueError(f"{getattr(proto, '__name__', proto)!r} defines no protobuf service")
    if name is None:
        if len(services) > 1:
            raise ValueError(
                f"{proto.__name__} defines {len(services)} services "
                f"({', '.join(sorted(services))}): name one"
            )
        return next(iter(services.values()))
    if name not in services:
        raise ValueError(
            f"{proto.__name__} has no service {name!r} (it has {', '.join(sorted(services))})"
        )
    return services[name]


def route_key_of(method: MethodDescriptor) -> str:
    """``package.Service.Method``: the route key a service method is served under."""
    return f"{method.containing_service.full_name}.{method.name}"


def find_method(route_key: str) -> MethodDescriptor | None:
    """The service method served under ``route_key``, among the ``_pb2`` modules imported
    so far (``package.Service.Method`` is also the method's full protobuf name)."""
    from google.protobuf import descriptor_pool

    try:
        return descriptor_pool.Default().FindMethodByName(route_key)
    except KeyError:
        return None


def method_from_node(route_key: str, config: str, modules: list[str]) -> MethodDescriptor:
    """Find the service method for ``route_key`` the way ``actrhost call --json`` and
    ``actrhost load --payload-json`` do: among the ``_pb2`` modules that the handler modules
    of the node's config import (unless ``config`` is an ``ipc://`` endpoint), and
    ``modules`` (``--proto-module``). Raises ``ConfigError`` for a bad config and
    ``LookupError`` (one line, naming the flag) when no such method is known."""
    from ._load._payload import PayloadError, import_proto_modules

    if not config.startswith("ipc://"):
        from ._config import load_config, resolve_handler

        node = load_config(config)
        for actor in node.actors:
            resolve_handler(node, actor)
    try:
        import_proto_modules(modules)
    except PayloadError as exc:
        raise LookupError(str(exc)) from None
    method = find_method(route_key)
    if method is None:
        raise LookupError(
            f"{route_key} is not a method of any protobuf service the node's handler modules "
            "or --proto-module import"
        )
    return method


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def service(
    proto: ServiceDescriptor | ModuleType,
    name: str | None = None,
    *,
    payload_type: PayloadType = PayloadType.RPC_RELIABLE,
) -> Callable[[_C], _C]:
    """Class decorator: the actor serves every method of the protobuf service.

    ``@service(greeter_pb2)`` (or ``@service(greeter_pb2, "Greeter")``, or a
    ``ServiceDescriptor``). Each method ``SayHello`` is an ``async def`` of the class
    named ``SayHello`` or ``say_hello``, taking ``(self, ctx, request)``: the request is
    decoded into the method's input type, and the handler returns its output type (or
    bytes already encoded). Its route key is ``package.Greeter.SayHello``, on
    ``payload_type``'s lane unless the handler has its own ``@rpc`` with that key. A
    missing handler, or a streaming method (use data streams instead), is a ``TypeError``
    when the class is defined, so a node refuses the config before starting.
    """
    descriptor = service_descriptor(proto, name)

    def decorate(cls: _C) -> _C:
        problems: list[str] = []
        for method in descriptor.methods:
            key = route_key_of(method)
            if method.client_streaming or method.server_streaming:
                problems.append(f"{key} streams (use data streams: ctx.send_data_stream)")
                continue
            names = (method.name, _snake_case(method.name))
            func = next((getattr(cls, n) for n in names if callable(getattr(cls, n, None))), None)
            if func is None:
                problems.append(f"no method {' or '.join(dict.fromkeys(names))} for {key}")
                continue
            if not inspect.iscoroutinefunction(func):
                problems.append(f"{func.__name__} (for {key}) must be an 'async def'")
                continue
            own = getattr(func, _ROUTE_ATTR, None)
            lane = own.payload_type if isinstance(own, RouteSpec) and own.route_key == key else None
            setattr(
                func,
                _ROUTE_ATTR,
                RouteSpec(
                    key,
                    PayloadType(lane or payload_type),
                    GetMessageClass(method.input_type),
                    GetMessageClass(method.output_type),
                ),
            )
        if problems:
            raise TypeError(f"{cls.__name__} serves {descriptor.full_name}: " + "; ".join(problems))
        return cls

    return decorate


class ServiceClient:
    """Calls the methods of a protobuf service on one actor, typed by the descriptor.

    ``caller`` is the ``Context`` of an actor (``target``: a ``Dest`` or an ``ActrId``) or a
    ``Shell`` (``target``: anything ``Shell.call`` takes). ``await client.SayHello(request)``
    returns the method's output message; ``call("SayHello", request)`` is the same, and
    ``tell("SayHello", request)`` sends without waiting for an answer. A request of another
    type than the method's input is a ``TypeError`` before anything is sent.
    """

    def __init__(
        self,
        caller: Context | Shell,
        target: Any,
        proto: ServiceDescriptor | ModuleType,
        name: str | None = None,
        *,
        timeout: float = 30.0,
        payload_type: PayloadType = PayloadType.RPC_RELIABLE,
    ) -> None:
        from ._context import Context, Dest
        from ._ids import ActrId

        self.service = service_descriptor(proto, name)
        if isinstance(caller, Context) and isinstance(target, ActrId):
            target = Dest.actor(target)
        self._caller = caller
        self._target = target
        self.timeout = timeout
        self.payload_type = payload_type

    def _method(self, method_name: str, request: Message) -> tuple[str, type[Message]]:
        method = self.service.methods_by_name.get(method_name)
        if method is None:
            raise AttributeError(f"service {self.service.full_name} has no method {method_name!r}")
        input_type = GetMessageClass(method.input_type)
        if not isinstance(request, input_type):
            raise TypeError(
                f"{route_key_of(method)} takes {method.input_type.full_name}, "
                f"not {type(request).__name__}"
            )
        return route_key_of(method), GetMessageClass(method.output_type)

    async def call(
        self, method_name: str, request: Message, *, timeout: float | None = None
    ) -> Any:
        """Call one method; returns its output message (raises the usual ``ActrError``)."""
        route_key, output_type = self._method(method_name, request)
        return await self._caller.call(
            self._target,
            route_key,
            request,
            timeout=self.timeout if timeout is None else timeout,
            payload_type=self.payload_type,
            response_type=output_type,
        )

    async def tell(self, method_name: str, request: Message) -> None:
        """Send one method's request without waiting for (or getting) an answer."""
        route_key, _output_type = self._method(method_name, request)
        await self._caller.tell(self._target, route_key, request, payload_type=self.payload_type)

    def __getattr__(self, method_name: str) -> Callable[..., Awaitable[Any]]:
        service = self.__dict__.get("service")  # None while __init__ runs
        if service is None or method_name not in service.methods_by_name:
            raise AttributeError(f"service {self.service.full_name} has no method {method_name!r}")

        async def call(request: Message, *, timeout: float | None = None) -> Any:
            return await self.call(method_name, request, timeout=timeout)

        call.__name__ = method_name
        return call

    def __repr__(self) -> str:
        return f"ServiceClient({self.service.full_name} -> {self._target})"
