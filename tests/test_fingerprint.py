"""Service fingerprints over normalized proto schemas, and the compatibility checker."""

from __future__ import annotations

import pytest

from actrhost._compatibility import Compatibility, check_compatibility
from actrhost._fingerprint import SchemaError, is_fingerprint, parse_schema, service_fingerprint

pytestmark = pytest.mark.timeout(30)

BASE = """
syntax = "proto3";
package demo.v1;

// The request.
message SayRequest {
  string text = 1;
  repeated int32 tags = 2;
  Mood mood = 3;
  map<string, Detail> details = 4;
  oneof reply_to {
    string topic = 5;
    uint64 actor = 6;
  }
  message Detail { bytes blob = 1; }
}

enum Mood {
  MOOD_UNSPECIFIED = 0;
  HAPPY = 1;
}

message SayResponse { string text = 1; }

service Echo {
  rpc Say(SayRequest) returns (SayResponse);
  rpc Watch(SayRequest) returns (stream SayResponse);
}
"""

# Same meaning: other comments, whitespace, declaration order, qualified names, options.
REORDERED = """
syntax="proto3"; package demo.v1; option java_package = "demo";
/* services first */ service Echo { option deprecated = true;
  rpc Watch ( SayRequest ) returns ( stream .demo.v1.SayResponse ) {
    option idempotency_level = NO_SIDE_EFFECTS; }
  rpc Say(demo.v1.SayRequest) returns (SayResponse) {} }
enum Mood { HAPPY = 1; MOOD_UNSPECIFIED = 0; reserved 7; }
message SayResponse {
  string text = 1 [json_name = "t"];
}
message SayRequest {
  message Detail { bytes blob = 1; }
  oneof reply_to { uint64 actor = 6; string topic = 5; }
  map<string, SayRequest.Detail> details = 4;
  Mood mood = 3; repeated int32 tags = 2 [packed = true]; string text = 1;
  reserved 10 to 12; reserved "old";
}
"""


def _edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_fingerprint_form() -> None:
    fp = service_fingerprint(BASE)
    assert fp.startswith("service_semantic:") and is_fingerprint(fp)
    assert service_fingerprint(parse_schema(BASE)) == fp
    assert not is_fingerprint("service_semantic:XYZ")
    assert not is_fingerprint("sha256:" + "0" * 64)


def test_comments_whitespace_order_and_options_do_not_change_it() -> None:
    assert service_fingerprint(REORDERED) == service_fingerprint(BASE)
    assert check_compatibility(BASE, REORDERED).level is Compatibility.IDENTICAL


def test_several_files_form_one_schema() -> None:
    types_file = 'syntax = "proto3"; package demo.v1; message SayResponse { string text = 1; }'
    rest = BASE.replace("message SayResponse { string text = 1; }", "")
    assert service_fingerprint([rest, types_file]) == service_fingerprint(BASE)


@pytest.mark.parametrize(
    "edit",
    [
        ("string text = 1;\n  repeated", "string text = 9;\n  repeated"),  # number
        ("string text = 1;\n  repeated", "bytes text = 1;\n  repeated"),  # type
        ("repeated int32 tags = 2;", "int32 tags = 2;"),  # label
        ("repeated int32 tags = 2;", "optional int32 tags = 2;"),  # label
        ("HAPPY = 1;", "HAPPY = 2;"),  # enum value
        ("rpc Say(SayRequest)", "rpc Say(stream SayRequest)"),  # streaming
    ],
)
def test_meaningful_changes_change_it(edit: tuple[str, str]) -> None:
    assert service_fingerprint(_edit(*edit)) != service_fingerprint(BASE)


