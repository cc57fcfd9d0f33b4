"""The servers a supervisor runs beside its processes: the metrics page (``[node]
metrics_listen``) and the embedded signaling server (``[signaling] url = "embedded"``).

Both are started before any process, and both end with the node (on the exit stack
:meth:`~._supervisor.Supervisor.run` passes). A listen address that is in use fails the
node with one line (exit code 1); one that no interface of this host has is the config's
fault, a ``ConfigError`` (exit code 2).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from ._config import Config, parse_listen
from ._errors import ConfigError
from ._metrics import MetricsServer

# The supervisor's log: these are its messages, whichever module holds the code.
log = logging.getLogger("actrhost._supervisor")


async def start_metrics(
    stack: contextlib.AsyncExitStack,
    config: Config,
    listen: str,
    collect: Callable[[], Awaitable[dict[str, Any]]],
    directory: Callable[[], dict[str, Any]],
) -> MetricsServer:
    """Serve ``GET /metrics`` (``_metrics.py``) at ``listen`` until ``stack`` closes."""
    metrics = MetricsServer(listen, collect, directory)
    try:
        await metrics.start()
    except OSError as exc:
        _check_address(config, exc, "node.metrics_listen", listen)
        raise RuntimeError(f"[node] metrics_listen {listen}: {_bind_error(exc)}") from exc
    stack.push_async_callback(metrics.close)
    log.info("node %r: metrics at %s", config.node.name, metrics.url)
    return metrics


async def start_signaling(stack: contextlib.AsyncExitStack, config: Config) -> str:
    """The signaling server's URL: ``[signaling] url``, or that of the embedded server
    started here, until ``stack`` closes."""
    assert config.signaling is not None
    url = config.signaling.url
    if url != "embedded":
        return url
    from .signaling import run_server

    listen = config.signaling.listen
    try:
        server = await stack.enter_async_context(
            run_server(listen, heartbeat_interval_s=config.signaling.heartbeat_interval_s)
        )
    except OSError as exc:
        _check_address(config, exc, "signaling.listen", listen)
        raise RuntimeError(f"[signaling] listen {listen}: {_bind_error(exc)}") from exc
    log.info("node %r: embedded signaling server at %s", config.node.name, server.url)
    return server.url


def _check_address(config: Config, exc: OSError, key: str, listen: str) -> None:
    """An address no interface of this host has is the config's fault, not the
    host's (as a port in use is): raise ConfigError for it."""
    if exc.errno == errno.EADDRNOTAVAIL:
        problem = f"{listen!r} is not an address of this host ({_bind_error(exc)})"
        raise ConfigError(config.shown_path, key, problem) from None
    if isinstance(exc, socket.gaierror):  # a host name that does not resolve (QA)
        problem = f"{listen!r}: its host name does not resolve ({_bind_error(exc)})"
        raise ConfigError(config.shown_path, key, problem) from None


def check_listen_addresses(config: Config) -> None:
    """Raise ConfigError, as the node's start would, for a listen address (metrics, the
    embedded signaling server) that no interface of this host has: ``actrhost check``
    said ok to such a config, and ``run`` then refused it. So for an ICE host address:
    the node ran, its gateway failed each link at once, and the other node's callers
    waited for their connect timeout to learn nothing of why (QA)."""
    hosts: list[tuple[str, str, str]] = []  # (key, host, what the error names)
    if config.node.metrics_listen:
        listen = config.node.metrics_listen
        hosts.append(("node.metrics_listen", parse_listen(listen)[0], listen))
    if config.signaling is not None and config.signaling.url == "embedded":
        hosts.append(
            ("signaling.listen", parse_listen(config.signaling.listen)[0], config.signaling.listen)
        )
    if config.signaling is not None:
        for i, address in enumerate(config.webrtc.ice_host_addresses):
            hosts.append((f"webrtc.ice_host_addresses[{i}]", address, address))
    for key, host, shown in hosts:
        try:
            # As the servers bind it: any of the addresses the name resolves to.
            family, _, _, _, sockaddr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind(sockaddr)  # port 0: only the address is in question here
        except OSError as exc:
            _check_address(config, exc, key, shown)


def _bind_error(exc: OSError) -> str:
    """'Address already in use' rather than asyncio's longer wording of the same."""
    if isinstance(exc, socket.gaierror):  # its errno is getaddrinfo's: os.strerror's "-2"
        return exc.strerror or str(exc)
    return os.strerror(exc.errno) if exc.errno else str(exc)
