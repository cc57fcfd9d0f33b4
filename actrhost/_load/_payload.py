"""Request payloads for ``actrhost load``: text, a file, hex, a size, or protobuf from JSON."""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .._config import MAX_MAX_MESSAGE_BYTES
from ._units import format_bytes


class PayloadError(ValueError):
    """A payload option cannot be turned into bytes; ``str()`` is the one line to show."""


@dataclass(frozen=True)
class MessageLimit:
    """The largest message the node takes, and how to say it."""

    size_bytes: int = MAX_MAX_MESSAGE_BYTES
    said: str = f"the largest message any node takes ({MAX_MAX_MESSAGE_BYTES // 2**30} GiB)"


def message_limit(config_path: str) -> MessageLimit:
    """The node's ``max_message_bytes`` when ``config_path`` is a config that reads, else
    the most any node takes (an ``ipc://`` endpoint names no config: the node says it)."""
    from .._config import load_config
    from .._errors import ConfigError

    if config_path.startswith("ipc://"):
        return MessageLimit()
    try:
        limit = load_config(config_path).node.max_message_bytes
    except ConfigError:
        return MessageLimit()  # (said where the config is used)
    return MessageLimit(limit, f"the node's max_message_bytes ({format_bytes(limit)})")


def chunk_limit(config_path: str) -> MessageLimit:
    """The largest stream chunk the node takes: one from ``[shm] threshold_bytes`` up goes
    through a ring, and must fit it (``max_message_bytes`` does not bind streams). The
    most any node takes for an ``ipc://`` endpoint (the node says it when attached)."""
    from .._config import load_config
    from .._errors import ConfigError
    from ..shm import RING_RECORD_HEADER_BYTES

    if config_path.startswith("ipc://"):
        return MessageLimit()
    try:
        shm = load_config(config_path).shm
    except ConfigError:
        return MessageLimit()  # (said where the config is used)
    ring = shm.ring_bytes - RING_RECORD_HEADER_BYTES
    if shm.threshold_bytes > ring + 1:  # (then the larger ones go inline)
        return MessageLimit(shm.threshold_bytes - 1, "the node's [shm] threshold_bytes less 1")
    said = f"the node's shared-memory ring ([shm] ring_bytes less a 16-byte header: {ring:,} bytes)"
    return MessageLimit(ring, said)


def read_payload_file(path: Path, limit: MessageLimit) -> bytes:
    """The bytes of ``path`` (a file, or a pipe such as /dev/stdin), at most ``limit``.
    Raises OSError, or ValueError for a larger one (``--data @/dev/zero`` read until
    memory ran out, QA)."""
    with path.open("rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > limit.size_bytes:
            raise ValueError(f"{path} holds {info.st_size:,} bytes: more than {limit.said}")
        data = f.read(limit.size_bytes + 1)
    if len(data) > limit.size_bytes:
        raise ValueError(f"{path} holds more than {limit.said}")
    return data


def from_text_or_file(value: str, limit: MessageLimit) -> tuple[bytes, str]:
    """``TEXT``'s bytes as given (UTF-8 mostly), or ``@FILE``'s; returns ``(payload,
    description)``."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            data = read_payload_file(path, limit)
        except OSError as exc:
            raise PayloadError(f"--payload: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise PayloadError(f"--payload: {exc}") from None
        return data, f"{len(data)} B from {path}"
    data = os.fsencode(value)  # argv bytes that are not UTF-8 come back as they were
    return data, f"{len(data)} B of text"


def from_hex(value: str) -> tuple[bytes, str]:
    """Bytes from hexadecimal text (spaces allowed)."""
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise PayloadError(f"--payload-hex: not hexadecimal: {value!r}") from None
    return data, f"{len(data)} B from hex"


def of_size(size_bytes: int) -> bytes:
    """``size_bytes`` of a fixed, non-repeating-looking pattern (not zeros: some transports
    or handlers might treat all-zero payloads specially)."""
    pattern = bytes(range(256))
    return (pattern * (size_bytes // 256 + 1))[:size_bytes]


def _import_module(spec: str) -> ModuleType:
    """Import a module by dotted name, or from a ``.py`` file path."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).resolve()
        name = path.stem
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None or not path.is_file():
            raise PayloadError(f"--proto-module: no Python file {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def import_proto_modules(modules: list[str]) -> None:
    """Import ``_pb2`` modules (dotted names or ``.py`` paths), registering their messages
    and services; raises :class:`PayloadError` naming one that cannot be imported."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `actrhost` the console script lacks it
    try:
        for module in modules:
            _import_module(module)
    except ImportError as exc:
        raise PayloadError(f"--proto-module: cannot import {exc.name or exc}") from None


def message_class(type_name: str, modules: list[str]) -> type:
    """The protobuf message class for ``type_name``.

    ``type_name`` is ``module:Class`` (e.g. ``google.protobuf.wrappers_pb2:StringValue``)
    or a full protobuf name (``package.Message``) of a message whose ``_pb2`` module is
    imported first from ``modules`` (dotted names or ``.py`` paths). Well-known types
    (``google.protobuf.*``) need no module.
    """
    import_proto_modules(modules)
    try:
        if ":" in type_name:
            module_name, _, attr = type_name.partition(":")
            cls = getattr(_import_module(module_name), attr, None)
            if not isinstance(cls, type):
                raise PayloadError(f"--payload-type: {module_name} has no class {attr!r}")
            return cls
    except ImportError as exc:
        raise PayloadError(f"--proto-module: cannot import {exc.name or exc}") from None
    from google.protobuf import descriptor_pool, message_factory

    if type_name.startswith("google.protobuf."):
        from google.protobuf import (  # noqa: F401 (registers the well-known types)
            any_pb2,
            duration_pb2,
            empty_pb2,
            struct_pb2,
            timestamp_pb2,
            wrappers_pb2,
        )
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        hint = "" if modules else " (import its _pb2 module with --proto-module)"
        raise PayloadError(
            f"--payload-type: unknown protobuf message {type_name!r}{hint}"
        ) from None
    return message_factory.GetMessageClass(descriptor)


def from_json(
    json_text: str, type_name: str, modules: list[str], limit: MessageLimit
) -> tuple[bytes, str]:
    """Serialize the protobuf message ``type_name`` written as JSON (or ``@FILE``)."""
    from google.protobuf import json_format

    if json_text.startswith("@"):
        path = Path(json_text[1:])
        try:
            json_text = read_payload_file(path, limit).decode("utf-8", errors="replace")
        except OSError as exc:
            raise PayloadError(f"--payload-json: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise PayloadError(f"--payload-json: {exc}") from None
    cls = message_class(type_name, modules)
    try:
        message: Any = json_format.Parse(json_text, cls())
    except json_format.ParseError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise PayloadError(f"--payload-json: not a valid {type_name}: {first_line}") from None
    data = message.SerializeToString()
    return data, f"{len(data)} B {message.DESCRIPTOR.full_name} from JSON"
