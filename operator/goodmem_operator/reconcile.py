"""The reconcile of an `LLM`: the engine (engine.py) driving the LLM's external client (llm.py).

`Reconciler.reconcile` is idempotent and level-triggered: whatever called it (create, update or resume
handler, the drift timer, a Secret event), it reads the spec, resolves credentials, observes the entry by
its id, and creates or updates only what differs. It returns an `Outcome` (the status to write, the events
to post, when to try again); the kopf glue applies it. It never raises for registry or Secret problems:
those become conditions. `Reconciler.finalize` applies the deletion policy.

This module only wires the two together and keeps the settings and names the rest of the operator uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from goodmem_operator.connections import Router
from goodmem_operator.engine import (
    PAUSED_ANNOTATION,
    Engine,
    EngineSettings,
    Event,
    Outcome,
    Result,
    RetryLater,
    Trigger,
)
from goodmem_operator.llm import INHERITED, LLMClient, LLMObject, LLMSettings
from goodmem_operator.registry import RegistryClient
from goodmem_operator.secrets import SecretReader
from goodmem_operator.trust import derived_llm_id

__all__ = [
    "INHERITED",
    "PAUSED_ANNOTATION",
    "Event",
    "LLMObject",
    "Outcome",
    "ReconcileSettings",
    "Reconciler",
    "Result",
    "RetryLater",
    "Trigger",
    "derived_llm_id",  # re-exported: tests and tools compute an LLM's entry id from here
]


@dataclass
class ReconcileSettings:
    cluster_name: str = "default"
    fingerprint_key: bytes = b"goodmem-operator"
    default_deletion_policy: str = "Delete"
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    auth_backoff: float = 120.0
    secret_retry: float = 300.0  # safety net only: Secret events re-arm the reconcile at once
    # namespace ("*": any) -> registry principals ("*": any) an LLM there may name in spec.ownerId (--allow-owner-id)
    owner_id_grants: dict[str, frozenset[str]] = field(default_factory=dict)
    rotation_observer: Callable[[float], None] | None = None  # metrics: Secret event -> registry PUT, seconds

    def engine(self) -> EngineSettings:
        return EngineSettings(
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            auth_backoff=self.auth_backoff,
            recheck=self.secret_retry,
        )

    def llm(self) -> LLMSettings:
        return LLMSettings(
            cluster_name=self.cluster_name,
            fingerprint_key=self.fingerprint_key,
            default_deletion_policy=self.default_deletion_policy,
            owner_id_grants=self.owner_id_grants,
            rotation_observer=self.rotation_observer,
        )


class Reconciler:
    """The engine with the LLM client: the entry points handlers, tests and the bench call."""

    def __init__(self, registry: RegistryClient | Router, secrets: SecretReader, settings: ReconcileSettings) -> None:
        self.registry = registry  # one client for every LLM, or the connections (connections.py)
        self.secrets = secrets
        self.settings = settings
        self.client = LLMClient(registry, secrets, settings.llm())
        self.engine = Engine(self.client, settings.engine())

    @property
    def last_observed(self) -> dict[str, float]:
        """uid -> monotonic time of the last reconcile (any result)."""
        return self.engine.last_observed

    def lock(self, uid: str) -> asyncio.Lock:
        return self.engine.lock(uid)

    def forget(self, uid: str) -> None:
        self.engine.forget(uid)

    async def reconcile(self, obj: LLMObject, *, trigger: str = Trigger.UPDATE) -> Outcome:
        return await self.engine.reconcile(obj, trigger=trigger)

    async def finalize(self, obj: LLMObject) -> list[Event]:
        """Release the registry entry as the deletion policy says.  Raises RetryLater to keep the finalizer."""
        return await self.engine.finalize(obj)
