"""The harness's side of the API server: manifests, bulk creates and deletes, and a watch that times Ready."""

from __future__ import annotations

import concurrent.futures
import math
import random
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.watch
from kubernetes.client.rest import ApiException

from bench.sizes import GROUP, PLURAL, VERSION, BenchError
from goodmem_devcluster import ControlPlane

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

    def create_llms_across(self, items: list[tuple[str, dict[str, Any]]]) -> float:
        """Create LLMs in several namespaces at once (`(namespace, body)` pairs, sent in the given order)."""
        return self._bulk(
            lambda nb: self._drain(
                self.custom().create_namespaced_custom_object(
                    GROUP, VERSION, nb[0], PLURAL, nb[1], _preload_content=False
                )
            ),
            items,
        )

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
    failed: bool = False  # Ready=False observed for its current generation (a failed attempt, not yet healed)
    reason: str | None = None  # while failed: the Synced condition's reason (Ready says Creating), else Ready's


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
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        cond = conds.get("Ready") or {}
        current = item.observed_generation == item.generation
        ready = cond.get("status") == "True" and current
        item.failed = cond.get("status") == "False" and current
        item.reason = (conds.get("Synced") or {}).get("reason") if item.failed else cond.get("reason")
        item.reason = item.reason or cond.get("reason")
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
