"""How big each phase is (`FULL` for `make bench`, `SMOKE` for the suite), and the names every module shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "goodmem.ai", "v1alpha1", "llms"
CONN_PLURAL = "goodmemconnections"


class BenchError(RuntimeError):
    """A phase did not reach its end state in time (the message says what was seen)."""


@dataclass(frozen=True)
class Sizes:
    """How big each phase is.  `FULL` is `make bench`; `SMOKE` is the harness at toy size (no targets)."""

    name: str
    convergence: int  # LLMs applied at once
    convergence_runs: int
    rotation: int  # LLMs sharing one Secret
    rotation_runs: int
    latency_samples: int
    drift_interval: float  # seconds, for the steady-state phase only
    drift_cycles: int
    memory_llms: tuple[int, ...]  # growth points (LLMs in the cluster)
    memory_secrets_at: int  # the growth point at which unrelated Secrets are added
    unrelated_secrets: int
    fairness: int = 2000  # namespace A's LLMs, applied at once, while namespace B creates one (issue #13 part 5)
    fairness_runs: int = 3  # loaded runs, and as many lone creates on an otherwise idle operator
    # One more loaded run with this --registry-rps, where the registry budget (not the API server) is the bottleneck,
    # so the per-namespace queues decide the order (not in the medians).
    fairness_diagnostic_rps: float | None = 20.0
    # One more loaded run with --watch-streams cluster (one LLM watch for all namespaces, the layout before issue #13
    # part 5 was met): what a stream per namespace saves (not in the medians).
    fairness_single_stream: bool = True
    # Empty namespaces added at the end of the memory phase: what each watched namespace costs a fresh operator
    # (two watch streams each: LLMs and labelled Secrets). 0: skipped.
    memory_namespaces: int = 500
    # Connections (issue #15): `connection_namespaces` namespaces, each with its own key and GoodMemConnection
    # `default`, get `connection_llms` LLMs each, all applied at once (`connection_runs` runs, alternating with as many
    # runs of the same LLMs in namespaces without a connection, under the operator's own key).
    connection_namespaces: int = 10
    connection_llms: int = 100
    connection_runs: int = 3
    # Isolation: team-a's connection points at a registry of its own, put into outage (503s) or made slower than
    # the connection's request timeout, while team-a's `isolation_llms` converge; team-b's lone create, as many times.
    isolation_llms: int = 100
    isolation_runs: int = 3
    isolation_timeouts: bool = True  # also the timeouts variant (latency above the request timeout)
    memory_connections: int = 100  # GoodMemConnections (each Ready, no LLMs) for the memory per connection
    settle_s: float = 2.0  # after a phase reaches its end state, before its counters are read
    quiet_s: float = 2.0  # registry silence that marks the end of an operator's resume pass
    sample_s: float = 3.0  # RSS sampling of a settled operator
    registry_concurrency: int = 16  # the operator's default; the floor uses the same
    registry_rps: float = 100.0  # the operator's default
    diagnostic_rps: float | None = 1000.0  # one more convergence run with this --registry-rps (not in the medians)
    timeout: float = 600.0  # per wait
    targets: bool = True

    @property
    def connection_keys(self) -> int:
        """How many team keys (principals) the bench's emulator must know beside the operator's own."""
        return max(self.connection_namespaces, self.memory_connections, 2)


FULL = Sizes(
    name="full",
    convergence=1000,
    convergence_runs=3,
    rotation=200,
    rotation_runs=3,
    latency_samples=50,
    drift_interval=15.0,
    drift_cycles=3,
    memory_llms=(100, 1000, 5000),
    memory_secrets_at=1000,
    unrelated_secrets=10_000,
    fairness=2000,
    fairness_runs=3,
)
SMOKE = Sizes(
    name="smoke",
    convergence=20,
    convergence_runs=1,
    rotation=10,
    rotation_runs=1,
    latency_samples=3,
    drift_interval=1.0,
    drift_cycles=3,
    memory_llms=(20,),
    memory_secrets_at=20,
    unrelated_secrets=100,
    fairness=20,
    fairness_runs=1,
    fairness_diagnostic_rps=None,
    fairness_single_stream=False,
    memory_namespaces=5,
    connection_namespaces=2,
    connection_llms=5,
    connection_runs=1,
    isolation_llms=5,
    isolation_runs=1,
    isolation_timeouts=False,
    memory_connections=5,
    settle_s=0.5,
    quiet_s=0.5,
    sample_s=1.0,
    diagnostic_rps=None,
    timeout=60.0,
    targets=False,
)
