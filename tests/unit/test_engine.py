"""The engine's decisions as a table, against a fake external client: no HTTP, no registry.

Each row scripts what the client's verbs answer and states which verbs the engine calls, the result, the
conditions, the Events, the retry and the permanent-error gate. The LLM's own rules (what a 409 means,
the tenant checks) are tested with a fake registry in test_llm_client.py and over HTTP in tests/integration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from goodmem_operator.api.types import LLMStatus
from goodmem_operator.conditions import Reason
from goodmem_operator.engine import (
    PAUSED_ANNOTATION,
    Change,
    Engine,
    EngineSettings,
    Event,
    Observation,
    Outcome,
    Prepared,
    Refusal,
    Resource,
    Result,
    RetryLater,
    reason_for,
)
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

pytestmark = pytest.mark.unit

NAME = "entry-1"
INPUTS = "inputs-1"
SETTINGS = EngineSettings(backoff_base=2.0, backoff_cap=60.0, auth_backoff=40.0, recheck=300.0)
VERBS = ("observe", "create", "update", "delete")  # the registry verbs; prepare reads only the spec and Secrets

MISSING = Observation(exists=False, name=NAME)
CREATED = Observation(exists=True, name=NAME, created=True, status={"llm_id": NAME})
FOUND = Observation(exists=True, name=NAME, status={"llm_id": NAME})  # up to date
STALE = Observation(
    exists=True, name=NAME, update={"displayName": "x"}, drifted=["displayName"], status={"llm_id": NAME}
)
FOREIGN = replace(STALE, adopted=True)


@dataclass
class FakeClient:
    """Answers each verb from a script (an Observation, an exception to raise, or events for delete)."""

    prepared: Prepared[Any] | Exception = field(default_factory=lambda: Prepared(name=NAME, inputs=INPUTS, known=False))
    observe_: Observation | Exception = MISSING
    create_: Observation | Exception = CREATED
    update_: Observation | Exception | None = None  # None: the observation, updated
    delete_: list[Event] | Exception = field(default_factory=lambda: [Event("Normal", "Deleted", "gone")])
    calls: list[str] = field(default_factory=list)
    status_type = LLMStatus

    def external_name(self, obj: Resource) -> str:
        return NAME

    def observe_only(self, obj: Resource) -> bool:
        return obj.spec.get("managementPolicy") == "ObserveOnly"

    def _answer(self, verb: str, answer: Any) -> Any:
        self.calls.append(verb)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def prepare(self, obj: Resource) -> Prepared[Any]:
        self.calls.append("prepare")
        if isinstance(self.prepared, Exception):
            raise self.prepared
        return self.prepared

    async def observe(self, obj: Resource, prepared: Prepared[Any]) -> Observation:
        return self._answer("observe", self.observe_)  # type: ignore[no-any-return]

    async def create(self, obj: Resource, prepared: Prepared[Any]) -> Observation:
        return self._answer("create", self.create_)  # type: ignore[no-any-return]

    async def update(self, obj: Resource, prepared: Prepared[Any], observation: Observation) -> Observation:
        return self._answer("update", self.update_ if self.update_ is not None else observation)  # type: ignore[no-any-return]

    async def delete(self, obj: Resource) -> list[Event]:
        return self._answer("delete", self.delete_)  # type: ignore[no-any-return]

    def describe(self, obj: Resource, change: Change, observation: Observation) -> Event:
        return Event("Normal", change.value, f"{observation.name} {change.value}")

    def changes(self, prepared: Prepared[Any], observation: Observation | None) -> list[dict[str, Any]]:
        if observation is None or not observation.exists:
            return [{"path": "displayName", "new": "planned"}]
        return [{"path": k, "new": v} for k, v in sorted(observation.update.items())]

    def forget(self, uid: str) -> None:
        self.calls.append("forget")

    @property
    def registry_calls(self) -> list[str]:
        return [c for c in self.calls if c in VERBS]


def resource(
    status: dict[str, Any] | None = None,
    *,
    generation: int = 1,
    paused: bool = False,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Resource:
    return Resource(
        namespace="ns",
        name="llm",
        uid="uid-1",
        generation=generation,
        spec=dict(spec),
        status=dict(status or {}),
        annotations={**({PAUSED_ANNOTATION: "true"} if paused else {}), **(annotations or {})},
    )


def stored(obj: Resource, out: Outcome, **over: Any) -> Resource:
    """The object once the outcome's status is written."""
    return replace(obj, status={**obj.status, **out.status_patch(obj.status)}, **over)


