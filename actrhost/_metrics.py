"""The node's Prometheus endpoint: ``[node] metrics_listen`` serves ``GET /metrics``.

The supervisor serves it, off the data path: each scrape asks every worker and the
gateway for their counters, exactly as ``actrhost status`` does (concurrent scrapes share
one round of questions), and renders the answer in Prometheus' text exposition format
0.0.4. What is exported, with the labels ``node``, ``actor``, ``index``, ``actr_id`` and
``type`` on everything per actor (``index``, not ``instance``: Prometheus gives
``instance`` to the scraped target):

- per actor: ``actrhost_actor_up``, restarts, mailbox and handler gauges, the worker's
  counters (``actrhost_calls_served_total``...), stream counters by ``side``;
- per route of an actor (label ``route``): calls, tells, expired requests, errors by wire
  ``code``, and two histograms in seconds, ``actrhost_route_queued_seconds`` (mailbox
  wait) and ``actrhost_route_handled_seconds`` (handler, with decoding and encoding);
- the gateway, when the node has one: its counters, and per remote node (label
  ``remote_node``) whether it is connected and the traffic per ``lane``.

Beside it, for orchestrators (a Kubernetes probe, a load balancer's health check), two
answers from the supervisor's own state, without asking any worker (:func:`health`):

- ``GET /healthz``: 200 unless the supervisor gave up on an instance (``failed``: only a
  restart brings it back), 503 naming them;
- ``GET /readyz``: 200 when every actor has an instance running (or all of its instances
  finished cleanly) and the gateway, if the node has one, runs; 503 naming what does not,
  and from the moment the node begins to stop.

The HTTP side is deliberately tiny (one request per connection, a bounded request head,
a timeout, at most ``MAX_CONNECTIONS`` at once): it is meant for a Prometheus server or
``curl``, on loopback or a trusted network, not as a web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._config import parse_listen
from ._histogram import Histogram

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the exported histogram buckets: 50 µs (a local call's
#: handling) to 10 s; the exact distribution is in ``actrhost status --json``.
BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BUCKETS_NS = [round(b * 1e9) for b in BUCKETS_S]

#: How long a client may take to send its request head, and how big the head may be.
REQUEST_TIMEOUT_S = 5.0
REQUEST_HEAD_LIMIT = 8192
#: Connections open at once; more are closed at once (a scraper needs one or two), so
#: clients that connect and say nothing cannot use up the supervisor's file descriptors.
MAX_CONNECTIONS = 32

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Worker counters that are levels, not totals (everything else numeric is a counter).
_WORKER_GAUGES = {
    "mailbox_depth": "Messages waiting in the mailbox.",
    "mailbox_peak": "Deepest the mailbox has been since the worker started.",
    "running_handlers": "Handlers running now.",
    "pending_calls": "Calls this actor made that await their response.",
    "stream_backlog": "Stream chunks received and not yet handed to their callback.",
}
# Help texts of the worker's counters; a counter added later is exported with a generic one.
_WORKER_COUNTERS = {
    "calls_served": "Requests answered with a result.",
    "tells_served": "Tells handled.",
    "errors": "Requests and tells whose handler failed.",
    "expired_skipped": "Requests skipped because their deadline passed in the mailbox.",
    "denied": "Messages refused by the actor's ACL.",
    "unknown_routes": "Messages for a route the actor does not serve.",
    "malformed_frames": "Frames that could not be decoded, dropped.",
    "late_responses": "Responses that arrived after their call had ended, dropped.",
    "undeliverable_replies": "Replies whose caller was gone.",
    "calls_sent": "Calls this actor made.",
    "tells_sent": "Tells this actor sent.",
    "chunks_duplicates_dropped": (
        "Reliable chunks from other nodes sent again after a gateway died that had been read."
    ),
    "chunks_in_doubt_dropped": (
        "Reliable chunks from other nodes sent again after a gateway died that may have been "
        "read (a restarted worker): dropped, maybe lost."
    ),
    "tells_duplicates_dropped": (
        "Tells from other nodes sent again after a gateway died that had been read, dropped."
    ),
    "tells_in_doubt_dropped": (
        "Tells from other nodes sent again after a gateway died that may have been read "
        "(a restarted worker): dropped, maybe lost."
    ),
    "tells_sent_again": "Tells to other nodes sent again, in doubt, after the gateway died.",
    "tells_not_sent_again": (
        "Tells to other nodes that could not go again after the gateway died (lost)."
    ),
    "loop_blocks": "Times the event loop was blocked for blocked_loop_warning_s or longer.",
    "loop_blocked_seconds": "Seconds the event loop spent in those blocks.",
}
_GATEWAY_GAUGES = {
    "registered": "Actors of this node registered with signaling.",
    "pending_out": "Calls to other nodes awaiting their response.",
    "pending_in": "Calls from other nodes awaiting the local actor's response.",
    "streams_held": "Stream frames held for remote nodes whose link is full.",
    "calls_held": "Calls and tells held for remote nodes whose link is full.",
    "frames_waiting_for_actors": "Frames from other nodes waiting for slow local actors.",
    "bytes_waiting_for_actors": "Bytes of frames from other nodes waiting for slow local actors.",
}


class _Family:
    """One metric family: its ``# HELP``/``# TYPE`` header and its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, value: float, labels: dict[str, str], suffix: str = "") -> None:
        self.samples.append((suffix, labels, value))


