"""The results of one bench run, typed: what the harness fills and `bench.report` reads.

They are TypedDicts, so a run's results are plain JSON (`bench/run.py --json`, `--from-json`) and these types say
which keys each level holds.  Counts are per key: `registry` is `bench.registry.registry_summary` (POST, GET, LIST,
PUT, DELETE, GET 404, errors), `registry_raw` the emulator's own keys, `api_*` per 'verb resource[/sub]'.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

Counts = dict[str, int]
Cpu = dict[str, float]  # CPU seconds per component over a window, plus "other", "machine" and "wall"


class PhaseTime(TypedDict):
    wall_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


class SourceState(TypedDict):
    commit: str
    operator_sha256: str
    dirty: list[str]


class MachineFacts(TypedDict):
    cores: int | None
    cpu_model: str
    memory_gb: float
    kernel: str
    python: str
    kopf: str
    kubernetes: str
    etcd: str


class Window(TypedDict):
    """What happened between two marks: registry requests, the operator's API-server requests, CPU."""

    registry: Counts
    registry_raw: Counts
    api_writes: Counts
    api_reads: Counts
    api_failed: Counts
    cpu: Cpu


class Floor(TypedDict):
    create_s: float
    delete_s: float


class CreateWindow(Window):
    rss_max_mb: float
    hwm_mb: float


class UpdateResult(Window):
    apply_s: float
    converge_s: float
    n: int


class DeleteResult(Window):
    gone_s: float
    n: int


class SteadyResult(Window):
    n: int
    drift_interval: float
    cycles: int
    window_s: float
    checks_per_llm_min: int
    drift_checks: int
    drift_cpu_s: float
    rss_mb: float


class ConvergenceRun(TypedDict):
    namespace: str
    n: int
    floor: Floor
    apply_s: float
    converge_s: float
    profile: NotRequired[str]
    create: CreateWindow
    update: NotRequired[UpdateResult]  # the last run only
    steady: NotRequired[SteadyResult]  # the last run only
    delete: DeleteResult
    operator_pid: int
    operator_hwm_mb: float | None


class ConvergenceSummary(TypedDict):
    runs: list[ConvergenceRun]
    converge_s: list[float]
    floor_s: list[float]
    ratios: list[float]
    converge_median_s: float
    floor_median_s: float
    ratio_median: float


class RotationRound(Window):
    rotate_s: float
    entries_changed: int
    n: int
    puts_with_credentials_only: int


class RotationResult(TypedDict):
    n: int
    rounds: list[RotationRound]
    rotate_s: list[float]
    rotate_median_s: float
    puts: list[int]
    delete: DeleteResult


class LatencyResult(Window):
    samples_s: list[float]
    p50_s: float
    p95_s: float
    min_s: float
    max_s: float
    n: int
    delete: DeleteResult


class TimelineStep(TypedDict):
    what: str
    received_s: float | None
    done_s: float


class FairnessRun(TypedDict):
    lone_s: float
    timeline: list[TimelineStep]
    a_ready_at_b_create: int
    a_ready_at_b_ready: int
    a_converge_s: float
    a_apply_s: float | None
    registry: Counts
    cpu: Cpu
    delete: DeleteResult
    rps: NotRequired[float]  # the --registry-rps diagnostic run only
    streams: NotRequired[str]  # the --watch-streams diagnostic run only


class FairnessResult(TypedDict):
    n: int
    runs: list[FairnessRun]
    idle_s: list[float]
    loaded_s: list[float]
    diagnostic: FairnessRun | None
    single_stream: NotRequired[FairnessRun | None]
    idle_median_s: float
    loaded_median_s: float
    delay_median_s: float


class ConnectionRun(TypedDict):
    """One convergence of `namespaces` x `per_namespace` LLMs applied at once (connections phase)."""

    with_connections: bool  # each namespace through its own GoodMemConnection, else the operator's own key
    n: int
    apply_s: float
    converge_s: float
    registry: Counts
    requests_per_create: float
    owners_ok: int  # registry entries whose ownerId is the principal of their namespace's key
    owners_wrong: int
    cpu: Cpu
    delete_s: float
    delete_registry: Counts


class IsolationMode(TypedDict):
    mode: str  # "outage" (503 at once) or "timeouts" (answers slower than the connection's request timeout)
    faults: dict[str, Any]  # what team-a's registry was told (`/_emulator/faults`)
    lone_s: list[float]  # team-b's lone creates -> Ready
    median_s: float
    a_failed_at_b_create: list[int]  # team-a's LLMs seen Ready=False when team-b created
    a_reasons: dict[str, int]  # team-a's Ready reasons just before its registry came back
    a_requests: dict[str, int]  # requests team-a's registry answered while the mode lasted
    b_registry: Counts  # team-b's registry (the bench's emulator) over the mode
    a_recover_s: float  # from the faults cleared to all of team-a's LLMs Ready


