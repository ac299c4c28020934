"""The stack one bench run measures: control plane (own audit policy), emulator, CRD, operator processes."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from bench.audit import AUDIT_POLICY, OPERATOR_USER, count_operator_requests
from bench.kube import Kube
from bench.machine import RssSampler, machine_busy_seconds, proc_cpu_seconds, proc_status
from bench.registry import RegistryAccessLog
from bench.sizes import GROUP, PLURAL, ROOT, VERSION, Sizes
from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess


def team_key(i: int) -> str:
    """The registry key of the connections phase's team `i` (each its own principal in the emulator)."""
    return f"bench-team-{i:03d}-key"


@dataclass
class OperatorRun:
    tag: str
    pid: int
    started: float
    hwm_mb: float = 0.0
    rss_max_mb: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    stop_s: float = 0.0


class Stack:
    """Control plane (own audit policy) + emulator + CRD + the operator's user; operators started per phase."""

    def __init__(self, sizes: Sizes, workdir: Path, log: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.log = log
        self.cp: ControlPlane | None = None
        self.emu: EmulatorProcess | None = None
        self.kube: Kube | None = None
        self.op: OperatorProcess | None = None
        self.op_run: OperatorRun | None = None
        self.sampler: RssSampler | None = None
        self.operator_runs: list[OperatorRun] = []
        self.op_kubeconfig: Path | None = None
        self.registry: RegistryAccessLog | None = None
        self.operator_env: dict[str, str] = {}  # extra environment for operator processes (experiments)
        self._operator_cpu_done = 0.0
        self._audit_offset = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Stack:
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self.cp = ControlPlane(extra_apiserver_args=[f"--audit-policy-file={policy}"])
        self.cp.start()
        self.emu = EmulatorProcess(
            self.workdir / "emulator.log",
            api_key="bench-operator-key",
            admin_key="bench-admin-key",
            more_keys=tuple(team_key(i) for i in range(self.sizes.connection_keys)),  # the connections phase's teams
        ).start()
        self.registry = RegistryAccessLog(self.emu.log_path)
        self.cp.install_crds(ROOT / "crds")
        self._wait_crd_storage()
        # The operator runs as a user of its own, so the audit log tells its requests from the harness's.
        self.op_kubeconfig = self.cp.kubeconfig_for_user(
            OPERATOR_USER, ("system:masters",), self.workdir / "operator.kubeconfig"
        )
        self.kube = Kube(self.cp)
        return self

    def _wait_crd_storage(self, timeout: float = 60.0) -> None:
        """Until listing LLMs works: right after the CRD is established the API server answers 429 'storage is
        (re)initializing' for a moment, and an operator started then would get the first run's LLMs in its initial
        listing instead of as watch events (a different path, see the memory phase), unlike the later runs."""
        assert self.cp is not None
        deadline = time.monotonic() + timeout
        with self.cp.api_client() as api:
            custom = kubernetes.client.CustomObjectsApi(api)
            while True:
                try:
                    custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
                    return
                except ApiException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def stop(self) -> None:
        try:
            self.stop_operator()
        finally:
            try:
                if self.kube is not None:
                    self.kube.close()
            finally:
                try:
                    if self.emu is not None:
                        self.emu.stop()
                finally:
                    if self.cp is not None:
                        self.cp.stop()

    # -- the operator -----------------------------------------------------------------------------

    def start_operator(self, tag: str, extra_args: list[str] | None = None) -> OperatorRun:
        assert self.cp is not None and self.emu is not None and self.op_kubeconfig is not None
        self.stop_operator()
        args = [
            "--registry-concurrency",
            str(self.sizes.registry_concurrency),
            "--registry-rps",
            f"{self.sizes.registry_rps:g}",
            *(extra_args or []),
        ]
        started = time.monotonic()
        self.op = OperatorProcess(
            self.workdir / f"operator-{tag}.log",
            kubeconfig=self.op_kubeconfig,
            base_url=self.emu.base_url,
            api_key=self.emu.api_key,
            extra_args=args,
            extra_env=self.operator_env,
        ).start(timeout=90)
        assert self.op.pid is not None
        self.sampler = RssSampler(self.op.pid)
        self.op_run = OperatorRun(tag=tag, pid=self.op.pid, started=started)
        return self.op_run

    def operator_rss_mb(self) -> float:
        return (proc_status(self.op.pid).get("VmRSS", 0) / 1024) if self.op and self.op.pid else 0.0

    def operator_hwm_mb(self) -> float:
        return (proc_status(self.op.pid).get("VmHWM", 0) / 1024) if self.op and self.op.pid else 0.0

    def stop_operator(self) -> OperatorRun | None:
        if self.op is None or self.op_run is None:
            return None
        run, pid = self.op_run, self.op.pid
        assert pid is not None
        status = proc_status(pid)
        run.hwm_mb = status.get("VmHWM", 0) / 1024
        run.cpu_s = proc_cpu_seconds(pid)
        run.wall_s = time.monotonic() - run.started
        if self.sampler is not None:
            self.sampler.stop()
            run.rss_max_mb = self.sampler.max_kb() / 1024
        t = time.monotonic()
        self.op.stop()
        run.stop_s = time.monotonic() - t
        self._operator_cpu_done += run.cpu_s
        self.operator_runs.append(run)
        self.op, self.op_run, self.sampler = None, None, None
        return run

    def operator_cpu_seconds(self) -> float:
        """CPU seconds of every operator process of this run so far (finished ones plus the current one)."""
        current = proc_cpu_seconds(self.op.pid) if self.op is not None else 0.0
        return self._operator_cpu_done + current

    # -- counters ---------------------------------------------------------------------------------

    def registry_counts(self) -> Counter[str]:
        """Registry requests so far per route and per route+status (the emulator's access log, read incrementally)."""
        assert self.registry is not None
        return self.registry.counts()

    def registry_log(self, since_epoch_ms: int) -> list[dict[str, Any]]:
        """/v1 requests logged at or after `since_epoch_ms`: method, route, path, status, ts (ms, end of request)."""
        assert self.registry is not None
        self.registry.counts()
        return [e for e in self.registry.entries if e["ts"] >= since_epoch_ms]

    def audit_mark(self) -> int:
        assert self.cp is not None
        try:
            return self.cp.audit_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def audit_since(self, offset: int) -> dict[str, Counter[str]]:
        """Requests by the operator's user since `offset`: writes and reads per 'verb resource[/sub]', and errors."""
        assert self.cp is not None
        return count_operator_requests(self.cp.audit_log_path, offset)

    def cpu_snapshot(self) -> dict[str, float]:
        assert self.cp is not None and self.emu is not None
        return {
            "machine": machine_busy_seconds(),
            "kube-apiserver": proc_cpu_seconds(self.cp.apiserver_pid),
            "etcd": proc_cpu_seconds(self.cp.etcd_pid),
            "emulator": proc_cpu_seconds(self.emu.pid),
            "operator": self.operator_cpu_seconds(),
            # The harness itself, plus its waited-for children (kubectl) minus the operators it has stopped
            # (they are its children too, and are counted under "operator").
            "harness": proc_cpu_seconds(os.getpid())
            + max(
                0.0,
                proc_cpu_seconds(os.getpid(), children=True) - proc_cpu_seconds(os.getpid()) - self._operator_cpu_done,
            ),
        }


def cpu_delta(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU seconds per component over a window, plus `other` (everything else on the machine) and the wall time."""
    out = {k: round(after[k] - before[k], 2) for k in before}
    ours = sum(v for k, v in out.items() if k != "machine")
    out["other"] = round(max(0.0, out["machine"] - ours), 2)
    out["wall"] = round(wall, 2)
    return out
