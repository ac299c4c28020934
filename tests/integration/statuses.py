"""Real LLM objects, with the status the operator really writes, for every condition reason.

Each scenario runs the operator's own `Reconciler` (and, for deletion, its kopf `release` handler)
against the in-process registry emulator with faults, and applies each Outcome's status delta the
way the API server stores it (a JSON merge patch: None removes the key). The Argo CD health check
(tests/unit/test_argocd_health.py) and the kstatus test (tests/integration/test_kstatus.py) judge
these objects, so neither tests a hand-written status.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import kopf

from goodmem_emulator import Emulator
from goodmem_operator.handlers import Memo, Runtime, build_registry
from goodmem_operator.reconcile import LLMObject, Outcome, Reconciler, ReconcileSettings
from goodmem_operator.registry import RegistryClient
from goodmem_operator.secrets import SecretCache

from .conftest import ADMIN_KEY, API_KEY, FakeSecrets, make_llm

SECRET_REF = {"apiKey": {"secretKeyRef": {"name": "key", "key": "api-key"}}}


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies the operator's status patches."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stored(obj: LLMObject, outcome: Outcome) -> LLMObject:
    """`obj` once the outcome's status delta is written."""
    return LLMObject(**{**obj.__dict__, "status": merge_patch(obj.status, outcome.status_patch(obj.status))})


def body(obj: LLMObject, *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": obj.name,
        "namespace": obj.namespace,
        "uid": obj.uid,
        "generation": obj.generation,
        "annotations": dict(obj.annotations),
    }
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        meta["finalizers"] = ["goodmem.ai/finalizer"]
    out: dict[str, Any] = {"apiVersion": "goodmem.ai/v1alpha1", "kind": "LLM", "metadata": meta, "spec": obj.spec}
    if obj.status:
        out["status"] = obj.status
    return out


def _edited(obj: LLMObject, **spec: Any) -> LLMObject:
    return LLMObject(**{**obj.__dict__, "spec": {**obj.spec, **spec}, "generation": obj.generation + 1})


def _paused(obj: LLMObject) -> LLMObject:
    return LLMObject(**{**obj.__dict__, "annotations": {**obj.annotations, "goodmem.ai/paused": "true"}})


def _llm(name: str, spec: dict[str, Any] | None = None) -> LLMObject:
    # A distinct endpoint per scenario, so no two collide in the registry unless meant to.
    base = {"endpointUrl": f"https://{name}.example.test/v1", "modelIdentifier": f"model-{name}"}
    return make_llm({**base, **(spec or {})}, name=name, uid=str(uuid.uuid4()))


