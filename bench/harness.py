"""The benchmark harness (issue #7): the operator as a process, on the local control plane, against the emulator.

One `run_bench(sizes)` call starts its own stack (kube-apiserver + etcd from
`goodmem_devcluster`, the registry emulator, the operator as a process under a
user of its own), measures every figure of the issue, stops everything by pid
and returns a `dict` of results that `bench.report.render` turns into
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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client
import kubernetes.watch
from kubernetes.client.rest import ApiException

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.audit import WRITE_VERBS
from goodmem_devcluster.gobuild import ETCD_VERSION, KUBERNETES_VERSION
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "goodmem.ai", "v1alpha1", "llms"
OPERATOR_USER = "goodmem-bench-operator"
READ_VERBS = ("get", "list", "watch")
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Writes by everyone, reads by the operator's user; Metadata level (no bodies).
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  - level: Metadata
    users: ["{OPERATOR_USER}"]
    verbs: ["get", "list", "watch"]
  - level: Metadata
    verbs: [{", ".join(f'"{v}"' for v in WRITE_VERBS)}]
  - level: None
"""


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
    settle_s: float = 2.0  # after a phase reaches its end state, before its counters are read
    quiet_s: float = 2.0  # registry silence that marks the end of an operator's resume pass
    sample_s: float = 3.0  # RSS sampling of a settled operator
    registry_concurrency: int = 16  # the operator's default; the floor uses the same
    registry_rps: float = 100.0  # the operator's default
    diagnostic_rps: float | None = 1000.0  # one more convergence run with this --registry-rps (not in the medians)
    timeout: float = 600.0  # per wait
    targets: bool = True


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
    settle_s=0.5,
    quiet_s=0.5,
    sample_s=1.0,
    diagnostic_rps=None,
    timeout=60.0,
    targets=False,
)


# ----------------------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a live process; {} if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def proc_cpu_seconds(pid: int | None, *, children: bool = False) -> float:
    if not pid:
        return 0.0
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (waited-for children: kubectl)
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine (all cores) since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def loadavg() -> tuple[float, float, float]:
    a, b, c = Path("/proc/loadavg").read_text().split()[:3]
    return float(a), float(b), float(c)


def source_state() -> dict[str, Any]:
    """The commit measured, and whether the operator's sources differed from it (uncommitted edits)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "operator" / "goodmem_operator").rglob("*.py")):
        digest.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "operator_sha256": digest.hexdigest()[:16],
        "dirty": [line[3:] for line in git("status", "--porcelain", "--", "operator", "pyproject.toml").splitlines()],
    }


def machine_facts() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    import kopf

    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": getattr(kopf, "__version__", "?"),
        "kubernetes": KUBERNETES_VERSION,
        "etcd": ETCD_VERSION,
    }


class RssSampler:
    """Samples VmRSS of one pid every `interval` seconds in a thread; keeps the max and the samples."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic, kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

    def max_kb(self, since: float = 0.0) -> int:
        return max((kb for t, kb in self.samples if t >= since), default=0)

    def mean_kb(self, since: float = 0.0) -> float:
        values = [kb for t, kb in self.samples if t >= since]
        return statistics.fmean(values) if values else 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------ manifests


def llm_body(namespace: str, name: str, *, secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "displayName": f"LLM {name}",
        "providerType": "OPENAI",
        "endpointUrl": f"https://{name}.{namespace}.bench.example.test/v1",
        "modelIdentifier": f"model-{name}",
    }
    if secret:
        spec["credentials"] = {
            "apiKey": {
                "secretKeyRef": {"name": secret, "key": "api-key"},
                "headerName": "Authorization",
                "prefix": "Bearer ",
            }
        }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLM", "metadata": {"name": name}, "spec": spec}


def floor_body(namespace: str, name: str) -> dict[str, Any]:
    """What the operator POSTs for `llm_body(namespace, name)` (id, spec fields, the two ownership labels)."""
    spec = llm_body(namespace, name)["spec"]
    uid = str(uuid.uuid4())
    return {
        "displayName": spec["displayName"],
        "providerType": spec["providerType"],
        "endpointUrl": spec["endpointUrl"],
        "modelIdentifier": spec["modelIdentifier"],
        "llmId": str(uuid.uuid4()),
        "labels": {"goodmem.ai/owner-uid": uid, "goodmem.ai/owner": f"default/{namespace}/{name}"},
    }


#: A Secret the operator may use as LLM credentials carries this label (README: Secrets opt in).
CREDENTIALS_LABELS = {"goodmem.ai/credentials": "true"}


def secret_body(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels or {}},
        "type": "Opaque",
        "stringData": data,
    }


def _suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ------------------------------------------------------------------------------------ Kubernetes


