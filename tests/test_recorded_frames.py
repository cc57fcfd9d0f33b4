"""Replay of frames recorded off real nodes (``tests/frames/``, made by
``scripts/record_frames.py``): each decodes to what was sent, re-encodes to the same
bytes, and, corrupted on purpose, is refused with the error the receiver logs and counts.

The files come from the camera and echo examples on two nodes through a signaling server
(tests/frames/README.md): envelopes as workers and gateways received them over ZeroMQ,
gateway data-channel messages, signaling envelopes. Ids, ring names and fingerprints
differ at each recording; the assertions hold only for what the examples always send.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest

from actrhost import ActrId, ActrType, BadRequest, NotFound, PayloadType
from actrhost import _envelope as wire
from actrhost._errors import error_from_code
from actrhost._tell_origin import origin_field
from actrhost.gateway import _framing as framing
from actrhost.gateway._identity import sdp_proves_node
from actrhost.gateway._remote import parse_session
from actrhost.shm import Descriptor, decode_array_meta
from actrhost.signaling import _wire as signaling_wire

from .utils import FRAMES_DIR, REPO, load

ENVELOPES = sorted(p.stem for p in FRAMES_DIR.glob("frame-*.bin"))
LINK_MESSAGES = sorted(p.stem for p in FRAMES_DIR.glob("link-*.bin"))
SIGNALING = sorted(p.stem for p in FRAMES_DIR.glob("signaling-*.bin"))
CAMERA, VIEWER = ActrType("demo", "Camera"), ActrType("demo", "Viewer")


def re_encode(item: wire.Envelope | wire.StreamFrame) -> bytes:
    """A decoded frame encoded again, as its sender's codec does."""
    if isinstance(item, wire.StreamFrame):
        data, origin = wire.encode_stream(item), item.origin
    else:
        data, origin = wire.encode(item), wire.tell_origin(item)
    if origin is None:
        return data
    # A tell or reliable chunk from another node: its gateway appended where it came
    # from (actrhost/_tell_origin.py).
    fields = (origin.session, origin.channel, origin.index, origin.position, origin.in_doubt)
    return data + origin_field(*fields, origin.gateway)


def required_kinds() -> set[str]:
    """What scripts/record_frames.py writes from the examples (a longer recording may add
    more, such as signaling's heartbeats)."""
    envelopes = {"request", "response", "error", "tell", "stream-inline", "stream-shm"}
    envelopes |= {"media-shm"}
    links = {"frame", "batch", "part", "control-hello", "control-ping", "control-ack"}
    links |= {"control-media", "control-bye"}
    signaling = {"register_request", "register_ok", "route_candidates_request"}
    signaling |= {"route_candidates_response", "ack", "unregister"}
    signaling |= {f"relay-{x}" for x in ("role_negotiation", "role_assignment")}
    signaling |= {"relay-sdp_offer", "relay-sdp_answer"}
    return (
        {f"frame-{x}" for x in envelopes}
        | {f"link-{x}" for x in links}
        | {f"signaling-{x}" for x in signaling}
    )


def test_every_kind_the_recording_script_writes_is_here():
    # If a kind disappears, its protocol path stopped being used, and the replay tests
    # below would quietly lose it.
    assert required_kinds() <= {p.stem for p in FRAMES_DIR.glob("*.bin")}


