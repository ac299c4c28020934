"""The external client of kind `LLM`: the registry's verbs for one LLM, and the rules that are the LLM's own.

The engine (engine.py) decides which verb to call; this module knows what an LLM asks of the registry:
spec validation, credentials (`secrets.resolve_credentials`), the desired request (`api.mapping`), the
create without a GET for a fresh resource, the lost create (a 409 for our own id: re-read it), a 409 for
another entry of the same identity (`_duplicate`, adoptionPolicy IfMatching), the tenant rules
(`_refuse_takeover`, `_not_granted`, trust.py), providerType immutability, credentials "inherited" from an
adopted entry, the grant an Orphan leaves, and the wording of its Events.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from goodmem_operator import plan
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
from goodmem_operator.api.types import RESERVED_LABEL_PREFIX, LLMSpec, LLMStatus
from goodmem_operator.conditions import Reason, now
from goodmem_operator.connections import Route, Router, SingleRegistry, Unavailable
from goodmem_operator.engine import (
    Change,
    Event,
    EventReason,
    Observation,
    Prepared,
    Refusal,
    Resource,
)
from goodmem_operator.registry import Conflict, NotFound, RegistryClient
from goodmem_operator.secrets import CredentialError, SecretData, SecretReader, resolve
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

# status.credentialsFingerprint of an adopted entry whose stored credentials this LLM never supplied.
INHERITED = "inherited"
DEFAULT_API_PATH = "/chat/completions"


@dataclass(frozen=True)
class LLMObject(Resource):
    """What the reconcile needs of an LLM resource."""

    @property
    def llm_id(self) -> str:
        return self.spec.get("llmId") or self.status.get("llmId") or derived_llm_id(self.uid)


@dataclass(frozen=True)
class Desired:
    """The LLM's side of a `Prepared`: what it asks of the registry."""

    spec: LLMSpec
    request: dict[str, Any]  # desired_request: the create body (ids, marks and credentials included)
    credentials: dict[str, Any] | None
    fingerprint: str  # keyed fingerprint of the credentials
    source: SecretData | None = None  # the Secret they came from (secretKeyRef)


@dataclass
class LLMSettings:
    cluster_name: str = "default"
    fingerprint_key: bytes = b"goodmem-operator"
    default_deletion_policy: str = "Delete"
    # namespace ("*": any) -> registry principals ("*": any) an LLM there may name in spec.ownerId (--allow-owner-id)
    owner_id_grants: dict[str, frozenset[str]] = field(default_factory=dict)
    # seconds from the Secret event that brought a new key to the registry's answer to the PUT that carried it
    rotation_observer: Callable[[float], None] | None = None


