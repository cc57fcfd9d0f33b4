"""The ``actrhost`` command: run a node, call an actor, show a node's status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from ._errors import ActrError, ConfigError, DeadlineExceeded
from ._rpc import MAX_TIMEOUT_S

if TYPE_CHECKING:
    from ._shell import ActorInfo

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad arguments or a bad config: nothing was started


def _configure_logging(level: str, who: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)-7s {who}[%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _seconds(text: str) -> float:
    """A ``--timeout`` value: a positive number of seconds, at most a year."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be more than 0 s and at most a year, not {text}")
    return value


def realm_id(text: str) -> int:
    """A ``--realm`` value: a realm id, 0 to 2**32 - 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 4294967295, not {text}")
    return value


def node_ref(text: str) -> str:
    """A running node's config path or ``ipc://`` control endpoint (argparse type)."""
    if "://" in text and not text.startswith("ipc://"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the node's config path or its ipc:// control endpoint"
        )
    return text


def wire_key(text: str) -> str:
    """A route key or stream id (argparse type): not empty, valid UTF-8."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not valid UTF-8: {text!r}") from None
    return text


def _fail(message: str, code: int) -> int:
    print(f"actrhost: {message}", file=sys.stderr)
    return code


# -- actrhost run ------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from ._config import load_config, resolve_handler
    from ._rundir import NodeAlreadyRunning, RunDirUnusable
    from ._supervisor import Supervisor
    from ._supervisor_servers import check_listen_addresses

    # Everything that can be wrong with the config is found here, before any process starts.
    config = load_config(args.config)
    for actor in config.actors:
        resolve_handler(config, actor)
    check_listen_addresses(config)
    _configure_logging(args.log_level or config.node.log_level, "supervisor")
    try:
        return asyncio.run(Supervisor(config).run())
    except NodeAlreadyRunning as exc:
        return _fail(f"{exc} (`actrhost stop {args.config}` stops it)", EXIT_FAILURE)
    except RunDirUnusable as exc:
        if config.node.run_dir is not None:
            return _fail(f"config error: {args.config}: node.run_dir: {exc}", EXIT_USAGE)
        return _fail(f"{exc} (the default run dir; set [node] run_dir)", EXIT_FAILURE)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """What a handler module writes while imported goes to stderr: stdout is the report
    (a script reads "ok:" from its first line). File descriptor 1 too, for a C extension
    or a process started at import (QA)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_check(args: argparse.Namespace) -> int:
    """Check a config as ``actrhost run`` does, start nothing, and say what would run."""
    from ._actor import route_table
    from ._config import load_config, resolve_handler
    from ._rundir import run_dir_for, unusable_because
    from ._settings import build_settings, settings_type
    from ._supervisor_servers import check_listen_addresses

    config = load_config(args.config)
    check_listen_addresses(config)
    why = unusable_because(run_dir_for(config))
    if why is not None:  # as run would say
        key = "node.run_dir" if config.node.run_dir is not None else "the default run dir"
        return _fail(f"config error: {args.config}: {key}: {why}", EXIT_USAGE)
    rows = [("ACTOR", "TYPE", "INSTANCES", "ROUTES")]
    settings = []  # what each actor will get as self.settings, defaults filled in
    for actor in config.actors:
        with _stdout_to_stderr():
            cls = resolve_handler(config, actor)
        routes = sorted(route_table(cls))
        rows.append((actor.name, str(actor.type), str(actor.instances), ", ".join(routes) or "-"))
        typed = settings_type(cls) is not None
        if actor.settings or typed:
            value = build_settings(cls, actor.settings)
            settings.append(f"  {actor.name} settings: {value if typed else dict(value)!r}")
    instances = sum(actor.instances for actor in config.actors)
    signaling = config.signaling.url if config.signaling is not None else "none (local only)"
    print(
        f"{args.config}: ok: node {config.node.name}, {len(config.actors)} actor(s), "
        f"{instances} instance(s), start_method {config.node.start_method}, "
        f"signaling {signaling}"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:3], widths, strict=True)]
        print("  " + "  ".join([*cells, row[3]]))
    for line in settings:
        print(line)
    return EXIT_OK


# -- actrhost call -----------------------------------------------------------------------


