"""Identity text forms, error classes and the frame codec, without processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import actrhost
from actrhost import ActrId, ActrType, BadRequest, Realm
from actrhost import _envelope as wire
from actrhost._errors import ErrorCode, error_from_code

REPO = Path(__file__).resolve().parent.parent


def test_actr_type_and_id_text_forms_round_trip():
    t = ActrType.parse("acme+Echo-v2.x")
    assert (t.manufacturer, t.name, str(t)) == ("acme", "Echo-v2.x", "acme+Echo-v2.x")
    i = ActrId(Realm(7), 0xBEEF, t)
    assert str(i) == "beef@7:acme+Echo-v2.x"
    assert ActrId.parse(str(i)) == i
    assert ActrId.parse("FFFFFFFFFFFFFFFF@4294967295:a+b").serial_number == 2**64 - 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "acme",
        "acme+",
        "+Echo",
        "a+b+c",
        "1acme+Echo",
        "acme+Echo_",
        "acme+" + "x" * 33,
        "ac me+E",
    ],
)
def test_bad_actor_types_are_refused(text):
    with pytest.raises(BadRequest, match="invalid"):
        ActrType.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12@1",
        "xyz@1:a+b",
        "12@:a+b",
        "12@1:a",
        "12@1:a+b+c",
        "1" * 17 + "@1:a+b",
        "1@4294967296:a+b",  # realm past uint32
        "1@\u0663:a+b",  # an Arabic-Indic digit three
    ],
)
def test_bad_actor_ids_are_refused(text):
    with pytest.raises(BadRequest):
        ActrId.parse(text)


@pytest.mark.parametrize("realm_id", [-1, 2**32])
def test_realms_outside_uint32_are_refused_where_they_are_made(realm_id):
    # They were taken, and a frame to another node failed to encode with a bare ValueError.
    with pytest.raises(BadRequest, match="out of range for uint32"):
        Realm(realm_id)


def test_error_classes_map_to_wire_codes_and_back():
    expected = {
        400: actrhost.BadRequest,
        403: actrhost.PermissionDenied,
        404: actrhost.NotFound,
        500: actrhost.HandlerError,
        503: actrhost.Unavailable,
        504: actrhost.DeadlineExceeded,
    }
    for code, cls in expected.items():
        err = error_from_code(code, "msg")
        assert type(err) is cls and err.code == code and err.message == "msg"
        assert isinstance(err, actrhost.ActrError)
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is cls and again.message == "msg"
    unknown = error_from_code(599, "odd")
    assert type(unknown) is actrhost.ActrError and unknown.code == 599
    assert ErrorCode.DEADLINE_EXCEEDED == 504


@pytest.mark.parametrize("code", [0, -1, 2**32])
def test_an_error_code_the_wire_cannot_carry_fails_the_call_with_500(code):
    # Code 0 read as success: the caller of a handler that raised it got an empty answer.
    response = wire.error_response("r1", actrhost.ActrError("zero", code=code))
    decoded = wire.decode(wire.encode(response))
    assert decoded.error_code == 500
    assert decoded.error_message == f"zero (raised with code {code}, which is not an error code)"


def test_an_error_code_that_is_no_int_is_refused_or_fails_the_call_with_500():
    # Raised in a handler, the failed int() lost the answer: the caller waited (QA).
    with pytest.raises(TypeError, match="an ActrError's code is an int, not str"):
        actrhost.ActrError("custom", code="abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not float"):
        actrhost.ActrError("custom", code=1.5)  # type: ignore[arg-type]

    class Odd(actrhost.ActrError):
        code = "abc"  # type: ignore[assignment]

    decoded = wire.decode(wire.encode(wire.error_response("r1", Odd("odd"))))
    assert decoded.error_code == 500
    assert decoded.error_message == "odd (raised with code 'abc', which is not an error code)"


def test_envelope_round_trip_keeps_every_field():
    a = ActrId.parse("1f@1:demo+Echo")
    b = ActrId.parse("20@1:demo+Client")
    env = wire.Envelope(
        wire.REQUEST,
        "demo.Echo.Say",
        b"\x00payload",
        request_id="r-1",
        source=b,
        target=a,
        payload_type=actrhost.PayloadType.RPC_SIGNAL,
        deadline_ns=123456789,
        timeout_ms=250,
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        tracestate="k=v",
        metadata=(("a", "1"), ("b", "2")),
    )
    back = wire.decode(wire.encode(env))
    for name in wire.Envelope.__slots__:
        assert getattr(back, name) == getattr(env, name), name
    err = wire.Envelope(wire.RESPONSE, request_id="r-1", error_code=404, error_message="nope")
    back = wire.decode(wire.encode(err))
    assert (back.error_code, back.error_message, back.source) == (404, "nope", None)


def test_a_decoded_envelope_with_new_routing_fields_reencodes_as_encode_would():
    # The gateway edits the parsed frame instead of building it anew (a third of the cost).
    a = ActrId.parse("1f@1:demo+Echo")
    b = ActrId.parse("20@1:demo+Client")
    c = ActrId.parse("21@2:demo+Client")
    env = wire.Envelope(
        wire.REQUEST,
        "demo.Echo.Say",
        b"payload",
        request_id="r-1",
        source=b,
        target=a,
        deadline_ns=123456789,
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        metadata=(("a", "1"),),
    )
    unknown_field = b"\xf8\x07\x01"  # field 127, varint 1: not in our schema
    for source, target in ((b, a), (c, a), (None, b)):
        decoded = wire.decode(wire.encode(env) + unknown_field)
        decoded.request_id, decoded.deadline_ns, decoded.timeout_ms = "r-1/o7", 0, 900
        decoded.source, decoded.target = source, target
        assert wire.reencode(decoded) == wire.encode(decoded)
    answer = wire.decode(wire.encode(wire.error_response("r-1/o7", BadRequest("no"))))
    answer.request_id = "r-1"
    assert wire.reencode(answer) == wire.encode(answer)
    assert wire.reencode(env) == wire.encode(env)  # not decoded: encoded anew


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x0a\x05abc", b"", wire.encode(wire.Envelope(wire.REQUEST, ""))],
    ids=["garbage", "truncated", "empty", "no-route"],
)
def test_malformed_frames_raise_bad_request(data):
    with pytest.raises(BadRequest):
        wire.decode(data)


def test_generated_protobuf_code_is_not_stale(tmp_path):
    """Regenerate *_pb2.py with the pinned grpcio-tools and compare byte for byte."""
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_proto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(tmp_path.glob("**/*_pb2.py"))
    assert len(generated) == 3  # actrhost/proto (2) and examples/greeter
    for path in generated:
        name = path.relative_to(tmp_path)
        committed = REPO / name
        assert committed.exists(), f"{name} is not committed: run scripts/gen_proto.py"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{name} is stale: run python scripts/gen_proto.py"
        )