class LLMClient:
    """`ExternalClient` of kind LLM over the registry's `/v1/llms`."""

    status_type = LLMStatus

    def __init__(self, registry: RegistryClient | Router, secrets: SecretReader, settings: LLMSettings) -> None:
        # Which registry client (connection) each LLM's calls go through; one client for all when given one.
        self.router: Router = registry if isinstance(registry, Router) else SingleRegistry(registry)
        self.secrets = secrets
        self.settings = settings
        self._applied: dict[str, str] = {}  # uid -> credentials fingerprint last sent (newer than status)

    def forget(self, uid: str) -> None:
        self._applied.pop(uid, None)

    def external_name(self, obj: LLMObject) -> str:
        return obj.llm_id

    def observe_only(self, obj: LLMObject) -> bool:
        return obj.spec.get("managementPolicy") == "ObserveOnly"

    # -- prepare: the spec and credentials, no registry call --------------------------------------------

    def _route(self, obj: LLMObject, *, releasing: bool = False) -> Route:
        """The LLM's connection (connections.py): its registry client, or a refusal that heals by itself."""
        try:
            return self.router.route(obj.namespace, obj.spec, obj.status, releasing=releasing)
        except Unavailable as exc:
            raise Refusal(exc.reason, exc.message, permanent=False) from None

    async def prepare(self, obj: LLMObject) -> Prepared[Desired]:
        spec = self._validated(obj)
        self._route(obj)  # a connection that cannot be used stops here, before Secrets are read
        if spec.observe_only:
            return Prepared(
                name=obj.llm_id, inputs="", known=True, observe_only=True, desired=self._compared(obj, spec)
            )
        if spec.owner_id and not owner_id_allowed(self.settings.owner_id_grants, obj.namespace, spec.owner_id):
            raise Refusal(
                Reason.OWNER_ID_NOT_ALLOWED,
                f"spec.ownerId {spec.owner_id}: the operator does not let namespace {obj.namespace} create registry "
                f"entries for another principal (an operator admin can allow it with --allow-owner-id "
                f"{obj.namespace}={spec.owner_id}); nothing was sent to the registry",
                permanent=True,
            )
        credentials, source = await self._credentials(obj, spec)
        fingerprint = credentials_fingerprint(credentials, self.settings.fingerprint_key)
        marks = ownership_labels(self.settings.cluster_name, obj.namespace, obj.name, obj.uid)
        request = desired_request(spec, llm_id=obj.llm_id, marks=marks, credentials=credentials)
        return Prepared(
            name=obj.llm_id,
            inputs=self._inputs_fingerprint(request, fingerprint),
            known=bool(obj.status.get("llmId")),
            desired=Desired(spec, request, credentials, fingerprint, source),
        )

    @staticmethod
    def _compared(obj: LLMObject, spec: LLMSpec) -> Desired | None:
        """ObserveOnly: what managing the entry would ask of it, to compare (no Secret read, nothing sent), when
        the spec has the fields a managed LLM needs; None when it only names the entry."""
        if None in (spec.display_name, spec.provider_type, spec.endpoint_url, spec.model_identifier):
            return None
        return Desired(spec, desired_request(spec, llm_id=obj.llm_id, marks={}, credentials=None), None, "")

    @staticmethod
    def _validated(obj: LLMObject) -> LLMSpec:
        try:
            return LLMSpec.model_validate(obj.spec)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise Refusal(Reason.INVALID_SPEC, f"spec is invalid: {detail}", permanent=True) from None

    async def _credentials(self, obj: LLMObject, spec: LLMSpec) -> tuple[dict[str, Any] | None, SecretData | None]:
        try:
            return await resolve(spec.credentials, obj.namespace, self.secrets)
        except CredentialError as exc:
            message = str(exc)
            if obj.status.get("llmId"):
                message += "; the registry keeps the credentials it already has, nothing was changed or deleted"
            raise Refusal(exc.reason, message, permanent=exc.permanent) from None

    def _inputs_fingerprint(self, request: dict[str, Any], credentials_fp: str) -> str:
        safe = {k: v for k, v in request.items() if k != "credentials"}
        safe["credentials"] = credentials_fp
        canonical = json.dumps(safe, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self.settings.fingerprint_key, canonical, hashlib.sha256).hexdigest()[:32]

    # -- the four verbs ------------------------------------------------------------------------------

    async def observe(self, obj: LLMObject, prepared: Prepared[Desired]) -> Observation:
        if prepared.observe_only:
            return await self._mirror(obj, prepared)
        desired = _desired(prepared)
        # A resource that never had an entry (no id in status or spec) creates at once: its derived id is new,
        # and a 409 for that id (a create whose answer was lost) re-reads it. One registry request per create
        # instead of two (bench/ANALYSIS.md #3).
        fresh = not obj.status.get("llmId") and not desired.spec.llm_id
        entry = None if fresh else await self._get(obj, prepared.name)
        if entry is None:
            return Observation(exists=False, name=prepared.name)
        return self._judge(obj, desired, entry, prepared.name)

    async def create(self, obj: LLMObject, prepared: Prepared[Desired]) -> Observation:
        desired = _desired(prepared)
        route = self._route(obj)
        try:
            entry = await route.client.create_llm(desired.request)
        except Conflict as exc:
            name = prepared.name
            found = await self._get(obj, name)  # our own id: an earlier create went through, its answer lost
            if found is None:  # another entry with the same identity
                found = await self._duplicate(obj, desired, exc)
                name = str(found["llmId"])
            return self._judge(obj, desired, found, name)
        self._applied[obj.uid] = desired.fingerprint
        if not desired.spec.owner_id and isinstance(entry.get("ownerId"), str):
            self.router.learned_principal(route.key, entry["ownerId"])  # the principal the connection's key acts as
        # What we just created is ours, whatever the registry echoes of its labels.
        status = self._status(obj, prepared.name, desired.fingerprint, entry)
        if desired.credentials is not None:
            status.update(_credentials_sent(desired))
        return Observation(exists=True, name=prepared.name, entry=entry, created=True, status=status)

    async def update(self, obj: LLMObject, prepared: Prepared[Desired], observation: Observation) -> Observation:
        entry = await self._route(obj).client.update_llm(observation.name, observation.update)
        fingerprint = observation.status["credentials_fingerprint"]
        self._applied[obj.uid] = fingerprint
        status = self._status(obj, observation.name, fingerprint, entry)
        desired = _desired(prepared)
        if "credentials" in observation.update:
            status.update(_credentials_sent(desired))
            seen = desired.source.observed_at if desired.source is not None else None
            if seen is not None and self.settings.rotation_observer is not None:
                self.settings.rotation_observer(time.monotonic() - seen)
        return replace(observation, entry=entry, status=status)

    async def delete(self, obj: LLMObject) -> list[Event]:
        """Apply the deletion policy to an entry of ours; any other entry is left as it is."""
        llm_id = obj.llm_id
        observed = await self._get(obj, llm_id, releasing=True)
        if observed is None:
            return [Event("Normal", EventReason.DELETED, f"registry entry {llm_id} already gone")]
        labels = observed.get("labels") or {}
        if relation(labels, **self._who(obj, llm_id)) is not Relation.OURS:
            return [
                Event(
                    "Normal",
                    EventReason.RELEASED,
                    f"registry entry {llm_id} is not managed by this resource; left in place",
                )
            ]
        if (obj.spec.get("deletionPolicy") or self.settings.default_deletion_policy) == "Orphan":
            return await self._orphan(obj, llm_id, labels)
        with contextlib.suppress(NotFound):  # already gone: what a delete wants
            await self._route(obj, releasing=True).client.delete_llm(llm_id)
        return [Event("Normal", EventReason.DELETED, f"registry entry {llm_id} deleted")]

    async def _orphan(self, obj: LLMObject, llm_id: str, labels: dict[str, str]) -> list[Event]:
        # The ownership marks go; a grant stays so that this namespace (and only it) can adopt it back.
        grant = grant_label(self.settings.cluster_name, obj.namespace)
        kept = {k: v for k, v in labels.items() if not k.startswith(RESERVED_LABEL_PREFIX)}
        kept[grant] = Access.ADOPT.value
        if kept != labels:
            await self._route(obj, releasing=True).client.update_llm(llm_id, {"replaceLabels": kept})
        return [
            Event(
                "Normal",
                EventReason.ORPHANED,
                f"registry entry {llm_id} left in place (deletionPolicy Orphan); "
                f"namespace {obj.namespace} may adopt it back ({grant}=adopt)",
            )
        ]

    # -- judging an entry found ------------------------------------------------------------------------

    def _judge(self, obj: LLMObject, desired: Desired, entry: dict[str, Any], llm_id: str) -> Observation:
        """An entry found (not created now): may this LLM manage it, and what would converge it."""
        self._refuse_takeover(obj, desired, entry, llm_id)
        adopted = relation(entry.get("labels"), **self._who(obj, llm_id)) is not Relation.OURS
        fingerprint = desired.fingerprint
        # Stored credentials this LLM did not supply stay "inherited" until its spec supplies its own.
        if desired.credentials is None and (adopted or obj.status.get("credentialsFingerprint") == INHERITED):
            fingerprint = INHERITED
            self._refuse_moving_inherited(desired, entry, llm_id)
        update = diff(desired.request, entry)
        last = self._applied.get(obj.uid) or obj.status.get("credentialsFingerprint")
        if desired.credentials is not None and fingerprint != last:
            update["credentials"] = desired.credentials
        return Observation(
            exists=True,
            name=llm_id,
            entry=entry,
            adopted=adopted,
            update=update,
            drifted=drifted_fields(update),
            status=self._status(obj, llm_id, fingerprint, entry),
        )

    @staticmethod
    def _refuse_moving_inherited(desired: Desired, entry: dict[str, Any], llm_id: str) -> None:
        moving = sorted(k for k in ("endpointUrl", "apiPath") if k in diff(desired.request, entry))
        if moving:
            fields = " and ".join(moving)
            raise Refusal(
                Reason.CREDENTIALS_NOT_SUPPLIED,
                f"registry entry {llm_id} keeps credentials that this LLM did not supply; changing its "
                f"{fields} would send them somewhere new. Set spec.credentials (they replace "
                f"the stored ones) or keep the entry's {fields}",
                permanent=True,
            )

    def _status(self, obj: LLMObject, llm_id: str, fingerprint: str, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "llm_id": llm_id,
            "connection": self._route(obj).label,
            "credentials_fingerprint": fingerprint,
            "observed": observed_values(entry),
        }

    async def _mirror(self, obj: LLMObject, prepared: Prepared[Desired]) -> Observation:
        """ObserveOnly: the entry, if this namespace may see it; never the operator's marks or another principal.
        With a spec to compare, also what managing it would change (the operator's own labels aside)."""
        llm_id = prepared.name
        entry = await self._get(obj, llm_id)
        if entry is None:
            return Observation(exists=False, name=llm_id)
        labels = entry.get("labels")
        rel = relation(labels, **self._who(obj, llm_id))
        if not may_observe(rel, granted(labels, cluster=self.settings.cluster_name, namespace=obj.namespace)):
            raise self._not_granted(obj, llm_id, rel, Access.OBSERVE, labels)
        owner_visible = rel in (Relation.OURS, Relation.SAME_NAMESPACE)
        update: dict[str, Any] = {}
        if prepared.desired is not None:
            reserved = {k: v for k, v in (labels or {}).items() if k.startswith(RESERVED_LABEL_PREFIX)}
            wanted = prepared.desired.request
            update = diff({**wanted, "labels": {**wanted["labels"], **reserved}}, entry)
            if prepared.desired.spec.credentials is not None:
                # Never read under ObserveOnly, and the registry does not return them: managing would send them.
                update["credentials"] = plan.HIDDEN
        return Observation(
            exists=True,
            name=llm_id,
            entry=entry,
            update=update,
            drifted=drifted_fields(update),
            status={
                "llm_id": llm_id,
                "connection": self._route(obj).label,
                "observed": observed_values(entry, mirror=True, owner_visible=owner_visible),
            },
        )

    def changes(self, prepared: Prepared[Desired], observation: Observation | None) -> plan.PendingChanges:
        """status.pendingChanges: the update an observation found, or the create the spec asks for."""
        if observation is None or not observation.exists:
            return plan.create_plan(_desired(prepared).request)
        return plan.pending_changes(observation.update, observation.entry or {})

    # -- the tenant boundary (trust.py holds the rules) -------------------------------------------------

    def _who(self, obj: LLMObject, llm_id: str) -> dict[str, str]:
        return {"cluster": self.settings.cluster_name, "namespace": obj.namespace, "uid": obj.uid, "llm_id": llm_id}

    def _not_granted(
        self, obj: LLMObject, llm_id: str, rel: Relation, access: Access, labels: dict[str, str] | None
    ) -> Refusal:
        """Refuse to observe or adopt an entry. An entry owned by another LLM is a Conflict that only a spec change
        ends; an unowned one may be granted later by whoever holds the registry key, so it is re-checked slowly."""
        holder = (labels or {}).get(OWNER_LABEL, "")
        message = not_granted_message(
            llm_id, rel, access, cluster=self.settings.cluster_name, namespace=obj.namespace, holder=holder
        )
        if rel is Relation.UNOWNED:
            return Refusal(Reason.NOT_GRANTED, message, permanent=False)
        # Refused adoption: these inputs are not tried again. Refused observation: checked on each reconcile.
        return Refusal(Reason.CONFLICT, message, permanent=True, gated=access is Access.ADOPT)

    def _refuse_takeover(self, obj: LLMObject, desired: Desired, observed: dict[str, Any], llm_id: str) -> None:
        """Raise why this LLM may not manage the entry it found; return when it may."""
        labels = observed.get("labels")
        rel = relation(labels, **self._who(obj, llm_id))
        if not may_adopt(rel, granted(labels, cluster=self.settings.cluster_name, namespace=obj.namespace)):
            raise self._not_granted(obj, llm_id, rel, Access.ADOPT, labels)
        owner_id = desired.spec.owner_id
        if owner_id and observed.get("ownerId") and observed["ownerId"].lower() != owner_id.lower():
            raise Refusal(
                Reason.OWNER_MISMATCH,
                f"registry entry {llm_id} belongs to another principal than spec.ownerId {owner_id}; "
                f"not taking it over",
                permanent=True,
            )
        wanted = desired.request["providerType"]
        if observed.get("providerType") and observed["providerType"] != wanted:
            raise Refusal(
                Reason.INVALID_SPEC,
                f"registry entry {llm_id} has providerType {observed['providerType']}, which the registry "
                f"cannot change; the spec asks for {wanted}",
                permanent=True,
            )

    async def _duplicate(self, obj: LLMObject, desired: Desired, exc: Conflict) -> dict[str, Any]:
        """After a 409 on identity: the one existing entry to adopt (adoptionPolicy IfMatching), or the refusal.

        The registry refuses a create when an entry of the same owner has the same provider, endpoint, path,
        model and credentials. Credentials are not returned, so among the entries that agree on the rest the
        conflicting one is known only when the registry names it or exactly one entry agrees; with several,
        nothing is adopted. Only an entry this namespace may adopt (its own, or unowned with a grant) is taken.
        """
        spec = desired.spec
        candidates = await self._candidates(obj, desired, exc)
        relations = [relation(e.get("labels"), **self._who(obj, str(e.get("llmId")))) for e in candidates]
        same = (
            f"another registry entry{self._named(obj, candidates, relations)} has the same provider, endpoint, "
            f"path, model and credentials"
        )
        if (
            spec.adoption_policy != "IfMatching"
            or not candidates
            or relations[0] in (Relation.OTHER_OWNER, Relation.SAME_NAMESPACE)
        ):
            raise Refusal(Reason.ALREADY_EXISTS, f"{same}: {exc.registry_reason or exc}", permanent=True)
        if len(candidates) > 1:
            raise Refusal(
                Reason.AMBIGUOUS_MATCH,
                f"adoptionPolicy IfMatching: {len(candidates)} registry entries"
                f"{self._named(obj, candidates, relations)} match the provider, endpoint, path and model, and the "
                f"registry does not say which holds the same credentials; nothing adopted (name the entry in "
                f"spec.llmId instead)",
                permanent=True,
            )
        entry = candidates[0]
        if not may_adopt(
            relations[0], granted(entry.get("labels"), cluster=self.settings.cluster_name, namespace=obj.namespace)
        ):
            raise Refusal(
                Reason.NOT_GRANTED,
                f"adoptionPolicy IfMatching: {same}, and it grants namespace {obj.namespace} no adopt access; whoever "
                f"holds the registry key may allow it with the entry label "
                f"{grant_label(self.settings.cluster_name, obj.namespace)}=adopt",
                permanent=False,
            )
        return entry  # the owner and providerType checks follow in _refuse_takeover

    async def _candidates(self, obj: LLMObject, desired: Desired, exc: Conflict) -> list[dict[str, Any]]:
        """The entries the 409 may mean: same identity, and only the one the registry named if it named one."""
        owner_id = desired.spec.owner_id
        listed = await self._route(obj).client.list_llms(
            provider_type=desired.request["providerType"], owner_id=owner_id
        )
        candidates = [e for e in listed if _same_identity(e, desired.request, owner_id)]
        named = exc.existing_id if exc.existing_id and exc.existing_id != desired.request["llmId"] else None
        if named:  # the registry said which entry (not promised by the docs): that one, and only it, conflicts
            candidates = [e for e in candidates if e["llmId"] == named]
            if not candidates:
                found = await self._get(obj, named)
                candidates = [found] if found is not None else []
        return candidates

    def _named(self, obj: LLMObject, candidates: list[dict[str, Any]], relations: list[Relation]) -> str:
        """` (id, ...)` of the candidates this namespace may see: another tenant's entry id is not its business."""
        visible = [
            str(e.get("llmId"))
            for e, rel in zip(candidates, relations, strict=True)
            if may_observe(rel, granted(e.get("labels"), cluster=self.settings.cluster_name, namespace=obj.namespace))
        ]
        hidden = len(candidates) - len(visible)
        names = ", ".join(visible + ([f"{hidden} not visible to namespace {obj.namespace}"] if hidden else []))
        return f" ({names})" if names else ""

    # -- Events ------------------------------------------------------------------------------------------

    def describe(self, obj: LLMObject, change: Change, observation: Observation) -> Event:
        llm_id, fields = observation.name, ", ".join(observation.drifted)
        if change is Change.ADOPTED:
            return Event("Normal", EventReason.ADOPTED, f"registry entry {llm_id} adopted by {obj.key}")
        if change is Change.DRIFT_CORRECTED:
            return Event(
                "Warning", EventReason.DRIFT_CORRECTED, f"registry entry {llm_id} differed in {fields}; corrected"
            )
        if change is Change.UPDATED and observation.drifted == ["credentials"]:
            return Event("Normal", EventReason.CREDENTIALS_ROTATED, f"registry entry {llm_id}: credentials updated")
        if change is Change.UPDATED:
            return Event("Normal", EventReason.UPDATED, f"registry entry {llm_id}: updated {fields}")
        return Event("Normal", EventReason(change.value), f"registry entry {llm_id} {change.value.lower()}")

    # -- helpers -----------------------------------------------------------------------------------------

    async def _get(self, obj: LLMObject, llm_id: str, *, releasing: bool = False) -> dict[str, Any] | None:
        try:
            return await self._route(obj, releasing=releasing).client.get_llm(llm_id)
        except NotFound:
            return None


def _desired(prepared: Prepared[Desired]) -> Desired:
    assert prepared.desired is not None, "prepare fills it for every resource that is not ObserveOnly"
    return prepared.desired


def _credentials_sent(desired: Desired) -> dict[str, Any]:
    """Status fields of credentials just sent: when, and from which version of their Secret."""
    version = desired.source.resource_version if desired.source is not None else ""
    return {"credentials_secret_version": version or None, "credentials_changed_time": now()}


def _same_identity(entry: dict[str, Any], desired: dict[str, Any], owner_id: str | None) -> bool:
    return (
        canonical_url(str(entry.get("endpointUrl", ""))) == canonical_url(desired["endpointUrl"])
        and entry.get("modelIdentifier") == desired["modelIdentifier"]
        and entry.get("apiPath", DEFAULT_API_PATH) == desired.get("apiPath", DEFAULT_API_PATH)
        and entry.get("providerType", desired["providerType"]) == desired["providerType"]
        and (not owner_id or str(entry.get("ownerId", "")).lower() == owner_id.lower())
        and isinstance(entry.get("llmId"), str)
    )