class IsolationResult(TypedDict):
    a_llms: int  # team-a's LLMs applied per team-b create
    request_timeout_s: float  # team-a's connection's requestTimeoutSeconds
    idle_s: list[float]
    idle_median_s: float
    modes: list[IsolationMode]


class ConnectionMemory(TypedDict):
    n: int
    ready_s: float  # from the first connection created to all n Ready (the running operator)
    before: MemoryPoint  # a fresh operator with no connection
    after: MemoryPoint  # a fresh operator with n Ready connections (after it probed each)
    again: MemoryPoint  # a fresh operator after they were deleted (the noise between fresh processes)
    running_rss_mb: float  # the operator that saw them created, after they were Ready
    per_connection_kb: float


class ConnectionsResult(TypedDict):
    namespaces: int
    per_namespace: int
    connections_ready_s: float  # the namespaces' connections created -> all Ready
    runs: list[ConnectionRun]
    baseline: list[ConnectionRun]
    converge_median_s: float
    baseline_median_s: float | None
    isolation: IsolationResult
    memory: ConnectionMemory


class MemoryPoint(TypedDict):
    tag: str
    llms: int
    pid: int
    rss_mb: float
    hwm_mb: float
    startup_s: float
    secrets: NotRequired[int]
    added: NotRequired[int]
    converge_s: NotRequired[float]
    converging_hwm_mb: NotRequired[float | None]
    registry: NotRequired[Counts]


class SecretsResult(TypedDict):
    n: int
    create_s: float
    churn_registry: Counts
    churn_api_writes: Counts
    running_rss_mb: float
    running_hwm_mb: float
    fresh: MemoryPoint


class NamespacesResult(TypedDict):
    n: int  # empty namespaces added
    llms: int
    before: MemoryPoint  # a fresh operator before they were added
    after: MemoryPoint  # and after
    per_namespace_kb: float


class MemoryResult(TypedDict):
    points: list[MemoryPoint]
    secrets: NotRequired[SecretsResult]
    namespaces: NotRequired[NamespacesResult]


class CallsResult(TypedDict):
    created: int
    updated: int
    deleted: int
    rotated: int
    registry_total: Counts
    registry_raw: Counts
    api_writes_total: Counts
    api_writes_per_create_at_scale: float
    api_writes_per_create_breakdown: dict[str, float]
    api_writes_per_create_idle: float
    api_writes_per_create_idle_breakdown: dict[str, float]


class OperatorRunRecord(TypedDict):
    """`bench.stack.OperatorRun` as saved."""

    tag: str
    pid: int
    started: float
    hwm_mb: float
    rss_max_mb: float
    cpu_s: float
    wall_s: float
    stop_s: float


class Results(TypedDict):
    """One run.  A full run fills every phase; `--only fairness` (or `connections`) sets `only` and fills that phase
    alone."""

    sizes: dict[str, Any]  # `bench.sizes.Sizes` as a dict
    machine: MachineFacts
    source: SourceState
    phases_s: dict[str, PhaseTime]
    started: str
    load_start: tuple[float, float, float]
    only: NotRequired[str]
    convergence: NotRequired[ConvergenceSummary]
    convergence_diagnostic: NotRequired[ConvergenceRun]
    rotation: NotRequired[RotationResult]
    latency: NotRequired[LatencyResult]
    fairness: NotRequired[FairnessResult]
    connections: NotRequired[ConnectionsResult]
    memory: NotRequired[MemoryResult]
    calls: NotRequired[CallsResult]
    operator_runs: NotRequired[list[OperatorRunRecord]]
    cpu_total: NotRequired[Cpu]
    load_end: tuple[float, float, float]
    source_end: SourceState
    wall_s: float
    finished: str


def pick_point(points: list[MemoryPoint], llms: int, secrets: int = 0) -> MemoryPoint | None:
    """The memory point with `llms` LLMs and `secrets` unrelated Secrets, if the run has one."""
    return next((p for p in points if p["llms"] == llms and p.get("secrets", 0) == secrets), None)


def steady_writes(steady: SteadyResult) -> tuple[int, int]:
    """Registry writes (POST, PUT, DELETE) and API-server writes in a steady-state window."""
    registry = steady["registry"]["POST"] + steady["registry"]["PUT"] + steady["registry"]["DELETE"]
    return registry, sum(steady["api_writes"].values())
