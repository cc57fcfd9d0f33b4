"""``python -m actrhost.gateway``: the gateway process (started by the supervisor only).

Like a worker: asks Linux for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG) and
also polls ``getppid()``, ignores SIGINT (Ctrl-C reaches the whole process group; only
the supervisor decides what it means), and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any

from setproctitle import setproctitle

from .._config import load_node_config
from .._errors import ConfigError
from .._linux import set_parent_death_signal, supervisor_gone
from . import _dtls, _jitter, _sctp, _sctp_loss, _sctp_packets, _sctp_path, _sctp_scan
from ._gateway import Gateway
from ._ice import enlarge_receive_buffers, skip_stun_parse_for_media, use_host_addresses
from ._rtcp import skip_rtcp_of_silent_tracks
from ._spec import SPEC_ENV, GatewaySpec


def main() -> int:
    """Entry of the gateway process; returns its exit code."""
    # Ctrl-C, and a closed terminal's SIGHUP, reach the node's whole process group: the
    # supervisor decides what they mean, and stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    set_parent_death_signal(signal.SIGTERM)
    try:
        spec = GatewaySpec.from_json(os.environ[SPEC_ENV])
    except KeyError:
        print(
            f"actrhost gateway: {SPEC_ENV} is not set (started by the supervisor only)",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        print(f"actrhost gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("ACTRHOST_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-7s gateway[%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aioice logs every candidate pair check at INFO: far too much for a node's log.
    logging.getLogger("aioice").setLevel(max(logging.WARNING, logging.getLogger().level))
    if supervisor_gone(spec.supervisor_pid):
        return 1  # the supervisor died before we could ask to be told
    try:
        config = load_node_config(spec.config_path)
    except ConfigError as exc:
        print(f"actrhost gateway: {exc}", file=sys.stderr)
        return 2
    # Named in `ps` like the node's other processes (two nodes on a host: which is whose).
    setproctitle(f"actrhost gateway ({config.node.name})")
    # Without a list, the address that reaches signaling, once connected (Gateway.run);
    # no peer connection is made before that.
    use_host_addresses(config.webrtc.ice_host_addresses or ["127.0.0.1"])
    # Fixes, not tunings: without them one lost video packet can stop a track for good,
    # and a path that reorders packets (jitter) starves every stream.
    _jitter.install()
    # ACTRHOST_GATEWAY_AIORTC=plain runs aiortc and aioice as shipped (for comparisons).
    tuned = os.environ.get("ACTRHOST_GATEWAY_AIORTC", "tuned") != "plain"
    if tuned:
        _sctp_packets.install()  # (first: the other SCTP patches wrap what it puts there)
    _sctp_loss.install()
    if tuned:
        _sctp.install()
        _sctp_scan.install()
        _sctp_path.install()  # (after _sctp: it takes its probes' answers first)
        _dtls.install()
        skip_stun_parse_for_media()
        skip_rtcp_of_silent_tracks()
        enlarge_receive_buffers()

    async def amain() -> int:
        gateway = Gateway(spec, config)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, gateway.request_stop)
        return await gateway.run()

    return run_loop(amain())


def run_loop(coro: Any) -> int:
    """Run the gateway's loop: uvloop when installed (``ACTRHOST_GATEWAY_LOOP=asyncio``
    forces the standard loop), as aiortc's per-packet work is mostly loop overhead."""
    if os.environ.get("ACTRHOST_GATEWAY_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return int(uvloop.run(coro))
    return int(asyncio.run(coro))


def exit_now(code: int) -> None:
    """Exit with ``code`` without waiting for threads aiortc may have left running.

    aiortc decodes each RTP receiver's media in a non-daemon thread that only its
    receiver's stop ends; a receiver that was never stopped (a close cut short) would
    keep the stopped gateway alive until the supervisor's SIGKILL. Everything the gateway
    owns is closed by now: say which threads were left, and go.
    """
    # Daemon threads never kept a process alive (the loop watch's ends within 0.1 s of
    # its stop, and was named here when the exit came first).
    left = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread()
        and not t.daemon
        and not t.name.startswith("ThreadPoolExecutor")
    ]
    if left:
        logging.getLogger(__name__).warning("exiting with threads left running: %s", left)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
