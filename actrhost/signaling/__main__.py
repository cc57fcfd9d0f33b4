"""``python -m actrhost.signaling``: a standalone signaling server (what ``actrhost signal``
runs), or ``--new-key-file PATH`` to create a key file and exit."""

from __future__ import annotations

import argparse
import logging
import sys

from .._errors import ConfigError
from ._credentials import write_key_file
from ._run import serve_main
from ._server import (
    DEFAULT_CREDENTIAL_TTL_S,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_SEND_QUEUE_SLOTS,
)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m actrhost.signaling", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8765", help="host:port (port 0: any)")
    parser.add_argument("--key-file", help="TOML key file; without it a random key is used")
    parser.add_argument("--new-key-file", metavar="PATH", help="write a new key file and exit")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="its private key (if not in --tls-cert)")
    parser.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL_S)
    parser.add_argument("--missed-heartbeats", type=int, default=3)
    parser.add_argument("--credential-ttl", type=float, default=DEFAULT_CREDENTIAL_TTL_S)
    parser.add_argument("--reregister-grace", type=float, default=None)
    parser.add_argument("--max-frame-bytes", type=int, default=DEFAULT_MAX_FRAME_BYTES)
    parser.add_argument("--send-queue-slots", type=int, default=DEFAULT_SEND_QUEUE_SLOTS)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.new_key_file:
        try:
            write_key_file(args.new_key_file)
        except OSError as exc:
            print(f"{args.new_key_file}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {args.new_key_file}")
        return 0
    try:
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
    except (ConfigError, OSError, ValueError) as exc:
        print(f"actrhost signal: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
