"""The tenant rules of trust.py as a table: relation, grants, what may be observed or adopted."""

from __future__ import annotations

import pytest

from goodmem_operator.api.mapping import OWNER_LABEL, OWNER_UID_LABEL, observed_values
from goodmem_operator.trust import (
    Access,
    Relation,
    derived_llm_id,
    grant_label,
    granted,
    may_adopt,
    may_observe,
    owner_id_allowed,
    parse_owner_id_grants,
    relation,
)

pytestmark = pytest.mark.unit

UID = "11111111-1111-4111-8111-111111111111"
OTHER_ID = "22222222-2222-4222-8222-222222222222"
WHO = {"cluster": "c1", "namespace": "team-a", "uid": UID}


@pytest.mark.parametrize(
    ("labels", "llm_id", "expected"),
    [
        ({OWNER_UID_LABEL: UID, OWNER_LABEL: "c1/team-a/x"}, OTHER_ID, Relation.OURS),
        ({OWNER_UID_LABEL: "someone", OWNER_LABEL: "c1/team-a/y"}, OTHER_ID, Relation.SAME_NAMESPACE),
        ({OWNER_UID_LABEL: "someone", OWNER_LABEL: "c1/team-b/y"}, OTHER_ID, Relation.OTHER_OWNER),
        ({OWNER_UID_LABEL: "someone", OWNER_LABEL: "c2/team-a/y"}, OTHER_ID, Relation.OTHER_OWNER),
        # a namespace whose name starts like ours is another namespace
        ({OWNER_UID_LABEL: "someone", OWNER_LABEL: "c1/team-ab/y"}, OTHER_ID, Relation.OTHER_OWNER),
        ({OWNER_UID_LABEL: "someone"}, OTHER_ID, Relation.OTHER_OWNER),
        ({}, OTHER_ID, Relation.UNOWNED),
        (None, OTHER_ID, Relation.UNOWNED),
        ({}, derived_llm_id(UID), Relation.OURS),  # unmarked at the id derived from our uid
    ],
)
def test_relation(labels: dict[str, str] | None, llm_id: str, expected: Relation) -> None:
    assert relation(labels, llm_id=llm_id, **WHO) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("adopt", Access.ADOPT), ("observe", Access.OBSERVE), (" Adopt ", Access.ADOPT), ("yes", None), ("", None)],
)
def test_granted_reads_only_our_cluster_and_namespace(value: str, expected: Access | None) -> None:
    assert granted({grant_label("c1", "team-a"): value}, cluster="c1", namespace="team-a") is expected
    assert granted({grant_label("c2", "team-a"): value}, cluster="c1", namespace="team-a") is None
    assert granted({grant_label("c1", "team-b"): value}, cluster="c1", namespace="team-a") is None


def test_grant_label_lives_under_the_reserved_prefix() -> None:
    # Tenants cannot write it: the CRD refuses spec labels under goodmem.ai/.
    assert grant_label("c1", "team-a") == "goodmem.ai/grant.c1.team-a"


@pytest.mark.parametrize(
    ("rel", "grant", "observe", "adopt"),
    [
        (Relation.OURS, None, True, True),
        (Relation.SAME_NAMESPACE, None, True, False),
        (Relation.SAME_NAMESPACE, Access.ADOPT, True, False),
        (Relation.OTHER_OWNER, None, False, False),
        (Relation.OTHER_OWNER, Access.ADOPT, True, False),  # a grant never takes over a managed entry
        (Relation.UNOWNED, None, False, False),
        (Relation.UNOWNED, Access.OBSERVE, True, False),
        (Relation.UNOWNED, Access.ADOPT, True, True),
    ],
)
def test_what_may_be_observed_and_adopted(rel: Relation, grant: Access | None, observe: bool, adopt: bool) -> None:
    assert may_observe(rel, grant) is observe
    assert may_adopt(rel, grant) is adopt


def test_owner_id_grants() -> None:
    owner = "0b0e6f1c-3a4e-4b7d-9e8f-1c2d3e4f5a6b"
    grants = parse_owner_id_grants([f"team-a={owner.upper()}", "platform=*"])
    assert owner_id_allowed(grants, "team-a", owner)
    assert not owner_id_allowed(grants, "team-a", OTHER_ID)
    assert not owner_id_allowed(grants, "team-b", owner)
    assert owner_id_allowed(grants, "platform", OTHER_ID)
    assert not owner_id_allowed({}, "team-a", owner)
    assert owner_id_allowed(parse_owner_id_grants([f"*={owner}"]), "anyone", owner)


@pytest.mark.parametrize("item", ["team-a", "=x", "team-a=", "team-a=not-a-uuid"])
def test_owner_id_grants_refuse_garbage(item: str) -> None:
    with pytest.raises(ValueError):
        parse_owner_id_grants([item])


def test_mirror_never_copies_marks_grants_or_a_foreign_owner() -> None:
    entry = {
        "displayName": "x",
        "ownerId": OTHER_ID,
        "labels": {"team": "x", OWNER_LABEL: "c1/b/n", OWNER_UID_LABEL: "u", grant_label("c1", "a"): "observe"},
    }
    mirrored = observed_values(entry, mirror=True, owner_visible=False)
    assert mirrored["labels"] == {"team": "x"} and "ownerId" not in mirrored
    assert observed_values(entry, mirror=True)["ownerId"] == OTHER_ID
