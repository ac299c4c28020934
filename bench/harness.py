"""The benchmark harness (issue #7): the operator as a process, on the local control plane, against the emulator.

One `run_bench(sizes)` call starts its own stack (kube-apiserver + etcd from
`goodmem_devcluster`, the registry emulator, the operator as a process under a
user of its own), measures every figure of the issue, stops everything by pid
and returns the results (`bench.results.Results`) that `bench.report.render` turns into
BENCHMARKS.md.

Counting:
- registry requests: the emulator's counters (`/_emulator/stats`), as deltas
  per phase; the floor's own requests are kept out of the operator's totals;
- API-server requests by the operator: the audit log, under a policy of our own
  that records writes by everyone and reads (get/list/watch) by the operator's
  user, all at Metadata level (no bodies);
- memory: VmRSS sampled every 0.25 s and VmHWM from /proc/PID/status;
- CPU: utime+stime of each process of the stack from /proc, and the machine's
  busy time from /proc/stat, so what other processes used is known too.

Modules: `bench.stack` (the processes), `bench.kube` (the API server, the watch), `bench.audit` and
`bench.registry` (counting requests), `bench.machine` (/proc), `bench.phases` (one module per phase),
`bench.results` (the typed results), `bench.sizes` (FULL and SMOKE).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import cast

from bench.machine import loadavg, source_state
from bench.phases.calls import CallsPhase
from bench.phases.connections import ConnectionsPhase
from bench.phases.convergence import ConvergencePhase
from bench.phases.fairness import FairnessPhase
from bench.phases.latency import LatencyPhase
from bench.phases.memory import MemoryPhase
from bench.phases.rotation import RotationPhase
from bench.results import OperatorRunRecord, Results
from bench.sizes import FULL, SMOKE, BenchError, Sizes
from bench.stack import cpu_delta

__all__ = ["FULL", "SMOKE", "Bench", "BenchError", "Sizes", "run_bench"]


class Bench(ConvergencePhase, RotationPhase, LatencyPhase, FairnessPhase, ConnectionsPhase, MemoryPhase, CallsPhase):
    """Every phase, in order, on one stack."""

    #: The phases `bench/run.py --only NAME` runs alone (each fills `results[NAME]`).
    ALONE = ("fairness", "connections")

    # -- the run ----------------------------------------------------------------------------------

    def run(self, only: str | None = None) -> Results:
        self.results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.results["load_start"] = loadavg()
        started = time.monotonic()
        cpu0: dict[str, float] | None = None
        try:
            self._timed("setup", self.stack.start)
            cpu0 = self.stack.cpu_snapshot()
            if only is not None and only not in self.ALONE:
                raise ValueError(f"--only takes one of {', '.join(self.ALONE)}, not {only!r}")
            if only is not None:
                self.results["only"] = only
            if only == "fairness":
                self.results["fairness"] = self._timed("fairness", self.fairness)
            elif only == "connections":
                self.results["connections"] = self._timed("connections", self.connections)
            else:
                self._run_all()
        finally:
            if cpu0 is not None:
                with contextlib.suppress(Exception):
                    self.results["cpu_total"] = cpu_delta(cpu0, self.stack.cpu_snapshot(), time.monotonic() - started)
            self.stack.stop()
        self.results["load_end"] = loadavg()
        self.results["source_end"] = source_state()  # operator processes start all through the run: same code?
        self.results["wall_s"] = round(time.monotonic() - started, 1)
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        return self.results

    def _run_all(self) -> None:
        s = self.sizes
        runs = [
            self._timed(
                f"convergence run {k + 1}", lambda k=k: self.convergence_run(k, last=k == s.convergence_runs - 1)
            )
            for k in range(s.convergence_runs)
        ]
        self.results["convergence"] = self._convergence_summary(runs)
        if s.diagnostic_rps:
            self.results["convergence_diagnostic"] = self._timed(
                f"convergence at --registry-rps {s.diagnostic_rps:g}",
                lambda: self.convergence_run(s.convergence_runs, last=False, rps=s.diagnostic_rps),
            )
        self.results["rotation"] = self._timed("rotation", self.rotation)
        self.results["latency"] = self._timed("latency", self.latency)
        # Before the memory phase, which leaves its LLMs in place (a fresh operator would resume them all).
        self.results["fairness"] = self._timed("fairness", self.fairness)
        # Before the memory phase too; it leaves no LLM or connection behind (only empty namespaces).
        self.results["connections"] = self._timed("connections", self.connections)
        self.results["memory"] = self._timed("memory", self.memory)
        self.stack.stop_operator()
        self.results["calls"] = self._calls_summary()
        self.results["operator_runs"] = [cast(OperatorRunRecord, asdict(r)) for r in self.stack.operator_runs]


def run_bench(
    sizes: Sizes = SMOKE,
    *,
    log: Callable[[str], None] = print,
    keep_dir: Path | None = None,
    profile_dir: Path | None = None,
    only: str | None = None,
) -> Results:
    """Run every phase at `sizes` (or only the one named) on a stack of its own; everything started is stopped,
    the temp dir removed."""
    workdir = Path(tempfile.mkdtemp(prefix="goodmem-bench-"))
    try:
        results = Bench(sizes, workdir, log, profile_dir=profile_dir).run(only=only)
    finally:
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for f in workdir.glob("*.log"):
                shutil.copy2(f, keep_dir / f.name)
        shutil.rmtree(workdir, ignore_errors=True)
    return results
