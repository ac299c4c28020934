"""The tenant boundary: what an LLM of one namespace may do with a registry entry.

Every namespace is a tenant. The operator writes its ownership marks on every entry it manages
(`goodmem.ai/owner-uid`, `goodmem.ai/owner` = `<cluster>/<namespace>/<name>`), and the rules here
decide, from an entry's labels alone, how an LLM relates to it:

- OURS: the entry carries this LLM's uid (or sits, unmarked, at the id derived from that uid).
- SAME_NAMESPACE: managed by another LLM of the same cluster and namespace.
- OTHER_OWNER: managed by an LLM of another namespace or cluster.
- UNOWNED: no ownership marks: made outside Kubernetes, or left behind by `deletionPolicy: Orphan`.

An LLM may **observe** an entry that is OURS or SAME_NAMESPACE, or that grants its namespace access;
it may **adopt** (take over and manage) only an entry that is OURS, or UNOWNED and granting its
namespace `adopt`. A grant is one registry label on the entry:

    goodmem.ai/grant.<cluster>.<namespace>: observe | adopt      (adopt implies observe)

Tenants cannot write it: labels under `goodmem.ai/` are refused by the CRD, so only whoever holds the
registry key (by hand, with the registry's API) or the operator itself (`Orphan` leaves `adopt` for
the namespace the entry came from) puts a grant on an entry. Adoption replaces the entry's labels
with the adopter's, so a grant is used up by the adoption it allowed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum

from goodmem_operator.api.mapping import OWNER_LABEL, OWNER_UID_LABEL
from goodmem_operator.api.types import RESERVED_LABEL_PREFIX

GRANT_PREFIX = f"{RESERVED_LABEL_PREFIX}grant."
# Ids derived from a resource's UID: the same resource always maps to the same entry.
LLM_ID_NAMESPACE = uuid.UUID("6f1c3a4e-2b7d-5e8f-9a0b-1c2d3e4f5a6b")


class Access(StrEnum):
    OBSERVE = "observe"
    ADOPT = "adopt"


class Relation(StrEnum):
    OURS = "ours"
    SAME_NAMESPACE = "same-namespace"
    OTHER_OWNER = "other-owner"
    UNOWNED = "unowned"


def derived_llm_id(uid: str) -> str:
    return str(uuid.uuid5(LLM_ID_NAMESPACE, uid))


def grant_label(cluster: str, namespace: str) -> str:
    """The label key that grants `namespace` of `cluster` access to an entry."""
    return f"{GRANT_PREFIX}{cluster}.{namespace}"


def relation(labels: Mapping[str, str] | None, *, cluster: str, namespace: str, uid: str, llm_id: str) -> Relation:
    labels = labels or {}
    owner_uid = labels.get(OWNER_UID_LABEL)
    if owner_uid is None:
        # Unmarked at the id derived from our own uid: nobody else can have picked that id before this resource
        # existed, so it is our own entry whose marks were lost (stripped by hand, say).
        return Relation.OURS if llm_id == derived_llm_id(uid) else Relation.UNOWNED
    if owner_uid == uid:
        return Relation.OURS
    if labels.get(OWNER_LABEL, "").startswith(f"{cluster}/{namespace}/"):
        return Relation.SAME_NAMESPACE
    return Relation.OTHER_OWNER


def granted(labels: Mapping[str, str] | None, *, cluster: str, namespace: str) -> Access | None:
    value = (labels or {}).get(grant_label(cluster, namespace), "").strip().lower()
    try:
        return Access(value)
    except ValueError:
        return None


def may_observe(rel: Relation, grant: Access | None) -> bool:
    return rel in (Relation.OURS, Relation.SAME_NAMESPACE) or grant is not None


def may_adopt(rel: Relation, grant: Access | None) -> bool:
    return rel is Relation.OURS or (rel is Relation.UNOWNED and grant is Access.ADOPT)


def owner_id_allowed(grants: Mapping[str, frozenset[str]], namespace: str, owner_id: str) -> bool:
    """Whether the operator's configuration lets `namespace` create entries for principal `owner_id`."""
    allowed = grants.get(namespace, frozenset()) | grants.get("*", frozenset())
    return "*" in allowed or owner_id.lower() in {o.lower() for o in allowed}


def parse_owner_id_grants(items: list[str]) -> dict[str, frozenset[str]]:
    """`NAMESPACE=OWNER[|OWNER...]` items (OWNER `*`: any; NAMESPACE `*`: every namespace)."""
    out: dict[str, set[str]] = {}
    for item in items:
        namespace, sep, owners = item.partition("=")
        if not sep or not namespace.strip() or not owners.strip():
            raise ValueError(f"{item!r}: expected NAMESPACE=OWNER_ID[|OWNER_ID...]")
        for raw in owners.split("|"):
            owner = raw.strip()
            if owner != "*":
                uuid.UUID(owner)  # raises ValueError on anything that is not a UUID
            out.setdefault(namespace.strip(), set()).add(owner)
    return {k: frozenset(v) for k, v in out.items()}


def not_granted_message(
    llm_id: str, rel: Relation, access: Access, *, cluster: str, namespace: str, holder: str = ""
) -> str:
    """Why an entry cannot be observed or adopted, and what would allow it. The holder (`cluster/ns/name`)
    is named only when it is of the same namespace: another tenant's names are not this one's business."""
    if rel is Relation.OTHER_OWNER:
        return (
            f"registry entry {llm_id} is managed by an LLM of another namespace; namespace {namespace} may "
            f"not {access.value} it"
        )
    if rel is Relation.SAME_NAMESPACE:
        return f"registry entry {llm_id} is managed by {holder or 'another LLM of this namespace'}; not taking it over"
    return (
        f"registry entry {llm_id} is not managed by any LLM and grants namespace {namespace} no "
        f"{access.value} access; whoever holds the registry key may allow it with the entry label "
        f"{grant_label(cluster, namespace)}={access.value}"
    )