def cond(out: Outcome, ctype: str) -> dict[str, Any] | None:
    found = out.condition(ctype)
    return dict(found) if found is not None else None


def summary(out: Outcome) -> tuple[str, str | None, str | None, bool]:
    def short(c: dict[str, Any] | None) -> str | None:
        return f"{c['status']}/{c['reason']}" if c is not None else None

    return out.result, short(cond(out, "Ready")), short(cond(out, "Synced")), cond(out, "Stalled") is not None


KNOWN: Prepared[Any] = Prepared(name=NAME, inputs=INPUTS, known=True)
OBSERVE_ONLY: Prepared[Any] = Prepared(name=NAME, inputs="", known=True, observe_only=True)
# ObserveOnly with the fields a managed LLM needs: what managing it would change is compared.
OBSERVE_ONLY_FULL: Prepared[Any] = replace(OBSERVE_ONLY, desired=object())
DRY_RUN = {"goodmem.ai/dry-run": "true"}
REQUESTED = "goodmem.ai/reconcile-requested-at"


@dataclass(frozen=True)
class Row:
    client: dict[str, Any]
    trigger: str
    calls: list[str]
    summary: tuple[str, str | None, str | None, bool]  # result, Ready, Synced, Stalled present
    events: list[str]
    retry: str  # none | backoff | recheck | creating-backoff
    last_attempt: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    up_to_date: str = "True/UpToDate"  # the UpToDate condition, status/reason
    pending: list[str] | None = None  # status.pendingChanges paths (None: the field is cleared)
    annotations: dict[str, str] = field(default_factory=dict)


