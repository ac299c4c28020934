"""Two replicas with failover (issue #16 part 3): leader election over a Lease, on the real control plane.

Two operator processes with `--leader-election` (as deploy/ runs them, one per pod): one works, one stands by and
does nothing (no registry request, no reconcile; `/healthz` answers, `goodmem_operator_leader` is 0).

1. SIGKILL the working one while it converges a batch of LLMs (creates in flight at the registry); while nobody
   works, change some of the LLMs it had already made Ready and create a few more. The standby takes the Lease
   once it has expired by the standby's own clock and converges everything.
2. Rolling upgrade under load: a third process stands by; creates and updates keep coming; SIGTERM the working
   one (what a rolling update does to the old pod): it stops, releases the Lease, and the third takes over at
   its next retry instead of waiting for the Lease to expire.

Both parts assert correctness only (the tests never assert a time): one registry entry per LLM, with the id
derived from its UID (no duplicate); every change made, also while nobody worked, is in the registry (no missed
change); the registry counted exactly one successful create per LLM and one successful update per spec change
(no change applied twice). The times (kill -> the standby holds the Lease -> its first registry write; SIGTERM ->
handover) are measured and written to the scenario's summary (tests/reliability/support.write_summary, as the
reliability scenarios do): `GOODMEM_RELIABILITY_FULL=1 pytest tests/e2e/test_failover.py -s` writes
tests/reliability/results/failover-full.json, from which `python -m tests.reliability.report` writes RELIABILITY.md's
failover section.

This module runs its own control plane and emulator: the session's operator watches every namespace and would
work on these LLMs too.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster._proc import free_ports
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_devcluster.testing import control_plane_session
from goodmem_operator.trust import derived_llm_id
from tests.reliability import support

from .conftest import ROOT, Kube

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

LEASE = "goodmem-operator"
LATENCY_MS = 200  # every registry request takes this long: the kill lands with creates in flight
CONCURRENCY = 8  # --registry-concurrency of each replica
# Lease timings: the defaults (10 s duration, 8 s renew deadline, 2 s retry), spelled out.
TIMINGS = ["--lease-duration", "10", "--lease-renew-deadline", "8", "--lease-retry-period", "2"]


@pytest.fixture(scope="module")
def cluster(pytestconfig: pytest.Config) -> Iterator[ControlPlane]:
    with control_plane_session(pytestconfig) as cp:
        cp.install_crds(ROOT / "crds", server_side=True)
        yield cp


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(
        tmp_path_factory.mktemp("failover-emulator") / "emulator.log",
        api_key="failover-operator-key",
        admin_key="failover-admin-key",
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


class Replica:
    """One operator process as one pod of the Deployment: leader election on, its own pod name, health and metrics
    ports."""

    def __init__(self, cp: ControlPlane, registry: EmulatorProcess, tmp: Path, pod: str, namespace: str) -> None:
        self.pod = pod
        self.health_port, self.metrics_port = free_ports(2)
        self.process = OperatorProcess(
            tmp / f"{pod}.log",
            kubeconfig=cp.kubeconfig_path,
            base_url=registry.base_url,
            api_key=registry.api_key,
            extra_args=[
                "--debug",
                "--log-format",
                "full",
                "--namespace",
                namespace,
                "--operator-namespace",
                namespace,
                "--leader-election",
                *TIMINGS,
                "--drift-interval",
                "3600",
                "--registry-concurrency",
                str(CONCURRENCY),
                "--metrics-port",
                str(self.metrics_port),
                f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            ],
            extra_env={"GOODMEM_POD_NAME": pod},
        )

    def _get(self, port: int, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
                return resp.status, resp.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def healthy(self) -> bool:
        return self._get(self.health_port, "/healthz")[0] == 200

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (0 when absent)."""
        _, text = self._get(self.metrics_port, "/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {"
        )

    def stop(self) -> None:
        self.process.stop()

    def rss_mb(self) -> float:
        """The process's resident memory (Linux /proc)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return round(int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024, 1)


def lease(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    res = cp.kubectl("-n", namespace, "get", "lease", LEASE, "-o", "json", check=False)
    return json.loads(res.stdout)["spec"] if res.returncode == 0 else {}


def holder(cp: ControlPlane, namespace: str) -> str:
    return str(lease(cp, namespace).get("holderIdentity") or "")


def epoch(micro_time: str) -> float:
    return datetime.fromisoformat(micro_time.replace("Z", "+00:00")).timestamp()


def llm(name: str, description: str = "rev 0") -> dict[str, Any]:
    return {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {"name": name},
        "spec": {
            "displayName": f"LLM {name}",
            "description": description,
            "providerType": "OPENAI",
            "endpointUrl": f"https://{name}.models.example.test/v1",
            "modelIdentifier": f"model-{name}",
        },
    }


def apply_all(kube: Kube, namespace: str, objects: list[dict[str, Any]]) -> None:
    kube.apply(namespace, json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def describe(kube: Kube, namespace: str, name: str, description: str) -> None:
    kube.run(
        "-n",
        namespace,
        "patch",
        "llm",
        name,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"description": description}}),
    )


def llms(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return list(json.loads(kube.run("-n", namespace, "get", "llms", "-o", "json").stdout)["items"])


def ready_at_generation(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    gen = obj["metadata"]["generation"]
    return cond.get("status") == "True" and status.get("observedGeneration") == gen


def wait_converged(kube: Kube, namespace: str, count: int, timeout: float = 120.0) -> float:
    """Seconds until `count` LLMs are all Ready at their generation."""
    t0 = time.monotonic()
    kube.wait_for(
        lambda: (objs := llms(kube, namespace)) and len(objs) == count and all(map(ready_at_generation, objs)),
        timeout,
        f"{count} LLMs Ready at their generation",
    )
    return time.monotonic() - t0


def writes(registry: EmulatorProcess) -> Counter[str]:
    """The registry's answered writes, as 'POST 201', 'POST 409', 'PUT 200', ..."""
    return Counter(f"{e['method']} {e['status']}" for e in registry.stats()["log"] if e["method"] in ("POST", "PUT"))