class Kube:
    """The harness's side of the API server (as admin): thread-local clients, bulk creates, deletes."""

    def __init__(self, cp: ControlPlane, workers: int = 8) -> None:
        self.cp = cp
        self.workers = workers
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    def api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            api = self.cp.api_client()
            api.configuration.connection_pool_maxsize = 4
            self._local.api = api
            with self._lock:
                self._clients.append(api)
        return api

    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api())

    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api())

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for api in self._clients:
            api.close()
        self._clients.clear()

    def _bulk(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> float:
        started = time.monotonic()
        for future in [self._pool.submit(fn, item) for item in items]:
            future.result()
        return time.monotonic() - started

    def create_namespace(self, name: str) -> str:
        self.core().create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
        return name

    @staticmethod
    def _drain(response: Any) -> None:
        """Read and release a `_preload_content=False` answer (no model deserialisation: the harness stays cheap)."""
        body = response.read()
        response.release_conn()
        if not 200 <= response.status < 300:
            raise BenchError(f"API server answered {response.status}: {body[:300]!r}")

    def create_llms(self, namespace: str, bodies: list[dict[str, Any]]) -> float:
        return self._bulk(
            lambda b: self._drain(
                self.custom().create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, b, _preload_content=False
                )
            ),
            bodies,
        )

    def patch_llm_specs(self, namespace: str, names: list[str], spec_patch: dict[str, Any]) -> float:
        return self._bulk(
            lambda n: self._drain(
                self.custom().patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    n,
                    {"spec": spec_patch},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            ),
            names,
        )

    def delete_all_llms(self, namespace: str) -> None:
        self.custom().delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)

    def create_secrets(self, namespace: str, bodies: list[dict[str, Any]]) -> float:
        return self._bulk(
            lambda b: self._drain(self.core().create_namespaced_secret(namespace, b, _preload_content=False)), bodies
        )

    def replace_secret_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.core().patch_namespaced_secret(name, namespace, {"stringData": data})

    def delete_all_secrets(self, namespace: str) -> None:
        self.core().delete_collection_namespaced_secret(namespace)

    def llm_ids(self, namespace: str) -> dict[str, str]:
        items = self.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("llmId") for i in items}


@dataclass
class Item:
    generation: int = 0
    observed_generation: int | None = None
    ready: bool = False
    ready_at: float | None = None  # monotonic time of the event that made it Ready for its generation
    deleting: bool = False
    llm_id: str | None = None


