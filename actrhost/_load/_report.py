"""Results of ``actrhost load``: the JSON document (docs/load.md) and the stdout table.

:func:`build_result` merges the generators' results and the node's counters into one
JSON-safe dict; :func:`format_report` renders it. Everything printed is read from that
dict, so the table and ``--json`` can never disagree.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
from typing import Any

from .._histogram import Histogram
from ._spec import CALL, STREAM, LoadSpec
from ._units import format_bytes, format_count, format_duration, format_ms, format_rate

SCHEMA_VERSION = 1
#: Percentiles of every latency summary, and their JSON keys.
SUMMARY_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
#: Timeline points kept at most (longer runs are coarsened by merging neighbours).
MAX_TIMELINE_POINTS = 300
#: Status fields that are levels, not counters: shown as they are after the run.
GAUGES = frozenset(
    {"mailbox_depth", "mailbox_peak", "running_handlers", "pending_calls", "stream_backlog"}
)
#: A link's counters per lane, and the sending gateway's, for a target on another node.
LANE_COUNTERS = ("frames_out", "bytes_out", "frames_in", "bytes_in", "dropped")
LINK_GATEWAY_COUNTERS = ("calls_out", "failed_calls", "undeliverable", "dropped_media")
#: The node counters shown in the table, per mode.
NODE_COLUMNS = {
    "call": ("calls_served", "errors", "expired_skipped", "unknown_routes", "denied", "calls_sent"),
    "tell": ("tells_served", "errors", "unknown_routes", "denied", "tells_sent"),
    "stream": (
        "streams_in.chunks_received",
        "streams_in.bytes_via_shm",
        "streams_in.bytes_inline",
        "streams_in.dropped_receiver",
        "streams_in.unregistered",
        "streams_in.callback_errors",
    ),
}


def summary_ms(hist: Histogram) -> dict[str, Any]:
    """``count``, ``min``, ``mean``, percentiles and ``max`` in ms (None when empty)."""
    if hist.count == 0:
        return {
            "count": 0,
            "min": None,
            "mean": None,
            **{k: None for k, _ in SUMMARY_PERCENTILES},
            "max": None,
        }
    values = hist.values_at_percentiles([p for _, p in SUMMARY_PERCENTILES])
    return {
        "count": hist.count,
        "min": hist.min / 1e6,
        "mean": hist.mean / 1e6,
        **{key: value / 1e6 for (key, _), value in zip(SUMMARY_PERCENTILES, values, strict=True)},
        "max": hist.max / 1e6,
    }


#: An open loop whose requests left this late (send lag p99) was the generators' own
#: limit, not the node's: the report says so.
BEHIND_SCHEDULE_S = 0.1


def _behind_schedule(result: dict[str, Any]) -> str:
    """A warning when the generators could not send at the rate asked: the "sent rate"
    row shows the rate asked for (what was due), and latencies include the wait (QA:
    50,000/s reported, ≈ 15,000/s reached, without a word)."""
    lag = result["send_lag_ms"]
    if (
        result["load"]["loop"] != "open"
        or lag["p99"] is None
        or lag["p99"] < 1e3 * BEHIND_SCHEDULE_S
    ):
        return ""
    sending_s = result["throughput"]["measured_s"] + lag["max"] / 1e3
    reached = result["counts"]["sent"] / sending_s if sending_s > 0 else 0.0
    return (
        f"  WARNING: the generators fell behind the schedule (send lag p99 "
        f"{format_duration(lag['p99'] / 1e3)}): they sent ≈ {format_rate(reached)}/s, and "
        "latencies include the wait; add --workers or lower --rate"
    )


def _flatten(stats: dict[str, Any], prefix: str = "") -> dict[str, int]:
    flat: dict[str, int] = {}
    for key, value in stats.items():
        if key == "routes" and not prefix:
            continue  # per-route counts and histograms: server_view
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def node_view(
    before: dict[str, Any], after: dict[str, Any] | None, targets: list[str]
) -> dict[str, Any]:
    """Per instance: counters after minus before (gauges as after), state and restarts."""
    after_by_id = {a["id"]: a for a in (after or {}).get("actors", [])}
    instances = []
    for old in before.get("actors", []):
        new = after_by_id.get(old["id"])
        old_stats = _flatten(old.get("stats") or {})
        new_stats = _flatten((new or {}).get("stats") or {})
        # A restarted worker starts its counters from zero: its "after" is the delta.
        restarted = new is not None and (
            new.get("restarts", 0) != old.get("restarts", 0) or new.get("pid") != old.get("pid")
        )
        delta = {
            key: value if restarted or key in GAUGES else value - old_stats.get(key, 0)
            for key, value in new_stats.items()
        }
        instances.append(
            {
                "name": old["name"],
                "index": old.get("index", 0),
                "id": old["id"],
                "target": old["id"] in targets,
                "state_before": old.get("state"),
                "state_after": new.get("state") if new else None,
                "restarts": (new or old).get("restarts", 0) - old.get("restarts", 0),
                "restarted": restarted,
                "delta": delta,
            }
        )
    return {"sampled_after": after is not None, "instances": instances}


def server_view(
    before: dict[str, Any], after: dict[str, Any] | None, targets: list[str], route_key: str
) -> dict[str, Any] | None:
    """What the target instances' workers measured for ``route_key`` between the two
    samples (warm-up included): time in the mailbox and in the handler, in ms. None when
    there is nothing to show (no sample after, a stream, ``route_timings = false``)."""
    if after is None or not route_key:
        return None
    old_by_id = {a["id"]: a for a in before.get("actors", [])}
    queued: list[Histogram] = []
    handled: list[Histogram] = []
    for new in after.get("actors", []):
        if new["id"] not in targets:
            continue
        old = old_by_id.get(new["id"]) or {}
        restarted = new.get("pid") != old.get("pid") or new.get("restarts") != old.get("restarts")
        new_route = ((new.get("stats") or {}).get("routes") or {}).get(route_key) or {}
        old_route = ((old.get("stats") or {}).get("routes") or {}).get(route_key) or {}
        for key, out in (("queued_ns", queued), ("handled_ns", handled)):
            if key not in new_route:
                continue
            hist = Histogram.from_dict(new_route[key])
            if key in old_route and not restarted:
                hist = hist.since(Histogram.from_dict(old_route[key]))
            out.append(hist)
    if not handled:
        return None
    return {
        "route_key": route_key,
        "queued_ms": summary_ms(Histogram.merged(queued)),
        "handled_ms": summary_ms(Histogram.merged(handled)),
    }


def link_view(
    before: dict[str, Any], after: dict[str, Any] | None, targets: list[str]
) -> dict[str, Any] | None:
    """For a target on another node: this node's gateway link to that node, counters
    after minus before (as they were after a restart of the gateway). None when the
    gateway reports no link to a node with the target after the run."""
    new_gw, old_gw = _gateway_stats(after), _gateway_stats(before)
    found = [
        (node_id, entry)
        for node_id, entry in (new_gw.get("remote_nodes") or {}).items()
        if any(t in entry.get("actors", ()) for t in targets)
    ]
    if not found:
        return None
    node_id, new = found[0]
    restarted = _gateway_pid(after) != _gateway_pid(before)
    if restarted:
        old_gw = {}
    old = (old_gw.get("remote_nodes") or {}).get(node_id) or {}
    # The gateway forgot the node during the run (it stopped, or its gateway restarted)
    # and found it again: a new entry, counting from zero.
    made_anew = bool(old) and old.get("since") != new.get("since")
    if made_anew:
        old = {}
    lanes = {}
    for lane, counters in (new.get("lanes") or {}).items():
        prior = (old.get("lanes") or {}).get(lane) or {}
        lanes[lane] = {k: counters.get(k, 0) - prior.get(k, 0) for k in LANE_COUNTERS}
    return {
        "node_id": node_id,
        "name": new.get("name", ""),
        "state": new.get("state", ""),
        "candidate_type": new.get("candidate_type", ""),
        "failures": new.get("failures", 0) - old.get("failures", 0),
        "links_lost": new.get("links_lost", 0) - old.get("links_lost", 0),
        "gateway_restarted": restarted,
        "link_made_anew": made_anew,
        "lanes": lanes,
        "gateway": {k: new_gw.get(k, 0) - old_gw.get(k, 0) for k in LINK_GATEWAY_COUNTERS},
    }


def _gateway_stats(status: dict[str, Any] | None) -> dict[str, Any]:
    stats = ((status or {}).get("gateway") or {}).get("stats")
    return stats if isinstance(stats, dict) else {}


def _gateway_pid(status: dict[str, Any] | None) -> Any:
    return ((status or {}).get("gateway") or {}).get("pid")


def _timeline(results: list[dict[str, Any]], interval_s: float) -> dict[str, Any]:
    points: dict[int, list[Any]] = {}
    for result in results:
        for index, ok, errors, hist in result["timeline"]:
            point = points.setdefault(index, [0, 0, Histogram()])
            point[0] += ok
            point[1] += errors
            point[2].merge(Histogram.from_dict(hist))
    if not points:
        return {"interval_s": interval_s, "points": []}
    # Runs of unknown length (--total, closed loop) start at 0.1 s: coarsen to fit.
    factor = max(1, math.ceil((max(points) + 1) / MAX_TIMELINE_POINTS))
    if factor > 1:
        merged: dict[int, list[Any]] = {}
        for index, (ok, errors, hist) in points.items():
            point = merged.setdefault(index // factor, [0, 0, Histogram()])
            point[0] += ok
            point[1] += errors
            point[2].merge(hist)
        points, interval_s = merged, interval_s * factor
    rows = []
    for index in range(max(points) + 1):
        ok, errors, hist = points.get(index, (0, 0, Histogram()))
        p50, p99 = hist.values_at_percentiles([50, 99])
        rows.append(
            {
                "t_s": round(
                    (index + 1) * interval_s, 6
                ),  # end of the interval, from measure start
                "ok": ok,
                "errors": errors,
                "ok_per_s": ok / interval_s,
                "p50_ms": None if hist.count == 0 else p50 / 1e6,
                "p99_ms": None if hist.count == 0 else p99 / 1e6,
                "max_ms": None if hist.count == 0 else hist.max / 1e6,
            }
        )
    return {"interval_s": interval_s, "points": rows}


def build_result(
    spec: LoadSpec,
    *,
    results: list[dict[str, Any]],
    interval_s: float,
    node_name: str,
    target_ids: list[str],
    before: dict[str, Any],
    after: dict[str, Any] | None,
    started_at: datetime.datetime,
    interrupted: bool,
    target_remote: bool = False,
    settled: bool = True,
) -> dict[str, Any]:
    """The JSON document of one run (schema: docs/load.schema.json)."""
    from .. import __version__

    def merged(key: str) -> Histogram:
        return Histogram.merged(Histogram.from_dict(r[key]) for r in results)

    latency = merged("latency")
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}
    for result in results:
        for code, n in result["errors"].items():
            errors[code] = errors.get(code, 0) + n
        for code, text in result["error_examples"].items():
            examples.setdefault(code, text)
    sent = sum(r["sent"] for r in results)
    ok = sum(r["ok"] for r in results)
    starts = [r["measure_start"] for r in results if r["sent"]]
    ends = [r["last_done"] for r in results if r["last_done"]]
    measured_s = max(ends) - min(starts) if starts and ends else 0.0
    ended_early = interrupted or any(r.get("node_gone") for r in results)
    if spec.duration_s is not None and not ended_early:
        # A fixed window: throughput counts what completed inside it (as wrk2 does), so
        # one slow straggler after the end cannot stretch the window and lower the rate.
        measured_s = spec.duration_s

    def per_s(n: float) -> float:
        return n / measured_s if measured_s > 0 else 0.0

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "actrhost load",
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": list(spec.command),
        "interrupted": interrupted,
        "environment": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "actrhost": __version__,
            "argv0": os.path.basename(sys.argv[0]) if sys.argv else "",
        },
        "target": {
            "config": spec.config,
            "node": node_name,
            "target": spec.target,
            "route_key": spec.route_key or None,
            "mode": spec.mode,
            "instances": target_ids,
            "remote": target_remote,
        },
        "load": {
            "loop": "open" if spec.open_loop else "closed",
            "concurrency": spec.concurrency,
            "rate_per_s": spec.rate_per_s,
            "workers": len(results),
            "duration_s": spec.duration_s,
            "total": spec.total,
            "warmup_s": spec.warmup_s,
            "timeout_s": spec.timeout_s,
            "payload_bytes": len(spec.payload),
            "payload": spec.payload_desc,
            "stream_id": spec.stream_id if spec.mode == STREAM else None,
            "lane": spec.lane if spec.mode == STREAM else None,
        },
        "counts": {
            "sent": sent,
            "ok": ok,
            "errors": sum(errors.values()),
            "errors_by_code": dict(sorted(errors.items())),
            "error_examples": dict(sorted(examples.items())),
            "warmup_sent": sum(r["warmup_sent"] for r in results),
            "warmup_errors": sum(r["warmup_errors"] for r in results),
        },
        "throughput": {
            "measured_s": measured_s,
            "sent_per_s": per_s(sent),
            "ok_per_s": per_s(sum(r["ok_in_window"] for r in results)),
            "bytes_per_s": per_s(sum(r["bytes_ok"] for r in results)),
        },
        "latency_ms": summary_ms(latency),
        "service_time_ms": summary_ms(merged("service")),
        "send_lag_ms": summary_ms(merged("lag")),
        "error_latency_ms": summary_ms(merged("error_latency")),
        "percentile_curve": [[p, v / 1e6] for p, v in latency.percentile_curve()],
        "timeline": _timeline(results, interval_s),
        "histogram": {"unit": "ns", **latency.to_dict()},
        "generator": {
            "workers": [
                {
                    "index": r["index"],
                    "sent": r["sent"],
                    "ok": r["ok"],
                    "errors": sum(r["errors"].values()),
                    "cpu_utilization": r["cpu_s"] / r["wall_s"] if r["wall_s"] > 0 else 0.0,
                }
                for r in results
            ],
        },
        "node": {**node_view(before, after, target_ids), "settled": settled},
        "server": (
            None
            if target_remote or spec.mode == STREAM
            else server_view(before, after, target_ids, spec.route_key)
        ),
        "link": link_view(before, after, target_ids) if target_remote else None,
    }


# -- the table ---------------------------------------------------------------------------


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _latency_row(name: str, summary: dict[str, Any]) -> list[str]:
    keys = ["min", "p50", "p90", "p99", "p99_9", "max", "mean"]
    return [name, *(format_ms(summary[k]) for k in keys), format_count(summary["count"])]


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report printed on stdout."""
    target, load, counts = result["target"], result["load"], result["counts"]
    through = result["throughput"]
    mode = target["mode"]
    what = (
        f"{mode} {target['route_key']}" if target["route_key"] else f"stream {load['stream_id']!r}"
    )
    n = len(target["instances"])
    where = (
        f"on another node, through node {target['node']}'s gateway"
        if target.get("remote")
        else f"on node {target['node']}"
    )
    lines = [
        f"actrhost load: {what} -> {target['target']} ({n} instance{'s' if n != 1 else ''}) "
        + where,
    ]
    if load["loop"] == "open":
        loop = f"open loop at {load['rate_per_s']:g}/s"
    else:
        loop = f"closed loop, concurrency {load['concurrency']}"
    lines.append(
        f"  {loop}, {load['workers']} generator process{'es' if load['workers'] != 1 else ''}, "
        f"payload {load['payload']}, timeout {format_duration(load['timeout_s'])}"
    )
    warmup = f"{format_duration(load['warmup_s'])} warm-up"
    not_counted = f"{format_count(counts['warmup_sent'])} requests not counted"
    lines.append(
        f"  measured {format_duration(through['measured_s'])} after {warmup} ({not_counted})"
        + ("  [INTERRUPTED]" if result["interrupted"] else "")
    )
    if counts["errors"] and not counts["ok"]:
        # Still exit 0 (errors are results), but a typo in the route must not look fine.
        lines.append("  WARNING: every request failed: see errors by code below")
    elif not counts["errors"] and not counts["ok"]:
        lines.append("  WARNING: no request completed in the measured window")
    behind = _behind_schedule(result)
    if behind:
        lines.append(behind)

    node = result["node"]
    targets = [i for i in node["instances"] if i["target"]]
    unregistered = sum(i["delta"].get("streams_in.unregistered", 0) for i in targets)
    if mode == STREAM and node["sampled_after"] and unregistered:
        # Sent is all a stream's client knows: "ok" alone looked like success (QA).
        lines.append(
            f"  WARNING: the target dropped {format_count(unregistered)} chunks: no callback "
            "registered for the stream (register_stream, or --stream-id)"
        )
    elif mode == STREAM and target.get("remote"):
        # Its node's counters are out of reach here: say where to look, as "ok" only
        # means the chunk left (QA: a stream nobody registered looked fine).
        lines.append(
            "  NOTE: ok means sent; what the target took (or dropped: no callback registered "
            f"for {load['stream_id']!r}) shows in `actrhost status` on its node"
        )
    if node["sampled_after"] and not node.get("settled", True):
        # It made no progress for a while, or took too long (module _main, "settle").
        lines.append(
            "  NOTE: still working through what was sent when sampled: the counts below "
            "may be short of the client's"
        )
    served_key = {"call": "calls_served", "tell": "tells_served"}.get(
        mode, "streams_in.chunks_received"
    )

    def node_sum(key: str) -> str:
        if not node["sampled_after"] or not targets:
            return "-"
        return format_count(sum(i["delta"].get(key, 0) for i in targets))

    rows = [
        ["", "client", f"node ({n} target instance{'s' if n != 1 else ''}, after - before)"],
        [
            "ok with warm-up",
            format_count(counts["ok"] + counts["warmup_sent"] - counts["warmup_errors"]),
            f"{node_sum(served_key)} {served_key}",
        ],
        ["sent", format_count(counts["sent"]), ""],
        ["ok", format_count(counts["ok"]), ""],
        [
            "errors",
            format_count(counts["errors"]),
            f"{node_sum('errors')} errors"
            if mode != STREAM
            else f"{node_sum('streams_in.dropped_receiver')} dropped, "
            f"{node_sum('streams_in.unregistered')} unregistered",
        ],
        # Both rates are the client's: under the node's heading the sent rate read as the
        # node's, and a target on another node lost it with that column (QA).
        ["throughput", f"{format_rate(through['ok_per_s'])}/s", ""],
        ["sent rate", f"{format_rate(through['sent_per_s'])}/s", ""],
    ]
    if mode == STREAM or through["bytes_per_s"] >= 1024**2:
        rows.append(["bytes", f"{format_bytes(through['bytes_per_s'])}/s", ""])
    if target.get("remote"):
        # The target's counters are on the other node: its own `actrhost status` has them.
        rows = [row[:2] for row in rows]
    lines += ["", *_table(rows)]
    restarted = [f"{i['name']}#{i['index']}" for i in targets if i.get("restarted")]
    if restarted and node["sampled_after"] and not target.get("remote"):
        # A new process counts from zero: what its predecessor served is not in "after".
        lines.append(
            f"  restarted during the run: {', '.join(restarted)} (the node's counts for "
            "them start at the restart: below the client's)"
        )

    header = ["latency (ms)", "min", "p50", "p90", "p99", "p99.9", "max", "mean", "count"]
    if load["loop"] == "open":
        rows = [
            header,
            _latency_row("from schedule", result["latency_ms"]),
            _latency_row("service time", result["service_time_ms"]),
            _latency_row("send lag", result["send_lag_ms"]),
        ]
    else:
        rows = [header, _latency_row("ok requests", result["latency_ms"])]
    if counts["errors"]:
        rows.append(_latency_row("errors", result["error_latency_ms"]))
    server = result.get("server")
    if server:
        rows.append(_latency_row("node: queued", server["queued_ms"]))
        rows.append(_latency_row("node: handled", server["handled_ms"]))
    lines += ["", *_table(rows)]
    if load["loop"] == "open":
        lines.append(
            "  (from schedule: counted from each request's due time, so a stall shows; "
            "send lag: the generator's own delay)"
        )
    if server:
        lines.append(
            "  (node: what the target's workers measured, warm-up included: waiting in the "
            "mailbox, then in the handler)"
        )

    if counts["errors_by_code"]:
        lines += ["", "  errors by code"]
        rows = [
            [f"    {code}", format_count(num), counts["error_examples"].get(code, "")[:160]]
            for code, num in counts["errors_by_code"].items()
        ]
        lines += _table(rows, indent="")

    if target.get("remote"):
        lines += ["", *_link_table(result["link"], target["node"])]
    else:
        lines += ["", *_node_table(node, mode)]
    workers = result["generator"]["workers"]
    busy = max((w["cpu_utilization"] for w in workers), default=0.0)
    lines.append(
        f"  generator: {len(workers)} process{'es' if len(workers) != 1 else ''}, "
        f"busiest at {busy:.0%} CPU"
        + ("  (near saturation: add --workers or cores)" if busy > 0.9 else "")
    )
    return "\n".join(lines)