def check_registry(kube: Kube, registry: EmulatorProcess, namespace: str, descriptions: dict[str, str]) -> None:
    """One entry per LLM (id derived from its UID), holding the LLM's latest description; no other entry."""
    objs = {o["metadata"]["name"]: o for o in llms(kube, namespace)}
    assert set(objs) == set(descriptions)
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for record in registry.records():
        uid = (record.get("labels") or {}).get("goodmem.ai/owner-uid")
        if uid is not None:
            by_owner.setdefault(uid, []).append(record)
    uids = {o["metadata"]["uid"] for o in objs.values()}
    assert set(by_owner) == uids, "an entry for every LLM and for nothing else"
    duplicates = {uid: len(r) for uid, r in by_owner.items() if len(r) != 1}
    assert not duplicates, f"duplicate entries: {duplicates}"
    for name, obj in objs.items():
        [record] = by_owner[obj["metadata"]["uid"]]
        assert record["llmId"] == derived_llm_id(obj["metadata"]["uid"]) == obj["status"]["llmId"], name
        assert record["description"] == descriptions[name], f"{name}: a change is missing"


def first_write_after(registry: EmulatorProcess, since: float) -> float | None:
    """When the registry received its first write after `since` (epoch seconds): a log entry's ts is its answer,
    the request came LATENCY_MS before."""
    received = [
        e["ts"] / 1000 - LATENCY_MS / 1000 for e in registry.stats()["log"] if e["method"] in ("POST", "PUT", "DELETE")
    ]
    later = [t for t in received if t >= since]
    return min(later) if later else None


