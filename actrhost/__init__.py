"""actrhost: a Python host for Actor-RTC style actors.

The public surface is what ``__all__`` lists; everything else lives in private modules.
"""

from __future__ import annotations

import logging

from ._actor import Actor as Actor
from ._actor import rpc as rpc
from ._connect import connect as connect
from ._context import Context as Context
from ._context import Dest as Dest
from ._directory import ActorState as ActorState
from ._errors import ActrError as ActrError
from ._errors import BadRequest as BadRequest
from ._errors import ClosedResourceError as ClosedResourceError
from ._errors import ConfigError as ConfigError
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import ErrorCode as ErrorCode
from ._errors import HandlerError as HandlerError
from ._errors import NotFound as NotFound
from ._errors import PermissionDenied as PermissionDenied
from ._errors import Unauthorized as Unauthorized
from ._errors import Unavailable as Unavailable
from ._ids import ActrId as ActrId
from ._ids import ActrType as ActrType
from ._ids import Realm as Realm
from ._payload_type import PayloadType as PayloadType
from ._payloads import DataStream as DataStream
from ._payloads import MediaSample as MediaSample
from ._payloads import MediaType as MediaType
from ._service import ServiceClient as ServiceClient
from ._service import service as service
from ._shell import ActorInfo as ActorInfo
from ._shell import Shell as Shell

__all__ = [
    "Actor",
    "ActorInfo",
    "ActorState",
    "ActrError",
    "ActrId",
    "ActrType",
    "BadRequest",
    "ClosedResourceError",
    "ConfigError",
    "Context",
    "DataStream",
    "DeadlineExceeded",
    "Dest",
    "ErrorCode",
    "HandlerError",
    "MediaSample",
    "MediaType",
    "NotFound",
    "PayloadType",
    "PermissionDenied",
    "Realm",
    "ServiceClient",
    "Shell",
    "Unauthorized",
    "Unavailable",
    "connect",
    "rpc",
    "service",
]

__version__ = "0.1.0"

# Tracebacks and pickled errors show actrhost.X, not actrhost._module.X (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("actrhost._"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj

logging.getLogger(__name__).addHandler(logging.NullHandler())