ROWS: dict[str, Row] = {
    "fresh resource: created": Row(
        {},
        "create",
        ["observe", "create"],
        ("success", "True/Available", "True/ReconcileSuccess", False),
        ["Created"],
        "none",
    ),
    "vanished entry: recreated": Row(
        {"prepared": KNOWN},
        "resume",
        ["observe", "create"],
        ("success", "True/Available", "True/ReconcileSuccess", False),
        ["Recreated"],
        "none",
    ),
    "lost create: the create finds our entry, no Created event, nothing more to write": Row(
        {"create_": FOUND},
        "create",
        ["observe", "create"],
        ("noop", "True/Available", "True/ReconcileSuccess", False),
        [],
        "none",
    ),
    "lost create of an entry that differs: one update": Row(
        {"create_": STALE},
        "create",
        ["observe", "create", "update"],
        ("success", "True/Available", "True/ReconcileSuccess", False),
        ["Updated"],
        "none",
    ),
    "up to date: no write": Row(
        {"prepared": KNOWN, "observe_": FOUND},
        "resume",
        ["observe"],
        ("noop", "True/Available", "True/ReconcileSuccess", False),
        [],
        "none",
    ),
    "differs: one update": Row(
        {"prepared": KNOWN, "observe_": STALE},
        "update",
        ["observe", "update"],
        ("success", "True/Available", "True/ReconcileSuccess", False),
        ["Updated"],
        "none",
    ),
    "drift check finds a difference: DriftCorrected": Row(
        {"prepared": KNOWN, "observe_": STALE},
        "drift",
        ["observe", "update"],
        ("success", "True/Available", "True/ReconcileSuccess", False),
        ["DriftCorrected"],
        "none",
    ),
    "adoption: Adopted, then the update": Row(
        {"prepared": KNOWN, "observe_": FOREIGN},
        "create",
        ["observe", "update"],
        ("success", "True/Available", "True/ReconcileSuccess", False),
        ["Adopted", "Updated"],
        "none",
    ),
    "conflict (another tenant's entry): permanent, gated": Row(
        {"prepared": KNOWN, "observe_": Refusal(Reason.CONFLICT, "theirs", permanent=True)},
        "create",
        ["observe"],
        ("permanent", "False/Conflict", "False/Conflict", True),
        ["Conflict"],
        "none",
        last_attempt=INPUTS,
        up_to_date="Unknown/NotObserved",
    ),
    "NotGranted (unowned, no grant): re-checked slowly, not gated": Row(
        {"prepared": KNOWN, "observe_": Refusal(Reason.NOT_GRANTED, "no grant", permanent=False)},
        "create",
        ["observe"],
        ("error", "False/NotGranted", "False/NotGranted", False),
        ["NotGranted"],
        "recheck",
        up_to_date="Unknown/NotObserved",
    ),
    "refused observation (ObserveOnly): permanent, but not gated": Row(
        {"prepared": OBSERVE_ONLY, "observe_": Refusal(Reason.CONFLICT, "theirs", permanent=True, gated=False)},
        "create",
        ["observe"],
        ("permanent", "False/Conflict", "False/Conflict", True),
        ["Conflict"],
        "none",
        up_to_date="Unknown/NotObserved",
    ),
    "invalid spec (found before any registry call)": Row(
        {"prepared": Refusal(Reason.INVALID_SPEC, "spec is invalid", permanent=True)},
        "create",
        [],
        ("permanent", "False/InvalidSpec", "False/InvalidSpec", True),
        ["InvalidSpec"],
        "none",
        up_to_date="Unknown/NotObserved",
    ),
    "missing Secret: re-checked slowly (a Secret event re-arms it at once)": Row(
        {"prepared": Refusal(Reason.SECRET_NOT_FOUND, "no Secret", permanent=False)},
        "create",
        [],
        ("error", "False/SecretNotFound", "False/SecretNotFound", False),
        ["SecretNotFound"],
        "recheck",
        up_to_date="Unknown/NotObserved",
    ),
    "registry refuses the request (400): permanent, gated": Row(
        {"create_": BadRequest("400")},
        "create",
        ["observe", "create"],
        ("permanent", "False/InvalidSpec", "False/InvalidSpec", True),
        ["InvalidSpec"],
        "none",
        last_attempt=INPUTS,
        up_to_date="False/PendingChanges",
        pending=["displayName"],
    ),
    "registry down before the first create: Ready says Creating": Row(
        {"create_": ServerError("503")},
        "create",
        ["observe", "create"],
        ("error", "False/Creating", "False/RegistryUnavailable", False),
        ["RegistryUnavailable"],
        "backoff",
        up_to_date="False/PendingChanges",
        pending=["displayName"],
    ),
    "registry down for a known entry: Ready carries the reason": Row(
        {"prepared": KNOWN, "observe_": Unreachable("timeout")},
        "drift",
        ["observe"],
        ("error", "False/RegistryUnavailable", "False/RegistryUnavailable", False),
        ["RegistryUnavailable"],
        "backoff",
        up_to_date="Unknown/NotObserved",
    ),
    "paused: reads only (observe), the plan of what unpausing would create": Row(
        {},
        "update",
        ["observe"],
        ("paused", "Unknown/ReconcilePaused", "False/ReconcilePaused", False),
        [],
        "none",
        paused=True,
        up_to_date="False/PendingChanges",
        pending=["displayName"],
    ),
    "paused: the registry cannot be read, UpToDate unknown": Row(
        {"observe_": ServerError("503")},
        "update",
        ["observe"],
        ("paused", "Unknown/ReconcilePaused", "False/ReconcilePaused", False),
        [],
        "none",
        paused=True,
        up_to_date="Unknown/ReconcilePaused",
    ),
    "ObserveOnly: observe only, even when the entry differs": Row(
        {"prepared": OBSERVE_ONLY, "observe_": FOREIGN},
        "drift",
        ["observe"],
        ("noop", "True/Observed", "True/ObserveOnly", False),
        [],
        "none",
        status={"llmId": NAME},
        up_to_date="Unknown/NotComparable",
    ),
    "ObserveOnly of a missing entry: NotFound, never created": Row(
        {"prepared": OBSERVE_ONLY, "observe_": MISSING},
        "create",
        ["observe"],
        ("error", "False/NotFound", "False/NotFound", False),
        ["NotFound"],
        "recheck",
        up_to_date="Unknown/NotObserved",
    ),
    "ObserveOnly with the fields to manage, entry differs: UpToDate=False, what managing would change": Row(
        {"prepared": OBSERVE_ONLY_FULL, "observe_": FOREIGN},
        "drift",
        ["observe"],
        ("noop", "True/Observed", "True/ObserveOnly", False),
        [],
        "none",
        up_to_date="False/PendingChanges",
        pending=["displayName"],
    ),
    "ObserveOnly with the fields to manage, entry matches: UpToDate=True, nothing pending": Row(
        {"prepared": OBSERVE_ONLY_FULL, "observe_": FOUND},
        "drift",
        ["observe"],
        ("noop", "True/Observed", "True/ObserveOnly", False),
        [],
        "none",
        pending=[],
    ),
    "failed update: what it would have changed stays pending": Row(
        {"prepared": KNOWN, "observe_": STALE, "update_": ServerError("503")},
        "update",
        ["observe", "update"],
        ("error", "False/RegistryUnavailable", "False/RegistryUnavailable", False),
        ["RegistryUnavailable"],
        "backoff",
        up_to_date="False/PendingChanges",
        pending=["displayName"],
    ),
    "dry run of a new entry: the create planned, nothing written": Row(
        {"observe_": MISSING},
        "create",
        ["observe"],
        ("noop", "Unknown/DryRun", "False/DryRun", False),
        ["DryRun"],
        "none",
        status={"plannedAction": "Create"},
        up_to_date="False/PendingChanges",
        pending=["displayName"],
        annotations=DRY_RUN,
    ),
    "dry run of an entry that differs: the update planned, nothing written": Row(
        {"prepared": KNOWN, "observe_": STALE},
        "drift",
        ["observe"],
        ("noop", "Unknown/DryRun", "False/DryRun", False),
        ["DryRun"],
        "none",
        status={"plannedAction": "Update", "llmId": NAME},
        up_to_date="False/PendingChanges",
        pending=["displayName"],
        annotations=DRY_RUN,
    ),
    "dry run of an entry that matches: nothing to do": Row(
        {"prepared": KNOWN, "observe_": FOUND},
        "update",
        ["observe"],
        ("noop", "Unknown/DryRun", "False/DryRun", False),
        ["DryRun"],
        "none",
        status={"plannedAction": "None"},
        pending=[],
        annotations=DRY_RUN,
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
async def test_engine_decides(row: Row) -> None:
    client = FakeClient(**row.client)
    engine = Engine(client, SETTINGS)
    out = await engine.reconcile(resource(paused=row.paused, annotations=row.annotations), trigger=row.trigger)
    assert client.registry_calls == row.calls
    assert summary(out) == row.summary
    up = cond(out, "UpToDate")
    assert up is not None and f"{up['status']}/{up['reason']}" == row.up_to_date
    if row.pending is None:
        assert out.status.get("pendingChanges") is None
    else:
        assert [c["path"] for c in out.status["pendingChanges"]] == row.pending
    assert out.status.get("plannedAction") == row.status.get("plannedAction")
    assert [e.reason for e in out.events] == row.events
    assert out.status.get("lastAttempt") == row.last_attempt
    assert out.drift_corrected is (row.trigger == "drift" and "update" in row.calls)
    for key, value in row.status.items():
        assert out.status[key] == value
    if row.retry == "none":
        assert out.retry_after is None
    elif row.retry == "recheck":
        assert out.retry_after == SETTINGS.recheck
    else:
        assert SETTINGS.backoff_base * 0.5 <= out.retry_after <= SETTINGS.backoff_base  # type: ignore[operator]
    if row.paused:
        assert set(client.registry_calls) <= {"observe"}, "paused: reads only, never a write"


async def test_permanent_error_is_tried_once_per_inputs() -> None:
    client = FakeClient(create_=BadRequest("400: model unknown"))
    engine = Engine(client, SETTINGS)
    obj = resource()
    first = await engine.reconcile(obj)
    assert first.result == Result.PERMANENT and client.registry_calls == ["observe", "create"]
    obj = stored(obj, first)

    client.calls.clear()
    again = await engine.reconcile(obj, trigger="drift")
    assert again.result == Result.PERMANENT and client.registry_calls == [], "same inputs: no registry call"
    assert again.status_patch(obj.status) == {} and again.events == [], "nothing to write, nothing to say"

    # A spec edit that leaves the request as it was (a new generation, the same inputs) cannot change the answer.
    client.calls.clear()
    same = await engine.reconcile(replace(obj, generation=2))
    assert same.result == Result.PERMANENT and client.registry_calls == []

    # Changed inputs (a spec or Secret change): tried again at once.
    client.calls.clear()
    client.prepared = Prepared(name=NAME, inputs="inputs-2", known=False)
    client.create_ = CREATED
    fixed = await engine.reconcile(replace(obj, generation=2))
    assert fixed.result == Result.SUCCESS and client.registry_calls == ["observe", "create"]
    assert fixed.status["lastAttempt"] is None and stored(obj, fixed).status["lastAttempt"] is None, (
        "the gate is lifted"
    )


async def test_retryable_backoff_grows_is_capped_and_resets() -> None:
    client = FakeClient(prepared=KNOWN, observe_=ServerError("503"))
    engine = Engine(client, SETTINGS)
    obj = resource({"llmId": NAME})
    delays = [(await engine.reconcile(obj)).retry_after for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(SETTINGS.backoff_cap, SETTINGS.backoff_base * 2**attempt)
        assert delay is not None and ceiling * 0.5 <= delay <= ceiling, (attempt, delay)
    assert max(d for d in delays if d is not None) <= SETTINGS.backoff_cap
    assert delays[-1] >= SETTINGS.backoff_cap * 0.5, "the cap is reached"  # type: ignore[operator]

    client.observe_ = FOUND
    assert (await engine.reconcile(obj)).result == Result.NOOP
    client.observe_ = ServerError("503")
    delay = (await engine.reconcile(obj)).retry_after
    assert delay is not None and delay <= SETTINGS.backoff_base, "a success starts the backoff over"


async def test_retry_after_is_honoured() -> None:
    engine = Engine(FakeClient(prepared=KNOWN, observe_=RateLimited("429", retry_after=7)), SETTINGS)
    out = await engine.reconcile(resource({"llmId": NAME}))
    assert out.retry_after == 7 and summary(out)[2] == "False/RateLimited"


@pytest.mark.parametrize("error", [Unauthorized("401"), Forbidden("403")], ids=["401", "403"])
async def test_auth_failures_back_off_longer(error: RegistryError) -> None:
    engine = Engine(FakeClient(prepared=KNOWN, observe_=error), SETTINGS)
    out = await engine.reconcile(resource({"llmId": NAME}))
    assert out.result == Result.ERROR
    assert SETTINGS.auth_backoff * 0.5 <= out.retry_after <= SETTINGS.auth_backoff  # type: ignore[operator]


async def test_conditions_keep_their_transition_time_and_stamp_the_generation() -> None:
    engine = Engine(FakeClient(prepared=KNOWN, observe_=FOUND), SETTINGS)
    since = "2020-01-01T00:00:00Z"
    previous = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Available",
            "message": "m",
            "lastTransitionTime": since,
            "observedGeneration": 1,
        },
        {
            "type": "Synced",
            "status": "False",
            "reason": "RegistryUnavailable",
            "message": "m",
            "lastTransitionTime": since,
            "observedGeneration": 1,
        },
    ]
    out = await engine.reconcile(resource({"llmId": NAME, "conditions": previous}, generation=3))
    ready, synced = cond(out, "Ready"), cond(out, "Synced")
    assert ready is not None and synced is not None
    assert ready["lastTransitionTime"] == since, "status unchanged: the transition time stays"
    assert synced["lastTransitionTime"] != since, "status flipped: a new transition time"
    assert ready["observedGeneration"] == synced["observedGeneration"] == out.status["observedGeneration"] == 3


async def test_becoming_available_again_is_announced_once() -> None:
    engine = Engine(FakeClient(prepared=KNOWN, observe_=ServerError("503")), SETTINGS)
    obj = resource({"llmId": NAME})
    failed = await engine.reconcile(obj)
    obj = stored(obj, failed)
    assert [e.reason for e in (await engine.reconcile(obj)).events] == [], "the same failure is not re-announced"
    engine.client.observe_ = FOUND  # type: ignore[attr-defined]
    healed = await engine.reconcile(obj)
    assert [e.reason for e in healed.events] == ["Available"]
    assert [e.reason for e in (await engine.reconcile(stored(obj, healed))).events] == []


async def test_reconcile_request_is_recorded_and_passes_the_permanent_error_gate_once() -> None:
    """goodmem.ai/reconcile-requested-at: a new value is handled (status echoes it) even for inputs that failed
    permanently; the same value again is gated as before."""
    client = FakeClient(create_=BadRequest("400: model unknown"))
    engine = Engine(client, SETTINGS)
    obj = resource()
    failed = stored(obj, await engine.reconcile(obj))
    assert failed.status["lastAttempt"] == INPUTS

    client.calls.clear()
    requested = replace(failed, annotations={"goodmem.ai/reconcile-requested-at": "2026-12-04T18:00:00Z"})
    out = await engine.reconcile(requested)
    assert client.registry_calls == ["observe", "create"], "a new request tries the gated inputs again"
    assert out.status["lastHandledReconcileAt"] == "2026-12-04T18:00:00Z"

    client.calls.clear()
    again = await engine.reconcile(stored(requested, out), trigger="drift")
    assert client.registry_calls == [], "the value already handled does not open the gate again"
    assert again.status["lastHandledReconcileAt"] == "2026-12-04T18:00:00Z"

    paused = replace(requested, annotations={**requested.annotations, REQUESTED: "later", PAUSED_ANNOTATION: "true"})
    assert "lastHandledReconcileAt" not in (await engine.reconcile(paused)).status, "not served while paused"


async def test_dry_run_announces_a_plan_once_and_keeps_the_applied_fingerprint() -> None:
    stale = replace(STALE, status={"llm_id": NAME, "credentials_fingerprint": "hmac-sha256:new", "observed": {}})
    client = FakeClient(prepared=KNOWN, observe_=stale)
    engine = Engine(client, SETTINGS)
    obj = resource({"llmId": NAME, "credentialsFingerprint": "hmac-sha256:old"}, annotations=DRY_RUN)
    first = await engine.reconcile(obj)
    assert [e.message for e in first.events] == [
        "dry run (goodmem.ai/dry-run=true): would update registry entry entry-1: displayName; nothing written"
    ]
    assert "credentialsFingerprint" not in first.status, "the apply after the dry run must still send new credentials"
    again = await engine.reconcile(stored(obj, first), trigger="drift")
    assert again.events == [] and again.status_patch(stored(obj, first).status) == {}, "the same plan: said once"
    applied = await engine.reconcile(replace(stored(obj, first), annotations={}))
    assert client.registry_calls == ["observe", "observe", "observe", "update"]
    assert applied.status["plannedAction"] is None and applied.status["pendingChanges"] is None, "cleared"


async def test_paused_keeps_the_ready_condition_it_had() -> None:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "m",
        "lastTransitionTime": "2020-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    client = FakeClient(observe_=ServerError("503"))
    out = await Engine(client, SETTINGS).reconcile(resource({"conditions": [ready]}, generation=2, paused=True))
    assert cond(out, "Ready") == ready and client.registry_calls == ["observe"]
    assert set(out.status) == {"conditions"}, (
        "unreadable while paused: nothing but the conditions (pendingChanges stays)"
    )


# -- registry errors -> reasons ----------------------------------------------------------------------


class SomeFutureError(RegistryError):
    retryable = False


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (BadRequest("400"), "InvalidSpec"),
        (Unauthorized("401"), "Unauthorized"),
        (Forbidden("403"), "Forbidden"),
        (NotFound("404"), "NotFound"),
        (Conflict("409"), "AlreadyExists"),
        (RateLimited("429"), "RateLimited"),
        (ServerError("500"), "RegistryUnavailable"),
        (Unreachable("timeout"), "RegistryUnavailable"),
        (RegistryError("408"), "RegistryError"),
        (UnexpectedResponse("200, not JSON"), "UnexpectedResponse"),
        (InvalidId("bad id"), "InvalidLLMId"),
        (SomeFutureError("?"), "InvalidSpec"),
    ],
)
def test_registry_errors_map_to_reasons(error: RegistryError, reason: str) -> None:
    assert reason_for(error) == reason
    assert not hasattr(error, "reason"), "the HTTP client's errors describe transport only"


