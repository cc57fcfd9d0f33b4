"""The ``actrhost load`` arguments, and their validation into a :class:`LoadSpec`.

Imported by ``actrhost``'s parser at every start, so it imports only the standard
library at module level. Every mistake is reported as one line on stderr with exit code 2
(argparse's own errors too: they would print a usage block first).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .._cli import node_ref, wire_key
from ._spec import (
    CALL,
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WARMUP_S,
    STREAM,
    TELL,
    LoadSpec,
)
from ._units import format_bytes, parse_duration_s, parse_size_bytes

if TYPE_CHECKING:
    from ._payload import MessageLimit

EXIT_USAGE = 2
DEFAULT_CHUNK = "1MiB"
LANES = {"reliable": "STREAM_RELIABLE", "latency-first": "STREAM_LATENCY_FIRST"}

EPILOG = """\
examples:
  actrhost load node.toml --target demo+Echo --route demo.Echo.Say --payload-size 64 \\
      --concurrency 64 --duration 30s
  actrhost load node.toml --target echo --route demo.Echo.Say --rate 20000 --duration 30s \\
      --json out.json --plot out.png
  actrhost load node.toml --target sink --stream --chunk-size 1MiB --concurrency 4 --total 2000

In open loop (--rate) each latency is measured from the request's scheduled send time, so
a stalled node shows in the percentiles. See docs/load.md for the JSON schema.
"""


class UsageError(Exception):
    """Bad arguments; ``str()`` is the one line shown before exiting with code 2."""


def usage_exit(message: str) -> NoReturn:
    """Print ``actrhost: load: message`` on stderr and exit with code 2."""
    print(f"actrhost: load: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    # argparse prints a usage block before its error line, and leaves unknown options to
    # the top-level parser (which prints its own usage): both replaced by one line here.
    def error(message: str) -> NoReturn:
        usage_exit(f"{message} (see actrhost load --help)")

    def parse_known_args(
        args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None:
            args = _glue_negative_values(list(args))
        parsed, extras = argparse.ArgumentParser.parse_known_args(parser, args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def _glue_negative_values(args: list[str]) -> list[str]:
    """``--duration -1s`` as ``--duration=-1s``: argparse takes a "-1s" after an option for
    another option ("expected one argument"); glued on, the value's own check says what
    is wrong with it ("must be more than 0")."""
    glued: list[str] = []
    for arg in args:
        previous = glued[-1] if glued else ""
        if len(arg) < 2 or arg[0] != "-" or not arg[1].isdigit():
            glued.append(arg)
        elif previous.startswith("--") and "=" not in previous:
            glued[-1] = f"{previous}={arg}"
        elif len(previous) == 2 and previous[0] == "-" and previous[1] != "-":
            glued[-1] = f"{previous}{arg}"  # -d-1s: a short option's attached value
        else:
            glued.append(arg)
    return glued


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_load_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``load`` subcommand to ``actrhost``'s subparsers; returns its parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "load",
        help="load-test an actor of a running node: throughput, latency percentiles, errors",
        description="Drive a running node with calls, tells or data streams from several\n"
        "generator processes; report throughput, latency percentiles and errors.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _one_line_errors(p)
    p.add_argument(
        "config",
        type=node_ref,
        help="config of the running node (or its ipc:// control endpoint)",
    )
    p.add_argument(
        "--target",
        required=True,
        help="actor name, 'manufacturer+type' (spread over its instances) or ActrId text",
    )
    p.add_argument(
        "--route",
        dest="route_key",
        type=wire_key,
        metavar="KEY",
        help="route key, e.g. demo.Echo.Say (calls and tells)",
    )

    data = p.add_argument_group("payload (one of)").add_mutually_exclusive_group()
    data.add_argument(
        "--payload",
        metavar="TEXT|@FILE",
        help="request payload as text, or @FILE for a file's bytes",
    )
    data.add_argument("--payload-hex", metavar="HEX", help="request payload as hexadecimal")
    data.add_argument(
        "--payload-size",
        type=_size,
        metavar="SIZE",
        help="a payload of this many bytes, e.g. 64 or 1KiB",
    )
    data.add_argument(
        "--payload-json",
        metavar="JSON",
        help="a protobuf message as JSON (or @FILE): the input type of the service method "
        "--route names, or --payload-type",
    )
    p.add_argument(
        "--payload-type",
        metavar="TYPE",
        help="the --payload-json message: package.Message or module:Class",
    )
    p.add_argument(
        "--proto-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this _pb2 module (dotted name or .py path) first; repeatable",
    )

    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        "-c",
        type=_positive_int,
        metavar="N",
        help=f"requests in flight (closed loop, default {DEFAULT_CONCURRENCY}); "
        "with --rate: the most in flight",
    )
    load.add_argument(
        "--rate",
        "-r",
        type=_positive_float,
        metavar="PER_S",
        help="open loop: send this many requests per second, answered or not",
    )
    length = load.add_mutually_exclusive_group()
    length.add_argument(
        "--duration",
        "-d",
        type=_duration,
        metavar="TIME",
        help=f"measure for this long, e.g. 30s (default {DEFAULT_DURATION_S:g}s)",
    )
    length.add_argument(
        "--total", "-n", type=_positive_int, metavar="N", help="measure this many requests"
    )
    load.add_argument(
        "--warmup",
        type=_duration,
        default=DEFAULT_WARMUP_S,
        metavar="TIME",
        help=f"load before measuring, not counted (default {DEFAULT_WARMUP_S:g}s)",
    )
    load.add_argument(
        "--timeout",
        type=_duration,
        default=DEFAULT_TIMEOUT_S,
        metavar="TIME",
        help=f"per request (default {DEFAULT_TIMEOUT_S:g}s)",
    )
    load.add_argument(
        "--workers",
        "-w",
        type=_positive_int,
        metavar="N",
        help="generator processes (default: CPU count)",
    )

    mode = p.add_argument_group("mode (default: calls)").add_mutually_exclusive_group()
    mode.add_argument("--tell", action="store_true", help="send tells (never answered)")
    mode.add_argument("--stream", action="store_true", help="send data-stream chunks")
    p.add_argument(
        "--chunk-size",
        type=_size,
        metavar="SIZE",
        help=f"--stream: bytes per chunk unless a payload is given (default {DEFAULT_CHUNK})",
    )
    p.add_argument(
        "--stream-id",
        type=wire_key,
        metavar="ID",
        help="--stream: the stream id (default 'load')",
    )
    p.add_argument(
        "--lane",
        choices=sorted(LANES),
        help="--stream: reliable (waits when full, the default) or latency-first (drops)",
    )

    out = p.add_argument_group("output")
    out.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    out.add_argument(
        "--plot",
        dest="plot_path",
        metavar="PATH",
        help="write a PNG: latency over time and by percentile (needs matplotlib)",
    )
    out.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="live progress line on stderr (auto: only on a terminal)",
    )
    out.add_argument("--quiet", "-q", action="store_true", help="same as --progress never")
    return p


def _check_output_path(option: str, path: str | None) -> None:
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(f"{option}: folder {folder} does not exist")
    if Path(path).is_dir():  # found before the run, not after it
        raise UsageError(f"{option}: {path} is a folder; give a file name")


def _payload(args: argparse.Namespace, stream: bool) -> tuple[bytes, str]:
    from . import _payload as payloads

    # A payload larger than the node's max_message_bytes is refused before it is built or
    # read (2 GiB took 26 s to make, and then every request failed with 400; a 100 MB
    # file went out 67,120 times, QA); a stream chunk larger than its ring likewise (it
    # was refused by max_message_bytes, which does not bind streams, and one too large
    # for the ring went out 200,000 times, QA).
    limit = payloads.chunk_limit(args.config) if stream else payloads.message_limit(args.config)
    try:
        if args.payload is not None:
            data, said = payloads.from_text_or_file(args.payload, limit)
        elif args.payload_hex is not None:
            data, said = payloads.from_hex(args.payload_hex)
        elif args.payload_json is not None:
            type_name = args.payload_type or _service_input_type(args, stream)
            data, said = payloads.from_json(args.payload_json, type_name, args.proto_module, limit)
        else:
            size = args.payload_size
            if size is None and stream:
                default = parse_size_bytes(DEFAULT_CHUNK)
                size = args.chunk_size if args.chunk_size is not None else default
            if size is None:
                return b"", "empty"
            _check_size_fits(size, limit)
            return payloads.of_size(size), format_bytes(size)
    except payloads.PayloadError as exc:
        raise UsageError(str(exc)) from None
    _check_size_fits(len(data), limit)
    return data, said


def _check_size_fits(size: int, limit: MessageLimit) -> None:
    if size > limit.size_bytes:
        raise UsageError(f"a payload of {format_bytes(size)} is larger than {limit.said}")


def _service_input_type(args: argparse.Namespace, stream: bool) -> str:
    """``--payload-json`` without ``--payload-type``: the input type of the service method
    the route names (found as ``actrhost call --json`` finds it)."""
    from .._errors import ConfigError
    from .._service import method_from_node

    if stream:
        raise UsageError("--payload-json with --stream needs --payload-type")
    try:
        method = method_from_node(args.route_key, args.config, args.proto_module)
    except (ConfigError, LookupError) as exc:
        text = str(exc) if str(exc).startswith("--") else f"--payload-json: {exc}"
        raise UsageError(f"{text} (or give --payload-type)") from None
    return str(method.input_type.full_name)


def spec_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> LoadSpec:
    """Check the parsed arguments together; raises :class:`UsageError` for bad ones."""
    mode = STREAM if args.stream else TELL if args.tell else CALL
    if mode != STREAM and not args.route_key:
        raise UsageError(f"--route is required for {mode}s (e.g. --route demo.Echo.Say)")
    if mode == STREAM and args.route_key:
        raise UsageError("--route does not apply to --stream (chunks go to --stream-id)")
    for option, value in (
        ("--chunk-size", args.chunk_size),
        ("--stream-id", args.stream_id),  # taken and left unused (QA)
        ("--lane", args.lane),
    ):
        if value is not None and mode != STREAM:
            raise UsageError(f"{option} applies only to --stream")
    if args.chunk_size is not None and (
        args.payload is not None
        or args.payload_hex is not None
        or args.payload_json is not None
        or args.payload_size is not None
    ):
        raise UsageError(
            "--chunk-size and a payload option are exclusive: the payload is the chunk"
        )
    if args.payload_type and args.payload_json is None:
        raise UsageError("--payload-type applies only to --payload-json")
    if args.proto_module and args.payload_json is None:
        raise UsageError("--proto-module applies only with --payload-json")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    _check_output_path("--json", args.json_path)
    _check_output_path("--plot", args.plot_path)
    if args.plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install 'actrhost[plot]'"
        )
    config = args.config
    if not config.startswith("ipc://") and not Path(config).is_file():
        raise UsageError(f"config {config}: no such file")
    payload, payload_desc = _payload(args, mode == STREAM)
    concurrency = args.concurrency
    if args.rate is None and concurrency is None:
        concurrency = DEFAULT_CONCURRENCY
    duration = args.duration
    if duration is None and args.total is None:
        duration = DEFAULT_DURATION_S
    return LoadSpec(
        config=config,
        target=args.target,
        route_key=args.route_key or "",
        mode=mode,
        payload=payload,
        payload_desc=payload_desc,
        concurrency=concurrency,
        rate_per_s=args.rate,
        duration_s=duration,
        total=args.total,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        workers=args.workers or os.cpu_count() or 1,
        stream_id=args.stream_id or "load",
        lane=LANES[args.lane or "reliable"],
        json_path=args.json_path,
        plot_path=args.plot_path,
        progress="never" if args.quiet else args.progress,
        command=tuple(argv if argv is not None else sys.argv),
    )
