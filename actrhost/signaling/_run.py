"""Running a server: :func:`run_server` for embedding (``async with``) and
:func:`serve_main` for the standalone ``actrhost signal`` (also ``python -m
actrhost.signaling``: both read the options :func:`add_server_arguments` defines)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .._config import parse_listen
from .._errors import ConfigError
from ._credentials import KeysLike, load_keys, write_key_file
from ._server import (
    DEFAULT_CREDENTIAL_TTL_S,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_SEND_QUEUE_SLOTS,
    SignalingServer,
)

__all__ = ["add_server_arguments", "run_server", "serve_from_args", "serve_main"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def run_server(
    listen: str = "127.0.0.1:0", *, keys: KeysLike = None, **options: Any
) -> AsyncIterator[SignalingServer]:
    """Start a :class:`SignalingServer` for the duration of an ``async with`` block.

    ``options`` are the keyword arguments of :class:`SignalingServer`
    (``heartbeat_interval_s``, ``credential_ttl_s``, ``max_frame_bytes``, ...). The
    yielded server reports ``port`` and ``url``. Leaving the block closes every
    connection, also when the block is cancelled.
    """
    server = SignalingServer(listen, keys=keys, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def serve_main(
    listen: str,
    key_file: str | os.PathLike[str] | None = None,
    *,
    ready: Callable[[SignalingServer], None] | None = None,
    **options: Any,
) -> None:
    """Run a standalone server until SIGINT or SIGTERM (``actrhost signal``).

    Blocks. Once listening it calls ``ready(server)``, by default printing
    ``"signaling server listening on ws://host:port"`` on stdout (tests and scripts read
    the port from that line). Without ``key_file`` a random key is used. Raises
    :class:`~actrhost.ConfigError` for a bad key file, OSError when the address is taken.
    """
    keys = load_keys(Path(key_file) if key_file is not None else None)

    def announce(server: SignalingServer) -> None:
        print(f"signaling server listening on {server.url}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with run_server(listen, keys=keys, **options) as server:
            if key_file is None:  # once running: a bad option stays a one-line error
                log.warning(
                    "no key file: using a random key; after a restart of this server actors "
                    "get new ids (create one with: actrhost signal --new-key-file PATH)"
                )
            (ready or announce)(server)
            await stop.wait()

    asyncio.run(main())


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a standalone server, for :func:`serve_from_args`."""
    parser.add_argument(
        "--listen", default="127.0.0.1:8765", help="HOST:PORT (default 127.0.0.1:8765; port 0: any)"
    )
    parser.add_argument("--key-file", help="TOML key file (docs/signaling.md); default: random")
    parser.add_argument("--new-key-file", metavar="PATH", help="write a new key file and exit")
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="serve wss:// with this certificate chain"
    )
    parser.add_argument("--tls-key", metavar="PEM", help="its private key, if not in --tls-cert")
    # Each has a floor: 0 or less was taken, and broke every node using the server (a
    # heartbeat interval of -1: thousands of refused heartbeats a second; a credential
    # lifetime of 0: a new id every second; frames of 0 bytes: nobody registers).
    numbers: tuple[tuple[str, type, float | None, float, str], ...] = (
        (
            "--heartbeat-interval",
            float,
            DEFAULT_HEARTBEAT_INTERVAL_S,
            0.05,
            "seconds between pings",
        ),
        ("--credential-ttl", float, DEFAULT_CREDENTIAL_TTL_S, 0.1, "seconds a credential is valid"),
        ("--reregister-grace", float, None, 0, "seconds a previous id can be taken back"),
        ("--missed-heartbeats", int, 3, 1, "pings an actor may miss before it counts as gone"),
        ("--max-frame-bytes", int, DEFAULT_MAX_FRAME_BYTES, 4096, "largest message taken"),
        ("--send-queue-slots", int, DEFAULT_SEND_QUEUE_SLOTS, 1, "messages queued per connection"),
    )
    for option, kind, default, floor, meaning in numbers:
        shown = "the credential TTL" if default is None else f"{default:g}"
        parser.add_argument(
            option,
            type=_at_least(kind, floor),
            default=default,
            metavar="S" if kind is float else "N",
            help=f"{meaning} (default {shown}, at least {floor:g})",
        )
    parser.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,  # spelled as `actrhost run --log-level` spells them, in any case
        choices=["debug", "info", "warning", "error"],
        help="on stderr (default warning: refusals, a missing key file, server errors; any case)",
    )


def _at_least(kind: Callable[[str], float], floor: float) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` no smaller than ``floor``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not finite: {text!r}")
        if value < floor:
            raise argparse.ArgumentTypeError(f"{text} is less than {floor:g}")
        return value

    parse.__name__ = kind.__name__  # what argparse names in its own messages
    return parse


def serve_from_args(args: argparse.Namespace) -> None:
    """Write a key file (``--new-key-file``), or run the server until SIGINT or SIGTERM.

    Raises :class:`~actrhost.ConfigError` for a bad option or key file, OSError when the
    address cannot be bound or the key file not written.
    """
    if args.tls_key and not args.tls_cert:
        raise ConfigError("--tls-key", "", "needs --tls-cert (the certificate it belongs to)")
    if args.new_key_file:
        write_key_file(args.new_key_file)
        print(f"wrote {args.new_key_file}")
        return
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        raise ConfigError("--listen", "", str(exc)) from None
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s signaling[%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    serve_main(
        args.listen,
        args.key_file,
        heartbeat_interval_s=args.heartbeat_interval,
        missed_heartbeats=args.missed_heartbeats,
        credential_ttl_s=args.credential_ttl,
        reregister_grace_s=args.reregister_grace,
        max_frame_bytes=args.max_frame_bytes,
        send_queue_slots=args.send_queue_slots,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
