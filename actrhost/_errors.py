"""The one exception tree of actrhost, and the wire codes that carry it between processes.

Only the numeric code crosses the wire (with the message); the receiver maps it back to the
class with :func:`error_from_code`, so ``except actrhost.NotFound`` works the same for a
local and a remote failure.
"""

from __future__ import annotations

import asyncio
from enum import IntEnum


class ErrorCode(IntEnum):
    """Wire error codes (DESIGN §2). Stable: never renumber."""

    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    PERMISSION_DENIED = 403
    NOT_FOUND = 404
    HANDLER_ERROR = 500
    UNAVAILABLE = 503
    DEADLINE_EXCEEDED = 504


class ActrError(Exception):
    """Root of every error an actor call can raise.

    ``code`` is the wire code (an :class:`ErrorCode` value) and ``message`` the text, kept
    as the remote side wrote it.
    """

    code: int = ErrorCode.HANDLER_ERROR

    def __init__(self, message: str = "", *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            if not isinstance(code, int) or isinstance(code, bool):
                # Raised in a handler, it failed the answer: the caller waited (QA).
                raise TypeError(f"an ActrError's code is an int, not {type(code).__name__}")
            self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (error_from_code, (self.code, self.message))


class BadRequest(ActrError):
    """400: the request could not be decoded or is invalid."""

    code = ErrorCode.BAD_REQUEST


class Unauthorized(ActrError):
    """401: a missing, forged or expired credential."""

    code = ErrorCode.UNAUTHORIZED


class PermissionDenied(ActrError):
    """403: the callee's ACL refused the caller."""

    code = ErrorCode.PERMISSION_DENIED


class NotFound(ActrError):
    """404: no such route key, actor or actor type."""

    code = ErrorCode.NOT_FOUND


class HandlerError(ActrError):
    """500: the handler raised, or its answer could not be encoded."""

    code = ErrorCode.HANDLER_ERROR


class Unavailable(ActrError):
    """503: the target or the transport is down, stopping or restarting."""

    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(ActrError, TimeoutError):
    """504: the call's deadline passed before an answer came."""

    code = ErrorCode.DEADLINE_EXCEEDED


_CLASS_BY_CODE: dict[int, type[ActrError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        PermissionDenied,
        NotFound,
        HandlerError,
        Unavailable,
        DeadlineExceeded,
    )
}


def error_from_code(code: int, message: str) -> ActrError:
    """Build the exception for a wire code; an unknown code keeps its number on ActrError."""
    cls = _CLASS_BY_CODE.get(code)
    if cls is None:
        return ActrError(message, code=code)
    return cls(message)


def wire_code(error: ActrError) -> int | None:
    """The code ``error`` goes on the wire with, or None when it has none it can carry as
    an error (0 reads as success; the field is a uint32; a subclass may set anything)."""
    code = error.code
    if isinstance(code, int) and not isinstance(code, bool) and 0 < code < 2**32:
        return int(code)
    return None


def cancelled_from_outside() -> bool:
    """Whether the running task is being cancelled (a stop, a close, an unregister), as
    opposed to a ``CancelledError`` its own code raised (a future it awaited was
    cancelled), which is that code's failure like any exception."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def handler_failure(exc: BaseException) -> HandlerError:
    """The 500 that a handler's unexpected exception becomes: ``"<Type>: <text>"``.

    An exception whose ``str()`` itself raises still gives its caller an answer (the
    failure propagated out of the error path and the caller waited for its deadline).
    """
    try:
        text = str(exc)
    except Exception as broken:
        text = f"<str() of it raised {type(broken).__name__}>"
    return HandlerError(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class ConfigError(Exception):
    """A config file is invalid. ``str()`` is the one line shown to the user."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        line = f"{path}: {key}: {problem}" if key else f"{path}: {problem}"
        super().__init__(printable(line))  # one line, whatever a path, key or value holds


def printable(text: str) -> str:
    """``text`` with control characters escaped (a newline shown as ``\\n``): one line
    of a message or a table cell, whatever a path, key or name in it holds."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ClosedResourceError(RuntimeError):
    """A Shell, socket or channel was used after it was closed."""
