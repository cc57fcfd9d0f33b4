"""The table ``actrhost status`` prints: one row per actor, its routes' latencies, the
gateway and each remote node with its traffic per lane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._directory import LIVE_STATES
from ._errors import printable
from ._histogram import Histogram
from ._load._units import format_bytes, format_ms

#: States whose pid names a process that exists.
_LIVE = {state.value for state in LIVE_STATES}

_COLUMNS = (
    "NAME",
    "ACTR_ID",
    "PID",
    "STATE",
    "RESTARTS",
    "MAILBOX",
    "SERVED",
    "ERRORS",
    "DROPS",
)


def _drops(stats: dict[str, Any]) -> int:
    """Stream chunks and media samples dropped (lossy lanes) or refused (no callback)."""
    incoming = stats.get("streams_in") or {}
    outgoing = stats.get("streams_out") or {}
    return (
        incoming.get("dropped_receiver", 0)
        + incoming.get("unregistered", 0)
        + outgoing.get("dropped_sender", 0)
    )


#: An actor's counters worth a line in `actrhost status` when not zero: what it refused,
#: dropped or could not deliver (the DROPS column has the streams' lossy lanes).
_ACTOR_TROUBLE = (
    "malformed_frames",
    "denied",
    "unknown_routes",
    "expired_skipped",
    "tells_dropped",
    "tells_in_doubt_dropped",
    "chunks_in_doubt_dropped",
    "tells_not_sent_again",
    "late_responses",
    "undeliverable_replies",
    "streams_in.unregistered",
    "streams_in.dropped_receiver",
    "streams_in.not_running",
    "streams_in.previous_process",
    "streams_in.malformed",
    "streams_in.ring_gone",
    "streams_in.callback_errors",
    "streams_out.dropped_sender",
    "streams_out.chunks_not_sent_again",
)


def _actor_trouble(stats: dict[str, Any]) -> list[str]:
    found = []
    for name in _ACTOR_TROUBLE:
        group, _, key = name.rpartition(".")
        value = (stats.get(group) or {}).get(key) if group else stats.get(key)
        if value:
            found.append(f"{name} {value}")
    return found


#: Gateway counters worth a line in `actrhost status` when not zero (docs/gateway.md, stats).
_GATEWAY_TROUBLE = (
    "failed_calls",
    "unintroduced_sources",
    "unproven_sdp",
    "bad_relays",
    "malformed_local",
    "sender_gone",
    "undeliverable",
    "late_responses",
    "undeliverable_replies",
    "dropped_media",
)


def format_status(status: dict[str, Any]) -> str:
    """The status table ``actrhost status`` prints."""
    rows = [_COLUMNS]
    for actor in status["actors"]:
        stats = actor.get("stats") or {}
        served = stats.get("calls_served", 0) + stats.get("tells_served", 0) if stats else "-"
        rows.append(
            (
                f"{actor['name']}#{actor['index']}",
                actor["id"],
                # A gone process's pid (kept in the directory) would point at nothing.
                str(actor.get("pid") or "-") if actor["state"] in _LIVE else "-",
                actor["state"],
                str(actor.get("restarts", 0)),
                str(stats.get("mailbox_depth", "-")),
                str(served),
                str(stats.get("errors", "-")),
                str(_drops(stats)) if stats else "-",
            )
        )
    lines = [f"node {status.get('node', '?')} ({status.get('run_dir', '')})"]
    lines += _table(rows)
    for actor in status["actors"]:
        label = f"{actor['name']}#{actor['index']}"
        if actor["state"] == "running" and (not actor.get("stats") or "stats_age_s" in actor):
            # Its counters did not come within the status request's wait: a handler
            # blocking its loop, or a stopped (SIGSTOP) process. Calls to it will wait.
            age = actor.get("stats_age_s")
            shown = f" (counters shown are {age} s old)" if age is not None else ""
            lines.append(f"  {label} did not answer the stats request: busy or stuck{shown}")
        if actor.get("error") and actor["state"] not in _LIVE:
            lines.append(f"  {label} {actor['state']}: {actor['error']}")
        trouble = _actor_trouble(actor.get("stats") or {})
        if trouble:
            lines.append(f"  {label} refused or lost: {', '.join(trouble)}")
        blocks = (actor.get("stats") or {}).get("loop_blocks")
        if blocks:
            blocked_s = actor["stats"].get("loop_blocked_seconds", 0)
            lines.append(
                f"  {label} event loop blocked: loop_blocks {blocks}, "
                f"loop_blocked_seconds {blocked_s} (the worker's log has the blocking lines)"
            )
    start = status.get("workers_start")
    if start and start.get("method") == "forkserver":
        lines.append(
            f"workers forked by forkserver pid {start.get('forkserver_pid') or '-'} "
            f"(started {start.get('forkserver_starts')} time(s))"
        )
    elif start:
        lines.append("workers spawned, each a fresh interpreter")
    route_rows = _route_rows(status["actors"])
    if len(route_rows) > 1:
        lines.append("routes (all instances of an actor; handled: handler time, queued: mailbox)")
        lines += _table(route_rows)
    if status.get("metrics"):
        lines.append(f"metrics at {status['metrics']}")
    gateway = status.get("gateway")
    if gateway:
        stats = gateway.get("stats") or {}
        link = stats.get("signaling")
        lines.append(
            f"gateway pid {gateway.get('pid')} {gateway.get('state')}, "
            f"restarts {gateway.get('restarts', 0)}, signaling {gateway.get('signaling')}"
            + (f" ({link})" if link and link != "connected" else "")
            + _ice_text(stats)
        )
        if not stats and gateway.get("state") == "running":
            # Its counters did not come within the status request's wait: busy or stuck.
            lines.append("  the gateway did not answer the stats request")
        trouble = [f"{name} {stats[name]}" for name in _GATEWAY_TROUBLE if stats.get(name)]
        if trouble:
            lines.append(f"  refused or lost: {', '.join(trouble)}")
        if stats.get("loop_blocks"):
            lines.append(
                f"  event loop blocked: loop_blocks {stats['loop_blocks']}, loop_blocked_seconds "
                f"{stats.get('loop_blocked_seconds', 0)} (the gateway's log has the blocking lines)"
            )
        if stats.get("streams_held"):  # kept for full links or slow targets (_stream_hold)
            lines.append(
                f"  stream frames held for full links or slow actors: {stats['streams_held']}"
            )
        if stats.get("calls_held"):  # for nodes whose link is full (_call_hold)
            lines.append(f"  calls and tells held for full links: {stats['calls_held']}")
        if stats.get("frames_waiting_for_actors"):  # their sockets full (_to_workers)
            lines.append(
                f"  frames from other nodes waiting for slow actors: "
                f"{stats['frames_waiting_for_actors']} "
                f"({format_bytes(stats.get('bytes_waiting_for_actors', 0))})"
            )
        remote = stats.get("remote_nodes") or {}
        for node_id, node in sorted(remote.items()):
            name = f"{node['name']} ({node_id})" if node.get("name") else node_id
            # The state is the current attempt's: connected means the reconnect is done.
            again = node.get("reconnecting") and node.get("state") != "connected"
            why = f": {node['down_because']}" if again and node.get("down_because") else ""
            # Up, but its actors left signaling a moment ago: the link's probe is out.
            doubt = node.get("doubted_because") if not again else ""
            connection = node.get("connection") or {}
            packet = connection.get("sctp_packet_bytes") or 0
            # Larger than aiortc's 1,189 bytes between gateways on one host, or on two
            # hosts joined directly once a probe came back (IP fragments on the wire);
            # where a probe was sent, what it found.
            probe = connection.get("sctp_packets_why")
            large = f"packets of {packet // 1024} KiB" if packet > 1500 else ""
            if probe and not large:
                large = f"packets of {packet:,} bytes: {probe}"
            large = f" ({large})" if large else ""
            lines.append(
                f"  remote node {name}: {node.get('state')}"
                f"{f' (reconnecting{why})' if again else ''}"
                f"{f' (being checked: {doubt})' if doubt else ''}, "
                f"candidate {node.get('candidate_type') or '-'}{large}, "
                f"{len(node.get('actors', []))} actor(s), connects {node.get('connects', 0)}, "
                f"links lost {node.get('links_lost', 0)}, failures {node.get('failures', 0)}, "
                f"malformed {node.get('malformed', 0)}"
                + "".join(
                    f", {key.replace('_', ' ')} {node[key]}"
                    for key in ("duplicates_dropped", "tells_in_doubt")
                    if node.get(key)
                )
            )
            if node.get("refusing"):  # its link failed and its queue is full (gateway.md)
                queued = (node.get("connection") or {}).get("queued_bytes", 0)
                lines.append(
                    f"    {format_bytes(queued)} queued for it: its calls fail (503) and its "
                    "tells are dropped (senders told) until it is back"
                )
            lines += _lane_lines(node.get("lanes") or {})
            lines += _sctp_lines((node.get("connection") or {}).get("sctp") or {})
            lines += _udp_lines(node.get("connection") or {})
            lines += _pace_lines(node.get("connection") or {})
            lines += _media_lines(node.get("media") or {})
    return "\n".join(lines)


#: A link whose pace held the sending back within this many seconds is "slow".
SLOW_LINK_RECENT_S = 10.0


def _pace_lines(connection: dict[str, Any]) -> list[str]:
    """What a slow link holds the gateway's sending to (a fast or idle one says nothing:
    an idle link's limit is only SCTP's first window, see gateway/_pacing.py)."""
    limit, ceiling = connection.get("send_buffer_bytes"), connection.get("send_buffer_max_bytes")
    if not limit or not ceiling or limit >= ceiling:
        return []
    ago = connection.get("send_buffer_held_back_s_ago")
    if ago is None or ago > SLOW_LINK_RECENT_S:
        return []
    return [
        f"    slow link: {limit // 1024} KiB may wait in aiortc's send buffer (of "
        f"{ceiling // 1024} KiB), messages of {connection.get('message_bytes', 0) // 1024} KiB; "
        f"held the sending back {connection.get('send_buffer_held_back', 0)} time(s), "
        f"last {ago:g} s ago"
    ]


def _sctp_lines(sctp: dict[str, Any]) -> list[str]:
    """The link's loss recovery, once it had any (a clean link says nothing)."""
    if not sctp.get("fast_recoveries") and not sctp.get("outage_retransmits"):
        return []
    return [
        f"    sctp: round trip {sctp.get('srtt_ms')} ms (lowest {sctp.get('min_rtt_ms')} ms), "
        f"window {sctp.get('cwnd_bytes', 0) // 1024} KiB, {sctp.get('fast_recoveries', 0)} fast "
        f"recoveries ({sctp.get('spurious_retransmits', 0)} chunks sent again needlessly), "
        f"{sctp.get('outage_retransmits', 0)} outage(s) ended by probes "
        f"({sctp.get('stall_probes', 0)} probes sent), "
        f"reordering window {sctp.get('reorder_window_ms')} ms"
    ]