def test_sigkill_of_the_active_replica_then_a_rolling_upgrade_under_load(
    cluster: ControlPlane, registry: EmulatorProcess, tmp_path: Path
) -> None:
    support.scenario_started = time.monotonic()
    cp, kube = cluster, Kube(cluster)
    ns = f"failover-{int(time.time())}"
    cp.kubectl("create", "namespace", ns)
    count, changed, created_in_gap = support.sized(100, 200), support.sized(10, 20), support.sized(5, 10)
    replicas: list[Replica] = []
    figures: dict[str, Any] = {"timings": dict(zip(TIMINGS[::2], TIMINGS[1::2], strict=True))}
    try:
        # -- one works, one stands by -----------------------------------------------------------------------
        a = Replica(cp, registry, tmp_path, "op-a", ns)
        replicas.append(a)
        a.process.start()
        kube.wait_for(lambda: holder(cp, ns).startswith("op-a_"), 20, "op-a to hold the Lease")
        b = Replica(cp, registry, tmp_path, "op-b", ns)
        replicas.append(b)
        b.process.start(ready=OperatorProcess.STANDING_BY)
        kube.wait_for(lambda: a.healthy() and b.healthy(), 15, "/healthz on both replicas")
        assert (a.metric("goodmem_operator_leader"), b.metric("goodmem_operator_leader")) == (1, 0)

        # -- 1. SIGKILL in the middle of a convergence ------------------------------------------------------
        registry.set_faults(latencyMs=LATENCY_MS)
        registry.reset_stats()
        names = [f"llm-{i:03d}" for i in range(count)]
        descriptions = dict.fromkeys(names, "rev 0")
        apply_all(kube, ns, [llm(n) for n in names])
        kube.wait_for(lambda: writes(registry)["POST 201"] >= count // 3, 60, "a third of the creates")
        ready_before = [o["metadata"]["name"] for o in llms(kube, ns) if ready_at_generation(o)]
        assert b.metric("goodmem_operator_reconcile_total") == 0, "the standby reconciled nothing"
        assert b.metric("goodmem_operator_registry_requests_total") == 0, "the standby called no registry"
        rss = {"working_mb": a.rss_mb(), "standby_mb": b.rss_mb()}
        in_flight = registry.stats()["inFlight"]["POST /v1/llms"]
        killed = time.time()
        a.process.kill()
        created_before_kill = writes(registry)["POST 201"]
        # Nobody works now: change LLMs that were already made, and add new ones.
        for name in ready_before[:changed]:
            describe(kube, ns, name, "rev 1 (changed while nobody worked)")
            descriptions[name] = "rev 1 (changed while nobody worked)"
        gap_names = [f"gap-{i:02d}" for i in range(created_in_gap)]
        apply_all(kube, ns, [llm(n) for n in gap_names])
        descriptions.update(dict.fromkeys(gap_names, "rev 0"))
        assert holder(cp, ns).startswith("op-a_"), "the changes were made while nobody worked (op-a's Lease)"
        kube.wait_for(lambda: holder(cp, ns).startswith("op-b_"), 30, "op-b to take the Lease")
        acquired = epoch(lease(cp, ns)["acquireTime"])
        converged_s = wait_converged(kube, ns, count + created_in_gap)
        first_write = first_write_after(registry, acquired)
        check_registry(kube, registry, ns, descriptions)
        answered = writes(registry)
        assert answered["POST 201"] == count + created_in_gap, f"exactly one create per LLM: {answered}"
        assert answered["PUT 200"] == len(ready_before[:changed]), f"exactly one update per change: {answered}"
        assert set(answered) <= {"POST 201", "POST 409", "PUT 200"}, answered
        assert lease(cp, ns)["leaseTransitions"] == 1
        assert b.metric("goodmem_operator_leader") == 1
        assert b.healthy(), "kopf's liveness endpoint now, on the port the standby's was on"
        figures["sigkill"] = {
            "llms": count,
            "registry_latency_ms": LATENCY_MS,
            "registry_concurrency": CONCURRENCY,
            "created_before_kill": created_before_kill,
            "creates_in_flight_at_kill": in_flight,
            "changed_while_down": len(ready_before[:changed]),
            "created_while_down": created_in_gap,
            "lease_acquired_after_kill_s": round(acquired - killed, 2),
            "first_registry_write_after_kill_s": round(first_write - killed, 2) if first_write else None,
            "all_ready_after_kill_s": round(time.time() - killed, 1),
            "converged_after_takeover_s": round(converged_s, 1),
            "registry_writes": dict(sorted(answered.items())),
            "rss_at_kill": rss,
        }
        print(f"\n[failover] SIGKILL: {figures['sigkill']}")

        # -- 2. rolling upgrade under load: a new replica stands by, SIGTERM the working one ------------------
        c = Replica(cp, registry, tmp_path, "op-c", ns)
        replicas.append(c)
        c.process.start(ready=OperatorProcess.STANDING_BY)
        registry.set_faults(latencyMs=50)
        registry.reset_stats()
        updates = [n for n in names if descriptions[n] == "rev 0"][: support.sized(30, 60)]
        new = [f"roll-{i:02d}" for i in range(len(updates))]
        load_s = 8.0
        done = threading.Event()
        failures: list[BaseException] = []

        def load() -> None:
            try:
                for i, (upd, created) in enumerate(zip(updates, new, strict=True)):
                    describe(kube, ns, upd, "rev 2 (changed during the rolling upgrade)")
                    apply_all(kube, ns, [llm(created)])
                    time.sleep(max(0.0, t_load + (i + 1) * load_s / len(updates) - time.monotonic()))
            except BaseException as exc:  # handed to the test thread, which raises it
                failures.append(exc)
            finally:
                done.set()

        t_load = time.monotonic()
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(load_s / 3)
        terminated = time.time()
        b.process.terminate()
        assert b.process.proc is not None
        b.process.proc.wait(timeout=30)
        b_exited = time.time()
        assert b.process.proc.returncode == 0, "a clean stop on SIGTERM"
        kube.wait_for(lambda: holder(cp, ns).startswith("op-c_"), 30, "op-c to take the Lease")
        handed = epoch(lease(cp, ns)["acquireTime"])
        worker.join(timeout=60)
        assert done.is_set() and not failures, failures
        for name in updates:
            descriptions[name] = "rev 2 (changed during the rolling upgrade)"
        descriptions.update(dict.fromkeys(new, "rev 0"))
        converged_s = wait_converged(kube, ns, len(descriptions))
        check_registry(kube, registry, ns, descriptions)
        answered = writes(registry)
        # Every update made before its LLM's create was seen goes into that create; these LLMs all existed.
        assert answered["POST 201"] == len(new), f"exactly one create per new LLM: {answered}"
        assert answered["PUT 200"] == len(updates), f"exactly one update per change: {answered}"
        assert set(answered) <= {"POST 201", "POST 409", "PUT 200"}, answered
        assert "released the Lease" in b.process.log_text()
        assert lease(cp, ns)["leaseTransitions"] == 2
        assert c.healthy() and c.metric("goodmem_operator_leader") == 1
        figures["rolling_upgrade"] = {
            "llms": len(descriptions),
            "registry_latency_ms": 50,
            "load": f"{len(updates)} updates and {len(new)} creates over {load_s:g} s",
            "sigterm_after_load_start_s": round(load_s / 3, 1),
            "old_replica_exited_after_sigterm_s": round(b_exited - terminated, 2),
            "lease_taken_after_sigterm_s": round(handed - terminated, 2),
            "lease_taken_after_old_replica_exited_s": round(handed - b_exited, 2),
            "converged_after_load_s": round(converged_s, 1),
            "registry_writes": dict(sorted(answered.items())),
        }
        print(f"[failover] rolling upgrade: {figures['rolling_upgrade']}")
    finally:
        registry.clear_faults()
        for replica in replicas:
            replica.stop()
    support.write_summary("failover", figures)