def _payload_from_args(args: argparse.Namespace) -> bytes:
    if args.hex is not None:
        try:
            return bytes.fromhex(args.hex)
        except ValueError:
            raise SystemExit(_fail(f"--hex: not hexadecimal: {args.hex!r}", EXIT_USAGE)) from None
    if args.data is None:
        return b""
    if args.data.startswith("@"):
        from ._load._payload import message_limit, read_payload_file

        path = Path(args.data[1:])
        try:
            return read_payload_file(path, message_limit(args.config))
        except OSError as exc:
            raise SystemExit(
                _fail(f"--data: cannot read {path}: {exc.strerror}", EXIT_USAGE)
            ) from None
        except ValueError as exc:
            raise SystemExit(_fail(f"--data: {exc}", EXIT_USAGE)) from None
    return os.fsencode(args.data)  # the bytes as given, even ones that are not UTF-8


def _write_output(data: bytes, output: str) -> None:
    if output == "raw":
        sys.stdout.buffer.write(data)
    elif output == "hex":
        print(data.hex())
    else:
        print(data.decode("utf-8", errors="backslashreplace"))


def _json_request(args: argparse.Namespace) -> tuple[bytes, type]:
    """``--json``: the request encoded as the method's input type, and its output type."""
    from google.protobuf import json_format
    from google.protobuf.message_factory import GetMessageClass

    from ._service import method_from_node

    try:
        method = method_from_node(args.route_key, args.config, args.proto_module)
    except ConfigError as exc:
        raise SystemExit(_fail(f"config error: {exc}", EXIT_USAGE)) from None
    except LookupError as exc:
        text = str(exc) if str(exc).startswith("--") else f"--json: {exc}"
        raise SystemExit(_fail(text, EXIT_USAGE)) from None
    request = GetMessageClass(method.input_type)()
    try:
        if not args.json.lstrip().startswith("{"):  # '[]' was taken as an empty message (QA)
            raise json_format.ParseError("a message is a JSON object: {...}")
        json_format.Parse(args.json, request)
    except json_format.ParseError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise SystemExit(
            _fail(f"--json: not a valid {method.input_type.full_name}: {first_line}", EXIT_USAGE)
        ) from None
    return request.SerializeToString(), GetMessageClass(method.output_type)


def cmd_call(args: argparse.Namespace) -> int:
    from ._connect import connect
    from ._shell import NodeSilent

    response_type: type | None = None
    # Options that would be taken and left unused (QA): said, not ignored.
    if args.json is not None and args.output is not None:
        return _fail("call: --output does not apply to --json (the answer is JSON)", EXIT_USAGE)
    if args.json is None and args.proto_module:
        return _fail("call: --proto-module applies only with --json", EXIT_USAGE)
    if args.json is not None:
        payload, response_type = _json_request(args)
    else:
        payload = _payload_from_args(args)

    async def run() -> int:
        shell = connect(args.config)
        cut = args.timeout < shell.attach_timeout_s
        shell.attach_timeout_s = min(shell.attach_timeout_s, args.timeout)  # all of it
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(shell)
            except NodeSilent as exc:
                if not cut:
                    raise
                # The call's own deadline passed: a 503 alone blamed a healthy node with
                # --timeout 0.001 (QA); it may be silent all the same, so both are said.
                raise DeadlineExceeded(
                    f"the call's --timeout of {args.timeout:g} s passed while attaching to "
                    f"the node ({exc.message})"
                ) from None
            if args.tell:
                await shell.tell(args.target, args.route_key, payload)
                return EXIT_OK
            result = await shell.call(
                args.target,
                args.route_key,
                payload,
                timeout=args.timeout,
                response_type=response_type,
            )
            if response_type is not None:
                from google.protobuf import json_format

                print(json_format.MessageToJson(result, preserving_proto_field_name=True))
            else:
                _write_output(result, args.output or "text")
            return EXIT_OK

    try:
        return asyncio.run(run())
    except ActrError as exc:
        return _fail(f"call failed: {exc.code} {type(exc).__name__}: {exc.message}", EXIT_FAILURE)


# -- actrhost status ---------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from ._connect import connect

    if args.signaling:
        from ._cli_signaling import cmd_signaling_status

        if args.config is not None:  # it was left unread, silently (QA)
            return _fail("status: give a CONFIG or --signaling URL, not both", EXIT_USAGE)
        realm = 1 if args.realm is None else args.realm
        try:
            return cmd_signaling_status(args.signaling, realm, args.ca_file, args.json)
        except ActrError as exc:
            return _fail(f"status: {exc.message}", EXIT_FAILURE)
    if args.config is None:
        return _fail("status: give a CONFIG or --signaling URL", EXIT_USAGE)
    if args.realm is not None or args.ca_file is not None:
        return _fail("status: --realm and --ca-file go with --signaling", EXIT_USAGE)

    async def run() -> dict[str, Any]:
        async with connect(args.config) as shell:
            return await shell.status()

    try:
        status = asyncio.run(run())
    except ActrError as exc:
        return _fail(f"status: {exc.message}", EXIT_FAILURE)
    if args.json:
        status.pop("op", None)
        status.pop("req", None)
        print(json.dumps(status, indent=2))
    else:
        from ._status_text import format_status

        print(format_status(status))
    return EXIT_OK