class LLMWatch:
    """One watch on the LLMs of a namespace; records when each became Ready (for its generation) or went away."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.items: dict[str, Item] = {}
        self.gone: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._api = kube.cp.api_client()
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise BenchError(f"watch on {namespace} did not start")

    def _list(self) -> str:
        custom = kubernetes.client.CustomObjectsApi(self._api)
        listing = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        with self._cond:
            now = time.monotonic()
            seen = set()
            for obj in listing["items"]:
                seen.add(obj["metadata"]["name"])
                self._observe(obj, now)
            for name in set(self.items) - seen:
                self.items.pop(name)
                self.gone[name] = now
            self._cond.notify_all()
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self._api)
        try:
            rv = self._list()
            self._started.set()
            while not self._stop.is_set():
                w = kubernetes.watch.Watch()
                try:
                    for event in w.stream(
                        custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        resource_version=rv,
                        timeout_seconds=5,
                        allow_watch_bookmarks=True,
                    ):
                        self._on_event(event["type"], event["object"])
                        if self._stop.is_set():
                            w.stop()
                    rv = w.resource_version or rv
                except ApiException as exc:
                    if exc.status == 410:
                        rv = self._list()
                    else:
                        raise
        except BaseException as exc:
            if not self._stop.is_set():
                self._error = exc
                with self._cond:
                    self._cond.notify_all()
        finally:
            self._started.set()

    def _on_event(self, kind: str, obj: Any) -> None:
        """One watch event: an ERROR raises (a 410 relists in `_run`), the others update the items."""
        if kind == "ERROR":
            raise ApiException(status=(obj or {}).get("code", 500), reason=str(obj))
        now = time.monotonic()
        with self._cond:
            if kind == "DELETED":
                name = obj["metadata"]["name"]
                self.items.pop(name, None)
                self.gone[name] = now
            elif kind in ("ADDED", "MODIFIED"):
                self._observe(obj, now)
            self._cond.notify_all()

    def _observe(self, obj: dict[str, Any], now: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        name = meta["name"]
        item = self.items.setdefault(name, Item())
        item.generation = int(meta.get("generation") or 0)
        item.observed_generation = status.get("observedGeneration")
        item.deleting = bool(meta.get("deletionTimestamp"))
        item.llm_id = status.get("llmId") or item.llm_id
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        ready = ready and item.observed_generation == item.generation
        if ready and not item.ready:
            item.ready_at = now
        elif not ready:
            item.ready_at = None
        item.ready = ready

    def wait(self, predicate: Callable[[LLMWatch], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                if self._error is not None:
                    raise BenchError(f"watch on {self.namespace} failed: {self._error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(
                        f"timed out after {timeout:g}s waiting for {what} in {self.namespace}: {self.summary()}"
                    )
                self._cond.wait(min(left, 1.0))

    def wait_ready(self, names: Iterable[str], timeout: float, generation: int | None = None) -> float:
        """Wait until every name is Ready for its current (or the given) generation; the last ready_at."""
        wanted = list(names)

        def done(w: LLMWatch) -> bool:
            for n in wanted:
                it = w.items.get(n)
                if it is None or not it.ready or (generation is not None and it.generation != generation):
                    return False
            return True

        self.wait(done, timeout, f"{len(wanted)} LLMs Ready")
        with self._cond:
            return max(self.items[n].ready_at or 0.0 for n in wanted)

    def wait_gone(self, names: Iterable[str], timeout: float) -> float:
        wanted = list(names)
        self.wait(lambda w: all(n not in w.items for n in wanted), timeout, f"{len(wanted)} LLMs gone")
        with self._cond:
            return max(self.gone.get(n, 0.0) for n in wanted)

    def ready_count(self, at: float | None = None) -> int:
        """How many are Ready now, or were Ready (for their current generation) by monotonic time `at`."""
        with self._cond:
            return sum(1 for i in self.items.values() if i.ready and (at is None or (i.ready_at or 0.0) <= at))

    def summary(self) -> str:
        items = list(self.items.values())
        return (
            f"{len(items)} present, {sum(i.ready for i in items)} ready, "
            f"{sum(i.deleting for i in items)} deleting, {len(self.gone)} gone"
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._api.close()


# ----------------------------------------------------------------------------------------- stack


_ACCESS = re.compile(
    r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) aiohttp\.access \S+ "(\w+) (/v1\S*) HTTP/[\d.]+" (\d{3}) '
)


class RegistryAccessLog:
    """Counts the emulator's /v1 requests from its access log (cheap to poll; `/_emulator/stats` copies its whole
    request log on every call).  Keys match the emulator's counters: 'POST /v1/llms', 'status GET /v1/llms/{id} 404'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._counts: Counter[str] = Counter()
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def counts(self) -> Counter[str]:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                return Counter(self._counts)
            end = data.rfind(b"\n") + 1
            self._offset += end
            for line in data[:end].decode(errors="replace").splitlines():
                m = _ACCESS.match(line)
                if not m:
                    continue
                stamp, ms, method, path, status = m.groups()
                bare = path.split("?", 1)[0]
                route = "/v1/llms" if bare == "/v1/llms" else "/v1/llms/{id}" if bare.startswith("/v1/llms/") else bare
                key = f"{method} {route}"
                self._counts[key] += 1
                self._counts[f"status {key} {status}"] += 1
                ts = int(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) * 1000) + int(ms)
                self.entries.append({"method": method, "route": route, "path": bare, "status": int(status), "ts": ts})
            return Counter(self._counts)


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
            self.workdir / "emulator.log", api_key="bench-operator-key", admin_key="bench-admin-key"
        ).start()
        self.registry = RegistryAccessLog(self.emu.log_path)
        self.cp.kubectl("apply", "-f", str(ROOT / "crds"))
        self.cp.kubectl("wait", "--for", "condition=established", "crd/llms.goodmem.ai", "--timeout=60s")
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
        writes: Counter[str] = Counter()
        reads: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        with open(self.cp.audit_log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("user", {}).get("username") != OPERATOR_USER:
                continue
            verb, stage = ev.get("verb"), ev.get("stage")
            ref = ev.get("objectRef") or {}
            what = f"{verb} {ref.get('resource', '?')}" + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            if verb in WRITE_VERBS and stage == "ResponseComplete":
                writes[what] += 1
                if (ev.get("responseStatus") or {}).get("code", 200) >= 400:
                    failed[f"{what} {ev['responseStatus']['code']}"] += 1
            elif (verb == "watch" and stage == "ResponseStarted") or (
                verb in ("get", "list") and stage == "ResponseComplete"
            ):
                reads[what] += 1
        return {"writes": writes, "reads": reads, "failed": failed}

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


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def registry_summary(d: dict[str, int]) -> dict[str, int]:
    return {
        "POST": d.get("POST /v1/llms", 0),
        "GET": d.get("GET /v1/llms/{id}", 0),
        "LIST": d.get("GET /v1/llms", 0),
        "PUT": d.get("PUT /v1/llms/{id}", 0),
        "DELETE": d.get("DELETE /v1/llms/{id}", 0),
        "GET 404": d.get("status GET /v1/llms/{id} 404", 0),  # the observe before a create: expected
        "errors": sum(
            n
            for k, n in d.items()
            if k.startswith("status ")
            and not k.rsplit(" ", 1)[1].startswith("2")
            and k != "status GET /v1/llms/{id} 404"
        ),
    }


# ------------------------------------------------------------------------------------- the floor


async def _floor(base_url: str, api_key: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"x-api-key": api_key}, limits=limits, timeout=30.0, trust_env=False
    ) as client:

        async def call(method: str, path: str, body: Any = None) -> int:
            async with sem:
                response = await client.request(method, path, json=body)
                return response.status_code

        started = time.monotonic()
        codes = await asyncio.gather(*(call("POST", "/v1/llms", b) for b in bodies))
        create_s = time.monotonic() - started
        if any(c != 201 for c in codes):
            raise BenchError(f"floor creates answered {Counter(codes)}")
        started = time.monotonic()
        codes = await asyncio.gather(*(call("DELETE", f"/v1/llms/{b['llmId']}") for b in bodies))
        delete_s = time.monotonic() - started
        if any(c != 204 for c in codes):
            raise BenchError(f"floor deletes answered {Counter(codes)}")
    return {"create_s": create_s, "delete_s": delete_s}


