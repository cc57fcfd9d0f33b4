"""Serving ``Dest.SHELL``: the routes a Shell serves for actors that call it, and its
answers to their requests and tells (a mixin of :class:`~._shell.Shell`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._actor import check_callback
from ._context import decode_message, encode_message
from ._envelope import REQUEST, RESPONSE, Envelope, checked_key, error_response
from ._errors import (
    ActrError,
    BadRequest,
    HandlerError,
    NotFound,
    cancelled_from_outside,
    handler_failure,
)
from ._rpc import RpcEndpoint

# The Shell's log: these are its messages, whichever module holds the code.
log = logging.getLogger("actrhost._shell")

#: ``async def handler(request, caller_id: ActrId)``: the caller is typed Any so that a
#: handler may annotate it as it likes (``ActrId``, as the calling actor's always is).
ShellHandler = Callable[[Any, Any], Awaitable[Any] | Any]
_Handler = TypeVar("_Handler", bound=ShellHandler)


class ShellServing:
    """Mixin of :class:`~._shell.Shell`: the ``Dest.SHELL`` routes it serves."""

    # Set up by Shell.__init__ / Shell.open.
    _handlers: dict[str, tuple[ShellHandler, type | None]]
    _rpc: RpcEndpoint
    _check_open: Callable[[], None]
    _send_attach: Callable[[], None]
    _spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]

    def on_rpc(
        self, route_key: str, *, request_type: type | None = None
    ) -> Callable[[_Handler], _Handler]:
        """Serve ``route_key`` for actors calling ``Dest.SHELL``.

        The handler is ``async def handler(request, caller_id) -> bytes | message`` (or
        a plain function); ``request`` is bytes, or a ``request_type`` message. Actors
        see the route once the supervisor has passed the new directory on (a few
        milliseconds); this Shell's own calls, tells and streams wait until then, so an
        actor they reach can call back.
        """
        self._check_open()
        checked_key("route_key", route_key)

        def register(handler: _Handler) -> _Handler:
            check_callback(handler, "a Shell handler(request, caller_id)")
            self._handlers[route_key] = (handler, request_type)
            self._send_attach()
            return handler

        return register

    def _on_request(self, env: Envelope, routing_id: bytes) -> None:
        self._spawn(self._serve(env, routing_id))

    async def _serve(self, env: Envelope, routing_id: bytes) -> None:
        entry = self._handlers.get(env.route_key)
        error: ActrError | None = None
        payload = b""
        if entry is None:
            error = NotFound(f"this Shell serves no route {env.route_key!r}")
        else:
            handler, request_type = entry
            try:
                result = handler(decode_message(env.payload, request_type), env.source)
                if inspect.isawaitable(result):  # (a plain function, as a stream callback)
                    result = await result
                try:
                    payload = encode_message(result)
                except BadRequest as exc:  # the handler's fault, as for an actor's answer
                    raise HandlerError(f"the handler's answer: {exc.message}") from None
            except asyncio.CancelledError as exc:
                if cancelled_from_outside():  # the Shell is closing
                    raise
                # Its own code's (a future it awaited was cancelled): as any exception.
                # The caller waited for its deadline (QA).
                log.warning("Shell handler for %r raised its own CancelledError", env.route_key)
                error = handler_failure(exc)
            except ActrError as exc:
                error = exc
            except (SystemExit, KeyboardInterrupt):
                raise  # the program's own exit
            except BaseException as exc:  # GeneratorExit too: its caller waited (QA)
                log.exception("Shell handler for %r raised", env.route_key)
                error = handler_failure(exc)
        if env.direction != REQUEST:
            return
        if error is not None:
            response = error_response(env.request_id, error)
        else:
            response = Envelope(RESPONSE, payload=payload, request_id=env.request_id)
        self._rpc.reply(routing_id, response)
