"""Service fingerprints and the proto schema parser they are computed from (DESIGN §7).

A service's fingerprint is ``service_semantic:<sha256 hex>`` over a normalized form of its
proto schema. The normalized form keeps what changes the meaning of the service (package,
fully-qualified message, enum and service names; each field's name, number, label, type
and oneof; each enum value's name and number; each method's request and response types
and streaming flags) and drops what doesn't (comments, whitespace, declaration order,
options, ``reserved`` statements, imports).

The parser handles the proto3 subset services are written in: ``syntax``, ``package``,
``import``, ``option``, ``message`` (fields, ``map<K, V>``, ``oneof``, nested messages and
enums, ``reserved``), ``enum`` and ``service`` with ``rpc`` methods. It does not depend on
protoc, so a node can fingerprint a schema without grpcio-tools installed.

Comparing two versions of a parsed schema is :mod:`._compatibility`'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "FINGERPRINT_PREFIX",
    "ProtoSchema",
    "SchemaError",
    "is_fingerprint",
    "parse_schema",
    "service_fingerprint",
]

FINGERPRINT_PREFIX = "service_semantic:"
_FINGERPRINT_RE = re.compile(r"service_semantic:[0-9a-f]{64}")
#: Messages nested deeper than this are refused (protobuf's own parser stops at 100).
MAX_NESTING = 100

_SCALARS = frozenset(
    "double float int32 int64 uint32 uint64 sint32 sint64 fixed32 fixed64 sfixed32 "
    "sfixed64 bool string bytes".split()
)

# One token: a comment (dropped), a string literal, an identifier (dots allowed, a leading
# dot marks a fully-qualified name), a number, or one punctuation character.
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<ident>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?))
  | (?P<punct>[{}()\[\];=<>,:.+-])
    """,
    re.VERBOSE | re.DOTALL,
)


