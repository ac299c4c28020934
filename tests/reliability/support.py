"""Machinery shared by the reliability scenarios (issue #8).

- sizes: reduced by default (CI runs this tier inside `make test`), full with GOODMEM_RELIABILITY_FULL=1
  (`make reliability`);
- `Api`: the Kubernetes API through the Python client (an operation costs milliseconds, not a
  kubectl process), bound to the session's control plane;
- `Traffic`: random creates, updates and deletes of LLMs (seeded; the seed is printed) that keeps the
  desired state it has written, with credentials from a Secret holding the sentinel key;
- `registry_differences` / `converge`: the registry equals the desired state exactly (every live LLM
  Ready at its generation with exactly one entry whose fields match its spec; no duplicates, no orphans,
  no leftovers);
- `leak_scan`: the sentinel must appear nowhere, in any form (tests/leakscan.py): operator log at debug,
  Events, LLM objects and status, registry records (labels included; not the credentials the emulator
  redacts itself), emulator log, API server audit log;
- `write_summary`: a JSON summary per scenario: the full run (`make reliability`) writes the committed
  tests/reliability/results/<scenario>-full.json, from which `python -m tests.reliability.report` writes
  RELIABILITY.md; a reduced run writes build/reliability/<scenario>-reduced.json and never the committed ones.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import kubernetes

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_emulator._validation import credentials_fingerprint, validate_credentials
from goodmem_operator.api.types import GROUP, PLURAL, VERSION
from goodmem_operator.reconcile import derived_llm_id
from tests.conftest import ROOT, SENTINEL
from tests.leakscan import assert_no_leaks, sentinel_forms, without_emulator_redactions

FULL = os.environ.get("GOODMEM_RELIABILITY_FULL") == "1"
MODE = "full" if FULL else "reduced"
#: Where summaries go: the committed results for the full run, build/ (git-ignored) for a reduced one.
COMMITTED_RESULTS = ROOT / "tests" / "reliability" / "results"
RESULTS_DIR = Path(
    os.environ.get("GOODMEM_RELIABILITY_RESULTS") or (COMMITTED_RESULTS if FULL else ROOT / "build" / "reliability")
)
#: time.monotonic() when the running scenario started (set by an autouse fixture in conftest.py).
scenario_started: float | None = None

OWNER_UID = "goodmem.ai/owner-uid"
OWNER = "goodmem.ai/owner"
CLUSTER = "default"  # the session operator's --cluster-name
SECRET_NAME = "llm-key"
SECRET_KEY = "api-key"
CREDENTIALS = {
    "apiKey": {
        "secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY},
        "headerName": "Authorization",
        "prefix": "Bearer ",
    }
}


def sized(reduced: Any, full: Any) -> Any:
    return full if FULL else reduced


def seed_for(scenario: str) -> int:
    """GOODMEM_RELIABILITY_SEED reproduces a run; otherwise a fresh seed (printed, and kept in the summary)."""
    raw = os.environ.get("GOODMEM_RELIABILITY_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**31)
    print(f"\n[{scenario}] seed {seed} (GOODMEM_RELIABILITY_SEED={seed} reproduces the choices)")
    return seed


def write_summary(scenario: str, figures: dict[str, Any]) -> Path:
    from goodmem_devcluster.gobuild import ETCD_VERSION, KUBERNETES_VERSION

    data = {
        "scenario": scenario,
        "mode": MODE,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "kubernetes_version": KUBERNETES_VERSION,
        "etcd_version": ETCD_VERSION,
        "scenario_s": round(time.monotonic() - scenario_started, 1) if scenario_started is not None else None,
        **figures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{scenario}-{MODE}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    print(f"[{scenario}] summary ({path}):\n{json.dumps(data, indent=2)}")
    return path


def registry_rps(op: OperatorProcess) -> float:
    """The operator's --registry-rps (flag, else environment, else the documented default)."""
    args = op.extra_args
    if "--registry-rps" in args:
        return float(args[args.index("--registry-rps") + 1])
    return float(op.extra_env.get("GOODMEM_REGISTRY_RPS") or os.environ.get("GOODMEM_REGISTRY_RPS") or 100)


def expected_fingerprint(secret_value: str) -> str:
    """The registry's credentialsFingerprint for CREDENTIALS with this Secret value (the emulator's own rule)."""
    payload = {
        "kind": "CREDENTIAL_KIND_API_KEY",
        "apiKey": {"inlineSecret": secret_value, "headerName": "Authorization", "prefix": "Bearer "},
    }
    return credentials_fingerprint(validate_credentials(payload))


