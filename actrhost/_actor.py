"""The base class users subclass, and the ``@rpc`` decorator that names a handler's route."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from ._errors import BadRequest, HandlerError
from ._ids import ActrType
from ._payload_type import PayloadType
from ._settings import NO_SETTINGS

if TYPE_CHECKING:
    from ._context import Context

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
_ROUTE_ATTR = "__actrhost_route__"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """What ``@rpc`` (or ``@service``) records on a handler: its route key and lane, and
    for a service method the request's message class (``@rpc`` reads the annotation)."""

    route_key: str
    payload_type: PayloadType
    request_type: type | None = None
    #: A service method's output message class: an answer of another type is refused.
    response_type: type | None = None


def rpc(
    route_key: str, *, payload_type: PayloadType = PayloadType.RPC_RELIABLE
) -> Callable[[_F], _F]:
    """Mark an ``async def handler(self, ctx, request)`` as serving ``route_key``.

    ``route_key`` is ``"package.Service.Method"``. If ``request`` is annotated with a
    protobuf message class it is decoded into one, and a returned message is encoded;
    otherwise the handler gets and returns ``bytes``. That class must be importable when
    the handler runs (not only under ``if TYPE_CHECKING:``): an annotation that does not
    resolve fails the config check. ``payload_type=PayloadType.RPC_SIGNAL``
    puts the route on the signal lane, served before queued RPC_RELIABLE work.
    """
    if not isinstance(route_key, str) or not route_key:
        raise ValueError("rpc() needs a non-empty route key such as 'demo.Echo.Say'")
    if payload_type not in (PayloadType.RPC_RELIABLE, PayloadType.RPC_SIGNAL):
        raise ValueError(f"rpc() routes use RPC_RELIABLE or RPC_SIGNAL, not {payload_type.name}")

    def mark(func: _F) -> _F:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@rpc({route_key!r}) needs an 'async def', got {func!r}")
        setattr(func, _ROUTE_ATTR, RouteSpec(route_key, PayloadType(payload_type)))
        return func  # type: ignore[return-value]

    return mark


class Actor:
    """Base class of user actors. One instance lives in one worker process.

    Subclasses define ``@rpc`` handlers and optionally ``on_start`` / ``on_stop``. The
    worker creates the class with no arguments, and sets ``actr_type``, ``name`` and
    ``settings`` from the config before ``__init__`` runs.

    ``settings`` is the actor's ``[actor.settings]`` table, read-only. Annotate it in the
    subclass with a dataclass (``settings: EchoSettings``) to get an instance of that
    instead, every key checked against its fields when the config is loaded.
    """

    actr_type: ActrType | None = None
    name: str = ""
    settings: Any = NO_SETTINGS

    async def on_start(self, ctx: Context) -> None:
        """Called once before the actor serves any message. Raising here fails the start."""

    async def on_stop(self, ctx: Context) -> None:
        """Called once on a clean stop, after in-flight handlers finished or were cancelled."""


@dataclass(frozen=True, slots=True)
class Route:
    """One bound handler: how to decode its request, call it and encode its answer."""

    spec: RouteSpec
    handler: Callable[..., Awaitable[Any]]
    request_type: type | None  # a protobuf message class, or None for bytes

    def encode_answer(self, result: Any) -> bytes:
        """The handler's answer as bytes; HandlerError (500, the handler's fault, not the
        caller's) when it cannot be sent or is not its service method's output type."""
        from ._context import encode_message  # _context imports this module

        expected = self.spec.response_type
        if expected is not None and not isinstance(result, expected):
            raise HandlerError(
                f"the handler's answer: a {type(result).__name__}, not the "
                f"{expected.__name__} its service method returns"
            )
        try:
            return encode_message(result)
        except BadRequest as exc:
            raise HandlerError(f"the handler's answer: {exc.message}") from None


def route_table(cls: type) -> dict[str, tuple[str, RouteSpec]]:
    """Route key -> (method name, spec) of every ``@rpc`` or ``@service`` handler of an
    actor class; raises TypeError on a route key used twice."""
    table: dict[str, tuple[str, RouteSpec]] = {}
    for attr in dir(cls):
        spec = getattr(getattr(cls, attr, None), _ROUTE_ATTR, None)
        if not isinstance(spec, RouteSpec):
            continue
        if spec.route_key in table:
            raise TypeError(
                f"{cls.__name__}: route {spec.route_key!r} is served by both "
                f"{table[spec.route_key][0]} and {attr}"
            )
        table[spec.route_key] = (attr, spec)
    return table


def collect_routes(actor: Actor) -> dict[str, Route]:
    """Bind every handler of ``actor`` (see :func:`route_table`)."""
    routes: dict[str, Route] = {}
    for key, (attr, spec) in route_table(type(actor)).items():
        request_type = spec.request_type or request_message_type(getattr(type(actor), attr))
        routes[key] = Route(spec, getattr(actor, attr), request_type)
    return routes


def request_message_type(func: Callable[..., Any]) -> type | None:
    """The protobuf class the handler's request parameter is annotated with, if any.

    Only that annotation is resolved: another one that does not resolve at run time (a
    ``ctx: Context`` imported under ``if TYPE_CHECKING:``) used to turn a message request
    into bytes, silently (QA). Raises ``TypeError`` when the request's own annotation
    does not resolve: it may name a message class, and guessing "bytes" hides that.
    """
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    if len(params) < 2 or params[1].annotation is inspect.Parameter.empty:
        return None
    request = params[1]
    # get_type_hints on an object holding just this one annotation, in the module's names.
    only = SimpleNamespace(
        __annotations__={request.name: request.annotation},
        __globals__=getattr(inspect.unwrap(func), "__globals__", {}),
    )
    try:
        annotation = get_type_hints(only)[request.name]
    except Exception as exc:
        raise TypeError(
            f"{func.__qualname__}: the annotation of its request, {request.annotation!r}, "
            f"does not resolve when it runs ({type(exc).__name__}: {exc}); import a message "
            "class outside `if TYPE_CHECKING:` (a request annotated with one is decoded)"
        ) from None
    return annotation if is_message_class(annotation) else None


def check_callback(callback: Callable[..., Any], what: str) -> None:
    """Raise ``TypeError`` now if ``callback`` cannot be called as ``what`` (two
    positional arguments): else each call of it fails later, far from the mistake (a
    traceback per stream chunk, a 500 to each actor calling a Shell, QA)."""
    try:
        inspect.signature(callback).bind(None, None)
    except TypeError:
        raise TypeError(f"{callback!r} cannot be called as {what}") from None
    except ValueError:
        pass  # no signature to check (some builtins)


def is_message_class(obj: object) -> bool:
    """True for a generated protobuf message class."""
    from google.protobuf.message import Message

    return isinstance(obj, type) and issubclass(obj, Message)