def _link_table(link: dict[str, Any] | None, node: str) -> list[str]:
    if link is None:
        return [f"  link: node {node}'s gateway reported no link to the target's node"]
    name = f"{link['name']} ({link['node_id']})" if link["name"] else link["node_id"]
    restarted = ", gateway restarted during the run" if link["gateway_restarted"] else ""
    if link.get("link_made_anew"):
        restarted = ", the node was forgotten and found again during the run (counts since)"
    lines = [
        f"  link to node {name} through node {node}'s gateway: {link['state']}, "
        f"candidate {link['candidate_type'] or '-'}, links lost {link.get('links_lost', 0)}, "
        f"failures {link['failures']}{restarted}"
    ]
    rows = [
        ["  lane (after - before)", "frames out", "bytes out", "frames in", "bytes in", "dropped"]
    ]
    for lane, d in link["lanes"].items():
        if any(d.values()):
            rows.append(
                [
                    f"  {lane}",
                    format_count(d["frames_out"]),
                    format_bytes(d["bytes_out"]),
                    format_count(d["frames_in"]),
                    format_bytes(d["bytes_in"]),
                    format_count(d["dropped"]),
                ]
            )
    if len(rows) > 1:
        lines += _table(rows)
    gateway = ", ".join(f"{k} {format_count(v)}" for k, v in link["gateway"].items())
    lines.append(f"  gateway, to all nodes: {gateway}")
    return lines


def _node_table(node: dict[str, Any], mode: str) -> list[str]:
    if not node["sampled_after"]:
        return ["  node counters: not sampled after the run (the node did not answer)"]
    columns = NODE_COLUMNS.get(mode, NODE_COLUMNS[CALL])
    if mode != STREAM:
        columns = (*columns, "mailbox_peak")
    rows = [
        [
            "node counters (after - before)",
            "state",
            "restarts",
            *(c.split(".")[-1] for c in columns),
        ]
    ]
    for inst in node["instances"]:
        label = f"{inst['name']}#{inst['index']}" + (" *" if inst["target"] else "")
        rows.append(
            [
                label,
                str(inst["state_after"] or "gone"),
                str(inst["restarts"]),
                *(format_count(inst["delta"][c]) if c in inst["delta"] else "-" for c in columns),
            ]
        )
    note = "  (* target" + ("; mailbox_peak is the level after the run)" if mode != STREAM else ")")
    return [*_table(rows), note]