def test_the_recording_script_still_records_every_kind(tmp_path):
    """The fixtures' origin stays reproducible: the script runs the examples on real
    nodes again and writes every kind the replay tests read."""
    script = REPO / "scripts" / "record_frames.py"
    # Its own process group: if it hangs, the nodes it started go with it.
    process = subprocess.Popen(
        [sys.executable, str(script), "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output
    recorded = {p.stem for p in tmp_path.glob("*.bin")}
    assert required_kinds() <= recorded, output
    for name in recorded:
        data = (tmp_path / f"{name}.bin").read_bytes()
        if name.startswith("frame-"):
            assert re_encode(wire.decode(data)) == data, name
        elif name.startswith("signaling-"):
            assert signaling_wire.decode(data).SerializeToString() == data, name


# -- envelopes (docs/protocol.md) ---------------------------------------------------------


@pytest.mark.parametrize("name", ENVELOPES)
def test_recorded_envelopes_re_encode_to_the_same_bytes(name):
    data = load(name)
    assert re_encode(wire.decode(data)) == data


def test_a_recorded_call_and_its_answer():
    request = wire.decode(load("frame-request"))
    assert isinstance(request, wire.Envelope) and request.direction == wire.REQUEST
    assert (request.route_key, request.payload) == ("demo.Viewer.Report", b"after scan")
    assert request.source is not None and request.source.type == CAMERA
    assert request.target is not None and request.target.type == VIEWER
    # Delivered to the worker with a local deadline (CLOCK_MONOTONIC) set by the gateway
    # from the remaining time that travelled.
    assert request.deadline_ns > 0 and 0 < request.timeout_ms <= 10_000
    answer = wire.decode(load("frame-response"))
    assert isinstance(answer, wire.Envelope) and answer.direction == wire.RESPONSE
    assert answer.error_code == 0 and answer.payload.startswith(b"viewer got ")


def test_a_recorded_tell_and_stream_chunk_from_a_load_generator():
    tell = wire.decode(load("frame-tell"))
    assert isinstance(tell, wire.Envelope) and tell.direction == wire.TELL
    assert (tell.route_key, tell.payload, tell.source) == ("demo.Echo.Say", b"hello", None)
    assert tell.target is not None and tell.target.type == ActrType("demo", "Echo")
    # With the origin its sender stamped (actrhost/_tell_origin.py): the sender's key, the
    # lane, its count of tells, and the pid of its node's gateway.
    origin = wire.tell_origin(tell)
    assert origin is not None and origin.channel == PayloadType.RPC_RELIABLE
    assert origin.index > 0 and origin.position == 0 and not origin.in_doubt
    chunk = wire.decode(load("frame-stream-inline"))
    assert isinstance(chunk, wire.StreamFrame)
    assert (chunk.kind, chunk.key, chunk.payload, chunk.shm) == (wire.STREAM, "load", b"hello", b"")
    assert chunk.origin is not None and chunk.origin.channel == 3 and not chunk.origin.in_doubt


def test_a_recorded_error_answer_raises_the_callers_error():
    answer = wire.decode(load("frame-error"))
    assert isinstance(answer, wire.Envelope) and answer.direction == wire.RESPONSE
    error = error_from_code(answer.error_code, answer.error_message)
    assert isinstance(error, NotFound)
    assert error.message.endswith(":demo+Viewer has no route 'demo.Nope'")


@pytest.mark.parametrize(
    ("name", "kind", "key", "array"),
    [
        ("frame-stream-shm", wire.STREAM, "scan", ("float32", (1_048_576,))),
        ("frame-media-shm", wire.MEDIA, "cam", ("uint8", (240, 320, 3))),
    ],
)
def test_recorded_ring_descriptors_name_the_array_they_carry(name, kind, key, array):
    frame = wire.decode(load(name))
    assert isinstance(frame, wire.StreamFrame)
    assert (frame.kind, frame.key, frame.payload) == (kind, key, b"")
    assert frame.source is not None and frame.source.type == CAMERA
    desc = Descriptor.from_bytes(frame.shm)
    assert desc.to_bytes() == frame.shm
    dtype, shape = decode_array_meta(desc.meta)
    assert (str(dtype), shape) == array
    assert desc.length == dtype.itemsize * math.prod(shape)


def corrupted(name: str, edit) -> bytes:
    """The recorded frame with one protobuf field changed by ``edit(frame)``."""
    frame = wire.pb.Frame.FromString(load(name))
    edit(frame)
    return frame.SerializeToString()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (lambda: corrupted("frame-request", lambda f: setattr(f.rpc, "direction", 7)),
         "frame has no valid direction (7)"),
        (lambda: corrupted("frame-request", lambda f: setattr(f, "payload_type", 99)),
         "frame has an unknown payload type (99)"),
        (lambda: corrupted("frame-request", lambda f: setattr(f.rpc, "route_key", "")),
         "request or tell without a route key"),
        (lambda: corrupted("frame-response", lambda f: f.ClearField("rpc")),
         "frame carries no RPC envelope, stream chunk or media sample"),
    ],
    ids=["direction", "payload-type", "route-key", "no-body"],
)  # fmt: skip
def test_corrupted_envelopes_are_refused_with_what_is_wrong(data, error):
    with pytest.raises(BadRequest) as caught:
        wire.decode(data())
    assert caught.value.message == error


