"""kopf glue: wire Kubernetes events to the one reconcile, and apply its outcome.

Nothing here decides anything about the registry: every path (create,
resume, update, the drift timer, Secret events) calls `Reconciler.reconcile`
and applies the returned `Outcome` (status delta, events, retry delay).
Handlers are registered on a registry built from the operator's `Config`, so
intervals and names come from configuration, not from import-time globals.
"""

from __future__ import annotations

import asyncio
import random
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from goodmem_operator.api.types import GROUP, PLURAL, VERSION
from goodmem_operator.reconcile import Event, LLMObject, Outcome, Reconciler, RetryLater
from goodmem_operator.secrets import SecretCache

log = logging.getLogger("goodmem_operator.handlers")

FINALIZER = "goodmem.ai/finalizer"
ANNOTATION_PREFIX = "goodmem.ai"


@dataclass
class Runtime:
    """What the handlers share; built by main at startup."""

    reconciler: Reconciler
    secret_cache: SecretCache
    status_writer: Any  # async (namespace, name, status_patch) -> None, for paths outside kopf's own patch
    drift_interval: float = 600.0
    metrics: Any = None
    _retries: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)


def _secret_key(spec: Any, namespace: str) -> tuple[str, str] | None:
    ref = (((spec or {}).get("credentials") or {}).get("apiKey") or {}).get("secretKeyRef") or {}
    if not ref.get("name"):
        return None
    return (ref.get("namespace") or namespace, ref["name"])


def _post(body: Any, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def apply_outcome(outcome: Outcome, body: Any, patch: kopf.Patch) -> None:
    delta = outcome.status_patch(dict(body.get("status") or {}))
    for key, value in delta.items():
        patch.status[key] = value
    _post(body, outcome.events)


def build_registry(runtime_ref: dict[str, Runtime], *, drift_interval: float) -> kopf.OperatorRegistry:
    """All handlers, on a registry of their own.  `runtime_ref['rt']` is filled at startup."""
    registry = kopf.OperatorRegistry()

    def rt() -> Runtime:
        return runtime_ref["rt"]

    def record(outcome: Outcome, trigger: str) -> None:
        if rt().metrics is not None:
            rt().metrics.reconciled(trigger, outcome)

    # -- indexes: who uses which Secret, and the latest LLM bodies for Secret-driven reconciles --

    @kopf.index(GROUP, VERSION, PLURAL, id="llms_by_secret", registry=registry)
    def llms_by_secret(namespace: str, name: str, spec: Any, **_: Any) -> dict[tuple[str, str], str] | None:
        key = _secret_key(spec, namespace)
        return {key: name} if key and key[0] == namespace else None

    @kopf.index(GROUP, VERSION, PLURAL, id="llm_bodies", registry=registry)
    def llm_bodies(namespace: str, name: str, body: Any, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        meta = body.get("metadata") or {}
        return {
            (namespace, name): {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "metadata": {
                    k: meta.get(k)
                    for k in ("name", "namespace", "uid", "generation", "annotations", "resourceVersion", "deletionTimestamp")
                },
                "spec": dict(body.get("spec") or {}),
                "status": dict(body.get("status") or {}),
            }
        }

    # -- the LLM lifecycle ---------------------------------------------------------------------

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile_llm(body: Any, patch: kopf.Patch, reason: str, **_: Any) -> None:
        outcome = await rt().reconciler.reconcile(LLMObject.from_body(body), trigger=str(reason))
        apply_outcome(outcome, body, patch)
        record(outcome, str(reason))
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(_retry_message(outcome), delay=outcome.retry_after)

    @kopf.timer(
        GROUP, VERSION, PLURAL, id="drift", interval=drift_interval,
        initial_delay=lambda **_: drift_interval * random.uniform(0.5, 1.0),  # jitter: not all at once
        registry=registry,
    )
    async def observe_drift(body: Any, patch: kopf.Patch, **_: Any) -> None:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        outcome = await rt().reconciler.reconcile(LLMObject.from_body(body), trigger="drift")
        apply_outcome(outcome, body, patch)
        record(outcome, "drift")

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="release", registry=registry)
    async def release_llm(body: Any, patch: kopf.Patch, **_: Any) -> None:
        obj = LLMObject.from_body(body)
        try:
            events = await rt().reconciler.finalize(obj)
        except RetryLater as exc:
            patch.status["conditions"] = [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Deleting",
                    "message": f"{exc} (retrying in {exc.delay:g}s)",
                    "lastTransitionTime": _now(),
                    "observedGeneration": obj.generation,
                },
            ]
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
        _post(body, events)

    # -- Secrets: events only (no create/update handlers, so nothing is ever written to a Secret) --

    @kopf.on.event("", "v1", "secrets", id="secret-changed", registry=registry)
    async def secret_changed(
        event: Any, namespace: str, name: str, body: Any, llms_by_secret: kopf.Index, llm_bodies: kopf.Index, **_: Any
    ) -> None:
        users = sorted(set(llms_by_secret.get((namespace, name), [])))
        cache = rt().secret_cache
        before = await _peek(cache, namespace, name) if users else None
        kind = event.get("type")
        cache.observe(namespace, name, body, deleted=kind == "DELETED", referenced=bool(users))
        if not users or kind is None:  # unrelated, or the initial listing (resume handlers cover those)
            return
        after = await _peek(cache, namespace, name)
        if kind != "DELETED" and before == after:
            return
        for llm_name in users:
            await _reconcile_from_index(rt(), llm_bodies, namespace, llm_name, trigger="secret")

    return registry


async def _peek(cache: SecretCache, namespace: str, name: str) -> Any:
    entry = cache._entries.get((namespace, name))  # noqa: SLF001 - same layer, read-only look
    return None if entry is None else entry.data


async def _reconcile_from_index(rt: Runtime, llm_bodies: kopf.Index, namespace: str, name: str, *, trigger: str) -> None:
    """Reconcile an LLM outside kopf's handler machinery (a Secret changed) and write its status."""
    bodies = list(llm_bodies.get((namespace, name), []))
    if not bodies:
        return
    body = bodies[0]
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    outcome = await rt.reconciler.reconcile(LLMObject.from_body(body), trigger=trigger)
    if rt.metrics is not None:
        rt.metrics.reconciled(trigger, outcome)
    delta = outcome.status_patch(dict(body.get("status") or {}))
    if delta:
        try:
            await rt.status_writer(namespace, name, delta)
        except Exception as exc:  # noqa: BLE001 - status is best effort here; the next reconcile rewrites it
            log.warning("%s/%s: could not write status: %s", namespace, name, type(exc).__name__)
    _post(body, outcome.events)
    key = (namespace, name)
    pending = rt._retries.pop(key, None)
    if pending is not None and pending is not asyncio.current_task():
        pending.cancel()
    if outcome.retry_after is not None:

        async def later() -> None:
            await asyncio.sleep(outcome.retry_after or 0)
            rt._retries.pop(key, None)
            await _reconcile_from_index(rt, llm_bodies, namespace, name, trigger=trigger)

        rt._retries[key] = asyncio.create_task(later())


def _retry_message(outcome: Outcome) -> str:
    synced = next((c for c in outcome.status.get("conditions", []) if c.get("type") == "Synced"), {})
    return f"{synced.get('reason', 'Error')}: {synced.get('message', '')}"


def _now() -> str:
    from goodmem_operator.conditions import now

    return now()