def _udp_lines(connection: dict[str, Any]) -> list[str]:
    """Datagrams of the link the kernel dropped, once it dropped any (each is a loss that
    halves the other side's SCTP window: see net.core.rmem_max in docs/gateway.md)."""
    if not connection.get("udp_drops"):
        return []
    return [
        f"    udp: the kernel dropped {connection['udp_drops']} datagram(s) of this link, its "
        "receive buffer full (gateway busy; sysctl net.core.rmem_max caps the buffer)"
    ]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    # A route named in code may hold a newline or a tab: it would break rows and columns.
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


_ROUTE_COLUMNS = (
    "ACTOR",
    "ROUTE",
    "CALLS",
    "TELLS",
    "ERRORS",
    "EXPIRED",
    "HANDLED_P50_MS",
    "P99",
    "MAX",
    "QUEUED_P99_MS",
)


def _route_rows(actors: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per actor and route, the instances' counters and histograms summed."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for actor in actors:
        for route, stats in ((actor.get("stats") or {}).get("routes") or {}).items():
            row = merged.setdefault(
                (actor["name"], route),
                {
                    "calls": 0,
                    "tells": 0,
                    "errors": 0,
                    "expired": 0,
                    "handled": None,
                    "queued": None,
                },
            )
            for key in ("calls", "tells", "expired"):
                row[key] += stats.get(key, 0)
            row["errors"] += sum((stats.get("errors") or {}).values())
            for key in ("handled", "queued"):
                if f"{key}_ns" not in stats:
                    continue  # [node] route_timings = false
                hist = Histogram.from_dict(stats[f"{key}_ns"])
                if row[key] is None:
                    row[key] = hist
                else:
                    row[key].merge(hist)
    out: list[tuple[str, ...]] = [_ROUTE_COLUMNS]
    for (name, route), row in sorted(merged.items()):
        handled = row["handled"] or Histogram()  # untimed: "-"
        queued = row["queued"] or Histogram()
        p50, p99 = handled.values_at_percentiles((50, 99))
        out.append(
            (
                name,
                route,
                str(row["calls"]),
                str(row["tells"]),
                str(row["errors"]),
                str(row["expired"]),
                format_ms(p50 / 1e6),
                format_ms(p99 / 1e6),
                format_ms(handled.max / 1e6 if handled.count else None),
                format_ms(queued.value_at_percentile(99) / 1e6),
            )
        )
    return out


def _ice_text(stats: dict[str, Any]) -> str:
    addresses = stats.get("ice_host_addresses")
    return f", ICE host {', '.join(addresses)}" if addresses else ""


def _media_lines(media: dict[str, int]) -> list[str]:
    """A line for the media tracks, once a sample went either way."""
    if not media.get("samples_sent") and not media.get("samples_received"):
        return []
    return [
        f"    media tracks          out {media.get('samples_sent', 0)} samples, "
        f"in {media.get('samples_received', 0)}, dropped {media.get('dropped_sender', 0)}, "
        f"no free track {media.get('no_track', 0)}, unmatched {media.get('unmatched', 0)}"
    ]


def _lane_lines(lanes: dict[str, dict[str, int]]) -> list[str]:
    """One line per lane that carried something: messages and bytes each way, drops."""
    out = []
    for lane, c in sorted(lanes.items()):
        if not any(c.values()):
            continue
        sent = f"{c.get('frames_out', 0)} msgs {format_bytes(c.get('bytes_out', 0))}"
        got = f"{c.get('frames_in', 0)} msgs {format_bytes(c.get('bytes_in', 0))}"
        out.append(f"    {lane:<21} out {sent}, in {got}, dropped {c.get('dropped', 0)}")
    return out
