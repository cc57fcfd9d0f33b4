"""An actor's settings: the ``[actor.settings]`` table of its config, checked and typed.

An actor class that annotates ``settings`` with a dataclass gets an instance of it, built
from the table with every key checked against the fields and their types; a mistake is a
config error naming the key (``actor[0].settings.interval_s: must be a number (got
'fast')``), found by ``actrhost check`` and ``run`` before anything starts. Without such an
annotation the actor gets the table as a read-only mapping.

Types understood in a settings dataclass: ``str``, ``int``, ``float`` (an integer is
accepted), ``bool``, ``Any``, ``Literal[...]``, ``X | None`` (TOML has no null: the field
is simply left out), ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, and nested
dataclasses (sub-tables). A field without a default is required.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["SettingsError", "build_settings", "settings_type"]

#: A key TOML writes without quotes; others are shown quoted in errors.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

#: The read-only empty table an actor gets when its config has no settings.
NO_SETTINGS: Mapping[str, Any] = types.MappingProxyType({})


class SettingsError(ValueError):
    """A settings table that does not fit the actor's settings type. ``key`` is the
    dotted path below ``settings`` (``""`` for the table itself)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def settings_type(cls: type) -> type | None:
    """The dataclass that ``cls`` (or a base) annotates ``settings`` with, else None.

    Raises :class:`SettingsError` if the annotation cannot be resolved or is not a
    dataclass, or the dataclass uses a type this module does not convert.
    """
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] == "actrhost":
            return None  # reached actrhost.Actor: its ``settings: Any`` is the plain table
        annotation = inspect.get_annotations(klass).get("settings")
        if annotation is None:
            continue
        hint = _resolve(klass, annotation)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            _check_supported(hint, "")
            return hint
        if hint is Any or hint in (dict, Mapping) or typing.get_origin(hint) in (dict, Mapping):
            return None  # a mapping: the table as it is
        raise SettingsError(
            "", f"{cls.__name__}.settings must be annotated with a dataclass (got {hint!r})"
        )
    return None


def build_settings(cls: type, table: Mapping[str, Any]) -> Any:
    """What ``cls``'s instances get as ``self.settings`` for the config's ``table``."""
    target = settings_type(cls)
    if target is None:
        return types.MappingProxyType(dict(table))
    return _dataclass(target, table, "")


def _resolve(klass: type, annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(klass.__module__)
    namespace = dict(vars(module)) if module is not None else {}
    namespace.setdefault(klass.__name__, klass)
    try:
        return eval(annotation, namespace)  # what typing.get_type_hints does, for one name
    except Exception as exc:
        raise SettingsError(
            "", f"cannot resolve {klass.__name__}.settings's annotation {annotation!r}: {exc}"
        ) from None


def _field_hints(target: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except Exception as exc:
        problem = f"cannot resolve the annotations of {target.__name__}: {exc}"
        raise SettingsError("", problem) from None


def _check_supported(target: type, prefix: str) -> None:
    """Fail when the class is checked, not when a config happens to use a field."""
    hints = _field_hints(target)
    for field in dataclasses.fields(target):
        _check_hint(hints[field.name], _join(prefix, field.name))


def _check_hint(hint: Any, key: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (str, int, float, bool, Any):
        return
    if origin is Literal:
        return
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                _check_hint(arg, key)
        return
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        _check_hint(args[0] if args else Any, f"{key}[]")
        return
    if origin is dict and (not args or args[0] is str):
        _check_hint(args[1] if args else Any, f"{key}.*")
        return
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        _check_supported(hint, key)
        return
    raise SettingsError(key, f"settings cannot hold a {hint!r} (see actrhost/_settings.py)")


def _dataclass(target: type, table: Any, prefix: str) -> Any:
    if not isinstance(table, Mapping):
        raise SettingsError(prefix, f"must be a table (got {_show(table)})")
    fields = {f.name: f for f in dataclasses.fields(target) if f.init}
    for name in table:
        if name not in fields:
            allowed = ", ".join(fields) or "none"
            raise SettingsError(_join(prefix, name), f"unknown setting (allowed: {allowed})")
    hints = _field_hints(target)
    values = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in table:
            values[name] = _convert(hints[name], table[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SettingsError(key, "required setting is missing")
    try:
        return target(**values)
    except Exception as exc:  # its __post_init__ or a default_factory raised
        text = " ".join(str(exc).split())  # one line
        problem = f"{target.__name__}(...) raised {type(exc).__name__}"
        problem += f": {text}" if text else ""
        raise SettingsError(prefix, problem) from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if hint is bool:
        return _expect(value, isinstance(value, bool), key, "true or false")
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return _expect(value, ok, key, "an integer")
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(_expect(value, ok, key, "a number"))
    if hint is str:
        return _expect(value, isinstance(value, str), key, "a string")
    if origin is Literal:
        choices = ", ".join(repr(a) for a in args)
        ok = any(value == a and type(value) is type(a) for a in args)
        return _expect(value, ok, key, f"one of {choices}")
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except SettingsError as exc:
                errors.append(exc.problem)
        raise SettingsError(key, " or ".join(errors) if len(errors) > 1 else errors[0])
    if origin in (list, tuple):
        _expect(value, isinstance(value, list), key, "an array")
        items = [_convert(args[0] if args else Any, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        _expect(value, isinstance(value, Mapping), key, "a table")
        item = args[1] if args else Any
        return {k: _convert(item, v, _join(key, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, value, key)
    raise SettingsError(key, f"settings cannot hold a {hint!r}")  # _check_hint refused it


def _expect(value: Any, ok: bool, key: str, expected: str) -> Any:
    if not ok:
        raise SettingsError(key, f"must be {expected} (got {_show(value)})")
    return value


def _show(value: Any) -> str:
    from ._config import show_value  # late: _config imports this module

    return show_value(value)


def _join(prefix: str, name: str) -> str:
    # A key that is not a bare TOML key is shown quoted, as it is written.
    shown = name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)
    return f"{prefix}.{shown}" if prefix else shown
