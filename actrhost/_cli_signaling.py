"""``actrhost signal``, ``actrhost lock`` and ``actrhost status --signaling``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from ._config_loader import signaling_url_problem
from ._errors import ConfigError, NotFound

#: The actor type the CLI registers as while it asks a signaling server something.
CLI_ACTR_TYPE = "actrhost+Cli"


def cmd_signal(args: argparse.Namespace) -> int:
    """Run a standalone signaling server until SIGINT/SIGTERM (or write a key file)."""
    from .signaling._run import serve_from_args

    try:
        serve_from_args(args)
    except OSError as exc:  # the address is taken or not this host's; a file not written
        what = f"write {args.new_key_file}" if args.new_key_file else f"listen on {args.listen}"
        # A local failure: no wire code in it (it said "503 Unavailable", QA).
        print(f"actrhost: signal: cannot {what}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


async def _with_registration(url: str, realm: int, job, ca_file=None):  # type: ignore[no-untyped-def]
    from .signaling import SignalingClient

    async with SignalingClient(url, ca_file=ca_file) as client:
        registration = await client.register(CLI_ACTR_TYPE, realm)
        try:
            return await job(registration)
        finally:
            await registration.unregister()


def cmd_signaling_status(
    url: str, realm: int, ca_file: str | None = None, as_json: bool = False
) -> int:
    """Print the actors registered with a signaling server in one realm (``ca_file``: what
    a ``wss://`` server's certificate must chain to), as a table or as JSON."""

    async def job(registration):  # type: ignore[no-untyped-def]
        return await registration.list_actors()

    actors, truncated = asyncio.run(_with_registration(url, realm, job, ca_file))
    actors = [a for a in actors if str(a.actr_id.type) != CLI_ACTR_TYPE]
    if as_json:
        listed = [
            {
                "id": str(a.actr_id),
                "availability": str(a.availability.name).lower(),
                "mailbox_backlog": a.mailbox_backlog,
                "fingerprint": a.fingerprint,
            }
            for a in actors
        ]
        doc = {"signaling": url, "realm": realm, "actors": listed, "truncated": truncated}
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("ACTR_ID", "AVAILABILITY", "BACKLOG", "FINGERPRINT")]
    rows += [
        (
            str(a.actr_id),
            str(a.availability.name).lower(),
            str(a.mailbox_backlog),
            a.fingerprint or "-",
        )
        for a in actors
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"signaling {url}, realm {realm}: {len(rows) - 1} actor(s)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if truncated:
        print("(truncated)")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    """Write Actr.lock.toml beside the config: each dependency's service fingerprint."""
    from ._config import load_config
    from ._lockfile import ACTR_LOCK_NAME, LockedDependency, LockFile

    config = load_config(args.config)
    if not config.dependencies:
        raise ConfigError(config.shown_path, "dependencies", "no [dependencies] to lock")
    now = datetime.now(UTC).replace(microsecond=0)
    missing = [d for d in config.dependencies if d.fingerprint is None]
    found: dict[str, str] = {}
    if missing:
        url = args.signaling or (
            config.signaling.url
            if config.signaling and config.signaling.url != "embedded"
            else None
        )
        if url is None:
            raise ConfigError(
                config.shown_path,
                f"dependencies.{missing[0].name}.fingerprint",
                "no fingerprint, and no signaling server to ask: set it, or pass --signaling ws://HOST:PORT",
            )

        async def job(registration):  # type: ignore[no-untyped-def]
            for dep in missing:
                result = await registration.discover(dep.actr_type, candidate_count=1)
                best = result.candidates[0] if result.candidates else None
                if best is None or not best.fingerprint:
                    raise NotFound(  # (a bare 404 ActrError read as unlike `call`'s, QA)
                        f"signaling knows no instance of {dep.actr_type} with a fingerprint"
                    )
                found[dep.name] = best.fingerprint

        ca_file = config.signaling.ca_file if config.signaling else None
        asyncio.run(_with_registration(url, config.node.realm, job, ca_file))
    lock = LockFile(
        [
            LockedDependency(d.name, d.actr_type, d.fingerprint or found[d.name], now)
            for d in config.dependencies
        ]
    )
    path = Path(config.base_dir) / ACTR_LOCK_NAME
    lock.save(path)
    print(f"wrote {path} ({len(lock.dependencies)} dependencies)")
    return 0


def signaling_url(text: str) -> str:
    """A ``--signaling`` value: a ws:// or wss:// URL (argparse type; a bad one was a
    connection failure, exit 1, QA)."""
    problem = signaling_url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``signal`` and ``lock`` on the main parser."""
    from .signaling._run import add_server_arguments

    signal = sub.add_parser("signal", help="run a standalone signaling server")
    add_server_arguments(signal)
    signal.set_defaults(func=cmd_signal)

    lock = sub.add_parser(
        "lock", help="write Actr.lock.toml with the fingerprints of [dependencies]"
    )
    lock.add_argument("config", help="path of the node's TOML config")
    lock.add_argument(
        "--signaling",
        metavar="URL",
        type=signaling_url,
        help="ws:// URL to ask for fingerprints the config does not give",
    )
    lock.set_defaults(func=cmd_lock)