class SchemaError(ValueError):
    """The schema text is not in the supported proto3 subset; the message names the line."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    number: int
    label: str  # "singular" | "optional" | "repeated" | "map"
    type: str  # scalar name, resolved full name, or "map<k,v>"
    oneof: str  # "" when not in a oneof


@dataclass(frozen=True, slots=True)
class _Method:
    request: str
    response: str
    client_streaming: bool
    server_streaming: bool


@dataclass(slots=True)
class ProtoSchema:
    """A parsed, name-resolved schema. Build one with :func:`parse_schema`."""

    packages: set[str] = field(default_factory=set)
    # full message name -> field name -> field
    messages: dict[str, dict[str, _Field]] = field(default_factory=dict)
    # full enum name -> value name -> number
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    # full service name -> method name -> method
    services: dict[str, dict[str, _Method]] = field(default_factory=dict)

    def normalized_text(self) -> str:
        """The canonical text the fingerprint is computed over (stable across versions)."""
        lines = [f"package {p}" for p in sorted(self.packages)]
        for name in sorted(self.enums):
            values = sorted(self.enums[name].items(), key=lambda kv: (kv[1], kv[0]))
            lines.append(f"enum {name}")
            lines.extend(f"  value {v} = {n}" for v, n in values)
        for name in sorted(self.messages):
            lines.append(f"message {name}")
            for f in sorted(self.messages[name].values(), key=lambda f: (f.number, f.name)):
                lines.append(f"  field {f.number} {f.label} {f.type} {f.name} oneof={f.oneof}")
        for name in sorted(self.services):
            lines.append(f"service {name}")
            for m_name, m in sorted(self.services[name].items()):
                req = ("stream " if m.client_streaming else "") + m.request
                resp = ("stream " if m.server_streaming else "") + m.response
                lines.append(f"  rpc {m_name} ({req}) returns ({resp})")
        return "\n".join(lines) + "\n"

    def fingerprint(self) -> str:
        """``service_semantic:<sha256 hex>`` of :meth:`normalized_text`."""
        digest = hashlib.sha256(self.normalized_text().encode()).hexdigest()
        return FINGERPRINT_PREFIX + digest


def is_fingerprint(text: str) -> bool:
    """True if ``text`` has the ``service_semantic:<64 lowercase hex>`` form."""
    return bool(_FINGERPRINT_RE.fullmatch(text))


def service_fingerprint(schema: str | Iterable[str] | ProtoSchema) -> str:
    """Fingerprint of a schema given as proto text, several files' texts, or parsed.

    Raises :class:`SchemaError` when a text cannot be parsed.
    """
    if not isinstance(schema, ProtoSchema):
        schema = parse_schema(schema)
    return schema.fingerprint()


def parse_schema(texts: str | Iterable[str]) -> ProtoSchema:
    """Parse one proto file's text, or several files forming one service, into a schema.

    Type names are resolved with protobuf's scoping rules against every definition in the
    given texts; a name defined elsewhere (an import not given) is kept as written.
    Raises :class:`SchemaError` with the line of the first problem.
    """
    if isinstance(texts, str):
        texts = [texts]
    schema = ProtoSchema()
    pending: list[tuple[str, str, _Field | None, _Method | None, str]] = []
    for text in texts:
        _Parser(text, schema, pending).parse_file()
    _resolve(schema, pending)
    return schema


class _Parser:
    """Recursive-descent parser over the token list of one file."""

    def __init__(
        self,
        text: str,
        schema: ProtoSchema,
        pending: list[tuple[str, str, _Field | None, _Method | None, str]],
    ) -> None:
        self.tokens: list[tuple[str, int]] = []
        line = 1
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if m is None:
                raise SchemaError(f"line {line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup
            if kind not in ("ws", "comment"):
                self.tokens.append((m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.pos = 0
        self.schema = schema
        self.package = ""
        # (scope, name as written, field or None, method or None, "request"/"response")
        self.pending = pending
        self.field_numbers: dict[str, set[int]] = {}  # per message, with its oneofs
        self.depth = 0  # of nested messages

    # -- token helpers -------------------------------------------------------------------

    def _peek(self) -> str:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else ""

    def _line(self) -> int:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos][1]
        return self.tokens[-1][1] if self.tokens else 1

    def _next(self) -> str:
        if self.pos >= len(self.tokens):
            raise SchemaError(f"line {self._line()}: unexpected end of schema")
        tok = self.tokens[self.pos][0]
        self.pos += 1
        return tok

    def _expect(self, want: str) -> None:
        line = self._line()
        tok = self._next()
        if tok != want:
            raise SchemaError(f"line {line}: expected {want!r}, found {tok!r}")

    def _ident(self, what: str) -> str:
        line = self._line()
        tok = self._next()
        if not re.match(r"^\.?[A-Za-z_]", tok):
            raise SchemaError(f"line {line}: expected {what}, found {tok!r}")
        return tok

    def _int(self, what: str) -> int:
        line = self._line()
        tok = self._next()
        try:
            return int(tok, 0)
        except ValueError:
            raise SchemaError(f"line {line}: expected {what} number, found {tok!r}") from None

    def _skip_statement(self) -> None:
        """Skip to the end of a statement (``;``) or a balanced ``{...}`` block."""
        depth = 0
        while True:
            tok = self._next()
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if depth == 0:
                    if self._peek() == ";":
                        self.pos += 1
                    return
            elif tok == ";" and depth == 0:
                return

    def _skip_options(self) -> None:
        """Skip a ``[name = value, ...]`` field option list (options don't change meaning)."""
        if self._peek() != "[":
            return
        depth = 0
        while True:
            tok = self._next()
            if tok == "[":
                depth += 1
            elif tok == "]":
                depth -= 1
                if depth == 0:
                    return

    def _full(self, scope: str, name: str) -> str:
        return f"{scope}.{name}" if scope else name

    # -- grammar -------------------------------------------------------------------------

    def parse_file(self) -> None:
        while self.pos < len(self.tokens):
            line = self._line()
            tok = self._next()
            if tok == "syntax" or tok == "edition":
                self._expect("=")
                value = self._next()
                if tok == "syntax" and value.strip("\"'") not in ("proto3", "proto2"):
                    raise SchemaError(f"line {line}: unsupported syntax {value}")
                self._expect(";")
            elif tok == "package":
                self.package = self._ident("package name").lstrip(".")
                self.schema.packages.add(self.package)
                self._expect(";")
            elif tok in ("import", "option"):
                self._skip_statement()
            elif tok == "message":
                self._message(self.package)
            elif tok == "enum":
                self._enum(self.package)
            elif tok == "service":
                self._service()
            elif tok == ";":
                continue
            else:
                raise SchemaError(f"line {line}: unexpected {tok!r} at top level")

    def _message(self, scope: str) -> None:
        line = self._line()
        full = self._full(scope, self._ident("message name"))
        if full in self.schema.messages:
            raise SchemaError(f"line {line}: message {full} defined twice")
        fields: dict[str, _Field] = {}
        self.schema.messages[full] = fields
        self._expect("{")
        if self.depth == MAX_NESTING:
            raise SchemaError(f"line {line}: messages nested more than {MAX_NESTING} deep")
        self.depth += 1
        self._message_body(full, fields, oneof="")
        self.depth -= 1

    def _message_body(self, full: str, fields: dict[str, _Field], oneof: str) -> None:
        while True:
            line = self._line()
            tok = self._peek()
            if tok == "}":
                self.pos += 1
                return
            if tok == ";":
                self.pos += 1
            elif tok == "message" and not oneof:
                self.pos += 1
                self._message(full)
            elif tok == "enum" and not oneof:
                self.pos += 1
                self._enum(full)
            elif tok in ("option", "reserved", "extensions"):
                self._skip_statement()
            elif tok == "oneof" and not oneof:
                self.pos += 1
                name = self._ident("oneof name")
                self._expect("{")
                self._message_body(full, fields, oneof=name)
            else:
                self._field(full, fields, oneof, line)

    def _field(self, scope: str, fields: dict[str, _Field], oneof: str, line: int) -> None:
        label = "singular"
        tok = self._next()
        if tok in ("repeated", "optional", "required"):
            label = tok
            tok = self._next()
        if tok == "map":
            self._expect("<")
            key = self._ident("map key type")
            self._expect(",")
            value = self._ident("map value type")
            self._expect(">")
            label, ftype = "map", ""
            map_types: tuple[str, str] | None = (key, value)
        elif re.match(r"^\.?[A-Za-z_]", tok) and tok not in ("{", "}"):
            ftype = tok
            map_types = None
        else:
            raise SchemaError(f"line {line}: expected a field, found {tok!r}")
        name = self._ident("field name")
        self._expect("=")
        number = self._int("field")
        self._skip_options()
        self._expect(";")
        if not 1 <= number <= 536_870_911:
            raise SchemaError(f"line {line}: field {name} has invalid number {number}")
        if name in fields:
            raise SchemaError(f"line {line}: field {name} defined twice in {scope}")
        numbers = self.field_numbers.setdefault(scope, set())
        if number in numbers:
            raise SchemaError(f"line {line}: field number {number} used twice in {scope}")
        numbers.add(number)
        f = _Field(name, number, label, ftype, oneof)
        fields[name] = f
        if map_types is not None:
            self.pending.append((scope, map_types[0], f, None, "map_key"))
            self.pending.append((scope, map_types[1], f, None, "map_value"))
        else:
            self.pending.append((scope, ftype, f, None, "type"))

    def _enum(self, scope: str) -> None:
        line = self._line()
        full = self._full(scope, self._ident("enum name"))
        if full in self.schema.enums:
            raise SchemaError(f"line {line}: enum {full} defined twice")
        values: dict[str, int] = {}
        self.schema.enums[full] = values
        self._expect("{")
        while True:
            line = self._line()
            tok = self._peek()
            if tok == "}":
                self.pos += 1
                return
            if tok == ";":
                self.pos += 1
            elif tok in ("option", "reserved"):
                self._skip_statement()
            else:
                name = self._ident("enum value name")
                self._expect("=")
                number = self._int("enum value")
                self._skip_options()
                self._expect(";")
                if name in values:
                    raise SchemaError(f"line {line}: enum value {name} defined twice in {full}")
                values[name] = number

    def _service(self) -> None:
        full = self._full(self.package, self._ident("service name"))
        methods: dict[str, _Method] = {}
        self.schema.services[full] = methods
        self._expect("{")
        while True:
            line = self._line()
            tok = self._next()
            if tok == "}":
                return
            if tok == ";":
                continue
            if tok == "option":
                self.pos -= 1
                self._skip_statement()
                continue
            if tok != "rpc":
                raise SchemaError(f"line {line}: expected 'rpc' in service {full}, found {tok!r}")
            name = self._ident("method name")
            req_stream, req = self._rpc_type()
            self._expect("returns")
            resp_stream, resp = self._rpc_type()
            if self._peek() == "{":
                self._skip_statement()
            else:
                self._expect(";")
            if name in methods:
                raise SchemaError(f"line {line}: method {name} defined twice in {full}")
            method = _Method(req, resp, req_stream, resp_stream)
            methods[name] = method
            self.pending.append((self.package, req, None, method, "request"))
            self.pending.append((self.package, resp, None, method, "response"))

    def _rpc_type(self) -> tuple[bool, str]:
        self._expect("(")
        stream = False
        tok = self._ident("message type")
        if tok == "stream" and self._peek() != ")":
            stream = True
            tok = self._ident("message type")
        self._expect(")")
        return stream, tok


def _resolve(
    schema: ProtoSchema, pending: list[tuple[str, str, _Field | None, _Method | None, str]]
) -> None:
    """Replace type names as written by their full names (protobuf scoping rules).

    Done after parsing every file, because a field may name a type declared later.
    Fields and methods are frozen, so resolved copies replace them in the schema.
    """
    # Every name a scope lookup can hit: the definitions and the packages and messages
    # that enclose them (a set, so that schemas of thousands of types resolve in linear
    # time: signaling parses texts that any client sends).
    known: set[str] = set()
    for defined in (*schema.messages, *schema.enums):
        parts = defined.split(".")
        known.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    def resolve(scope: str, name: str) -> str:
        if name in _SCALARS:
            return name
        if name.startswith("."):
            return name[1:]
        # Innermost scope outwards: a.b.C then a.C then C (for the first name component).
        first = name.split(".", 1)[0]
        parts = scope.split(".") if scope else []
        for i in range(len(parts), -1, -1):
            prefix = ".".join(parts[:i])
            candidate = f"{prefix}.{first}" if prefix else first
            if candidate in known:
                return f"{prefix}.{name}" if prefix else name
        return name

    field_types: dict[int, dict[str, str]] = {}
    method_types: dict[int, dict[str, str]] = {}
    field_objs: dict[int, tuple[str, _Field]] = {}
    method_objs: dict[int, _Method] = {}
    for scope, name, f, m, slot in pending:
        full = resolve(scope, name)
        if f is not None:
            field_types.setdefault(id(f), {})[slot] = full
            field_objs[id(f)] = (scope, f)
        elif m is not None:
            method_types.setdefault(id(m), {})[slot] = full
            method_objs[id(m)] = m
    for key, (scope, f) in field_objs.items():
        slots = field_types[key]
        ftype = (
            f"map<{slots['map_key']},{slots['map_value']}>" if f.label == "map" else slots["type"]
        )
        schema.messages[scope][f.name] = _Field(f.name, f.number, f.label, ftype, f.oneof)
    for methods in schema.services.values():
        for name, m in methods.items():
            resolved = method_types.get(id(m))
            if resolved is not None:
                methods[name] = _Method(
                    resolved["request"],
                    resolved["response"],
                    m.client_streaming,
                    m.server_streaming,
                )
