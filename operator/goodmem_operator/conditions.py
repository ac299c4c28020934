"""Kubernetes-style conditions (type, status, reason, message, lastTransitionTime, observedGeneration).

The code builds `api.types.Condition` models: a named constructor per condition (`available`,
`ready_false`, `synced`, `stalled`, ...) says what it means, and `set_conditions` is the one place that
stamps them (keeps `lastTransitionTime` while the status is unchanged, sets `observedGeneration`).
Types and reasons are `StrEnum`s; their string values are API (kstatus, Argo CD and users read them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from goodmem_operator.api.types import Condition


class ConditionType(StrEnum):
    READY = "Ready"
    SYNCED = "Synced"
    STALLED = "Stalled"  # only while a permanent error waits for a spec or Secret change
    UP_TO_DATE = "UpToDate"  # whether the registry entry matches the spec (status.pendingChanges: how not)


READY = ConditionType.READY
SYNCED = ConditionType.SYNCED
STALLED = ConditionType.STALLED
UP_TO_DATE = ConditionType.UP_TO_DATE


class Reason(StrEnum):
    """Every reason the operator writes on a condition or an Event it derives from one."""

    # success
    AVAILABLE = "Available"
    OBSERVED = "Observed"
    RECONCILE_SUCCESS = "ReconcileSuccess"
    OBSERVE_ONLY = "ObserveOnly"
    # progress
    CREATING = "Creating"
    DELETING = "Deleting"
    RECONCILE_PAUSED = "ReconcilePaused"
    DRY_RUN = "DryRun"
    # UpToDate
    UP_TO_DATE = "UpToDate"
    PENDING_CHANGES = "PendingChanges"
    NOT_OBSERVED = "NotObserved"
    NOT_COMPARABLE = "NotComparable"
    # the spec or the tenant rules
    INVALID_SPEC = "InvalidSpec"
    OWNER_ID_NOT_ALLOWED = "OwnerIdNotAllowed"
    OWNER_MISMATCH = "OwnerMismatch"
    CREDENTIALS_NOT_SUPPLIED = "CredentialsNotSupplied"
    ALREADY_EXISTS = "AlreadyExists"
    AMBIGUOUS_MATCH = "AmbiguousMatch"
    NOT_GRANTED = "NotGranted"
    CONFLICT = "Conflict"
    NOT_FOUND = "NotFound"
    # the registry
    UNAUTHORIZED = "Unauthorized"
    FORBIDDEN = "Forbidden"
    RATE_LIMITED = "RateLimited"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    REGISTRY_ERROR = "RegistryError"
    UNEXPECTED_RESPONSE = "UnexpectedResponse"
    INVALID_LLM_ID = "InvalidLLMId"
    # connections: a connection's own Ready, and an LLM's when its connection cannot be used
    CONNECTED = "Connected"
    UNREACHABLE = "Unreachable"
    INVALID_CA_BUNDLE = "InvalidCABundle"
    CONNECTION_NOT_FOUND = "ConnectionNotFound"
    CONNECTION_NOT_READY = "ConnectionNotReady"
    CONNECTION_NOT_ALLOWED = "ConnectionNotAllowed"
    # credentials (secrets.CredentialError.reason)
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
    SECRET_NOT_LABELLED = "SecretNotLabelled"
    SECRET_NOT_ALLOWED = "SecretNotAllowed"


_UNSTAMPED = ""  # lastTransitionTime of a constructed condition until set_conditions stamps it


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _make(ctype: ConditionType, status: str, reason: str, message: str) -> Condition:
    return Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=_UNSTAMPED,
        observed_generation=None,
    )


# -- named constructors ---------------------------------------------------------------------------


def available(message: str) -> Condition:
    return _make(READY, "True", Reason.AVAILABLE, message)


def observed(message: str) -> Condition:
    """Ready of an ObserveOnly resource whose entry exists."""
    return _make(READY, "True", Reason.OBSERVED, message)


def ready_true(reason: str, message: str) -> Condition:
    return _make(READY, "True", reason, message)


def ready_false(reason: str, message: str) -> Condition:
    return _make(READY, "False", reason, message)


def ready_unknown(reason: str, message: str) -> Condition:
    return _make(READY, "Unknown", reason, message)


def deleting(message: str) -> Condition:
    return ready_false(Reason.DELETING, message)


def synced(message: str = "last reconcile succeeded", reason: str = Reason.RECONCILE_SUCCESS) -> Condition:
    return _make(SYNCED, "True", reason, message)


def synced_false(reason: str, message: str) -> Condition:
    return _make(SYNCED, "False", reason, message)


def stalled(reason: str, message: str) -> Condition:
    """kstatus (Flux, kpt, cli-utils) reports Failed only for Stalled=True: this will not heal alone."""
    return _make(STALLED, "True", reason, message)


def up_to_date(message: str) -> Condition:
    return _make(UP_TO_DATE, "True", Reason.UP_TO_DATE, message)


def pending(message: str) -> Condition:
    """UpToDate=False: status.pendingChanges lists what the next apply would change."""
    return _make(UP_TO_DATE, "False", Reason.PENDING_CHANGES, message)


def up_to_date_unknown(reason: str, message: str) -> Condition:
    return _make(UP_TO_DATE, "Unknown", reason, message)


# -- the one setter -------------------------------------------------------------------------------


def set_conditions(
    previous: Iterable[Mapping[str, Any]] | None, wanted: Iterable[Condition], generation: int | None
) -> list[Condition]:
    """`wanted`, stamped: lastTransitionTime kept from `previous` while a condition's status is unchanged
    (now otherwise), observedGeneration set to `generation`."""
    before = list(previous or [])
    out = []
    for c in wanted:
        prior = find(before, c.type)
        stamp = prior.get("lastTransitionTime") if prior and prior.get("status") == c.status else None
        out.append(c.model_copy(update={"last_transition_time": stamp or now(), "observed_generation": generation}))
    return out


def dump(conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """Conditions as written to the status (camelCase, only the fields set)."""
    return [c.model_dump(by_alias=True, exclude_unset=True, mode="json") for c in conditions]


def find(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    """The condition of type `ctype` in a status' conditions, or None."""
    return next((c for c in conditions or [] if c.get("type") == ctype), None)


def same(a: list[dict[str, Any]] | None, b: list[dict[str, Any]] | None) -> bool:
    """Equal but for lastTransitionTime (which `set_conditions` keeps stable anyway)."""

    def strip(cs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs or []), key=lambda c: c["type"]
        )

    return strip(a) == strip(b)
