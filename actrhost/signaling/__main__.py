"""``python -m actrhost.signaling``: a standalone signaling server, the same as ``actrhost
signal`` (or ``--new-key-file PATH`` to create a key file and exit)."""

from __future__ import annotations

import argparse
import sys

from .._errors import ConfigError
from ._run import add_server_arguments, serve_from_args


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m actrhost.signaling", description=__doc__)
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve_from_args(args)
    except (ConfigError, OSError) as exc:
        print(f"actrhost signal: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