# -- actrhost wait and stop ---------------------------------------------------------------


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait until a node (being started elsewhere) runs every actor instance."""
    from ._connect import connect_when_running

    started = time.monotonic()

    async def run() -> str:
        shell = await connect_when_running(args.config, args.timeout)
        try:
            return _count_instances(await shell.actors())
        finally:
            await shell.aclose()

    try:
        counted = asyncio.run(run())
    except ActrError as exc:
        return _fail(f"wait: {exc.message}", EXIT_FAILURE)
    print(f"{counted} after {(time.monotonic() - started) * 1000:.0f} ms")
    return EXIT_OK


def _count_instances(infos: list[ActorInfo]) -> str:
    """'3 instance(s) of 2 actor(s) running', as ``check`` counts them, with those that
    finished cleanly (one-shot jobs) apart: they were counted as running (QA)."""
    running = [info for info in infos if info.state != "stopped"]
    text = f"{len(running)} instance(s) of {len({i.name for i in running})} actor(s) running"
    finished = len(infos) - len(running)
    return text + (f", {finished} finished (exit code 0)" if finished else "")


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a running node gracefully (as SIGTERM does) and wait until it is gone."""
    from ._connect import connect
    from ._linux import process_gone

    shell = connect(args.config)  # knows the node's run directory (Shell.run_dir)
    shell.attach_timeout_s = min(shell.attach_timeout_s, args.timeout)
    run_dir = shell.run_dir
    started = time.monotonic()

    async def run() -> bool:
        """Stop the node; True if its supervisor saw the stop through."""
        async with shell:
            await shell.shutdown_node()
        supervisor = shell.supervisor_pid
        # The supervisor removes its run directory last, once every process has exited,
        # and exits then: gone while the run dir is still there, it was killed meanwhile
        # (that was reported as a stop, QA).
        while run_dir.exists() and time.monotonic() - started < args.timeout:
            if supervisor and process_gone(supervisor):
                return not run_dir.exists()  # (it removed it just now, and exited)
            await asyncio.sleep(0.05)
        return True

    try:
        finished = asyncio.run(run())
    except ActrError as exc:
        return _fail(f"stop: {exc.message}", EXIT_FAILURE)
    if not finished:
        return _fail(
            f"stop: the node's supervisor (pid {shell.supervisor_pid}) exited before its stop "
            "was through (killed?); its workers end by themselves",
            EXIT_FAILURE,
        )
    if run_dir.exists():
        return _fail(
            f"stop: the node was still stopping after {args.timeout:g} s (it goes on; `stop` "
            "again waits for it, SIGINT to the supervisor kills what still runs)",
            EXIT_FAILURE,
        )
    print(f"stopped in {(time.monotonic() - started) * 1000:.0f} ms")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    """Rolling restart of a running node's actors, with their code imported and their
    config tables read again."""
    from ._connect import connect

    started = time.monotonic()

    async def run() -> list[str]:
        async with connect(args.config) as shell:
            if args.gateway:
                await shell.restart_gateway(timeout=args.timeout)
                return ["gateway"]
            return await shell.restart_actors(*args.actors, timeout=args.timeout)

    if args.gateway and args.actors:
        return _fail(
            "restart: --gateway restarts the gateway only: give no actor names", EXIT_USAGE
        )

    try:
        restarted = asyncio.run(run())
    except ActrError as exc:
        return _fail(f"restart: {exc.message}", EXIT_FAILURE)
    except KeyboardInterrupt:
        # Only this command stops: say so (it exited 130 without a word, QA).
        return _fail(
            "restart: interrupted; the restart goes on in the node (`actrhost status` "
            "shows where it is)",
            130,
        )
    elapsed = time.monotonic() - started
    print(f"restarted {', '.join(restarted)} in {elapsed:.1f} s")
    return EXIT_OK


# -- actrhost load -----------------------------------------------------------------------