@pytest.mark.parametrize("name", ENVELOPES)
def test_truncated_envelopes_are_refused(name):
    data = load(name)[:-1]
    with pytest.raises(BadRequest) as caught:
        wire.decode(data)
    assert caught.value.message.startswith(f"undecodable frame ({len(data)} bytes): ")


def test_a_forged_actor_id_is_refused():
    data = corrupted("frame-request", lambda f: setattr(f, "source", b"\x0a\x02\x08"))
    with pytest.raises(BadRequest) as caught:
        wire.decode(data)
    assert caught.value.message.startswith("frame has invalid actor id: ")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda d: d[:10], "ring descriptor too short: 10 bytes"),
        (lambda d: b"\x02" + d[1:], "ring descriptor version 2 is not 1"),
        (lambda d: d + b"\x00", None),  # the exact text names both sizes
    ],
    ids=["short", "version", "length"],
)
def test_corrupted_ring_descriptors_are_refused(edit, error):
    shm = wire.decode(load("frame-stream-shm")).shm  # type: ignore[union-attr]
    with pytest.raises(BadRequest) as caught:
        Descriptor.from_bytes(edit(shm))
    expected = error or f"ring descriptor is {len(shm) + 1} bytes, header says {len(shm)}"
    assert caught.value.message == expected


# -- gateway data-channel messages (actrhost/gateway/_framing.py) -------------------------


@pytest.mark.parametrize("name", [n for n in LINK_MESSAGES if n.startswith("link-control-")])
def test_recorded_control_messages_rebuild_to_the_same_bytes(name):
    data = load(name)
    what, message = framing.Reassembler(1).feed(data)  # type: ignore[misc]
    assert what == "control" and message["op"] == name.removeprefix("link-control-")
    assert framing.control_message(message) == data


def test_recorded_control_messages_carry_what_the_receiver_reads():
    hello = framing.Reassembler(1).feed(load("link-control-hello"))[1]  # type: ignore[index]
    assert hello["node_name"] in ("camera-a", "camera-b")
    media = framing.Reassembler(1).feed(load("link-control-media"))[1]  # type: ignore[index]
    assert media["k"] == "video" and media["track"] == "cam"
    assert ":demo+Camera" in media["src"] and ":demo+Viewer" in media["dst"]
    ack = framing.Reassembler(1).feed(load("link-control-ack"))[1]  # type: ignore[index]
    assert isinstance(ack["n"], int) and ack["n"] > 0


def test_a_recorded_frame_message_holds_a_whole_envelope():
    data = load("link-frame")
    what, frame = framing.Reassembler(1).feed(data)  # type: ignore[misc]
    assert what == "frame" and framing.frame_message(frame) == data
    env = wire.decode(frame)
    assert isinstance(env, wire.Envelope) and env.route_key == "demo.Viewer.Report"
    # What crosses nodes carries the remaining time, never the sender's clock.
    assert env.deadline_ns == 0 and env.timeout_ms > 0


def test_a_recorded_batch_holds_whole_envelopes_in_order():
    data = load("link-batch")
    what, frames = framing.Reassembler(1).feed(data)  # type: ignore[misc]
    assert what == "frames" and len(frames) >= 2
    assert framing.batch_message(frames) == data
    envelopes = [wire.decode(frame) for frame in frames]
    assert all(isinstance(env, wire.Envelope) for env in envelopes)
    with pytest.raises(framing.MalformedMessage) as caught:
        framing.Reassembler(1).feed(data[:-1])
    last = len(frames[-1])
    assert (
        str(caught.value) == f"batch frame of {last} bytes at {len(data) - last} of {len(data) - 1}"
    )


def test_a_recorded_part_waits_for_the_rest_and_refuses_nonsense():
    data = load("link-part")
    kind, msg_id, index, count = framing._PART.unpack_from(data)
    assert kind == framing.KIND_PART and 0 <= index < count and count >= 2
    reassembler = framing.Reassembler(1)
    assert reassembler.feed(data) is None and reassembler.partial_count == 1
    with pytest.raises(framing.MalformedMessage, match=f"part {index} received twice"):
        reassembler.feed(data)
    header = framing._PART.pack(kind, msg_id, count, count)
    with pytest.raises(framing.MalformedMessage, match=f"part {count} of {count} is impossible"):
        framing.Reassembler(1).feed(header + data[framing.PART_HEADER_BYTES :])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (lambda: b"\x09" + load("link-frame")[1:], "unknown message kind 0x09"),
        (lambda: load("link-control-hello")[:-1], "control message is not JSON: "),
        (lambda: b"\x03" + json.dumps({"node": "x"}).encode(), "control message without an 'op'"),
        (lambda: b"\x04" + load("link-frame")[1:], "batch frame of "),
    ],
    ids=["kind", "json", "op", "batch"],
)  # fmt: skip
def test_corrupted_link_messages_are_refused_with_what_is_wrong(data, error):
    with pytest.raises(framing.MalformedMessage) as caught:
        framing.Reassembler(1).feed(data())
    assert str(caught.value).startswith(error)


