"""Running a server: :func:`run_server` for embedding (``async with``) and
:func:`serve_main` for the standalone ``actrhost signal``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ._credentials import KeysLike, load_keys
from ._server import SignalingServer

__all__ = ["run_server", "serve_main"]

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
    if key_file is None:
        log.warning(
            "no key file: using a random key; after a restart of this server actors get "
            "new ids (create one with python -m actrhost.signaling --new-key-file PATH)"
        )
    keys = load_keys(Path(key_file) if key_file is not None else None)

    def announce(server: SignalingServer) -> None:
        print(f"signaling server listening on {server.url}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with run_server(listen, keys=keys, **options) as server:
            (ready or announce)(server)
            await stop.wait()

    asyncio.run(main())