# -- deletion ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeleteRow:
    obj: Resource
    answer: list[Event] | Exception
    calls: list[str]
    events: list[str]  # or ["RetryLater"]


DELETES: dict[str, DeleteRow] = {
    "deleted (the client applies the policy: Delete, or Orphan's grant)": DeleteRow(
        resource(), [Event("Normal", "Orphaned", "left in place")], ["delete"], ["Orphaned"]
    ),
    "paused: left untouched, no registry call": DeleteRow(resource(paused=True), [], [], ["Orphaned"]),
    "dry run: left untouched, no registry call": DeleteRow(resource(annotations=DRY_RUN), [], [], ["DryRun"]),
    "ObserveOnly: released, no registry call": DeleteRow(
        resource(managementPolicy="ObserveOnly"), [], [], ["Released"]
    ),
    "registry down: the finalizer stays": DeleteRow(resource(), ServerError("503"), ["delete"], ["RetryLater"]),
    "conflict: the finalizer stays": DeleteRow(resource(), Conflict("409"), ["delete"], ["RetryLater"]),
    "permanent refusal: released rather than blocked forever": DeleteRow(
        resource(), BadRequest("400"), ["delete"], ["DeleteFailed"]
    ),
}


@pytest.mark.parametrize("row", DELETES.values(), ids=DELETES.keys())
async def test_engine_finalizes(row: DeleteRow) -> None:
    client = FakeClient(delete_=row.answer)
    engine = Engine(client, SETTINGS)
    await engine.reconcile(resource(), trigger="create")  # leaves per-object state behind
    client.calls.clear()
    try:
        events = [e.reason for e in await engine.finalize(row.obj)]
    except RetryLater as exc:
        events = ["RetryLater"]
        assert exc.delay > 0
    assert client.registry_calls == row.calls and events == row.events
    if events != ["RetryLater"]:
        assert "forget" in client.calls and "uid-1" not in engine.last_observed, "a released object leaves no state"
