"""The one reconcile: observe the registry entry, then converge it to the spec.

`Reconciler.reconcile` is idempotent and level-triggered: whatever called it
(create, update or resume handler, the drift timer, a Secret event), it reads
the spec, resolves credentials, GETs the entry by its id, and creates or
updates only what differs.  It returns an `Outcome` (the status to write, the
events to post, when to try again); the kopf glue applies it.  It never
raises for registry or Secret problems: those become conditions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from goodmem_operator import conditions as cond
from goodmem_operator.api.mapping import (
    OWNER_LABEL,
    canonical_url,
    credentials_fingerprint,
    desired_request,
    diff,
    drifted_fields,
    observed_values,
    ownership_labels,
)
from goodmem_operator.api.types import RESERVED_LABEL_PREFIX, LLMSpec
from goodmem_operator.registry import Conflict, NotFound, RateLimited, RegistryClient, RegistryError
from goodmem_operator.secrets import CredentialError, SecretReader, resolve_credentials
from goodmem_operator.trust import (
    Access,
    Relation,
    derived_llm_id,
    grant_label,
    granted,
    may_adopt,
    may_observe,
    not_granted_message,
    owner_id_allowed,
    relation,
)

log = logging.getLogger("goodmem_operator.reconcile")

PAUSED_ANNOTATION = "goodmem.ai/paused"
# status.credentialsFingerprint of an adopted entry whose stored credentials this LLM never supplied.
INHERITED = "inherited"
__all__ = ["derived_llm_id"]  # re-exported: tests and tools compute an LLM's entry id from here


@dataclass(frozen=True)
class LLMObject:
    """What the reconcile needs of an LLM resource."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str]

    @classmethod
    def from_body(cls, body: Any) -> LLMObject:
        meta = body.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def paused(self) -> bool:
        return self.annotations.get(PAUSED_ANNOTATION, "").lower() == "true"

    @property
    def llm_id(self) -> str:
        return self.spec.get("llmId") or self.status.get("llmId") or derived_llm_id(self.uid)


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """The result of one reconcile: the status it wants and what to do next."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    retry_after: float | None = None  # seconds; None: nothing to retry
    result: str = "success"  # success | noop | error | permanent | paused (a metrics label)

    def status_patch(self, current: dict[str, Any]) -> dict[str, Any]:
        """Only the status fields that differ from `current` (empty: write nothing)."""
        patch: dict[str, Any] = {}
        for key, value in self.status.items():
            if key == "conditions":
                if not cond.same(current.get("conditions"), value):
                    patch[key] = value
            elif current.get(key) != value:
                patch[key] = value
        return patch


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


class RetryLater(Exception):
    """Raised by `finalize` when the registry entry could not be released yet."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Reconciler:
    def __init__(self, registry: RegistryClient, secrets: SecretReader, settings: ReconcileSettings) -> None:
        self.registry = registry
        self.secrets = secrets
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempts: dict[str, int] = {}
        self._applied: dict[str, str] = {}  # uid -> credentials fingerprint last sent (newer than status)
        self.last_observed: dict[str, float] = {}  # uid -> monotonic time of the last reconcile (any result)
        self.observers: list[Callable[[str, Outcome], Awaitable[None] | None]] = []

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._attempts.pop(uid, None)
        self._applied.pop(uid, None)
        self.last_observed.pop(uid, None)

    # -- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, obj: LLMObject, *, trigger: str = "update") -> Outcome:
        async with self.lock(obj.uid):
            outcome = await self._reconcile(obj, trigger)
            self.last_observed[obj.uid] = time.monotonic()
        if outcome.result in ("success", "noop", "permanent", "paused"):
            self._attempts.pop(obj.uid, None)
        return outcome

    async def _reconcile(self, obj: LLMObject, trigger: str) -> Outcome:
        prev = obj.status
        llm_id = obj.llm_id
        if obj.paused:
            return Outcome(
                status={
                    "conditions": [
                        cond.get(prev.get("conditions"), cond.READY)
                        or cond.condition(cond.READY, "Unknown", "ReconcilePaused", "paused before the first sync",
                                          obj.generation, None),
                        cond.condition(cond.SYNCED, False, "ReconcilePaused",
                                       f"annotation {PAUSED_ANNOTATION}=true: no registry calls until it is removed",
                                       obj.generation, prev.get("conditions")),
                    ]
                },
                result="paused",
            )
        try:
            spec = LLMSpec.model_validate(obj.spec)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            return self._failed(obj, "InvalidSpec", f"spec is invalid: {detail}", permanent=True, inputs=None)

        if spec.observe_only:
            return await self._observe_only(obj, llm_id)
        if spec.owner_id and not owner_id_allowed(self.settings.owner_id_grants, obj.namespace, spec.owner_id):
            return self._failed(
                obj, "OwnerIdNotAllowed",
                f"spec.ownerId {spec.owner_id}: the operator does not let namespace {obj.namespace} create registry "
                f"entries for another principal (an operator admin can allow it with --allow-owner-id "
                f"{obj.namespace}={spec.owner_id}); nothing was sent to the registry",
                permanent=True, inputs=None,
            )

        try:
            credentials = await resolve_credentials(spec.credentials, obj.namespace, self.secrets)
        except CredentialError as exc:
            message = str(exc)
            if prev.get("llmId"):
                message += "; the registry keeps the credentials it already has, nothing was changed or deleted"
            return self._failed(obj, exc.reason, message, permanent=exc.permanent, inputs=None,
                                delay=None if exc.permanent else self.settings.secret_retry)

        fingerprint = credentials_fingerprint(credentials, self.settings.fingerprint_key)
        marks = ownership_labels(self.settings.cluster_name, obj.namespace, obj.name, obj.uid)
        desired = desired_request(spec, llm_id=llm_id, marks=marks, credentials=credentials)
        inputs = self._inputs_fingerprint(desired, fingerprint)
        if prev.get("lastAttempt") == inputs:
            # This exact spec and credential already failed permanently: no second registry call.
            return Outcome(status=self._carry(prev), result="permanent")

        events: list[Event] = []
        wrote = False
        try:
            # A resource that never had an entry (no id in status or spec) creates at once: its derived id is
            # new, and a 409 for that id (a create whose answer was lost) falls back to a GET below. Anything
            # else observes first. One registry request per create instead of two (bench/ANALYSIS.md #3).
            fresh = not prev.get("llmId") and not spec.llm_id
            observed = None if fresh else await self._get(llm_id)
            if observed is None:
                try:
                    observed = await self.registry.create_llm(desired)
                    wrote = True
                    self._applied[obj.uid] = fingerprint
                    verb = "Recreated" if prev.get("llmId") else "Created"
                    events.append(Event("Normal", verb, f"registry entry {llm_id} {verb.lower()}"))
                except Conflict as exc:
                    observed = await self._get(llm_id)  # our own id: an earlier create went through, its answer lost
                    if observed is None:  # another entry with the same identity
                        match = await self._duplicate(obj, spec, desired, exc, inputs)
                        if isinstance(match, Outcome):
                            return match
                        observed, llm_id = match, str(match["llmId"])
            # What we just created is ours, whatever the registry echoes of its labels.
            refusal = None if wrote else self._refuse_takeover(obj, spec, observed, llm_id, desired, inputs)
            if refusal is not None:
                return refusal
            adopted = not wrote and relation(observed.get("labels"), **self._who(obj, llm_id)) is not Relation.OURS
            if adopted:
                events.append(Event("Normal", "Adopted", f"registry entry {llm_id} adopted by {obj.key}"))
            # Stored credentials this LLM did not supply stay "inherited" until its spec supplies its own.
            if credentials is None and not wrote and (adopted or prev.get("credentialsFingerprint") == INHERITED):
                fingerprint = INHERITED
                moving = sorted(k for k in ("endpointUrl", "apiPath") if k in diff(desired, observed))
                if moving:
                    return self._failed(
                        obj, "CredentialsNotSupplied",
                        f"registry entry {llm_id} keeps credentials that this LLM did not supply; changing its "
                        f"{' and '.join(moving)} would send them somewhere new. Set spec.credentials (they replace "
                        f"the stored ones) or keep the entry's {' and '.join(moving)}", permanent=True, inputs=inputs,
                    )
            if not wrote:
                update = diff(desired, observed)
                last = self._applied.get(obj.uid) or prev.get("credentialsFingerprint")
                if credentials is not None and fingerprint != last:
                    update["credentials"] = credentials
                if update:
                    observed = await self.registry.update_llm(llm_id, update)
                    wrote = True
                    self._applied[obj.uid] = fingerprint
                    fields = drifted_fields(update)
                    if trigger == "drift":
                        events.append(Event("Warning", "DriftCorrected",
                                            f"registry entry {llm_id} differed in {', '.join(fields)}; corrected"))
                        log.warning("%s: drift corrected in fields %s", obj.key, ", ".join(fields))
                    elif fields == ["credentials"]:
                        events.append(Event("Normal", "CredentialsRotated", f"registry entry {llm_id}: credentials updated"))
                    else:
                        events.append(Event("Normal", "Updated", f"registry entry {llm_id}: updated {', '.join(fields)}"))
        except RegistryError as exc:
            return self._registry_failed(obj, exc, inputs, created=bool(prev.get("llmId")))

        ready = cond.condition(cond.READY, True, "Available", f"registry entry {llm_id} matches the spec",
                               obj.generation, prev.get("conditions"))
        synced = cond.condition(cond.SYNCED, True, "ReconcileSuccess", "last reconcile succeeded",
                                obj.generation, prev.get("conditions"))
        if cond.get(prev.get("conditions"), cond.READY, ) and cond.get(prev.get("conditions"), cond.READY)["status"] != "True":
            events.append(Event("Normal", "Available", f"registry entry {llm_id} is in sync"))
        status = {
            "llmId": llm_id,
            "observedGeneration": obj.generation,
            "conditions": [ready, synced],
            "credentialsFingerprint": fingerprint,
            "lastAttempt": None,
            "observed": observed_values(observed),
        }
        return Outcome(status=status, events=events, result="success" if wrote else "noop")

    async def _observe_only(self, obj: LLMObject, llm_id: str) -> Outcome:
        """Mirror the entry into status, if this namespace may see it; never write to the registry."""
        prev = obj.status
        try:
            observed = await self._get(llm_id)
        except RegistryError as exc:
            return self._registry_failed(obj, exc, "", created=True)
        if observed is None:
            return self._failed(obj, "NotFound", f"registry entry {llm_id} not found (ObserveOnly never creates it)",
                                permanent=False, inputs=None, delay=self.settings.secret_retry)
        labels = observed.get("labels")
        rel = relation(labels, **self._who(obj, llm_id))
        if not may_observe(rel, granted(labels, cluster=self.settings.cluster_name, namespace=obj.namespace)):
            return self._not_granted(obj, llm_id, rel, Access.OBSERVE, labels)
        status = {
            "llmId": llm_id,
            "observedGeneration": obj.generation,
            "conditions": [
                cond.condition(cond.READY, True, "Observed", f"registry entry {llm_id} exists (ObserveOnly)",
                               obj.generation, prev.get("conditions")),
                cond.condition(cond.SYNCED, True, "ObserveOnly", "mirrored into status.observed; never written",
                               obj.generation, prev.get("conditions")),
            ],
            "lastAttempt": None,
            # Never another owner's marks or principal: only what this namespace may know of the entry.
            "observed": observed_values(observed, mirror=True,
                                        owner_visible=rel in (Relation.OURS, Relation.SAME_NAMESPACE)),
        }
        return Outcome(status=status, result="noop")

    # -- the tenant boundary (trust.py holds the rules) -----------------------------------------

    def _who(self, obj: LLMObject, llm_id: str) -> dict[str, str]:
        return {"cluster": self.settings.cluster_name, "namespace": obj.namespace, "uid": obj.uid, "llm_id": llm_id}

    def _not_granted(self, obj: LLMObject, llm_id: str, rel: Relation, access: Access,
                     labels: dict[str, str] | None, inputs: str | None = None) -> Outcome:
        """Refuse to observe or adopt an entry. An entry owned by another LLM is a Conflict that only a spec change
        ends; an unowned one may be granted later by whoever holds the registry key, so it is re-checked slowly."""
        holder = (labels or {}).get(OWNER_LABEL, "")
        message = not_granted_message(llm_id, rel, access, cluster=self.settings.cluster_name,
                                      namespace=obj.namespace, holder=holder)
        if rel is Relation.UNOWNED:
            return self._failed(obj, "NotGranted", message, permanent=False, inputs=None,
                                delay=self.settings.secret_retry)
        return self._failed(obj, "Conflict", message, permanent=True, inputs=inputs)

    def _refuse_takeover(self, obj: LLMObject, spec: LLMSpec, observed: dict[str, Any], llm_id: str,
                         desired: dict[str, Any], inputs: str) -> Outcome | None:
        """Why this LLM may not manage the entry it found, or None when it may."""
        labels = observed.get("labels")
        rel = relation(labels, **self._who(obj, llm_id))
        grant = granted(labels, cluster=self.settings.cluster_name, namespace=obj.namespace)
        if not may_adopt(rel, grant):
            return self._not_granted(obj, llm_id, rel, Access.ADOPT, labels, inputs)
        if spec.owner_id and observed.get("ownerId") and observed["ownerId"].lower() != spec.owner_id.lower():
            return self._failed(
                obj, "OwnerMismatch",
                f"registry entry {llm_id} belongs to another principal than spec.ownerId {spec.owner_id}; "
                f"not taking it over", permanent=True, inputs=inputs,
            )
        if observed.get("providerType") and observed["providerType"] != desired["providerType"]:
            return self._failed(
                obj, "InvalidSpec",
                f"registry entry {llm_id} has providerType {observed['providerType']}, which the registry "
                f"cannot change; the spec asks for {desired['providerType']}",
                permanent=True, inputs=inputs,
            )
        return None

    async def _duplicate(self, obj: LLMObject, spec: LLMSpec, desired: dict[str, Any], exc: Conflict,
                         inputs: str) -> dict[str, Any] | Outcome:
        """After a 409 on identity: the one existing entry to adopt (adoptionPolicy IfMatching), or the refusal.

        The registry refuses a create when an entry of the same owner has the same provider, endpoint, path,
        model and credentials. Credentials are not returned, so among the entries that agree on the rest the
        conflicting one is known only when the registry names it or exactly one entry agrees; with several,
        nothing is adopted. Only an entry this namespace may adopt (its own, or unowned with a grant) is taken.
        """
        listed = await self.registry.list_llms(provider_type=desired["providerType"], owner_id=spec.owner_id)
        candidates = [e for e in listed if self._same_identity(e, desired, spec.owner_id)]
        named = exc.existing_id if exc.existing_id and exc.existing_id != desired["llmId"] else None
        if named:  # the registry said which entry (not promised by the docs): that one, and only it, conflicts
            candidates = [e for e in candidates if e["llmId"] == named]
            if not candidates:
                found = await self._get(named)
                candidates = [found] if found is not None else []
        # Name only the entries this namespace may see: an id of another tenant's entry is not its business.
        visible: list[str] = []
        relations: list[Relation] = []
        for entry in candidates:
            labels = entry.get("labels")
            rel = relation(labels, **self._who(obj, str(entry.get("llmId"))))
            relations.append(rel)
            if may_observe(rel, granted(labels, cluster=self.settings.cluster_name, namespace=obj.namespace)):
                visible.append(str(entry.get("llmId")))
        hidden = len(candidates) - len(visible)
        names = ", ".join(visible + ([f"{hidden} not visible to namespace {obj.namespace}"] if hidden else []))
        detail = f" ({names})" if names else ""
        same = f"another registry entry{detail} has the same provider, endpoint, path, model and credentials"
        if spec.adoption_policy != "IfMatching" or not candidates or relations[0] in (Relation.OTHER_OWNER,
                                                                                       Relation.SAME_NAMESPACE):
            return self._failed(obj, "AlreadyExists", f"{same}: {exc.registry_reason or exc}", permanent=True,
                                inputs=inputs)
        if len(candidates) > 1:
            return self._failed(
                obj, "AmbiguousMatch",
                f"adoptionPolicy IfMatching: {len(candidates)} registry entries{detail} match the provider, endpoint, "
                f"path and model, and the registry does not say which holds the same credentials; nothing adopted "
                f"(name the entry in spec.llmId instead)", permanent=True, inputs=inputs,
            )
        entry = candidates[0]
        if not may_adopt(relations[0], granted(entry.get("labels"), cluster=self.settings.cluster_name,
                                               namespace=obj.namespace)):
            return self._failed(
                obj, "NotGranted",
                f"adoptionPolicy IfMatching: {same}, and it grants namespace {obj.namespace} no adopt access; whoever "
                f"holds the registry key may allow it with the entry label "
                f"{grant_label(self.settings.cluster_name, obj.namespace)}=adopt",
                permanent=False, inputs=None, delay=self.settings.secret_retry,
            )
        return entry  # the owner and providerType checks follow in _refuse_takeover

    @staticmethod
    def _same_identity(entry: dict[str, Any], desired: dict[str, Any], owner_id: str | None) -> bool:
        default_path = "/chat/completions"
        return (
            canonical_url(str(entry.get("endpointUrl", ""))) == canonical_url(desired["endpointUrl"])
            and entry.get("modelIdentifier") == desired["modelIdentifier"]
            and entry.get("apiPath", default_path) == desired.get("apiPath", default_path)
            and entry.get("providerType", desired["providerType"]) == desired["providerType"]
            and (not owner_id or str(entry.get("ownerId", "")).lower() == owner_id.lower())
            and isinstance(entry.get("llmId"), str)
        )

    # -- deletion -----------------------------------------------------------------------------

    async def finalize(self, obj: LLMObject) -> list[Event]:
        """Release the registry entry as the deletion policy says.  Raises RetryLater to keep the finalizer."""
        async with self.lock(obj.uid):
            events = await self._finalize(obj)
        self.forget(obj.uid)
        return events

    async def _finalize(self, obj: LLMObject) -> list[Event]:
        llm_id = obj.llm_id
        policy = obj.spec.get("deletionPolicy") or self.settings.default_deletion_policy
        if obj.paused:
            return [Event("Warning", "Orphaned", f"deleted while paused: registry entry {llm_id} left untouched")]
        if obj.spec.get("managementPolicy") == "ObserveOnly":
            return [Event("Normal", "Released", f"ObserveOnly: registry entry {llm_id} left untouched")]
        try:
            observed = await self._get(llm_id)
            if observed is None:
                return [Event("Normal", "Deleted", f"registry entry {llm_id} already gone")]
            labels = observed.get("labels") or {}
            if relation(labels, **self._who(obj, llm_id)) is not Relation.OURS:
                return [Event("Normal", "Released", f"registry entry {llm_id} is not managed by this resource; left in place")]
            if policy == "Orphan":
                # The ownership marks go; a grant stays so that this namespace (and only it) can adopt it back.
                grant = grant_label(self.settings.cluster_name, obj.namespace)
                kept = {k: v for k, v in labels.items() if not k.startswith(RESERVED_LABEL_PREFIX)}
                kept[grant] = Access.ADOPT.value
                if kept != labels:
                    await self.registry.update_llm(llm_id, {"replaceLabels": kept})
                return [Event("Normal", "Orphaned", f"registry entry {llm_id} left in place (deletionPolicy Orphan); "
                                                    f"namespace {obj.namespace} may adopt it back ({grant}=adopt)")]
            try:
                await self.registry.delete_llm(llm_id)
            except NotFound:
                pass
            return [Event("Normal", "Deleted", f"registry entry {llm_id} deleted")]
        except RegistryError as exc:
            if not exc.retryable and not isinstance(exc, Conflict):
                # A permanent answer to a delete (e.g. 400) cannot heal: release rather than block deletion forever.
                return [Event("Warning", "DeleteFailed", f"registry entry {llm_id} could not be deleted: {exc}; released")]
            raise RetryLater(f"deleting registry entry {llm_id}: {exc}", self._delay(obj.uid, exc)) from None

    # -- helpers ------------------------------------------------------------------------------

    async def _get(self, llm_id: str) -> dict[str, Any] | None:
        try:
            return await self.registry.get_llm(llm_id)
        except NotFound:
            return None

    def _inputs_fingerprint(self, desired: dict[str, Any], credentials_fp: str) -> str:
        safe = {k: v for k, v in desired.items() if k != "credentials"}
        safe["credentials"] = credentials_fp
        canonical = json.dumps(safe, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self.settings.fingerprint_key, canonical, hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def _carry(prev: dict[str, Any]) -> dict[str, Any]:
        return {k: prev[k] for k in ("conditions", "lastAttempt", "observedGeneration") if k in prev}

    def _delay(self, uid: str, exc: RegistryError | None) -> float:
        attempt = self._attempts.get(uid, 0)
        self._attempts[uid] = attempt + 1
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return max(exc.retry_after, 0.5)
        base = self.settings.auth_backoff if exc is not None and exc.reason in ("Unauthorized", "Forbidden") else self.settings.backoff_base
        delay = min(self.settings.backoff_cap, base * (2**attempt))
        return round(delay * random.uniform(0.5, 1.0), 2)

    def _registry_failed(self, obj: LLMObject, exc: RegistryError, inputs: str, *, created: bool) -> Outcome:
        if not exc.retryable:
            return self._failed(obj, exc.reason, str(exc), permanent=True, inputs=inputs)
        return self._failed(obj, exc.reason, str(exc), permanent=False, inputs=None,
                            delay=self._delay(obj.uid, exc), creating=not created)

    def _failed(
        self,
        obj: LLMObject,
        reason: str,
        message: str,
        *,
        permanent: bool,
        inputs: str | None,
        delay: float | None = None,
        creating: bool = False,
    ) -> Outcome:
        prev = obj.status
        if permanent:
            text = f"{message} (not retried until the spec or a referenced Secret changes)"
            delay = None
        else:
            if delay is None:
                delay = self.settings.backoff_base
            text = f"{message} (retrying in {delay:g}s)"
        ready_reason = "Creating" if creating else reason
        ready = cond.condition(cond.READY, False, ready_reason, text, obj.generation, prev.get("conditions"))
        synced = cond.condition(cond.SYNCED, False, reason, text, obj.generation, prev.get("conditions"))
        conditions = [ready, synced]
        if permanent:
            # kstatus (Flux, kpt, cli-utils) reports Failed only for Stalled=True: say that this will not heal alone.
            conditions.append(cond.condition(cond.STALLED, True, reason, text, obj.generation, prev.get("conditions")))
        status: dict[str, Any] = {
            "observedGeneration": obj.generation,
            "conditions": conditions,
            "lastAttempt": inputs if permanent else None,
        }
        events = []
        before = cond.get(prev.get("conditions"), cond.SYNCED)
        if not before or before.get("reason") != reason or before.get("status") != "False":
            events.append(Event("Warning", reason, text))
        return Outcome(status=status, events=events, retry_after=delay, result="permanent" if permanent else "error")