class _Exposition:
    """Families in the order they were first used, rendered as one text page."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def family(self, name: str, kind: str, help_text: str) -> _Family:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = _Family(name, kind, help_text)
        return found

    def gauge(self, name: str, help_text: str, value: float, labels: dict[str, str]) -> None:
        self.family(name, "gauge", help_text).add(value, labels)

    def counter(self, name: str, help_text: str, value: float, labels: dict[str, str]) -> None:
        # Text format 0.0.4 names a counter's family as its samples, "_total" included
        # (OpenMetrics would not).
        self.family(f"{name}_total", "counter", help_text).add(value, labels)

    def histogram(self, name: str, help_text: str, hist: Histogram, labels: dict[str, str]) -> None:
        family = self.family(name, "histogram", help_text)
        for bound, count in zip(BUCKETS_S, hist.counts_at_or_below(_BUCKETS_NS), strict=True):
            family.add(count, {**labels, "le": _number(bound)}, "_bucket")
        family.add(hist.count, {**labels, "le": "+Inf"}, "_bucket")
        family.add(hist.total / 1e9, labels, "_sum")
        family.add(hist.count, labels, "_count")

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for suffix, labels, value in family.samples:
                lines.append(f"{family.name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def render_metrics(status: dict[str, Any]) -> str:
    """The Prometheus text page for a node status (the dict ``actrhost status --json``
    prints)."""
    out = _Exposition()
    node = {"node": str(status.get("node", ""))}
    out.counter(
        "actrhost_shm_segments_reclaimed",
        "Shared-memory segments of dead processes (and, at start, of a crashed run) removed.",
        status.get("segments_reclaimed", 0),
        node,
    )
    out.counter(
        "actrhost_control_malformed",
        "Messages on the node's control socket that did not decode (dropped).",
        status.get("malformed_control", 0),
        node,
    )
    for actor in status.get("actors", []):
        _actor_metrics(out, node, actor)
    if status.get("gateway"):
        _gateway_metrics(out, node, status["gateway"])
    return out.render()


def _actor_metrics(out: _Exposition, node: dict[str, str], actor: dict[str, Any]) -> None:
    labels = {
        **node,
        "actor": str(actor.get("name", "")),
        "index": str(actor.get("index", 0)),
        "actr_id": str(actor.get("id", "")),
        "type": str(actor.get("id", "")).partition(":")[2],
    }
    _process_metrics(out, "actrhost_actor", "actor instance", actor, labels)
    stats = actor.get("stats") or {}
    if stats:
        out.gauge(
            "actrhost_stats_age_seconds",
            "How old the worker's counters are: 0 when it answered this scrape, else the "
            "age of its last answer (a blocked loop or a stopped process).",
            actor.get("stats_age_s", 0),
            labels,
        )
    for key, value in stats.items():
        if key in _WORKER_GAUGES:
            out.gauge(f"actrhost_{key}", _WORKER_GAUGES[key], value, labels)
        elif _is_number(value):
            help_text = _WORKER_COUNTERS.get(key, f"Worker counter {key}.")
            out.counter(f"actrhost_{key}", help_text, value, labels)
    for side, key in (("receiver", "streams_in"), ("sender", "streams_out")):
        for name, value in (stats.get(key) or {}).items():
            out.counter(
                f"actrhost_stream_{name}",
                f"Stream chunks and media samples: {name}, by side (sender, receiver).",
                value,
                {**labels, "side": side},
            )
    for route, route_stats in sorted((stats.get("routes") or {}).items()):
        _route_metrics(out, {**labels, "route": route}, route_stats)


def _route_metrics(out: _Exposition, labels: dict[str, str], stats: dict[str, Any]) -> None:
    out.counter(
        "actrhost_route_calls",
        "Requests answered with a result.",
        stats.get("calls", 0),
        labels,
    )
    out.counter("actrhost_route_tells", "Tells handled.", stats.get("tells", 0), labels)
    out.counter(
        "actrhost_route_expired",
        "Requests skipped because their deadline passed in the mailbox.",
        stats.get("expired", 0),
        labels,
    )
    for code, count in sorted((stats.get("errors") or {}).items()):
        out.counter(
            "actrhost_route_errors",
            "Requests and tells that failed, by wire code.",
            count,
            {**labels, "code": str(code)},
        )
    for key, name, help_text in (
        ("queued_ns", "actrhost_route_queued_seconds", "Time in the mailbox before handling."),
        (
            "handled_ns",
            "actrhost_route_handled_seconds",
            "Time from the handler's start to the reply sent.",
        ),
    ):
        try:
            hist = Histogram.from_dict(stats[key])
        except (KeyError, TypeError, ValueError):
            continue  # an older worker, or a damaged report: export the rest
        out.histogram(name, help_text, hist, labels)


def _process_metrics(
    out: _Exposition, prefix: str, what: str, process: dict[str, Any], labels: dict[str, str]
) -> None:
    """``<prefix>_up`` and ``<prefix>_restarts_total`` of a process the supervisor runs."""
    out.gauge(
        f"{prefix}_up",
        f"1 while the {what} is running, else 0.",
        process.get("state") == "running",
        labels,
    )
    out.counter(
        f"{prefix}_restarts",
        f"Times the supervisor restarted the {what}.",
        process.get("restarts", 0),
        labels,
    )


def _gateway_metrics(out: _Exposition, node: dict[str, str], gateway: dict[str, Any]) -> None:
    _process_metrics(out, "actrhost_gateway", "gateway", gateway, node)
    stats = gateway.get("stats") or {}
    out.gauge(
        "actrhost_gateway_signaling_connected",
        "1 while the gateway is connected to signaling.",
        stats.get("signaling") == "connected",
        node,
    )
    for key, value in stats.items():
        if key in _GATEWAY_GAUGES:
            out.gauge(f"actrhost_gateway_{key}", _GATEWAY_GAUGES[key], value, node)
        elif _is_number(value):
            out.counter(f"actrhost_gateway_{key}", f"Gateway counter {key}.", value, node)
    for node_id, remote in sorted((stats.get("remote_nodes") or {}).items()):
        labels = {**node, "remote_node": node_id, "remote_name": str(remote.get("name") or "")}
        out.gauge(
            "actrhost_remote_connected",
            "1 while the peer connection to the remote node is connected.",
            remote.get("state") == "connected",
            labels,
        )
        # Every number of its own but `since` (a time) is a counter: a list of them left
        # out those added since (links_lost, in_doubt_cleared, QA).
        for key, value in remote.items():
            if key != "since" and _is_number(value):
                out.counter(f"actrhost_remote_{key}", f"Remote node counter {key}.", value, labels)
        for lane, counters in sorted((remote.get("lanes") or {}).items()):
            for key, value in counters.items():
                out.counter(
                    f"actrhost_remote_lane_{key}",
                    f"Traffic to and from the remote node per lane: {key}.",
                    value,
                    {**labels, "lane": lane},
                )
        for key, value in sorted((remote.get("media") or {}).items()):
            if _is_number(value):
                out.counter(
                    f"actrhost_remote_media_{key}",
                    f"Media samples on the tracks to and from the remote node: {key}.",
                    value,
                    labels,
                )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


# -- the HTTP endpoint ------------------------------------------------------------------


def health(directory: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What ``/healthz`` and ``/readyz`` report from the supervisor's directory snapshot:
    the instances given up on, and what keeps the node from being ready (empty: fine)."""
    failed = []
    by_actor: dict[str, list[str]] = {}
    for actor in directory.get("actors", []):
        by_actor.setdefault(actor["name"], []).append(actor["state"])
        if actor["state"] == "failed" and actor.get("given_up"):
            # Not a start that failed and will be tried again: only what a restart of
            # the node brings back is unhealthy.
            failed.append(f"{actor['name']}#{actor['index']} failed")
    not_ready = []
    if directory.get("stopping"):
        # Going away: it said "ok" until the gateway stopped, and again once every
        # instance had stopped cleanly (QA); a load balancer must stop sending now.
        not_ready.append("node: stopping")
    for name, states in by_actor.items():
        if "running" not in states and set(states) != {"stopped"}:
            not_ready.append(f"{name}: {', '.join(sorted(set(states)))}")
    if directory.get("gateway") is not None and directory.get("gateway_pid") is None:
        not_ready.append("gateway: not running")
    return failed, not_ready