# --- the Kubernetes API ---------------------------------------------------------------------------------


class Api:
    """The Kubernetes API with the Python client (admin kubeconfig of the session's control plane)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.client = kubernetes.config.new_client_from_config(
            config_file=str(cp.kubeconfig_path), persist_config=False
        )
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def llms(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])

    def create_llm(
        self, namespace: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LLM",
            "metadata": {"name": name, **({"annotations": annotations} if annotations else {})},
            "spec": spec,
        }
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body))

    def patch_spec(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec_patch})
        )

    def delete_llm(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"goodmem.ai/credentials": "true"}},
            "stringData": data,
        }
        try:
            self.core.create_namespaced_secret(namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            # Replace the data wholesale (stringData merges into data; drop keys no longer wanted).
            self.core.patch_namespaced_secret(name, namespace, {"data": None, "stringData": data})

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return [self.client.sanitize_for_serialization(e) for e in self.core.list_namespaced_event(namespace).items]


def ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)


def is_ready_at_generation(obj: dict[str, Any]) -> bool:
    cond = ready(obj)
    gen = obj["metadata"].get("generation")
    return bool(
        cond
        and cond["status"] == "True"
        and cond.get("observedGeneration") == gen
        and (obj.get("status") or {}).get("observedGeneration") == gen
    )


# --- traffic --------------------------------------------------------------------------------------------

PROVIDERS = ["OPENAI", "LITELLM_PROXY", "OPEN_ROUTER", "VLLM", "CUSTOM_OPENAI_COMPATIBLE"]


class Traffic:
    """Random creates, updates and deletes that remember the desired state they wrote.

    Thread-safe (one lock), so a scenario can drive it from a background thread while it injects faults
    or kills the operator. Every LLM takes its API key from one Secret whose value carries the sentinel.
    """

    def __init__(
        self,
        api: Api,
        namespace: str,
        *,
        seed: int,
        prefix: str = "l",
        weights: tuple[float, float, float] = (0.45, 0.35, 0.20),
        min_live: int = 3,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.weights = weights
        self.min_live = min_live
        self.live: dict[str, dict[str, Any]] = {}  # name -> spec as last written
        self.uids: dict[str, str] = {}  # name -> uid (live and deleted)
        self.deleted: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.ops_on: Counter[str] = Counter()  # name -> operations (create, update, delete)
        self.log: list[tuple[float, str, str]] = []  # (time.time(), kind, name)
        self.secret_value = ""
        self.secret_versions = 0
        self._next = 0
        self._lock = threading.Lock()

    # -- the Secret ----------------------------------------------------------------------------------

    def rotate_secret(self) -> None:
        with self._lock:
            self.secret_versions += 1
            self.secret_value = f"{SENTINEL}-{self.namespace}-v{self.secret_versions}"
            self.api.put_secret(self.namespace, SECRET_NAME, {SECRET_KEY: self.secret_value})
            self.counts["secret-rotations" if self.secret_versions > 1 else "secret-created"] += 1

    # -- operations ----------------------------------------------------------------------------------

    def op(self, kind: str | None = None) -> str:
        """One operation: `kind` (create, update, delete) or a random one."""
        with self._lock:
            if kind is not None:
                pass
            elif len(self.live) < self.min_live:
                kind = "create"
            else:
                kind = self.rng.choices(["create", "update", "delete"], weights=self.weights)[0]
            name = getattr(self, f"_{kind}")()
            self.counts[kind] += 1
            self.ops_on[name] += 1
            self.log.append((time.time(), kind, name))
            return kind

    def run(self, count: int, seconds: float, stop: threading.Event | None = None) -> int:
        """`count` operations evenly spread over `seconds`; returns how many ran."""
        done = 0
        start = time.monotonic()
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            self.op()
            done += 1
            pause = start + (i + 1) * seconds / max(count, 1) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return done

    def _spec(self, name: str) -> dict[str, Any]:
        r = self.rng
        return {
            "displayName": f"LLM {name}",
            "description": f"rev 0 of {name}",
            "providerType": r.choice(PROVIDERS),
            "endpointUrl": f"https://{name}.{self.namespace}.models.example.test/v1",
            "modelIdentifier": f"model-{name}",
            "labels": {"scenario": self.prefix, "rev": "0"},
            "clientConfig": {"rev": 0, "nested": {"pool": r.randint(1, 8)}},
            "defaultSamplingParams": {"temperature": round(r.uniform(0, 2), 2), "maxTokens": r.randint(1, 4096)},
            "maxContextLength": r.randint(1024, 200_000),
            "credentials": json.loads(json.dumps(CREDENTIALS)),
        }

    def _create(self) -> str:
        name = f"{self.prefix}-{self._next}"
        self._next += 1
        spec = self._spec(name)
        created = self.api.create_llm(self.namespace, name, spec)
        self.live[name] = spec
        self.uids[name] = created["metadata"]["uid"]
        return name

    def _update(self) -> str:
        name = self.rng.choice(sorted(self.live))
        spec = self.live[name]
        rev = int(spec["labels"]["rev"]) + 1
        field = self.rng.choice(
            ["description", "labels", "clientConfig", "defaultSamplingParams", "maxContextLength", "displayName"]
        )
        patch: dict[str, Any]
        if field == "description":
            patch = {"description": f"rev {rev} of {name}"}
        elif field == "labels":
            new = {k: v for k, v in spec["labels"].items() if k in ("scenario", "rev")}
            if self.rng.random() < 0.5:
                new[f"k{rev}"] = f"v{rev}"
            # a merge patch removes a key with null
            patch = {"labels": {**{k: None for k in spec["labels"] if k not in new}, **new}}
        elif field == "clientConfig":
            new_cc = {"rev": rev, "nested": {"pool": self.rng.randint(1, 8)}}  # same keys: merge = replace
            patch = {"clientConfig": new_cc}
        elif field == "defaultSamplingParams":
            patch = {"defaultSamplingParams": {"temperature": round(self.rng.uniform(0, 2), 2)}}
        elif field == "maxContextLength":
            patch = {"maxContextLength": self.rng.randint(1024, 200_000)}
        else:
            patch = {"displayName": f"LLM {name} rev {rev}"}
        patch.setdefault("labels", {})
        patch["labels"] = {**patch["labels"], "rev": str(rev)}
        obj = self.api.patch_spec(self.namespace, name, patch)
        self.live[name] = obj["spec"]  # what the API server holds now (merge semantics applied by it)
        return name

    def _delete(self) -> str:
        name = self.rng.choice(sorted(self.live))
        self.api.delete_llm(self.namespace, name)
        del self.live[name]
        self.deleted.add(name)
        return name

    # -- looking back --------------------------------------------------------------------------------

    def ops_between(self, start: float, end: float) -> Counter[str]:
        """Operations per LLM name with time.time() in [start, end)."""
        return Counter(name for ts, _kind, name in self.log if start <= ts < end)

    def name_of_id(self) -> dict[str, str]:
        """Registry id -> LLM name, for every LLM this traffic ever created."""
        return {derived_llm_id(uid): name for name, uid in self.uids.items()}


# --- the registry equals the desired state --------------------------------------------------------------


def _owned_by(record: dict[str, Any], namespace: str) -> bool:
    return (record.get("labels") or {}).get(OWNER, "").startswith(f"{CLUSTER}/{namespace}/")


def registry_differences(records: list[dict[str, Any]], objs: list[dict[str, Any]], traffic: Traffic) -> list[str]:
    """Every way the registry differs from the desired state of `traffic` (empty: equal, exactly)."""
    ns = traffic.namespace
    problems: list[str] = []
    names = {o["metadata"]["name"] for o in objs}
    if names != set(traffic.live):
        problems.append(
            f"LLM objects {sorted(names ^ set(traffic.live))} differ from the desired set (missing or not yet deleted)"
        )
    mine = [r for r in records if _owned_by(r, ns) or f".{ns}.models.example.test" in r.get("endpointUrl", "")]
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        by_uid.setdefault((r.get("labels") or {}).get(OWNER_UID, "<none>"), []).append(r)
    fp = expected_fingerprint(traffic.secret_value)
    for obj in objs:
        name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
        if name not in traffic.live:
            continue
        if not is_ready_at_generation(obj):
            problems.append(f"{name}: not Ready at generation {obj['metadata'].get('generation')}: {ready(obj)}")
        recs = by_uid.pop(uid, [])
        if len(recs) != 1:
            problems.append(f"{name}: {len(recs)} registry entries (want exactly 1)")
            continue
        problems += _entry_problems(obj, recs[0], traffic.live[name], ns, fp)
    for uid, recs in by_uid.items():
        who = [r.get("labels", {}).get(OWNER, r.get("displayName")) for r in recs]
        problems.append(f"orphan/leftover entries (owner uid {uid}) with no live LLM: {who}")
    return problems


def _entry_problems(obj: dict[str, Any], rec: dict[str, Any], spec: dict[str, Any], ns: str, fp: str) -> list[str]:
    """How one live LLM's single registry entry differs from what its written spec asks for."""
    name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
    problems: list[str] = []
    if spec != obj["spec"]:
        problems.append(f"{name}: the API server holds a spec other than the one written")
    if rec["llmId"] != derived_llm_id(uid) or (obj.get("status") or {}).get("llmId") != rec["llmId"]:
        problems.append(f"{name}: entry id {rec['llmId']} is not the one derived from its UID / in status")
    want_labels = {**spec.get("labels", {}), OWNER_UID: uid, OWNER: f"{CLUSTER}/{ns}/{name}"}
    want = {
        k: spec[k]
        for k in (
            "displayName",
            "description",
            "providerType",
            "endpointUrl",
            "modelIdentifier",
            "maxContextLength",
            "clientConfig",
        )
        if k in spec
    }
    have = {k: rec.get(k) for k in want}
    if have != want:
        problems.append(f"{name}: fields differ: want {want}, registry {have}")
    if rec.get("labels") != want_labels:
        problems.append(f"{name}: labels differ: want {want_labels}, registry {rec.get('labels')}")
    sampling = {k: (rec.get("defaultSamplingParams") or {}).get(k) for k in spec.get("defaultSamplingParams", {})}
    if sampling != spec.get("defaultSamplingParams", {}):
        problems.append(
            f"{name}: defaultSamplingParams differ: want {spec.get('defaultSamplingParams')}, "
            f"registry {rec.get('defaultSamplingParams')}"
        )
    if rec.get("credentialsFingerprint") != fp:
        problems.append(f"{name}: registry credentials are not the current Secret value")
    return problems