# (description, edited schema, expected level, a substring each expected reason contains)
COMPAT_TABLE = [
    ("identical", BASE, Compatibility.IDENTICAL, []),
    ("reordered", REORDERED, Compatibility.IDENTICAL, []),
    (
        "field added",
        _edit("string text = 1;\n  repeated", "string text = 1;\n  int64 at = 7;\n  repeated"),
        Compatibility.BACKWARD_COMPATIBLE,
        ["field demo.v1.SayRequest.at (number 7) added"],
    ),
    (
        "method added",
        _edit("rpc Say(", "rpc Ping(SayRequest) returns (SayResponse);\n  rpc Say("),
        Compatibility.BACKWARD_COMPATIBLE,
        ["method demo.v1.Echo.Ping added"],
    ),
    (
        "enum value added",
        _edit("HAPPY = 1;", "HAPPY = 1;\n  SAD = 2;"),
        Compatibility.BACKWARD_COMPATIBLE,
        ["enum value demo.v1.Mood.SAD (= 2) added"],
    ),
    (
        "message and service added",
        BASE
        + "message Extra { string x = 1; }\nservice Admin { rpc Stop(Extra) returns (Extra); }",
        Compatibility.BACKWARD_COMPATIBLE,
        ["message demo.v1.Extra added", "service demo.v1.Admin added"],
    ),
    (
        "field removed",
        _edit("  Mood mood = 3;\n", ""),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.mood (number 3) removed"],
    ),
    (
        "field renumbered",
        _edit("Mood mood = 3;", "Mood mood = 8;"),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.mood: number 3 -> 8"],
    ),
    (
        "field type changed",
        _edit("Mood mood = 3;", "int32 mood = 3;"),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.mood: type demo.v1.Mood -> int32"],
    ),
    (
        "field label changed",
        _edit("repeated int32 tags = 2;", "int32 tags = 2;"),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.tags: label repeated -> singular"],
    ),
    (
        "field renamed",
        _edit("Mood mood = 3;", "Mood feeling = 3;"),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.mood: number 3 renamed to feeling"],
    ),
    (
        "field moved out of oneof",
        _edit("    string topic = 5;\n", "").replace(
            "message Detail", "string topic = 5;\n  message Detail"
        ),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.topic: oneof reply_to -> -"],
    ),
    (
        "method removed",
        _edit("  rpc Watch(SayRequest) returns (stream SayResponse);\n", ""),
        Compatibility.BREAKING,
        ["method demo.v1.Echo.Watch removed"],
    ),
    (
        "method request changed",
        _edit("rpc Say(SayRequest)", "rpc Say(SayResponse)"),
        Compatibility.BREAKING,
        ["method demo.v1.Echo.Say: request demo.v1.SayRequest -> demo.v1.SayResponse"],
    ),
    (
        "enum value removed",
        _edit("  HAPPY = 1;\n", ""),
        Compatibility.BREAKING,
        ["enum value demo.v1.Mood.HAPPY (= 1) removed"],
    ),
    (
        "package changed",
        _edit("package demo.v1;", "package demo.v2;"),
        Compatibility.BREAKING,
        ["package ['demo.v1'] -> ['demo.v2']", "message demo.v1.SayRequest removed"],
    ),
    (
        "added and removed together",
        _edit("Mood mood = 3;", "int64 at = 7;"),
        Compatibility.BREAKING,
        ["field demo.v1.SayRequest.mood (number 3) removed", "field demo.v1.SayRequest.at"],
    ),
]


@pytest.mark.parametrize(
    ("new", "level", "reasons"),
    [row[1:] for row in COMPAT_TABLE],
    ids=[row[0] for row in COMPAT_TABLE],
)
def test_compatibility_table(new: str, level: Compatibility, reasons: list[str]) -> None:
    report = check_compatibility(BASE, new)
    assert report.level is level, report.reasons
    for expected in reasons:
        assert any(expected in r for r in report.reasons), (expected, report.reasons)
    if level is Compatibility.IDENTICAL:
        assert report.reasons == ()
    assert report.is_compatible == (level is not Compatibility.BREAKING)


def test_direction_matters() -> None:
    newer = _edit("rpc Say(", "rpc Ping(SayRequest) returns (SayResponse);\n  rpc Say(")
    assert check_compatibility(BASE, newer).level is Compatibility.BACKWARD_COMPATIBLE
    # A client built for the newer version cannot use the older one.
    assert check_compatibility(newer, BASE).level is Compatibility.BREAKING


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("message A { string x = 1 }", "line 1: expected ';', found '}'"),
        ("message A {\n  string x = 0;\n}", "line 2: field x has invalid number 0"),
        ("message A { string x = 1; int32 y = 1; }", "field number 1 used twice"),
        ("message A { string x = 1;", "unexpected end of schema"),
        ('syntax = "proto3";\nfoo bar;', "line 2: unexpected 'foo' at top level"),
        ("service S { rpc M(A) returns B; }", "expected '('"),
        ("message A { string x = 1; }\n\nmessage A {}", "line 3: message A defined twice"),
        ("message A { string x = @; }", "unexpected character '@'"),
        ("message A { oneof o { string x = 1; } int32 y = 1; }", "field number 1 used twice"),
        ("message A { " * 101 + "}" * 101, "line 1: messages nested more than 100 deep"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    assert message in str(info.value)


def test_unknown_imported_types_are_kept_as_written() -> None:
    text = 'syntax = "proto3"; package p; import "other.proto"; message A { other.B b = 1; }'
    schema = parse_schema(text)
    assert schema.messages["p.A"]["b"].type == "other.B"


def test_schemas_of_thousands_of_fields_and_types_parse_and_resolve() -> None:
    # Linear work: signaling parses what any client sends (both took seconds, quadratic).
    fields = "".join(f"  int32 f{i} = {i + 1};\n" for i in range(5000))
    with pytest.raises(SchemaError, match=r"line 5003: field number 4999 used twice in p\.M"):
        parse_schema(f"package p;\nmessage M {{\n{fields}  string again = 4999;\n}}")
    types = "".join(f"message M{i} {{ M{max(i - 1, 0)} prev = 1; }}\n" for i in range(5000))
    schema = parse_schema(f"package p;\n{types}")
    assert schema.messages["p.M4999"]["prev"].type == "p.M4998"