def cmd_load(args: argparse.Namespace) -> int:
    # Imported here: the generator's modules are paid for only when `load` runs.
    from ._load._main import run_cli

    return run_cli(args)


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``actrhost`` (every subcommand has ``--help``)."""
    from ._cli_signaling import add_parsers, signaling_url

    parser = argparse.ArgumentParser(
        prog="actrhost",
        description="Host Actor-RTC style actors: one process per actor, ZeroMQ between them.",
    )
    parser.add_argument("--version", action="version", version=f"actrhost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a node from a config file until SIGINT/SIGTERM")
    run.add_argument("config", help="path of the node's TOML config")
    run.add_argument(
        "--log-level",
        type=str.lower,  # DEBUG as well: Python's logging spells them so
        choices=["debug", "info", "warning", "error"],
        help="overrides [node] log_level (any case)",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check", help="check a config as run does, start nothing, list actors and routes"
    )
    check.add_argument("config", help="path of the node's TOML config")
    check.set_defaults(func=cmd_check)

    call = sub.add_parser("call", help="call (or tell) an actor of a running node")
    call.add_argument(
        "config",
        type=node_ref,
        help="config of the running node (or its ipc:// control endpoint)",
    )
    call.add_argument(
        "target", help="actor name, one instance as 'name#N', 'manufacturer+type' or an ActrId text"
    )
    call.add_argument("route_key", type=wire_key, help="route key, e.g. demo.Echo.Say")
    data = call.add_mutually_exclusive_group()
    data.add_argument("--data", help="request payload as text, or @FILE for a file's bytes")
    data.add_argument("--hex", help="request payload as hexadecimal")
    data.add_argument(
        "--json",
        help="request as JSON of a protobuf service method's input type (the method is "
        "found by ROUTE_KEY); the answer is printed as JSON",
    )
    call.add_argument(
        "--proto-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="with --json: import this _pb2 module (dotted name or .py path) too; "
        "the node's handler modules are imported anyway; repeatable",
    )
    call.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to wait (default 10)")
    call.add_argument("--tell", action="store_true", help="send a tell: no answer is awaited")
    call.add_argument(
        "--output",
        choices=["text", "hex", "raw"],
        help="how to print the response (default: UTF-8 text; with --json, JSON)",
    )
    call.set_defaults(func=cmd_call)

    status = sub.add_parser("status", help="show every actor of a running node with its counters")
    status.add_argument(
        "config",
        nargs="?",
        type=node_ref,
        help="config of the running node (or its ipc:// control endpoint)",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "--signaling",
        metavar="URL",
        type=signaling_url,
        help="list who is registered with a signaling server (instead of a node's actors)",
    )
    status.add_argument(
        "--realm", type=realm_id, default=None, help="realm to list with --signaling (default 1)"
    )
    status.add_argument(
        "--ca-file",
        metavar="PEM",
        help="with a wss:// --signaling URL: the certificates its certificate chains to",
    )
    status.set_defaults(func=cmd_status)

    wait = sub.add_parser("wait", help="wait until a node runs every actor (for scripts)")
    wait.add_argument(
        "config", type=node_ref, help="config of the node (or its ipc:// control endpoint)"
    )
    wait.add_argument(
        "--timeout", type=_seconds, default=30.0, help="seconds to wait at most (default 30)"
    )
    wait.set_defaults(func=cmd_wait)

    stop = sub.add_parser("stop", help="stop a running node gracefully and wait until it is gone")
    stop.add_argument(
        "config",
        type=node_ref,
        help="config of the running node (or its ipc:// control endpoint)",
    )
    stop.add_argument(
        "--timeout", type=_seconds, default=30.0, help="seconds to wait for it (default 30)"
    )
    stop.set_defaults(func=cmd_stop)

    restart = sub.add_parser(
        "restart",
        help="rolling restart: new handler code and settings, one instance at a time "
        "(--gateway: the gateway alone)",
    )
    restart.add_argument(
        "config",
        type=node_ref,
        help="config of the running node (or its ipc:// control endpoint)",
    )
    restart.add_argument("actors", nargs="*", help="actor names to restart (default: all)")
    restart.add_argument(
        "--gateway",
        action="store_true",
        help="restart the gateway only (edited [webrtc] settings, new TURN credentials)",
    )
    restart.add_argument(
        "--timeout", type=_seconds, default=600.0, help="seconds to wait at most (default 600)"
    )
    restart.set_defaults(func=cmd_restart)

    add_parsers(sub)

    from ._load._args import add_load_parser  # standard library only: cheap at every start

    add_load_parser(sub).set_defaults(func=cmd_load)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actrhost`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_USAGE)
    except ActrError as exc:
        return _fail(
            f"{args.command}: {exc.code} {type(exc).__name__}: {exc.message}", EXIT_FAILURE
        )
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`actrhost call ... | head`): stop quietly,
        # as other command-line tools do, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for such a pipeline


if __name__ == "__main__":
    sys.exit(main())
