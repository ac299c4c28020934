from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from goodmem_emulator import Emulator
from goodmem_operator.reconcile import LLMObject, Reconciler, ReconcileSettings
from goodmem_operator.registry import RegistryClient
from goodmem_operator.secrets import CREDENTIALS_LABEL, SecretData

API_KEY = "integration-operator-key"
ADMIN_KEY = "integration-admin-key"


class FakeSecrets:
    """Secrets as a dict: (namespace, name) -> {key: value}, each labelled goodmem.ai/credentials=true (a
    credentials Secret opts in) unless its key is in `unlabelled`."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        self.unlabelled: set[tuple[str, str]] = set()
        self.reads = 0

    async def read(self, namespace: str, name: str) -> SecretData | None:
        self.reads += 1
        key = (namespace, name)
        if key not in self.data:
            return None
        labels = {} if key in self.unlabelled else {CREDENTIALS_LABEL: "true"}
        return SecretData(labels=labels, data=dict(self.data[key]))


@pytest.fixture(params=["named", "opaque"])
async def emulator(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """The emulator, once with 409 bodies naming the existing entry (our emulator's habit) and once with
    opaque ones (all the docs promise): every integration test runs both ways."""
    emu = Emulator(api_keys=[API_KEY], admin_keys=[ADMIN_KEY], conflict_body=request.param)
    await emu.start("127.0.0.1", 0)
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def registry(emulator: Emulator) -> AsyncIterator[RegistryClient]:
    client = RegistryClient(emulator.base_url, API_KEY, timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def admin(emulator: Emulator) -> AsyncIterator[RegistryClient]:
    client = RegistryClient(emulator.base_url, ADMIN_KEY, timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def secrets() -> FakeSecrets:
    return FakeSecrets()


@pytest.fixture
def reconciler(registry: RegistryClient, secrets: FakeSecrets) -> Reconciler:
    return Reconciler(registry, secrets, ReconcileSettings(cluster_name="it", fingerprint_key=b"k", backoff_base=0.01))


def writes(emu: Emulator) -> dict[str, int]:
    reqs = emu.stats()["requests"]
    return {k: v for k, v in reqs.items() if v and not k.startswith("GET")}


def make_llm(spec: dict[str, Any] | None = None, **over: Any) -> LLMObject:
    base = {
        "displayName": "Test LLM",
        "providerType": "OPENAI",
        "endpointUrl": "https://api.example.test/v1",
        "modelIdentifier": "gpt-test",
    }
    base.update(spec or {})
    fields: dict[str, Any] = {
        "namespace": "ns1",
        "name": "llm1",
        "uid": str(uuid.uuid4()),
        "generation": 1,
        "spec": base,
        "status": {},
        "annotations": {},
    }
    fields.update(over)
    return LLMObject(**fields)


def after(obj: LLMObject, outcome: Any, **over: Any) -> LLMObject:
    """The object as the API server would hold it once the outcome's status is written."""
    status = {**obj.status, **outcome.status_patch(obj.status)}
    fields = {**obj.__dict__, "status": status}
    fields.update(over)
    return LLMObject(**fields)


def with_spec(obj: LLMObject, **spec_over: Any) -> LLMObject:
    """The object after a user edit of its spec (generation bumped)."""
    return LLMObject(**{**obj.__dict__, "spec": {**obj.spec, **spec_over}, "generation": obj.generation + 1})
