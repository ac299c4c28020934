"""The engine: the one reconcile loop, written once for every kind (crossplane-runtime's managed reconciler).

Each kind supplies an `ExternalClient` (llm.py for `LLM`) with the registry's verbs: `prepare` (read the
spec and credentials, no registry call), `observe`, `create`, `update`, `delete`. The engine decides which
verb to call and owns everything around them:

- a lock per object (one reconcile of an object at a time), the pause annotation, ObserveOnly (observe only,
  never a write);
- the once-per-generation gate: inputs that already failed permanently (`status.lastAttempt`) make no second
  registry call until the spec or a referenced Secret changes;
- backoff: exponential with jitter and a cap, Retry-After honoured, a longer base for 401/403, a slow re-check
  for what only someone else can fix (`Refusal` that is not permanent);
- the registry error -> condition reason table (`REASONS`): the HTTP client describes transport only;
- conditions (Ready, Synced, Stalled on permanent errors), Events, and the typed `Outcome`.

It never raises for registry or Secret problems: those become conditions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel

from goodmem_operator import conditions as cond
from goodmem_operator.api.types import Condition
from goodmem_operator.conditions import Reason
from goodmem_operator.plan import DRY_RUN_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION, PendingChanges, summary
from goodmem_operator.registry import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidId,
    NotFound,
    RateLimited,
    RegistryError,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    Unreachable,
)

log = logging.getLogger("goodmem_operator.engine")

PAUSED_ANNOTATION = "goodmem.ai/paused"
PERMANENT_SUFFIX = "(not retried until the spec or a referenced Secret changes)"


class Result(StrEnum):
    """What one reconcile did (the `result` label of goodmem_operator_reconcile_total)."""

    SUCCESS = "success"  # wrote to the registry
    NOOP = "noop"  # in sync: nothing written
    ERROR = "error"  # retryable failure: retried on backoff
    PERMANENT = "permanent"  # waits for a spec or Secret change
    PAUSED = "paused"


class Trigger(StrEnum):
    """What started a reconcile (kopf's cause for the first three)."""

    CREATE = "create"
    UPDATE = "update"
    RESUME = "resume"
    DRIFT = "drift"
    SECRET = "secret"
    CONNECTION = "connection"  # its connection appeared, turned Ready or rotated its key


class Change(StrEnum):
    """What a reconcile did to the external entry; the client words the Event."""

    CREATED = "Created"
    RECREATED = "Recreated"
    ADOPTED = "Adopted"
    UPDATED = "Updated"
    DRIFT_CORRECTED = "DriftCorrected"


class EventReason(StrEnum):
    """Event reasons besides the condition reasons (a failure's Event carries its Synced reason)."""

    CREATED = "Created"
    RECREATED = "Recreated"
    ADOPTED = "Adopted"
    UPDATED = "Updated"
    CREDENTIALS_ROTATED = "CredentialsRotated"
    DRIFT_CORRECTED = "DriftCorrected"
    AVAILABLE = "Available"
    DELETED = "Deleted"
    ORPHANED = "Orphaned"
    RELEASED = "Released"
    DELETE_FAILED = "DeleteFailed"
    DRY_RUN = "DryRun"


# -- registry errors -> condition reasons ------------------------------------------------------------

REASONS: dict[type[RegistryError], Reason] = {
    BadRequest: Reason.INVALID_SPEC,
    Unauthorized: Reason.UNAUTHORIZED,
    Forbidden: Reason.FORBIDDEN,
    NotFound: Reason.NOT_FOUND,
    Conflict: Reason.ALREADY_EXISTS,
    RateLimited: Reason.RATE_LIMITED,
    ServerError: Reason.REGISTRY_UNAVAILABLE,
    Unreachable: Reason.REGISTRY_UNAVAILABLE,
    UnexpectedResponse: Reason.UNEXPECTED_RESPONSE,
    InvalidId: Reason.INVALID_LLM_ID,
}
AUTH_REASONS = frozenset({Reason.UNAUTHORIZED, Reason.FORBIDDEN})


def reason_for(exc: RegistryError) -> Reason:
    """The condition reason of a registry error: its class (or nearest base) in the table, else by `retryable`."""
    for cls in type(exc).__mro__:
        if cls in REASONS:
            return REASONS[cls]
    return Reason.REGISTRY_ERROR if exc.retryable else Reason.INVALID_SPEC


# -- what the engine works with ----------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """What the engine needs of a Kubernetes object."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str]

    @classmethod
    def from_body(cls, body: Any) -> Self:
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
    def dry_run(self) -> bool:
        return self.annotations.get(DRY_RUN_ANNOTATION, "").lower() == "true"

    @property
    def requested_at(self) -> str | None:
        """The goodmem.ai/reconcile-requested-at value, when set."""
        return self.annotations.get(RECONCILE_REQUESTED_ANNOTATION)

    @property
    def newly_requested(self) -> bool:
        """A reconcile-requested-at value this resource's status does not record as handled yet."""
        return self.requested_at is not None and self.requested_at != self.status.get("lastHandledReconcileAt")


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """The result of one reconcile: the status it wants and what to do next."""

    status: dict[str, Any]  # a dump of the kind's typed status model (camelCase, only the fields set)
    events: list[Event] = field(default_factory=list)
    retry_after: float | None = None  # seconds; None: nothing to retry
    result: Result = Result.SUCCESS
    drift_corrected: bool = False  # a drift check found the entry changed and wrote it back

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

    def condition(self, ctype: str) -> Mapping[str, Any] | None:
        return cond.find(self.status.get("conditions"), ctype)


class Refusal(Exception):
    """Raised by a client: the resource cannot converge as it stands, for a reason the engine reports.

    permanent: Stalled, not retried; with `gated` the inputs go into status.lastAttempt, so the same inputs
    make no second registry call (refusals found before any registry call need no gate).
    Not permanent: something only someone else can fix (a Secret, a grant): re-checked slowly.
    """

    def __init__(self, reason: str, message: str, *, permanent: bool, gated: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        self.gated = gated


D = TypeVar("D")


@dataclass(frozen=True)
class Prepared(Generic[D]):
    """What a client made of the spec before any registry call."""

    name: str  # the external entry's id
    inputs: str  # keyed fingerprint of everything the reconcile would send (the permanent-error gate)
    known: bool  # the resource has had an entry (a retryable failure says Creating otherwise)
    observe_only: bool = False
    desired: D | None = None  # the client's own: validated spec, request, credentials


@dataclass(frozen=True)
class Observation:
    """What `observe` (or `create`, `update`) found of the external entry."""

    exists: bool
    name: str  # the entry's id (an adopted duplicate has another id than the one asked for)
    entry: dict[str, Any] | None = None  # as the registry returned it
    created: bool = False  # this reconcile created it
    adopted: bool = False  # it was not ours: this reconcile takes it over
    update: dict[str, Any] = field(default_factory=dict)  # the update body to send; empty: up to date
    drifted: list[str] = field(default_factory=list)  # the fields that differ
    status: dict[str, Any] = field(default_factory=dict)  # kind fields of the status on success (observed values...)

    @property
    def up_to_date(self) -> bool:
        return not self.update


class ExternalClient(Protocol):
    """One kind's verbs against the registry and the rules that are the kind's own."""

    @property
    def status_type(self) -> type[BaseModel]: ...

    def external_name(self, obj: Any) -> str: ...

    def observe_only(self, obj: Any) -> bool: ...

    async def prepare(self, obj: Any) -> Prepared[Any]: ...

    async def observe(self, obj: Any, prepared: Prepared[Any]) -> Observation: ...

    async def create(self, obj: Any, prepared: Prepared[Any]) -> Observation: ...

    async def update(self, obj: Any, prepared: Prepared[Any], observation: Observation) -> Observation: ...

    async def delete(self, obj: Any) -> list[Event]: ...

    def changes(self, prepared: Prepared[Any], observation: Observation | None) -> PendingChanges:
        """status.pendingChanges: what an update (or, without an existing entry, a create) would write."""
        ...

    def describe(self, obj: Any, change: Change, observation: Observation) -> Event: ...

    def forget(self, uid: str) -> None: ...


@dataclass
class EngineSettings:
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    auth_backoff: float = 120.0
    recheck: float = 300.0  # what only someone else can fix; Secret events re-arm the reconcile at once


class RetryLater(Exception):
    """Raised by `finalize` when the registry entry could not be released yet."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Engine:
    def __init__(self, client: ExternalClient, settings: EngineSettings) -> None:
        self.client = client
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempts: dict[str, int] = {}
        self.last_observed: dict[str, float] = {}  # uid -> monotonic time of the last reconcile (any result)

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._attempts.pop(uid, None)
        self.last_observed.pop(uid, None)
        self.client.forget(uid)

    # -- reconcile ---------------------------------------------------------------------------------

    async def reconcile(self, obj: Resource, *, trigger: str = Trigger.UPDATE) -> Outcome:
        async with self.lock(obj.uid):
            outcome = await self._reconcile(obj, trigger)
            self.last_observed[obj.uid] = time.monotonic()
        if obj.requested_at is not None and outcome.result is not Result.PAUSED:
            # Handled (GitOps tools wait for status to echo it); a paused LLM has not served it yet.
            outcome.status["lastHandledReconcileAt"] = obj.requested_at
        if outcome.result is not Result.ERROR:
            self._attempts.pop(obj.uid, None)
        return outcome

    async def _reconcile(self, obj: Resource, trigger: str) -> Outcome:
        if obj.paused:
            return await self._paused_plan(obj)
        prepared: Prepared[Any] | None = None
        try:
            prepared = await self.client.prepare(obj)
            if prepared.observe_only:
                return await self._observe_only(obj, prepared)
            if obj.dry_run:
                return await self._dry_run(obj, prepared)
            if obj.status.get("lastAttempt") == prepared.inputs and not obj.newly_requested:
                # These exact inputs already failed permanently: no second registry call (unless asked for anew).
                return Outcome(status=self._carry(obj.status), result=Result.PERMANENT)
            return await self._converge(obj, prepared, trigger)
        except Refusal as refusal:
            inputs = prepared.inputs if prepared is not None and refusal.gated else None
            return self._failed(
                obj,
                refusal.reason,
                refusal.message,
                permanent=refusal.permanent,
                inputs=inputs,
                delay=self.settings.recheck,
            )
        except RegistryError as exc:
            return self._registry_failed(obj, exc, prepared)

    async def _converge(self, obj: Resource, prepared: Prepared[Any], trigger: str) -> Outcome:
        """Observe, create if missing, update if not up to date."""
        events: list[Event] = []
        obs = await self.client.observe(obj, prepared)
        if not obs.exists:
            try:
                obs = await self.client.create(obj, prepared)  # may find it after all (a lost answer, a duplicate)
            except RegistryError as exc:
                return self._registry_failed(obj, exc, prepared, pending=self.client.changes(prepared, None))
            if obs.created:
                events.append(self.client.describe(obj, Change.RECREATED if prepared.known else Change.CREATED, obs))
        if obs.adopted:
            events.append(self.client.describe(obj, Change.ADOPTED, obs))
        drift = False
        if not obs.up_to_date:
            drift = trigger == Trigger.DRIFT
            try:
                obs = await self.client.update(obj, prepared, obs)
            except RegistryError as exc:  # what the failed update would have changed stays visible
                return self._registry_failed(obj, exc, prepared, pending=self.client.changes(prepared, obs))
            events.append(self.client.describe(obj, Change.DRIFT_CORRECTED if drift else Change.UPDATED, obs))
            if drift:
                log.warning("%s: drift corrected in fields %s", obj.key, ", ".join(obs.drifted))
        wrote = obs.created or bool(obs.update)
        return self._succeeded(obj, obs, events, result=Result.SUCCESS if wrote else Result.NOOP, drift=drift)

    async def _observe_only(self, obj: Resource, prepared: Prepared[Any]) -> Outcome:
        """Mirror the entry into status, if the client lets this resource see it; never a write."""
        obs = await self.client.observe(obj, prepared)
        if not obs.exists:
            return self._failed(
                obj,
                Reason.NOT_FOUND,
                f"registry entry {obs.name} not found (ObserveOnly never creates it)",
                permanent=False,
                inputs=None,
                delay=self.settings.recheck,
            )
        wanted = [
            cond.observed(f"registry entry {obs.name} exists (ObserveOnly)"),
            cond.synced("mirrored into status.observed; never written", Reason.OBSERVE_ONLY),
        ]
        pending: PendingChanges | None = None
        if prepared.desired is None:  # the spec names the entry only: nothing to compare
            wanted.append(
                cond.up_to_date_unknown(
                    Reason.NOT_COMPARABLE,
                    "the spec names the entry only; give the fields to manage to see what managing it would change",
                )
            )
        else:
            pending = self.client.changes(prepared, obs) if not obs.up_to_date else []
            wanted.append(self._up_to_date(obs.name, pending, "managing it"))
        status = self._status(obj, wanted, last_attempt=None, pending_changes=pending, **obs.status)
        return Outcome(status=status, result=Result.NOOP)

    async def _dry_run(self, obj: Resource, prepared: Prepared[Any]) -> Outcome:
        """Observe and plan (create, update of these fields, or nothing) into status and an Event; never a write."""
        obs = await self.client.observe(obj, prepared)
        if not obs.exists:
            action, pending = "Create", self.client.changes(prepared, None)
            plan = f"would create registry entry {obs.name} ({summary(pending)})"
        elif not obs.up_to_date:
            action, pending = "Update", self.client.changes(prepared, obs)
            plan = f"would update registry entry {obs.name}: {summary(pending)}"
        else:
            action, pending = "None", []
            plan = f"registry entry {obs.name} matches the spec: nothing to write"
        text = f"dry run ({DRY_RUN_ANNOTATION}=true): {plan}; nothing written"
        previous = obj.status.get("conditions")
        wanted = [
            self._carried_ready(obj, Reason.DRY_RUN, "dry run before the first sync"),
            cond.synced_false(Reason.DRY_RUN, text),
            self._up_to_date(obs.name, pending, "applying the spec"),
        ]
        # Only what was observed: the credentials fingerprint stays the one last applied, so that the apply after
        # the dry run still sends credentials that changed.
        fields: dict[str, Any] = {"observed": obs.status.get("observed")} if obs.exists else {}
        if obs.exists:
            fields["llm_id"] = obs.name
        status = self._status(obj, wanted, last_attempt=None, pending_changes=pending, planned_action=action, **fields)
        events = []
        synced = cond.find(previous, cond.SYNCED) or {}
        if synced.get("reason") != Reason.DRY_RUN or synced.get("message") != text:
            events.append(Event("Normal", EventReason.DRY_RUN, text))
        return Outcome(status=status, events=events, result=Result.NOOP)

    @staticmethod
    def _up_to_date(name: str, pending: PendingChanges, what: str) -> Condition:
        if not pending:
            return cond.up_to_date(f"registry entry {name} matches the spec")
        return cond.pending(f"{what} would change {summary(pending)} (status.pendingChanges)")

    def _carried_ready(self, obj: Resource, reason: str, message: str) -> Condition:
        """Ready as the last reconcile left it (a pause or a dry run decides nothing about it), else Unknown."""
        carried = cond.find(obj.status.get("conditions"), cond.READY)
        if carried:
            return Condition.model_validate(carried)
        return cond.ready_unknown(reason, message)

    def _succeeded(
        self, obj: Resource, obs: Observation, events: list[Event], *, result: Result, drift: bool
    ) -> Outcome:
        before = cond.find(obj.status.get("conditions"), cond.READY)
        if before and before["status"] != "True":
            events.append(Event("Normal", EventReason.AVAILABLE, f"registry entry {obs.name} is in sync"))
        wanted = [
            cond.available(f"registry entry {obs.name} matches the spec"),
            cond.synced(),
            cond.up_to_date(f"registry entry {obs.name} matches the spec"),
        ]
        status = self._status(obj, wanted, last_attempt=None, pending_changes=None, **obs.status)
        return Outcome(status=status, events=events, result=result, drift_corrected=drift)

    async def _paused_plan(self, obj: Resource) -> Outcome:
        """Paused: no registry write. The entry is still read (one GET, like a drift check) so that
        status.pendingChanges and UpToDate say what removing the annotation would change; when it cannot be read
        (a Secret, a refusal, the registry), UpToDate is Unknown and pendingChanges stays as it was."""
        paused = self._paused(obj)
        try:
            prepared = await self.client.prepare(obj)
            obs = await self.client.observe(obj, prepared)
        except (Refusal, RegistryError):
            return paused
        if prepared.observe_only and (prepared.desired is None or not obs.exists):
            return paused  # nothing to compare: the spec names the entry only, or the entry is not there
        if not obs.exists:
            pending = self.client.changes(prepared, None)
            up_to_date = cond.pending(f"unpausing would create registry entry {obs.name} ({summary(pending)})")
        else:
            pending = self.client.changes(prepared, obs) if not obs.up_to_date else []
            up_to_date = self._up_to_date(obs.name, pending, "managing it" if prepared.observe_only else "unpausing")
        conditions = [Condition.model_validate(c) for c in paused.status["conditions"] if c["type"] != cond.UP_TO_DATE]
        stamped = cond.set_conditions(obj.status.get("conditions"), [up_to_date], obj.generation)
        status = self.client.status_type(conditions=[*conditions, *stamped], pending_changes=pending)
        return Outcome(status=_dump(status), result=Result.PAUSED)

    def _paused(self, obj: Resource) -> Outcome:
        previous = obj.status.get("conditions")
        carried = cond.find(previous, cond.READY)
        ready = (
            Condition.model_validate(carried)
            if carried
            else cond.set_conditions(
                previous, [cond.ready_unknown(Reason.RECONCILE_PAUSED, "paused before the first sync")], obj.generation
            )[0]
        )
        synced = cond.synced_false(
            Reason.RECONCILE_PAUSED, f"annotation {PAUSED_ANNOTATION}=true: no registry writes until it is removed"
        )
        # When the entry cannot be read while paused: status.pendingChanges stays as the last reconcile found it.
        unknown = cond.up_to_date_unknown(
            Reason.RECONCILE_PAUSED,
            "paused and the entry could not be read; status.pendingChanges is as the last reconcile found it",
        )
        conditions = [ready, *cond.set_conditions(previous, [synced, unknown], obj.generation)]
        status = self.client.status_type(conditions=conditions)
        return Outcome(status=_dump(status), result=Result.PAUSED)

    # -- failures ----------------------------------------------------------------------------------

    def _registry_failed(
        self,
        obj: Resource,
        exc: RegistryError,
        prepared: Prepared[Any] | None,
        pending: PendingChanges | None = None,
    ) -> Outcome:
        """A registry error: permanent (gated on these inputs) unless retrying can help, then on backoff.
        `pending`: what the failed write would have changed (None: the entry was not observed)."""
        reason = reason_for(exc)
        if not exc.retryable:
            return self._failed(
                obj,
                reason,
                str(exc),
                permanent=True,
                inputs=prepared.inputs if prepared is not None else None,
                pending=pending,
            )
        return self._failed(
            obj,
            reason,
            str(exc),
            permanent=False,
            inputs=None,
            delay=self._delay(obj.uid, exc),
            creating=prepared is not None and not prepared.known,
            pending=pending,
        )

    def _failed(
        self,
        obj: Resource,
        reason: str,
        message: str,
        *,
        permanent: bool,
        inputs: str | None,
        delay: float | None = None,
        creating: bool = False,
        pending: PendingChanges | None = None,
    ) -> Outcome:
        if permanent:
            text = f"{message} {PERMANENT_SUFFIX}"
            delay = None
        else:
            delay = self.settings.backoff_base if delay is None else delay
            text = f"{message} (retrying in {delay:g}s)"
        wanted = [cond.ready_false(Reason.CREATING if creating else reason, text), cond.synced_false(reason, text)]
        if pending is not None:
            wanted.append(cond.pending(f"the failed apply would change {summary(pending)} (status.pendingChanges)"))
        else:
            wanted.append(cond.up_to_date_unknown(Reason.NOT_OBSERVED, "the registry entry could not be compared"))
        if permanent:
            wanted.append(cond.stalled(reason, text))
        status = self._status(obj, wanted, last_attempt=inputs if permanent else None, pending_changes=pending)
        before = cond.find(obj.status.get("conditions"), cond.SYNCED)
        events = []
        if not before or before.get("reason") != reason or before.get("status") != "False":
            events.append(Event("Warning", reason, text))
        return Outcome(
            status=status, events=events, retry_after=delay, result=Result.PERMANENT if permanent else Result.ERROR
        )

    def _delay(self, uid: str, exc: RegistryError | None) -> float:
        attempt = self._attempts.get(uid, 0)
        self._attempts[uid] = attempt + 1
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return max(exc.retry_after, 0.5)
        auth = exc is not None and reason_for(exc) in AUTH_REASONS
        base = self.settings.auth_backoff if auth else self.settings.backoff_base
        delay = min(self.settings.backoff_cap, base * 2.0**attempt)
        return round(delay * random.uniform(0.5, 1.0), 2)

    # -- status ------------------------------------------------------------------------------------

    def _status(self, obj: Resource, wanted: list[Condition], **fields: Any) -> dict[str, Any]:
        """The kind's typed status: these conditions (stamped) and fields, for this generation. plannedAction is
        a dry run's only: any other outcome clears it."""
        fields.setdefault("planned_action", None)
        conditions = cond.set_conditions(obj.status.get("conditions"), wanted, obj.generation)
        return _dump(self.client.status_type(observed_generation=obj.generation, conditions=conditions, **fields))

    def _carry(self, previous: dict[str, Any]) -> dict[str, Any]:
        kept = {k: previous[k] for k in ("conditions", "lastAttempt", "observedGeneration") if k in previous}
        return _dump(self.client.status_type.model_validate(kept))

    # -- deletion ----------------------------------------------------------------------------------

    async def finalize(self, obj: Resource) -> list[Event]:
        """Release the external entry as the deletion policy says.  Raises RetryLater to keep the finalizer."""
        async with self.lock(obj.uid):
            events = await self._finalize(obj)
        self.forget(obj.uid)
        return events

    async def _finalize(self, obj: Resource) -> list[Event]:
        name = self.client.external_name(obj)
        if obj.dry_run and not self.client.observe_only(obj):
            policy = obj.spec.get("deletionPolicy") or "the operator's default"
            return [
                Event(
                    "Normal",
                    EventReason.DRY_RUN,
                    f"dry run ({DRY_RUN_ANNOTATION}=true): registry entry {name} left untouched (without the dry run, "
                    f"deletionPolicy {policy} would delete or orphan it)",
                )
            ]
        if obj.paused:
            return [
                Event("Warning", EventReason.ORPHANED, f"deleted while paused: registry entry {name} left untouched")
            ]
        if self.client.observe_only(obj):
            return [Event("Normal", EventReason.RELEASED, f"ObserveOnly: registry entry {name} left untouched")]
        try:
            return await self.client.delete(obj)
        except RegistryError as exc:
            if not exc.retryable and not isinstance(exc, Conflict):
                # A permanent answer to a delete (e.g. 400) cannot heal: release rather than block deletion forever.
                return [
                    Event(
                        "Warning",
                        EventReason.DELETE_FAILED,
                        f"registry entry {name} could not be deleted: {exc}; released",
                    )
                ]
            raise RetryLater(f"deleting registry entry {name}: {exc}", self._delay(obj.uid, exc)) from None


def _dump(status: BaseModel) -> dict[str, Any]:
    """A status model as the patch carries it: camelCase, and only the fields set (a None set on purpose,
    such as lastAttempt, stays: it clears the field)."""
    return status.model_dump(by_alias=True, exclude_unset=True, mode="json")
