"""What one ``actrhost load`` run does (:class:`LoadSpec`) and each generator's share of it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Modes: what one request is.
CALL = "call"
TELL = "tell"
STREAM = "stream"
MODES = (CALL, TELL, STREAM)

#: Default closed-loop concurrency and run length when neither is given.
DEFAULT_CONCURRENCY = 32
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_TIMEOUT_S = 10.0
#: Open loop: requests one generator keeps in flight at most, unless --concurrency says.
#: Latency is still measured from the scheduled time when the cap holds a request back,
#: so the cap bounds memory, never the honesty of the percentiles.
DEFAULT_OPEN_INFLIGHT_PER_WORKER = 1000


@dataclass(frozen=True)
class LoadSpec:
    """Everything a run needs, validated (see :func:`._args.spec_from_args`)."""

    config: str
    target: str
    route_key: str
    mode: str = CALL
    payload: bytes = b""
    payload_desc: str = "empty"
    concurrency: int | None = None  # closed loop: loops; open loop: in-flight cap
    rate_per_s: float | None = None  # set: open loop
    duration_s: float | None = None
    total: int | None = None
    warmup_s: float = DEFAULT_WARMUP_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    workers: int = 1
    stream_id: str = "load"
    lane: str = "STREAM_RELIABLE"
    json_path: str | None = None
    plot_path: str | None = None
    progress: str = "auto"  # auto | always | never
    command: tuple[str, ...] = field(default_factory=tuple)

    @property
    def open_loop(self) -> bool:
        """True when requests follow a schedule (``--rate``) rather than answers."""
        return self.rate_per_s is not None

    def describe(self) -> str:
        """One line: mode, loop, concurrency or rate, workers, length."""
        if self.open_loop:
            loop = f"open loop at {self.rate_per_s:g}/s"
            if self.concurrency:
                loop += f" (at most {self.concurrency} in flight)"
        else:
            loop = f"closed loop, concurrency {self.concurrency}"
        length = f"{self.total:,} requests" if self.total is not None else f"{self.duration_s:g} s"
        return f"{loop}, {self.workers} worker{'s' if self.workers != 1 else ''}, {length}"


@dataclass(frozen=True)
class WorkerPlan:
    """One generator process's share of a :class:`LoadSpec` (picklable: sent at spawn)."""

    index: int
    config: str
    target: str
    route_key: str
    mode: str
    payload: bytes
    timeout_s: float
    concurrency: int  # closed loop: loops; open loop: in-flight cap
    rate_per_s: float | None
    offset_s: float  # open loop: phase of this worker's schedule
    total: int | None
    duration_s: float | None
    warmup_s: float
    interval_s: float  # timeline bucket
    stream_id: str
    lane: str
    progress_interval_s: float = 0.25


def _share(amount: int, parts: int, index: int) -> int:
    return amount // parts + (1 if index < amount % parts else 0)


def split(spec: LoadSpec, interval_s: float) -> list[WorkerPlan]:
    """Divide concurrency, rate and total over ``spec.workers`` generators.

    Closed loop never uses more generators than loops. In open loop the generators'
    schedules are phase-shifted so together they send evenly, not in bursts of ``workers``.
    """
    workers = spec.workers
    if not spec.open_loop:
        workers = max(1, min(workers, spec.concurrency or 1))
    plans = []
    for i in range(workers):
        if spec.open_loop:
            assert spec.rate_per_s is not None
            rate = spec.rate_per_s / workers
            cap = (
                max(1, _share(spec.concurrency, workers, i))
                if spec.concurrency
                else DEFAULT_OPEN_INFLIGHT_PER_WORKER
            )
            offset = i / spec.rate_per_s
        else:
            rate = None
            cap = _share(spec.concurrency or 1, workers, i)
            offset = 0.0
        plans.append(
            WorkerPlan(
                index=i,
                config=spec.config,
                target=spec.target,
                route_key=spec.route_key,
                mode=spec.mode,
                payload=spec.payload,
                timeout_s=spec.timeout_s,
                concurrency=cap,
                rate_per_s=rate,
                offset_s=offset,
                total=_share(spec.total, workers, i) if spec.total is not None else None,
                duration_s=spec.duration_s,
                warmup_s=spec.warmup_s,
                interval_s=interval_s,
                stream_id=spec.stream_id,
                lane=spec.lane,
            )
        )
    # A worker whose share of --total is 0 would only add start-up time.
    return [p for p in plans if p.total != 0] or [replace(plans[0], total=0)]


def timeline_interval_s(spec: LoadSpec) -> float:
    """Width of one timeline point: at most ~300 points over a run of known length."""
    length = spec.duration_s
    if length is None and spec.total is not None and spec.rate_per_s:
        length = spec.total / spec.rate_per_s
    if length is None:
        return 0.1  # --total in closed loop: unknown length; the report coarsens later
    for step in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0):
        if length / step <= 300:
            return step
    return 60.0