# -- signaling envelopes (docs/signaling.md) ----------------------------------------------


@pytest.mark.parametrize("name", SIGNALING)
def test_recorded_signaling_envelopes_re_encode_to_the_same_bytes(name):
    data = load(name)
    env = signaling_wire.decode(data)
    assert env.SerializeToString() == data
    flow = env.WhichOneof("flow")
    if flow == "relay":
        flow = f"relay-{env.relay.WhichOneof('payload')}"
    assert name == f"signaling-{flow}"


def test_a_recorded_registration_and_its_credential():
    request = signaling_wire.decode(load("signaling-register_request")).register_request
    assert signaling_wire.actr_type_from_pb(request.actr_type) in (CAMERA, VIEWER)
    ok = signaling_wire.decode(load("signaling-register_ok")).register_ok
    assert signaling_wire.actr_id_from_pb(ok.actr_id).type in (CAMERA, VIEWER)
    assert ok.HasField("credential")


def test_a_recorded_offer_proves_the_offering_node_and_no_other():
    relay = signaling_wire.decode(load("signaling-relay-sdp_offer")).relay
    session = parse_session(relay.session_id)
    assert session is not None
    kind, offerer, answerer = session
    assert kind == "pc"
    sdp = relay.sdp_offer.sdp
    assert sdp_proves_node(sdp, offerer)
    assert not sdp_proves_node(sdp, answerer)
    # One SHA-256 fingerprint of another certificate anywhere, and the offer proves
    # nothing. (A node id is the fingerprint's first 128 bits: a certificate whose
    # fingerprint shares them is a second preimage, so the rest need not be compared.)
    prefix = "a=fingerprint:sha-256 "
    line = next(x for x in sdp.splitlines() if x.startswith(prefix))
    first_byte = line[len(prefix) : len(prefix) + 2]
    forged = prefix + ("00" if first_byte != "00" else "11") + line[len(prefix) + 2 :]
    assert not sdp_proves_node(sdp.replace(line, forged, 1), offerer)
    # The recorded answer may belong to another pair of nodes: its own session names them.
    answer = signaling_wire.decode(load("signaling-relay-sdp_answer")).relay
    session = parse_session(answer.session_id)
    assert session is not None
    _kind, offerer, answerer = session
    assert sdp_proves_node(answer.sdp_answer.sdp, answerer)
    assert not sdp_proves_node(answer.sdp_answer.sdp, offerer)


@pytest.mark.parametrize("name", SIGNALING)
def test_truncated_signaling_envelopes_are_refused(name):
    data = load(name)
    if len(data) < 2:
        pytest.skip("nothing to truncate")
    with pytest.raises(BadRequest) as caught:
        signaling_wire.decode(data[:-1])
    assert caught.value.message.startswith("undecodable envelope: ")


def test_a_text_frame_is_refused_by_signaling():
    with pytest.raises(BadRequest) as caught:
        signaling_wire.decode(load("signaling-ack").decode("latin-1"))
    assert caught.value.message == "text frame: the signaling protocol uses binary frames"


def test_a_hellos_aliases_are_read_or_the_hello_is_malformed():
    from actrhost.gateway._inbound import _parse_aliases

    # A recorded hello (an older gateway) has none: nothing to translate.
    hello = framing.Reassembler(1).feed(load("link-control-hello"))[1]  # type: ignore[index]
    assert _parse_aliases(hello.get("aliases", [])) == {}
    old, new = "1a24c708f860000@1:demo+Echo", "1a24c7722ee0000@1:demo+Echo"
    assert _parse_aliases([[old, new]]) == {ActrId.parse(old): ActrId.parse(new)}
    for bad in ({}, [[old]], [[old, new, new]], [[old, 7]], [[old, "not an id"]], [old], "x"):
        assert _parse_aliases(bad) is None, bad
