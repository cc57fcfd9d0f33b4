"""The compatibility checker: can a client built for one version of a service use another?

:func:`check_compatibility` compares two versions of a service schema, parsed by
:mod:`._fingerprint` (DESIGN §7), and lists its reasons: added fields, methods, messages,
enums and enum values are backward compatible; removed or renumbered fields, changed
types, labels or oneofs, removed methods, messages or enum values are breaking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ._fingerprint import ProtoSchema, parse_schema

__all__ = [
    "Compatibility",
    "CompatibilityReport",
    "check_compatibility",
]


class Compatibility(StrEnum):
    """How a new version of a service relates to an old one."""

    IDENTICAL = "identical"
    BACKWARD_COMPATIBLE = "backward_compatible"
    BREAKING = "breaking"


@dataclass(frozen=True, slots=True)
class CompatibilityReport:
    """Result of :func:`check_compatibility`: the level and one line per difference."""

    level: Compatibility
    reasons: tuple[str, ...]

    @property
    def is_compatible(self) -> bool:
        """True for identical and backward-compatible versions."""
        return self.level is not Compatibility.BREAKING


def check_compatibility(
    old: str | Iterable[str] | ProtoSchema, new: str | Iterable[str] | ProtoSchema
) -> CompatibilityReport:
    """Classify ``new`` against ``old``: can a client built for ``old`` use ``new``?

    Both sides are schema texts or parsed schemas. The reasons name each difference, e.g.
    ``"field demo.Req.id: number 1 -> 4"``. Raises :class:`SchemaError` on unparsable text.
    """
    if not isinstance(old, ProtoSchema):
        old = parse_schema(old)
    if not isinstance(new, ProtoSchema):
        new = parse_schema(new)
    if old.normalized_text() == new.normalized_text():
        return CompatibilityReport(Compatibility.IDENTICAL, ())
    breaking: list[str] = []
    added: list[str] = []
    if old.packages != new.packages:
        breaking.append(f"package {sorted(old.packages)} -> {sorted(new.packages)}")
    _compare_messages(old, new, breaking, added)
    _compare_enums(old, new, breaking, added)
    _compare_services(old, new, breaking, added)
    if breaking:
        return CompatibilityReport(Compatibility.BREAKING, tuple(breaking + added))
    return CompatibilityReport(Compatibility.BACKWARD_COMPATIBLE, tuple(added))


def _compare_messages(
    old: ProtoSchema, new: ProtoSchema, breaking: list[str], added: list[str]
) -> None:
    for name in sorted(old.messages):
        if name not in new.messages:
            breaking.append(f"message {name} removed")
            continue
        old_fields, new_fields = old.messages[name], new.messages[name]
        new_by_number = {f.number: f for f in new_fields.values()}
        for f in sorted(old_fields.values(), key=lambda f: f.number):
            where = f"field {name}.{f.name}"
            g = new_fields.get(f.name)
            if g is None:
                other = new_by_number.get(f.number)
                if other is not None:
                    breaking.append(f"{where}: number {f.number} renamed to {other.name}")
                else:
                    breaking.append(f"{where} (number {f.number}) removed")
                continue
            if g.number != f.number:
                breaking.append(f"{where}: number {f.number} -> {g.number}")
            if g.type != f.type:
                breaking.append(f"{where}: type {f.type} -> {g.type}")
            if g.label != f.label:
                breaking.append(f"{where}: label {f.label} -> {g.label}")
            if g.oneof != f.oneof:
                breaking.append(f"{where}: oneof {f.oneof or '-'} -> {g.oneof or '-'}")
        old_numbers = {f.number for f in old_fields.values()}
        for g in sorted(new_fields.values(), key=lambda f: f.number):
            if g.name not in old_fields and g.number not in old_numbers:
                added.append(f"field {name}.{g.name} (number {g.number}) added")
    for name in sorted(set(new.messages) - set(old.messages)):
        added.append(f"message {name} added")


def _compare_enums(
    old: ProtoSchema, new: ProtoSchema, breaking: list[str], added: list[str]
) -> None:
    for name in sorted(old.enums):
        if name not in new.enums:
            breaking.append(f"enum {name} removed")
            continue
        old_values, new_values = old.enums[name], new.enums[name]
        for value, number in sorted(old_values.items(), key=lambda kv: kv[1]):
            if value not in new_values:
                breaking.append(f"enum value {name}.{value} (= {number}) removed")
            elif new_values[value] != number:
                breaking.append(f"enum value {name}.{value}: {number} -> {new_values[value]}")
        for value in sorted(set(new_values) - set(old_values)):
            added.append(f"enum value {name}.{value} (= {new_values[value]}) added")
    for name in sorted(set(new.enums) - set(old.enums)):
        added.append(f"enum {name} added")


def _compare_services(
    old: ProtoSchema, new: ProtoSchema, breaking: list[str], added: list[str]
) -> None:
    for name in sorted(old.services):
        if name not in new.services:
            breaking.append(f"service {name} removed")
            continue
        old_methods, new_methods = old.services[name], new.services[name]
        for method, m in sorted(old_methods.items()):
            where = f"method {name}.{method}"
            n = new_methods.get(method)
            if n is None:
                breaking.append(f"{where} removed")
                continue
            if n.request != m.request:
                breaking.append(f"{where}: request {m.request} -> {n.request}")
            if n.response != m.response:
                breaking.append(f"{where}: response {m.response} -> {n.response}")
            if (n.client_streaming, n.server_streaming) != (m.client_streaming, m.server_streaming):
                breaking.append(f"{where}: streaming changed")
        for method in sorted(set(new_methods) - set(old_methods)):
            added.append(f"method {name}.{method} added")
    for name in sorted(set(new.services) - set(old.services)):
        added.append(f"service {name} added")