async def _collect() -> dict[str, dict[str, Any]]:
    emu = Emulator(api_keys=[API_KEY], admin_keys=[ADMIN_KEY])
    await emu.start("127.0.0.1", 0)
    registry = RegistryClient(emu.base_url, API_KEY, timeout=5.0)
    secrets = FakeSecrets()
    rec = Reconciler(registry, secrets, ReconcileSettings(cluster_name="it", fingerprint_key=b"k", backoff_base=0.01))
    out: dict[str, dict[str, Any]] = {}

    async def run(obj: LLMObject, **faults: Any) -> LLMObject:
        if faults:
            emu.set_faults(**faults)
        try:
            return stored(obj, await rec.reconcile(obj))
        finally:
            emu.clear_faults()

    try:
        out["fresh"] = body(_llm("fresh"))  # created, the operator has not written anything yet

        available = await run(_llm("available"))
        out["available"] = body(available)
        out["spec-edited"] = body(_edited(available, description="edited, not yet seen by the operator"))

        out["creating"] = body(await run(_llm("creating"), outage=True))
        out["registry-unavailable"] = body(await run(_edited(await run(_llm("regdown")), description="x"), outage=True))
        out["rate-limited"] = body(await run(_llm("ratelimited"), rateLimit={"retryAfter": 7}))
        out["unauthorized"] = body(await run(_llm("unauth"), errorRate=1.0, errorStatus=401))
        out["forbidden"] = body(await run(_llm("forbidden"), errorRate=1.0, errorStatus=403))
        out["invalid-spec"] = body(await run(_llm("invalid"), errorRate=1.0, errorStatus=400))
        out["invalid-spec-after-create"] = body(
            await run(_edited(await run(_llm("invalid2")), description="y"), errorRate=1.0, errorStatus=400)
        )

        # A registry behind a gateway that redirects (never followed: retried, Ready=False).
        out["unexpected-response"] = body(
            await run(_edited(await run(_llm("redirect")), description="r"), errorRate=1.0, errorStatus=301)
        )
        # A status.llmId that is not a UUID (written by hand): refused before any request, not retried.
        tampered = await run(_llm("badid"))
        tampered = LLMObject(**{**tampered.__dict__, "status": {**tampered.status, "llmId": "../../_emulator/faults"}})
        out["invalid-llm-id"] = body(await run(_edited(tampered, description="b")))

        first = await run(_llm("dup"))
        twin = make_llm({**first.spec}, name="dup-twin", uid=str(uuid.uuid4()))
        out["already-exists"] = body(await run(twin))
        out["conflict"] = body(await run(_llm("conflict", {"llmId": first.status["llmId"]})))
        watch = {"managementPolicy": "ObserveOnly", "llmId": first.status["llmId"]}
        out["observe-only"] = body(await run(make_llm(watch, name="observer", uid=str(uuid.uuid4()))))
        # ObserveOnly with the fields to manage, one differing from the entry: UpToDate=False (issue #17).
        pending = {**first.spec, **watch, "description": "not what the registry holds"}
        out["observe-only-pending"] = body(await run(make_llm(pending, name="observer3", uid=str(uuid.uuid4()))))
        dry = _llm("dryrun")
        dry = LLMObject(**{**dry.__dict__, "annotations": {"goodmem.ai/dry-run": "true"}})
        out["dry-run"] = body(await run(dry))
        missing = {"managementPolicy": "ObserveOnly", "llmId": str(uuid.uuid4())}
        out["observe-only-missing"] = body(await run(make_llm(missing, name="observer2", uid=str(uuid.uuid4()))))

        out["secret-not-found"] = body(await run(_llm("nosecret", {"credentials": SECRET_REF})))
        secrets.data[("ns1", "key")] = {"other-key": "v"}
        out["secret-key-not-found"] = body(await run(_llm("nokey", {"credentials": SECRET_REF})))
        secrets.data[("ns1", "plain")] = {"api-key": "v"}
        secrets.unlabelled.add(("ns1", "plain"))  # not labelled goodmem.ai/credentials=true
        plain = {"apiKey": {"secretKeyRef": {"name": "plain", "key": "api-key"}}}
        out["secret-not-labelled"] = body(await run(_llm("nolabel", {"credentials": plain})))
        cross = {"apiKey": {"secretKeyRef": {"name": "key", "key": "api-key", "namespace": "elsewhere"}}}
        out["secret-not-allowed"] = body(await run(_llm("crossns", {"credentials": cross})))

        out["paused-before-sync"] = body(await run(_paused(_llm("paused0"))))
        out["paused-after-sync"] = body(await run(_paused(await run(_llm("paused1")))))
        out["paused-and-edited"] = body(await run(_edited(_paused(await run(_llm("paused2"))), description="z")))

        out["deleting"] = body(await _deleting(emu, rec, await run(_llm("deleting"))), deleting=True)
    finally:
        await registry.aclose()
        await emu.stop()
    return out


async def _deleting(emu: Emulator, rec: Reconciler, obj: LLMObject) -> LLMObject:
    """The kopf `release` handler, with the registry down: it keeps the finalizer and writes Deleting."""
    memo = Memo(runtime=Runtime(reconciler=rec, secret_cache=SecretCache(fallback=FakeSecrets()), status_writer=None))
    registry = build_registry()
    [release] = [h for h in registry._changing.get_all_handlers() if h.id == "release"]
    patch = kopf.Patch()
    emu.set_faults(outage=True)
    try:
        await release.fn(body=body(obj, deleting=True), patch=patch, memo=memo)
    except kopf.TemporaryError:
        pass
    else:
        raise AssertionError("the release handler should have kept the finalizer while the registry is down")
    finally:
        emu.clear_faults()
    status = merge_patch(obj.status, dict(patch.get("status") or {}))
    return LLMObject(**{**obj.__dict__, "status": status})


_cache: dict[str, dict[str, Any]] = {}


def real_statuses() -> dict[str, dict[str, Any]]:
    """Scenario name -> the LLM object as the API server would hold it. Computed once per process."""
    if not _cache:
        _cache.update(asyncio.run(_collect()))
    return copy.deepcopy(_cache)
