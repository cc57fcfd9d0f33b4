"""What ``actrhost status`` and the metrics page read: every actor instance with the
counters its worker sends when asked (over the control socket), and the gateway's.

A worker that does not answer within ``STATS_TIMEOUT_S`` (a handler blocking its loop,
a stopped process) shows the counters it sent last, with their age in ``stats_age_s``
(or none, if it never answered); the status table says so. Metrics then keep their series
instead of losing them for the length of the block.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import _control as control
from ._directory import LIVE_STATES
from ._worker_start import describe_worker_start

if TYPE_CHECKING:
    from ._supervisor import Supervisor

#: How long a status request waits for each worker's counters.
STATS_TIMEOUT_S = 1.0


async def collect_status(supervisor: Supervisor) -> dict[str, Any]:
    """The node's status: every actor with its worker's counters (waiting up to
    ``STATS_TIMEOUT_S`` for them), the gateway's."""
    sup = supervisor
    loop = asyncio.get_running_loop()
    waits: dict[int, asyncio.Future[dict[str, Any]]] = {}
    asked: dict[int, int | None] = {}  # serial -> the pid asked
    for slot in sup._slots:
        if slot.routing_id is not None and slot.state in LIVE_STATES:
            sup._next_req += 1
            asked[slot.actr_id.serial_number] = slot.pid
            waits[slot.actr_id.serial_number] = future = loop.create_future()
            sup._stats_waiters[sup._next_req] = future
            sup._send(slot.routing_id, {"op": control.STATS_REQUEST, "req": sup._next_req})
    gateway_stats: asyncio.Future[Any] | None = None
    if sup.gateway is not None:
        sup._next_req += 1
        gateway_stats = asyncio.ensure_future(sup.gateway.stats(sup._next_req, STATS_TIMEOUT_S))
    if waits:
        await asyncio.wait(waits.values(), timeout=STATS_TIMEOUT_S)
    sup._stats_waiters = {k: f for k, f in sup._stats_waiters.items() if not f.done()}
    actors = []
    for slot in sup._slots:
        waiter = waits.get(slot.actr_id.serial_number)
        stats = waiter.result() if waiter is not None and waiter.done() else {}
        if asked.get(slot.actr_id.serial_number) != slot.pid:
            # Restarted during the wait: those counters were the old process's, and must
            # not be shown beside the new pid and restart count (a scrape saw counters
            # drop with no restart counted). The next status has the new one's.
            stats = {}
        entry = {**slot.entry().to_json(), "stats": stats, "error": slot.error}
        if slot.state not in LIVE_STATES:
            # The pid of a process that is gone (the table shows "-"): one a script
            # would signal may belong to another process by now (QA).
            entry["pid"] = None
        if stats:
            slot.last_stats = (slot.pid, loop.time(), stats)
        elif slot.state in LIVE_STATES and slot.last_stats and slot.last_stats[0] == slot.pid:
            _pid, at, entry["stats"] = slot.last_stats
            entry["stats_age_s"] = round(loop.time() - at, 1)
        actors.append(entry)
    gateway = None
    if sup.gateway is not None and gateway_stats is not None:
        stats = await gateway_stats  # first: described as it is once they came, or it exited
        gateway = {**sup.gateway.describe(), "stats": stats}
    return {
        "node": sup.config.node.name,
        "run_dir": str(sup.run_dir),
        "segments_reclaimed": sup.segments_reclaimed,
        "malformed_control": sup.malformed_control,
        "workers_start": describe_worker_start(sup._forkserver),
        "metrics": sup._metrics.url if sup._metrics is not None else None,
        "actors": actors,
        "gateway": gateway,
    }
