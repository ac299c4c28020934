"""plan.py: the update body a reconcile computed, rendered as status.pendingChanges."""

from __future__ import annotations

import pytest

from goodmem_operator.api.mapping import desired_request, diff
from goodmem_operator.api.types import PENDING_CHANGES_MAX, LLMSpec
from goodmem_operator.plan import VALUE_MAX, create_plan, pending_changes, summary

pytestmark = pytest.mark.unit

SPEC = {"displayName": "M", "providerType": "VLLM", "endpointUrl": "http://vllm.test/v1", "modelIdentifier": "m"}


def request(**spec: object) -> dict[str, object]:
    return desired_request(LLMSpec.model_validate({**SPEC, **spec}), llm_id="x", marks={}, credentials=None)


def test_each_changed_field_with_old_and_new_values() -> None:
    entry = {
        **SPEC,
        "description": "old",
        "labels": {"keep": "1", "gone": "2", "moved": "a"},
        "capabilities": {"supportsChat": True},
        "defaultSamplingParams": {"temperature": 0.5},
    }
    want = request(
        description="new",
        labels={"keep": "1", "moved": "b", "added": "c"},
        capabilities={"supportsChat": True, "supportsStreaming": True},
        defaultSamplingParams={"temperature": 0.7, "topK": 5},
    )
    assert pending_changes(diff(want, entry), entry) == [
        {"path": "capabilities.supportsStreaming", "old": False, "new": True},
        {"path": "defaultSamplingParams.temperature", "old": 0.5, "new": 0.7},
        {"path": "defaultSamplingParams.topK", "new": 5},
        {"path": "description", "old": "old", "new": "new"},
        {"path": "labels.added", "new": "c"},
        {"path": "labels.gone", "old": "2"},
        {"path": "labels.moved", "old": "a", "new": "b"},
    ]


def test_credentials_only_as_hidden() -> None:
    secret = "sk-live-never-shown"
    update = {"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": secret}}}
    rendered = pending_changes(update, {})
    assert rendered == [{"path": "credentials", "hidden": True}]
    assert secret not in repr(create_plan({**request(), **update}))


def test_long_values_shown_as_size_and_digest() -> None:
    big = {"k": "v" * (VALUE_MAX * 2)}
    [change] = pending_changes({"clientConfig": big}, {"clientConfig": {"k": "small"}})
    assert change["old"] == {"k": "small"}
    assert change["new"].startswith("<") and "sha256:" in change["new"] and "v" * 50 not in change["new"]


def test_the_list_is_bounded() -> None:
    labels = {f"k{i:03}": "v" for i in range(PENDING_CHANGES_MAX + 10)}
    changes = pending_changes({"replaceLabels": labels}, {})
    assert len(changes) == PENDING_CHANGES_MAX
    assert changes[-1] == {"path": "(and 11 more fields)"}


def test_summary_names_the_paths() -> None:
    changes = [{"path": f"p{i}"} for i in range(15)]
    assert summary(changes[:2]) == "p0, p1"
    assert summary(changes).endswith("p11, and 3 more")
