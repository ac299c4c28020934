"""The in-memory LLM registry: pure, thread-safe, no HTTP.

Callers pass already-validated, normalised requests (see ``_validation``) and
a :class:`Principal`; the store enforces ownership, idempotent ids and
duplicate detection, and keeps timestamps.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._validation import (
    MAX_LABELS,
    ListFilters,
    ValidationError,
    canonicalize_url,
    credentials_fingerprint,
    infer_capabilities,
    redact_secrets,
)

#: Namespace for deriving principal ids from API keys.
KEY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "goodmem-emulator:api-key")

#: Keys rendered into every LLMResponse, in order; optional ones are omitted when unset.
_ALWAYS = (
    "llmId",
    "displayName",
    "providerType",
    "endpointUrl",
    "apiPath",
    "modelIdentifier",
    "supportedModalities",
    "labels",
    "capabilities",
    "ownerId",
    "createdAt",
    "updatedAt",
    "createdById",
    "updatedById",
)
_OPTIONAL = (
    "description",
    "version",
    "monitoringEndpoint",
    "defaultSamplingParams",
    "maxContextLength",
    "clientConfig",
)
_RESPONSE_ORDER = (
    "llmId",
    "displayName",
    "description",
    "providerType",
    "endpointUrl",
    "apiPath",
    "modelIdentifier",
    "supportedModalities",
    "credentials",
    "labels",
    "version",
    "monitoringEndpoint",
    "capabilities",
    "defaultSamplingParams",
    "maxContextLength",
    "clientConfig",
    "ownerId",
    "createdAt",
    "updatedAt",
    "createdById",
    "updatedById",
)


def owner_id_for_key(api_key: str) -> str:
    """The principal (owner) id the emulator derives from an API key."""
    return str(uuid.uuid5(KEY_NAMESPACE, api_key))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Principal:
    id: str
    is_admin: bool = False


class StoreError(Exception):
    status = 500
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    status = 404
    code = "NOT_FOUND"


class PermissionDenied(StoreError):
    status = 403
    code = "PERMISSION_DENIED"


class AlreadyExists(StoreError):
    status = 409
    code = "ALREADY_EXISTS"

    def __init__(self, message: str, existing_llm_id: str, reason: str) -> None:
        super().__init__(message)
        self.existing_llm_id = existing_llm_id
        self.reason = reason  # "LLM_ID_IN_USE" | "DUPLICATE_IDENTITY"


def identity_of(record: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """The duplicate-detection key of a stored record."""
    return (
        record["ownerId"],
        record["providerType"],
        canonicalize_url(record["endpointUrl"]),
        record["apiPath"],
        record["modelIdentifier"],
        credentials_fingerprint(record.get("credentials")),
    )


def render_llm(record: dict[str, Any], *, include_credentials: bool = False) -> dict[str, Any]:
    """The LLMResponse JSON of a stored record (a deep copy)."""
    out: dict[str, Any] = {}
    for key in _RESPONSE_ORDER:
        if key == "credentials":
            if include_credentials and record.get("credentials") is not None:
                out[key] = copy.deepcopy(record["credentials"])
            continue
        if key in _ALWAYS or record.get(key) is not None:
            out[key] = copy.deepcopy(record[key])
    return out


def render_internal(record: dict[str, Any]) -> dict[str, Any]:
    """The full stored record for test hooks: owner, fingerprint, credentials
    with every inline secret replaced by ``<redacted>``."""
    out = render_llm(record)
    out["credentials"] = redact_secrets(record.get("credentials"))
    out["canonicalEndpointUrl"] = canonicalize_url(record["endpointUrl"])
    out["credentialsFingerprint"] = credentials_fingerprint(record.get("credentials"))
    return out


_NO_FILTERS = ListFilters()  # frozen: safe to share as a default


class LLMStore:
    """Thread-safe in-memory registry of LLM records."""

    def __init__(self, clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        # Duplicate detection by lookup, not by scanning every record (which made each create O(n) and a
        # benchmark's 1,000 creates quadratic). Identities are unique among stored records: create and update
        # refuse a second one, so one llmId per identity.
        self._by_identity: dict[tuple[str, ...], str] = {}

    # -- helpers ---------------------------------------------------------

    def _duplicate_of(self, key: tuple[str, ...], exclude_id: str | None) -> str | None:
        llm_id = self._by_identity.get(key)
        return None if llm_id == exclude_id else llm_id

    def _store(self, llm_id: str, record: dict[str, Any], key: tuple[str, ...]) -> None:
        """Store (or replace) a record under its identity `key`."""
        self._drop(llm_id)
        self._records[llm_id] = record
        self._by_identity[key] = llm_id

    def _drop(self, llm_id: str) -> None:
        old = self._records.pop(llm_id, None)
        if old is not None:
            del self._by_identity[identity_of(old)]

    def _fetch(self, principal: Principal, llm_id: str) -> dict[str, Any]:
        rec = self._records.get(llm_id)
        if rec is None:
            raise NotFound("no LLM with this id")
        if not principal.is_admin and rec["ownerId"] != principal.id:
            raise PermissionDenied("this LLM belongs to another owner")
        return rec

    # -- operations ------------------------------------------------------

    def create(self, principal: Principal, request: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Create from a validated request; return (LLMResponse, statuses)."""
        request = copy.deepcopy(request)
        owner = request.pop("ownerId", None)
        if owner is not None and not principal.is_admin:
            raise PermissionDenied("setting ownerId requires admin rights (CREATE_LLM_ANY)")
        owner = owner or principal.id
        capabilities, statuses = infer_capabilities(request.pop("capabilities", None))
        with self._lock:
            llm_id = request.pop("llmId", None)
            if llm_id is not None and llm_id in self._records:
                raise AlreadyExists("an LLM with this llmId already exists", llm_id, "LLM_ID_IN_USE")
            llm_id = llm_id or str(uuid.uuid4())
            now = self._clock()
            record = {
                **request,
                "llmId": llm_id,
                "capabilities": capabilities,
                "ownerId": owner,
                "createdAt": now,
                "updatedAt": now,
                "createdById": principal.id,
                "updatedById": principal.id,
            }
            key = identity_of(record)
            dup = self._duplicate_of(key, exclude_id=None)
            if dup is not None:
                raise AlreadyExists(
                    "an LLM with identical ownerId, providerType, endpointUrl, apiPath, "
                    "modelIdentifier and credentials already exists",
                    dup,
                    "DUPLICATE_IDENTITY",
                )
            self._store(llm_id, record, key)
            return render_llm(record), statuses

    def get(self, principal: Principal, llm_id: str, *, include_credentials: bool = False) -> dict[str, Any]:
        if include_credentials and not principal.is_admin:
            raise PermissionDenied("includeCredentials requires admin rights (READ_LLM_CREDENTIALS)")
        with self._lock:
            return render_llm(self._fetch(principal, llm_id), include_credentials=include_credentials)

    def list(self, principal: Principal, filters: ListFilters = _NO_FILTERS) -> list[dict[str, Any]]:
        with self._lock:
            records = list(self._records.values())
        if not principal.is_admin:
            # A non-admin's ownerId filter naming someone else is ignored.
            records = [r for r in records if r["ownerId"] == principal.id]
        elif filters.owner_id is not None:
            records = [r for r in records if r["ownerId"] == filters.owner_id]
        if filters.provider_type is not None:
            records = [r for r in records if r["providerType"] == filters.provider_type]
        for key, value in filters.labels:
            records = [r for r in records if r["labels"].get(key) == value]
        records.sort(key=lambda r: (r["createdAt"], r["llmId"]))
        return [render_llm(r) for r in records]

    def update(self, principal: Principal, llm_id: str, update: dict[str, Any]) -> dict[str, Any]:
        """Apply a validated update; return the LLMResponse."""
        update = copy.deepcopy(update)
        with self._lock:
            current = self._fetch(principal, llm_id)
            new = copy.deepcopy(current)
            replace = update.pop("replaceLabels", None)
            merge = update.pop("mergeLabels", None)
            if replace is not None:
                new["labels"] = replace
            if merge is not None:
                new["labels"] = {**new["labels"], **merge}
                if len(new["labels"]) > MAX_LABELS:
                    raise ValidationError("mergeLabels", f"merged labels would exceed {MAX_LABELS} entries")
            new.update(update)
            if new == current:
                return render_llm(current)  # nothing changes: updatedAt stays
            key = identity_of(new)
            dup = self._duplicate_of(key, exclude_id=llm_id)
            if dup is not None:
                raise AlreadyExists(
                    "the update would make this LLM identical to another LLM of the same owner",
                    dup,
                    "DUPLICATE_IDENTITY",
                )
            new["updatedAt"] = max(self._clock(), current["updatedAt"] + 1)
            new["updatedById"] = principal.id
            self._store(llm_id, new, key)
            return render_llm(new)

    def delete(self, principal: Principal, llm_id: str) -> None:
        with self._lock:
            self._fetch(principal, llm_id)
            self._drop(llm_id)

    # -- test access -----------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every stored record (see :func:`render_internal`), oldest first."""
        with self._lock:
            recs = sorted(self._records.values(), key=lambda r: (r["createdAt"], r["llmId"]))
            return [render_internal(r) for r in recs]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._by_identity.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __contains__(self, llm_id: object) -> bool:
        with self._lock:
            return llm_id in self._records