def run_floor(base_url: str, api_key: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    """A bare async httpx client: the same creates (then their deletes) at the same concurrency, nothing else."""
    return asyncio.run(_floor(base_url, api_key, bodies, concurrency))


# ------------------------------------------------------------------------------------ the phases


class Bench:
    def __init__(
        self, sizes: Sizes, workdir: Path, log: Callable[[str], None] = print, profile_dir: Path | None = None
    ) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.say = log
        self.profile_dir = profile_dir
        self.stack = Stack(sizes, workdir, log)
        self.results: dict[str, Any] = {
            "sizes": asdict(sizes),
            "machine": machine_facts(),
            "source": source_state(),
            "phases_s": {},
        }
        self.floor_registry: Counter[str] = Counter()  # the floor's requests, kept out of the operator's totals
        self.created = self.updated = self.deleted = self.rotated = 0

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def kube(self) -> Kube:
        assert self.stack.kube is not None
        return self.stack.kube

    def _window(self) -> dict[str, Any]:
        return {
            "registry": self.stack.registry_counts(),
            "audit": self.stack.audit_mark(),
            "cpu": self.stack.cpu_snapshot(),
            "t": time.monotonic(),
        }

    def _close(self, w: dict[str, Any], *, count: bool = True) -> dict[str, Any]:
        reg = delta(self.stack.registry_counts(), w["registry"])
        audit = self.stack.audit_since(w["audit"])
        cpu = cpu_delta(w["cpu"], self.stack.cpu_snapshot(), time.monotonic() - w["t"])
        if not count:
            self.floor_registry.update(reg)
        return {
            "registry": registry_summary(reg),
            "registry_raw": reg,
            "api_writes": dict(audit["writes"]),
            "api_reads": dict(audit["reads"]),
            "api_failed": dict(audit["failed"]),
            "cpu": cpu,
        }

    def _wait_registry_quiet(self, min_gets: int, before: Counter[str]) -> None:
        """Until the operator has made at least `min_gets` GETs since `before` and then nothing for `quiet_s`."""
        quiet = self.sizes.quiet_s
        deadline = time.monotonic() + self.sizes.timeout
        last_total, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = self.stack.registry_counts()
            d = delta(now, before)
            total = sum(v for k, v in d.items() if not k.startswith("status "))
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            if d.get("GET /v1/llms/{id}", 0) >= min_gets and time.monotonic() - last_change >= quiet:
                return
            time.sleep(0.25)
        raise BenchError(f"registry not quiet after {min_gets} GETs: {delta(self.stack.registry_counts(), before)}")

    def _settle(self, seconds: float | None = None) -> None:
        time.sleep(self.sizes.settle_s if seconds is None else seconds)

    def _namespace(self, prefix: str) -> str:
        return self.kube.create_namespace(f"{prefix}-{_suffix()}")

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        load_before = loadavg()
        self.say(f"== {name} (load {load_before[0]:.2f})")
        try:
            return fn()
        finally:
            self.results["phases_s"][name] = {
                "wall_s": round(time.monotonic() - started, 1),
                "load_before": load_before,
                "load_after": loadavg(),
            }

    # -- the run ----------------------------------------------------------------------------------

    def run(self, only: str | None = None) -> dict[str, Any]:
        self.results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.results["load_start"] = loadavg()
        started = time.monotonic()
        cpu0: dict[str, float] | None = None
        try:
            self._timed("setup", self.stack.start)
            cpu0 = self.stack.cpu_snapshot()
            if only == "fairness":
                self.results["only"] = only
                self.results["fairness"] = self._timed("fairness", self.fairness)
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
        self.results["memory"] = self._timed("memory", self.memory)
        self.stack.stop_operator()
        self.results["calls"] = self._calls_summary()
        self.results["operator_runs"] = [asdict(r) for r in self.stack.operator_runs]

    # -- 1, 2, 3: convergence, update, steady state, delete --------------------------------------

    def convergence_run(self, k: int, *, last: bool, rps: float | None = None) -> dict[str, Any]:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        n = s.convergence
        tag = f"conv{k + 1}" if rps is None else f"conv-rps{rps:g}"
        ns = self._namespace(tag)
        names = [f"llm-{i:05d}" for i in range(n)]
        out: dict[str, Any] = {"namespace": ns, "n": n}

        # The floor: the same creates from a bare client at the same concurrency (kept out of the operator's counts).
        floor_w = self._window()
        out["floor"] = run_floor(
            stack.emu.base_url, stack.emu.api_key, [floor_body(ns, x) for x in names], s.registry_concurrency
        )
        self._close(floor_w, count=False)
        self.say(
            f"   floor: {n} creates in {out['floor']['create_s']:.2f}s, deletes in {out['floor']['delete_s']:.2f}s"
        )

        op = stack.start_operator(tag, [] if rps is None else ["--registry-rps", f"{rps:g}"])
        watch = LLMWatch(self.kube, ns)
        profiler = self._start_profiler(tag) if k == 0 or rps is not None else None
        try:
            w = self._window()
            t0 = time.monotonic()
            out["apply_s"] = self.kube.create_llms(ns, [llm_body(ns, x) for x in names])
            last_ready = watch.wait_ready(names, s.timeout)
            out["converge_s"] = last_ready - t0
            if profiler is not None:
                out["profile"] = self._stop_profiler(profiler)
            self._settle()
            out["create"] = self._close(w)
            out["create"]["rss_max_mb"] = round(stack.sampler.max_kb() / 1024, 1) if stack.sampler else 0
            out["create"]["hwm_mb"] = round(stack.operator_hwm_mb(), 1)
            self.created += n
            self.say(
                f"   {n} Ready in {out['converge_s']:.2f}s (applied in {out['apply_s']:.2f}s); "
                f"registry {out['create']['registry']}; api writes {sum(out['create']['api_writes'].values())}"
            )

            if last:
                out["update"] = self._update(watch, ns, names)
                stack.stop_operator()
                out["steady"] = self._steady_state(watch, ns, names)  # its own operator, short drift interval
                before = stack.registry_counts()
                stack.start_operator(f"{tag}-delete")  # back to the defaults; its resume pass ends before deleting
                self._wait_registry_quiet(n, before)
            out["delete"] = self._delete(watch, ns, names)
        finally:
            if profiler is not None and profiler.poll() is None:
                self._stop_profiler(profiler)
            watch.stop()
            run = stack.stop_operator()
        out["operator_pid"] = op.pid
        out["operator_hwm_mb"] = round(run.hwm_mb, 1) if run else None
        return out

    def _update(self, watch: LLMWatch, ns: str, names: list[str]) -> dict[str, Any]:
        w = self._window()
        t0 = time.monotonic()
        apply_s = self.kube.patch_llm_specs(ns, names, {"description": "updated by the benchmark"})
        last = watch.wait_ready(names, self.sizes.timeout, generation=2)
        converge_s = last - t0
        self._settle()
        out = self._close(w)
        out.update(apply_s=apply_s, converge_s=converge_s, n=len(names))
        self.updated += len(names)
        self.say(f"   {len(names)} spec updates converged in {converge_s:.2f}s; registry {out['registry']}")
        return out

    def _delete(self, watch: LLMWatch, ns: str, names: list[str]) -> dict[str, Any]:
        w = self._window()
        t0 = time.monotonic()
        self.kube.delete_all_llms(ns)
        last = watch.wait_gone(names, self.sizes.timeout)
        gone_s = last - t0
        self._settle()
        out = self._close(w)
        out.update(gone_s=gone_s, n=len(names))
        self.deleted += len(names)
        self.say(f"   {len(names)} deleted (finalizers released) in {gone_s:.2f}s; registry {out['registry']}")
        return out

    def _steady_state(self, watch: LLMWatch, ns: str, names: list[str]) -> dict[str, Any]:
        """A fresh operator with a short drift interval; from its start until every LLM had `drift_cycles` checks."""
        s, stack = self.sizes, self.stack
        ids = {x: watch.items[x].llm_id for x in names}
        if not all(ids.values()):
            raise BenchError("some LLMs carry no status.llmId")
        w = self._window()
        since_ms = time.time_ns() // 1_000_000
        stack.start_operator("drift", ["--drift-interval", f"{s.drift_interval:g}"])
        wanted = 1 + s.drift_cycles  # the resume pass at start, then the drift cycles
        deadline = time.monotonic() + s.timeout + s.drift_interval * (s.drift_cycles + 1)
        resumed: tuple[float, int] | None = None  # operator CPU and GETs when every LLM had its first check
        while True:
            per_id = Counter(
                e["path"].rsplit("/", 1)[1]
                for e in stack.registry_log(since_ms)
                if e["method"] == "GET" and e["route"] == "/v1/llms/{id}"
            )
            if resumed is None and all(per_id[i] >= 1 for i in ids.values()):
                resumed = (stack.operator_cpu_seconds(), sum(per_id.values()))
            if all(per_id[i] >= wanted for i in ids.values()):
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"drift cycles did not complete: min GETs per LLM {min(per_id[i] for i in ids.values())}"
                )
            time.sleep(min(1.0, s.drift_interval / 4))
        elapsed = time.monotonic() - w["t"]
        assert resumed is not None
        drift_cpu = stack.operator_cpu_seconds() - resumed[0]
        drift_checks = sum(per_id.values()) - resumed[1]
        out = self._close(w)
        out.update(
            n=len(names),
            drift_interval=s.drift_interval,
            cycles=s.drift_cycles,
            window_s=elapsed,
            checks_per_llm_min=min(per_id[i] for i in ids.values()),
            drift_checks=drift_checks,
            drift_cpu_s=round(drift_cpu, 2),
            rss_mb=round(stack.operator_rss_mb(), 1),
        )
        reg = out["registry"]
        self.say(
            f"   steady state: {reg['GET']} GETs, writes {reg['POST'] + reg['PUT'] + reg['DELETE']}, "
            f"api writes {sum(out['api_writes'].values())}, api reads {sum(out['api_reads'].values())}"
        )
        return out

    @staticmethod
    def _convergence_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        conv = [r["converge_s"] for r in runs]
        floor = [r["floor"]["create_s"] for r in runs]
        ratios = [r["converge_s"] / r["floor"]["create_s"] for r in runs]
        return {
            "runs": runs,
            "converge_s": conv,
            "floor_s": floor,
            "ratios": ratios,
            "converge_median_s": statistics.median(conv),
            "floor_median_s": statistics.median(floor),
            "ratio_median": statistics.median(ratios),
        }

    # -- 4: rotation fan-out ------------------------------------------------------------------------

    def rotation(self) -> dict[str, Any]:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        ns = self._namespace("rot")
        names = [f"rot-{i:04d}" for i in range(s.rotation)]
        self.kube.create_secrets(ns, [secret_body("shared", {"api-key": "rotation-0"}, CREDENTIALS_LABELS)])
        stack.start_operator("rotation+latency")  # the latency phase uses it too, once it is idle again
        watch = LLMWatch(self.kube, ns)
        rounds: list[dict[str, Any]] = []
        try:
            w = self._window()
            self.kube.create_llms(ns, [llm_body(ns, x, secret="shared") for x in names])
            watch.wait_ready(names, s.timeout)
            self._settle()
            self._close(w)
            self.created += len(names)
            ids = {watch.items[x].llm_id for x in names}
            for r in range(1, s.rotation_runs + 1):
                before = {
                    rec["llmId"]: rec["credentialsFingerprint"] for rec in stack.emu.records() if rec["llmId"] in ids
                }
                w = self._window()
                t_epoch = time.time()
                since_ms = int(t_epoch * 1000) - 1
                self.kube.replace_secret_data(ns, "shared", {"api-key": f"rotation-{r}"})
                deadline = time.monotonic() + s.timeout
                while True:
                    puts = [
                        e
                        for e in stack.registry_log(since_ms)
                        if e["method"] == "PUT" and e["path"].rsplit("/", 1)[1] in ids and 200 <= e["status"] < 300
                    ]
                    if {e["path"].rsplit("/", 1)[1] for e in puts} >= ids:
                        break
                    if time.monotonic() > deadline:
                        raise BenchError(f"rotation {r}: {len(puts)} of {len(ids)} entries updated")
                    time.sleep(0.1)
                rotate_s = max(e["ts"] for e in puts) / 1000 - t_epoch
                after = {
                    rec["llmId"]: rec["credentialsFingerprint"] for rec in stack.emu.records() if rec["llmId"] in ids
                }
                changed = sum(1 for i in ids if after.get(i) != before.get(i))
                self._settle()  # any extra PUT would land here
                out = self._close(w)
                bodies = [e["body"] for e in stack.emu.stats()["log"] if e["method"] == "PUT" and e["ts"] >= since_ms]
                out.update(
                    rotate_s=rotate_s,
                    entries_changed=changed,
                    n=len(ids),
                    puts_with_credentials_only=sum(
                        1 for b in bodies if isinstance(b, dict) and set(b) == {"credentials"}
                    ),
                )
                self.rotated += len(ids)
                rounds.append(out)
                self.say(
                    f"   rotation {r}: {changed}/{len(ids)} new fingerprints, last PUT {rotate_s:.2f}s after the "
                    f"Secret update; registry {out['registry']}"
                )
            out_delete = self._delete(watch, ns, names)
        except BaseException:
            stack.stop_operator()
            raise
        finally:
            watch.stop()
        times = [x["rotate_s"] for x in rounds]
        return {
            "n": s.rotation,
            "rounds": rounds,
            "rotate_s": times,
            "rotate_median_s": statistics.median(times),
            "puts": [x["registry"]["PUT"] for x in rounds],
            "delete": out_delete,
        }

    # -- 5: latency -------------------------------------------------------------------------------

    def latency(self) -> dict[str, Any]:
        s, stack = self.sizes, self.stack
        ns = self._namespace("lat")
        if stack.op is None:
            stack.start_operator("latency")
        watch = LLMWatch(self.kube, ns)
        samples: list[float] = []
        names: list[str] = []
        try:
            time.sleep(1.0)  # idle
            w = self._window()
            custom = self.kube.custom()
            for i in range(s.latency_samples):
                name = f"lat-{i:03d}"
                names.append(name)
                t0 = time.monotonic()
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, llm_body(ns, name))
                samples.append(watch.wait_ready([name], 60.0) - t0)
                time.sleep(0.3)  # let the operator go idle again (trailing Events, status echoes)
            self._settle()
            out = self._close(w)
            self.created += len(names)
            out_delete = self._delete(watch, ns, names)
        finally:
            watch.stop()
            stack.stop_operator()
        out.update(
            samples_s=samples,
            p50_s=statistics.median(samples),
            p95_s=percentile(samples, 95),
            min_s=min(samples),
            max_s=max(samples),
            n=len(samples),
            delete=out_delete,
        )
        self.say(
            f"   latency over {len(samples)} samples: p50 {out['p50_s'] * 1000:.0f} ms, "
            f"p95 {out['p95_s'] * 1000:.0f} ms"
        )
        return out

    # -- 7: fair share (issue #13 part 5) ------------------------------------------------------------

    def _lone_create(self, watch: LLMWatch, ns: str, name: str) -> float:
        """One LLM created by itself: seconds from the create request to the watch event that shows it Ready."""
        t0 = time.monotonic()
        self.kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, llm_body(ns, name))
        return watch.wait_ready([name], self.sizes.timeout) - t0

    def fairness(self) -> dict[str, Any]:
        """A lone create in namespace B while namespace A's `fairness` creates converge, against the same lone create
        on an otherwise idle operator (one operator at the defaults for all of it)."""
        s, stack = self.sizes, self.stack
        stack.start_operator("fairness")
        idle_ns = self._namespace("fair-idle")
        idle_watch = LLMWatch(self.kube, idle_ns)
        runs: list[dict[str, Any]] = []
        try:
            time.sleep(1.0)  # idle
            idle: list[float] = []
            for i in range(s.fairness_runs):
                idle.append(self._lone_create(idle_watch, idle_ns, f"lone-{i}"))
                time.sleep(0.3)
            self.created += len(idle)
            self.kube.delete_all_llms(idle_ns)
            idle_watch.wait_gone([f"lone-{i}" for i in range(s.fairness_runs)], s.timeout)
            self.deleted += len(idle)
            self.say(f"   lone create, idle operator: {', '.join(f'{x:.2f}s' for x in idle)}")
            for k in range(s.fairness_runs):
                runs.append(self._fairness_run(k))
            diagnostic = None
            if s.fairness_diagnostic_rps:
                stack.start_operator("fairness-rps", ["--registry-rps", f"{s.fairness_diagnostic_rps:g}"])
                time.sleep(1.0)
                diagnostic = self._fairness_run(s.fairness_runs)
                diagnostic["rps"] = s.fairness_diagnostic_rps
        finally:
            idle_watch.stop()
            stack.stop_operator()
        loaded = [r["lone_s"] for r in runs]
        return {
            "n": s.fairness,
            "runs": runs,
            "idle_s": idle,
            "loaded_s": loaded,
            "diagnostic": diagnostic,
            "idle_median_s": statistics.median(idle),
            "loaded_median_s": statistics.median(loaded),
            "delay_median_s": statistics.median(loaded) - statistics.median(idle),
        }

    def _lone_timeline(self, audit_offset: int, ns: str, t0_epoch: float) -> list[dict[str, Any]]:
        """Where B's create spent its time: each API-server write of the operator's on B's object (audit log: received
        and completed) and the registry POST (emulator), in seconds after the harness sent B's create."""
        from datetime import datetime

        stack = self.stack
        assert stack.cp is not None and stack.emu is not None
        out: list[dict[str, Any]] = []

        def rel(stamp: str) -> float:
            return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - t0_epoch, 3)

        with open(stack.cp.audit_log_path, "rb") as f:
            f.seek(audit_offset)
            data = f.read()
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ref = ev.get("objectRef") or {}
            if (
                ev.get("stage") != "ResponseComplete"
                or ref.get("namespace") != ns
                or ev.get("user", {}).get("username") != OPERATOR_USER
                or ev.get("verb") not in WRITE_VERBS
            ):
                continue
            what = f"{ev['verb']} {ref.get('resource', '?')}" + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            out.append(
                {"what": what, "received_s": rel(ev["requestReceivedTimestamp"]), "done_s": rel(ev["stageTimestamp"])}
            )
        since_ms = int(t0_epoch * 1000) - 1
        for e in stack.emu.stats()["log"]:
            body = e.get("body")
            if (
                e.get("method") == "POST"
                and e.get("ts", 0) >= since_ms
                and isinstance(body, dict)
                and f".{ns}." in str(body.get("endpointUrl", ""))
            ):
                out.append({"what": "registry POST", "received_s": None, "done_s": round(e["ts"] / 1000 - t0_epoch, 3)})
        return sorted(out, key=lambda x: x["done_s"])

    def _fairness_run(self, k: int) -> dict[str, Any]:
        s = self.sizes
        n = s.fairness
        a_ns, b_ns = self._namespace(f"fair-a{k + 1}"), self._namespace(f"fair-b{k + 1}")
        a_watch, b_watch = LLMWatch(self.kube, a_ns), LLMWatch(self.kube, b_ns)
        names = [f"bulk-{i:05d}" for i in range(n)]
        applied: dict[str, Any] = {}

        def apply_a() -> None:
            try:
                applied["s"] = self.kube.create_llms(a_ns, [llm_body(a_ns, x) for x in names])
            except BaseException as exc:
                applied["error"] = exc

        try:
            w = self._window()
            t0 = time.monotonic()
            applier = threading.Thread(target=apply_a, name="apply-a", daemon=True)
            applier.start()
            # B creates once A's convergence is in full swing: a quarter of A Ready, three quarters still to go.
            trigger = max(1, n // 4)
            a_watch.wait(
                lambda x: sum(i.ready for i in x.items.values()) >= trigger, s.timeout, f"{trigger} LLMs Ready"
            )
            a_ready_at_b_create = a_watch.ready_count()
            b_created_epoch = time.time()
            lone_s = self._lone_create(b_watch, b_ns, "lone")
            b_ready_at = b_watch.items["lone"].ready_at or 0.0
            a_ready_at_b_ready = a_watch.ready_count(at=b_ready_at)
            applier.join()
            if "error" in applied:
                raise applied["error"]
            a_converge_s = a_watch.wait_ready(names, s.timeout) - t0
            self._settle()
            timeline = self._lone_timeline(w["audit"], b_ns, b_created_epoch)
            window = self._close(w)
            self.created += n + 1
            out_delete = self._delete(a_watch, a_ns, names)
            self.kube.delete_all_llms(b_ns)
            b_watch.wait_gone(["lone"], s.timeout)
            self.deleted += 1
        finally:
            a_watch.stop()
            b_watch.stop()
        self.say(
            f"   run {k + 1}: lone create in B Ready in {lone_s:.2f}s while A's {n} converged "
            f"(A Ready: {a_ready_at_b_create} at B's create, {a_ready_at_b_ready} at B's Ready; "
            f"all of A in {a_converge_s:.1f}s)"
        )
        return {
            "lone_s": lone_s,
            "timeline": timeline,
            "a_ready_at_b_create": a_ready_at_b_create,
            "a_ready_at_b_ready": a_ready_at_b_ready,
            "a_converge_s": a_converge_s,
            "a_apply_s": applied.get("s"),
            "registry": window["registry"],
            "cpu": window["cpu"],
            "delete": out_delete,
        }

    # -- 6: memory --------------------------------------------------------------------------------

    def _fresh_operator_rss(self, tag: str, n_llms: int) -> dict[str, Any]:
        """Restart the operator; after its resume pass over `n_llms` LLMs and a quiet spell, its RSS and peak."""
        stack = self.stack
        before = stack.registry_counts()
        run = stack.start_operator(tag)
        if n_llms:
            self._wait_registry_quiet(n_llms, before)
        else:
            time.sleep(self.sizes.quiet_s)
        t = time.monotonic()
        time.sleep(self.sizes.sample_s)
        assert stack.sampler is not None
        return {
            "tag": tag,
            "llms": n_llms,
            "pid": run.pid,
            "rss_mb": round(stack.sampler.mean_kb(since=t) / 1024, 1),
            "hwm_mb": round(stack.operator_hwm_mb(), 1),
            "startup_s": round(t - run.started, 1),
        }

    def memory(self) -> dict[str, Any]:
        s, stack = self.sizes, self.stack
        ns = self._namespace("mem")
        points: list[dict[str, Any]] = []
        out: dict[str, Any] = {"points": points}
        watch = LLMWatch(self.kube, ns)
        try:
            point = self._fresh_operator_rss("mem-0", 0)
            point["secrets"] = 0
            points.append(point)
            have = 0
            for target in s.memory_llms:
                names = [f"mem-{i:05d}" for i in range(have, target)]
                w = self._window()
                t0 = time.monotonic()
                self.kube.create_llms(ns, [llm_body(ns, x) for x in names])
                last = watch.wait_ready(names, s.timeout)
                self._settle()
                conv = self._close(w)
                self.created += len(names)
                have = target
                converging = stack.stop_operator()
                point = self._fresh_operator_rss(f"mem-{target}", target)
                point.update(
                    secrets=0,
                    added=len(names),
                    converge_s=round(last - t0, 2),
                    converging_hwm_mb=round(converging.hwm_mb, 1) if converging else None,
                    registry=conv["registry"],
                )
                points.append(point)
                self.say(
                    f"   {target} LLMs: fresh operator RSS {point['rss_mb']} MB, peak {point['hwm_mb']} MB "
                    f"(the one that converged the last {len(names)}: peak {point['converging_hwm_mb']} MB)"
                )
                if target == s.memory_secrets_at:
                    out["secrets"] = self._unrelated_secrets(target)
                    points.append(out["secrets"]["fresh"])
        finally:
            watch.stop()
            stack.stop_operator()
        return out

    def _unrelated_secrets(self, n_llms: int) -> dict[str, Any]:
        """Add unrelated Secrets while the operator runs, then restart it with them in place; then remove them."""
        s, stack = self.sizes, self.stack
        per_ns = 1000
        namespaces = [self._namespace("noise") for _ in range(max(1, math.ceil(s.unrelated_secrets / per_ns)))]
        w = self._window()
        t0 = time.monotonic()
        made = 0
        for ns in namespaces:
            count = min(per_ns, s.unrelated_secrets - made)
            # Not labelled goodmem.ai/credentials=true, like a cluster's other Secrets: the operator's Secret watch
            # selects them away server-side. (Before that selector, every one of them reached the operator.)
            bodies = [
                secret_body(f"noise-{i:05d}", {"token": uuid.uuid4().hex, "user": f"svc-{i}"}, {"app": "unrelated"})
                for i in range(count)
            ]
            self.kube.create_secrets(ns, bodies)
            made += count
        create_s = time.monotonic() - t0
        self._settle()
        churn = self._close(w)
        running_hwm = round(stack.operator_hwm_mb(), 1)
        running_rss = round(stack.operator_rss_mb(), 1)
        stack.stop_operator()
        fresh = self._fresh_operator_rss(f"mem-{n_llms}-secrets", n_llms)
        fresh.update(secrets=made)
        churn_calls = sum(churn["registry_raw"].get(k, 0) for k in churn["registry_raw"] if not k.startswith("status "))
        self.say(
            f"   {n_llms} LLMs + {made} unrelated Secrets: fresh operator RSS {fresh['rss_mb']} MB, peak "
            f"{fresh['hwm_mb']} MB; while they were created: RSS {running_rss} MB, peak {running_hwm} MB; "
            f"registry calls during the Secret churn {churn_calls}"
        )
        for ns in namespaces:  # the fresh operator keeps running: it sees them go, and converges the next step
            self.kube.delete_all_secrets(ns)
        return {
            "n": made,
            "create_s": round(create_s, 1),
            "churn_registry": churn["registry"],
            "churn_api_writes": churn["api_writes"],
            "running_rss_mb": running_rss,
            "running_hwm_mb": running_hwm,
            "fresh": fresh,
        }

    # -- 2: calls per change, over the whole run ----------------------------------------------------

    def _calls_summary(self) -> dict[str, Any]:
        """Whole run: the emulator's counters minus the floor's; the operator's writes in the whole audit log."""
        registry_total = Counter(delta(self.stack.registry_counts(), self.floor_registry))
        api_writes_total = self.stack.audit_since(0)["writes"]
        reg = registry_summary(dict(registry_total))
        runs = self.results["convergence"]["runs"]
        create_writes = Counter()
        for r in runs:
            create_writes.update(r["create"]["api_writes"])
        n = sum(r["n"] for r in runs)
        lat = self.results["latency"]
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "rotated": self.rotated,
            "registry_total": reg,
            "registry_raw": dict(registry_total),
            "api_writes_total": dict(api_writes_total),
            "api_writes_per_create_at_scale": sum(create_writes.values()) / n if n else 0.0,
            "api_writes_per_create_breakdown": {k: v / n for k, v in sorted(create_writes.items())},
            "api_writes_per_create_idle": sum(lat["api_writes"].values()) / lat["n"],
            "api_writes_per_create_idle_breakdown": {k: v / lat["n"] for k, v in sorted(lat["api_writes"].items())},
        }

    # -- profiling (optional; py-spy must be installed in the venv) ----------------------------------

    def _start_profiler(self, tag: str) -> subprocess.Popen[bytes] | None:
        if self.profile_dir is None or self.stack.op is None:
            return None
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if exe is None:
            self.say("   (py-spy not found: no profile)")
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"operator-{tag}.collapsed"
        proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.stack.op.pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        proc.output_path = out  # type: ignore[attr-defined]
        time.sleep(0.5)
        return proc

    def _stop_profiler(self, proc: subprocess.Popen[bytes]) -> str:
        import signal

        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return str(proc.output_path)  # type: ignore[attr-defined]


def run_bench(
    sizes: Sizes = SMOKE,
    *,
    log: Callable[[str], None] = print,
    keep_dir: Path | None = None,
    profile_dir: Path | None = None,
    only: str | None = None,
) -> dict[str, Any]:
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
