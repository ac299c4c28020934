"""goodmem-operator export (export.py): entries as ObserveOnly manifests that match them, filters, no credentials."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from goodmem_operator.api.mapping import desired_request, diff
from goodmem_operator.api.types import RESERVED_LABEL_PREFIX, LLMSpec
from goodmem_operator.export import export_manifests, render, resource_name

pytestmark = pytest.mark.unit

SECRET = "sk-exported-never"
FULL = {
    "llmId": "0b6f1a2e-1111-4111-8111-111111111111",
    "displayName": "GPT 4o (prod) — EU",
    "description": "the main one",
    "providerType": "OPENAI",
    "endpointUrl": "https://api.openai.test/v1",
    "apiPath": "/chat/completions",
    "modelIdentifier": "gpt-4o",
    "supportedModalities": ["TEXT", "IMAGE"],
    "labels": {"team": "a", "goodmem.ai/grant.default.ns": "observe"},
    "capabilities": {"supportsChat": True, "supportsStreaming": True},
    "defaultSamplingParams": {"temperature": 0.2, "stopSequences": []},
    "maxContextLength": 128000,
    "clientConfig": {"region": "eu"},
    "ownerId": "22222222-2222-4222-8222-222222222222",
    "credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": SECRET}},
    "createTime": "2026-01-01T00:00:00Z",
}
MANAGED = {**FULL, "llmId": "33333333-3333-4333-8333-333333333333", "labels": {"goodmem.ai/owner-uid": "u"}}
LOCAL = {
    "llmId": "44444444-4444-4444-8444-444444444444",
    "displayName": "local",
    "providerType": "OLLAMA",
    "endpointUrl": "http://ollama.test:11434/v1",
    "modelIdentifier": "llama3",
    "labels": {},
}


class Lister:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.asked: list[dict[str, Any]] = []

    async def list_llms(self, **kw: Any) -> list[dict[str, Any]]:
        self.asked.append(kw)
        return [dict(e) for e in self.entries]


async def test_each_manifest_matches_its_entry() -> None:
    """What the operator compares under ObserveOnly (mapping.diff of the spec's request, the operator's labels kept)
    finds no difference: applying the export gives UpToDate=True."""
    pairs, skipped = await export_manifests(Lister([FULL, LOCAL]))
    assert skipped == [] and len(pairs) == 2
    for manifest, entry in pairs:
        spec = LLMSpec.model_validate(manifest["spec"])
        assert spec.observe_only and spec.llm_id == entry["llmId"]
        request = desired_request(spec, llm_id=entry["llmId"], marks={}, credentials=None)
        reserved = {k: v for k, v in entry["labels"].items() if k.startswith(RESERVED_LABEL_PREFIX)}
        assert diff({**request, "labels": {**request["labels"], **reserved}}, entry) == {}, entry["llmId"]
    [full] = [m for m, e in pairs if e["llmId"] == FULL["llmId"]]
    assert full["spec"]["labels"] == {"team": "a"}, "the operator's own labels are not the spec's"
    assert "credentials" not in full["spec"] and "ownerId" not in full["spec"]


async def test_filters_and_managed_entries() -> None:
    lister = Lister([FULL, MANAGED, LOCAL])
    pairs, _ = await export_manifests(lister, labels={"team": "a"}, providers=["OPENAI"])
    assert [e["llmId"] for _, e in pairs] == [FULL["llmId"]], "provider filtered, managed left out"
    assert lister.asked[-1] == {"provider_type": "OPENAI", "labels": {"team": "a"}}, (
        "the label filter is the registry's"
    )
    pairs, _ = await export_manifests(lister, include_managed=True, providers=["OPENAI", "OLLAMA"])
    assert len(pairs) == 3 and lister.asked[-1]["provider_type"] is None


async def test_an_entry_the_spec_cannot_hold_is_skipped_with_a_note() -> None:
    bad = {**LOCAL, "llmId": "55555555-5555-4555-8555-555555555555", "maxContextLength": 0}
    pairs, skipped = await export_manifests(Lister([bad, LOCAL]))
    assert [e["llmId"] for _, e in pairs] == [LOCAL["llmId"]]
    assert len(skipped) == 1 and skipped[0].startswith(bad["llmId"]) and "maxContextLength" in skipped[0]


async def test_rendered_document_has_no_credentials_and_a_commented_placeholder() -> None:
    [(manifest, entry)] = (await export_manifests(Lister([FULL]), namespace="team-a"))[0]
    text = render(manifest, entry, "team-a", "prod")
    assert SECRET not in text and "inlineSecret" not in text
    assert "goodmem.ai/grant.prod.team-a=observe" in text
    assert "#     secretKeyRef: {name: REPLACE-ME, key: api-key}" in text
    loaded = yaml.safe_load(text)
    assert loaded == manifest and loaded["metadata"]["namespace"] == "team-a", "the placeholder is only a comment"


def test_names_are_dns_labels_and_unique_by_id() -> None:
    name = resource_name(FULL)
    assert name == "gpt-4o-prod-eu-0b6f1a2e"
    long = resource_name({"llmId": FULL["llmId"], "displayName": "x" * 300})
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert resource_name({"llmId": FULL["llmId"], "displayName": "!!!"}) == "llm-0b6f1a2e"


async def test_keys_and_values_yaml_1_1_reads_as_booleans_are_quoted() -> None:
    """kubectl reads YAML 1.1, where a plain n, y, on, off... is a boolean: a label `n` must stay a string."""
    entry = {**LOCAL, "labels": {"n": "y", "on": "off", "plain": "value"}}
    [(manifest, _)] = (await export_manifests(Lister([entry])))[0]
    text = render(manifest, entry, None, "default")
    for word in ("'n': 'y'", "'on': 'off'", "plain: value"):
        assert word in text, word


def test_cli_settings_errors_name_the_source_never_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from goodmem_operator.export import main

    monkeypatch.delenv("GOODMEM_API_KEY", raising=False)
    monkeypatch.delenv("GOODMEM_API_KEY_FILE", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--base-url", "http://registry.test"])
    assert exited.value.code == 2
    assert "no registry API key: set GOODMEM_API_KEY or GOODMEM_API_KEY_FILE" in capsys.readouterr().err