def converge(
    api: Api, emulator: EmulatorProcess, traffic: Traffic, timeout: float, alive: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Wait until the registry equals the desired state exactly; return figures (seconds, objects checked)."""
    start = time.monotonic()
    problems: list[str] = ["not checked yet"]
    while time.monotonic() - start < timeout:
        if alive is not None:
            assert alive(), "the operator process died"
        objs = api.llms(traffic.namespace)
        problems = registry_differences(emulator.records(), objs, traffic)
        if not problems:
            return {
                "converged_after_s": round(time.monotonic() - start, 1),
                "objects_checked": len(objs),
                "registry_entries_checked": len(objs),
            }
        time.sleep(1.0)
    shown = "\n  ".join(problems[:25])
    raise AssertionError(f"not converged after {timeout:.0f}s ({len(problems)} differences):\n  {shown}")


# --- the sentinel leak scan -----------------------------------------------------------------------------


def leak_scan(
    *,
    operator: OperatorProcess,
    emulator: EmulatorProcess,
    api: Api,
    control_plane: ControlPlane,
    namespaces: Iterable[str],
    sentinel: str = SENTINEL,
) -> dict[str, Any]:
    """Look for the sentinel (plain, JSON-escaped, base64: tests/leakscan.py) everywhere it must never be;
    return the figures (leaks must be 0).

    The registry record view is scanned without its `credentials`, which the emulator redacts itself: those
    bytes could never hold the sentinel whatever the operator does, so they are neither scanned nor counted.
    """
    namespaces = list(namespaces)
    records = [without_emulator_redactions(r) for r in emulator.records()]
    places: dict[str, str] = {
        "operator log (debug)": operator.log_text(),
        "Events": json.dumps([api.events(ns) for ns in namespaces]),
        "LLM objects and status": json.dumps([api.llms(ns) for ns in namespaces]),
        "registry records (test view, credentials left out)": json.dumps(records),
        "emulator log": emulator.log_path.read_text(errors="replace"),
        "API server audit log": control_plane.audit_log_path.read_text(errors="replace")
        if control_plane.audit_log_path.exists()
        else "",
    }
    assert "[DEBUG   ]" in places["operator log (debug)"], "the scan must cover debug-level logs"
    result = assert_no_leaks(places, sentinel)
    return {"leak_scan": {**result.figures(), "forms": sorted(sentinel_forms(sentinel))}}


def peak_per_second(timestamps_ms: list[int], window_ms: int = 1000) -> int:
    """The largest number of timestamps in any window of `window_ms` (sliding, not aligned to seconds)."""
    ts = sorted(timestamps_ms)
    best = lo = 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