class MetricsServer:
    """Serves ``GET /metrics`` on ``listen`` with the page rendered from ``collect()``,
    and ``/healthz``, ``/readyz`` from ``directory()`` (see :func:`health`).

    Concurrent scrapes share one ``collect()``: a burst of scrapers asks the workers once.
    """

    def __init__(
        self,
        listen: str,
        collect: Callable[[], Awaitable[dict[str, Any]]],
        directory: Callable[[], dict[str, Any]],
    ) -> None:
        self.listen = listen
        self._collect = collect
        self._directory = directory
        self._server: asyncio.Server | None = None
        self._inflight: asyncio.Future[str] | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # open connections, closed on close()
        self.scrapes = 0
        self.bad_requests = 0

    async def start(self) -> None:
        """Bind and start serving; ``OSError`` if the address cannot be bound."""
        host, port = parse_listen(self.listen)
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=REQUEST_HEAD_LIMIT
        )

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` with the port actually bound."""
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()  # a silent client must not hold up the node's shutdown
            await self._server.wait_closed()

    async def _page(self) -> str:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._render())
            self._inflight.add_done_callback(self._forget)
        return await asyncio.shield(self._inflight)

    async def _render(self) -> str:
        return render_metrics(await self._collect())

    def _forget(self, _: asyncio.Future[str]) -> None:
        self._inflight = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            self.bad_requests += 1
            writer.close()
            return
        self._writers.add(writer)
        try:
            await self._serve_one(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, content_type = await self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            self.bad_requests += 1
            status, body, content_type = "400 Bad Request", "bad request\n", "text/plain"
        except ConnectionError:
            return
        payload = body.encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _respond(self, head: bytes) -> tuple[str, str, str]:
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if method != "GET":
            self.bad_requests += 1
            return "405 Method Not Allowed", "only GET\n", "text/plain"
        if path == "/metrics":
            self.scrapes += 1
            try:
                return "200 OK", await self._page(), CONTENT_TYPE
            except Exception:
                log.exception("metrics: collecting the node's counters failed")
                return "500 Internal Server Error", "collecting failed\n", "text/plain"
        if path in ("/healthz", "/readyz"):
            failed, not_ready = health(self._directory())
            problems = failed if path == "/healthz" else not_ready
            if problems:
                return "503 Service Unavailable", "".join(f"{p}\n" for p in problems), "text/plain"
            return "200 OK", "ok\n", "text/plain"
        if path == "/":
            return "200 OK", "actrhost node: GET /metrics, /healthz, /readyz\n", "text/plain"
        return "404 Not Found", "not found: try /metrics, /healthz, /readyz\n", "text/plain"
