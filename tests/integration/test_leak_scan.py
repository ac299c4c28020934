"""The sentinel leak scan can fail: with the operator's redaction off it finds the sentinel; with it on, nothing.

The real reconcile runs against the emulator over HTTP, with the sentinel as the LLM's API key and the
emulator's echo fault on: every error answer carries the raw request body in its message, so a rotation
(a PUT of the credentials alone) that fails hands the client the key, JSON-escaped as it went on the wire.
Everything the operator could leak into is collected (condition messages as the API server stores them,
Event messages, the finalizer's retry message, every log record at DEBUG) and scanned with the shared scan
of tests/leakscan.py, the one the e2e and reliability tiers use.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from goodmem_emulator import Emulator
from goodmem_operator import registry as registry_module
from goodmem_operator.reconcile import Reconciler, RetryLater
from tests.conftest import SENTINEL
from tests.leakscan import scan, sentinel_forms

from .conftest import FakeSecrets, after, make_llm

pytestmark = pytest.mark.integration

CREDENTIALS = {
    "apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}, "headerName": "Authorization", "prefix": "Bearer "}
}


async def _drive(
    emulator: Emulator, reconciler: Reconciler, secrets: FakeSecrets, caplog: pytest.LogCaptureFixture
) -> dict[str, str]:
    """Create, then rotate the key into a registry that fails (400, then 503) and echoes every request;
    then delete while the registry is down. Returns the places to scan."""
    caplog.set_level(logging.DEBUG)
    secrets.data[("ns1", "k")] = {"api-key": SENTINEL + "-v1"}
    obj = make_llm({"credentials": CREDENTIALS})
    out = await reconciler.reconcile(obj, trigger="create")
    assert out.result == "success"
    obj = after(obj, out)
    outcomes = [out]
    for version, status in (("-v2", 400), ("-v3", 503)):
        secrets.data[("ns1", "k")] = {"api-key": SENTINEL + version}
        # Only the PUT fails: the GET before it must pass, or the credentials never go out to be echoed.
        emulator.set_faults(errorRate=1.0, errorStatus=status, errorMethods=["PUT"], echoRequest=True)
        try:
            out = await reconciler.reconcile(obj, trigger="secret")
        finally:
            emulator.clear_faults()
        assert out.result in ("permanent", "error")
        synced = next(c for c in out.status["conditions"] if c["type"] == "Synced")
        assert f"registry answered {status}" in synced["message"]
        assert "request body as received" in synced["message"], "the echo reached the condition"
        assert out.status["pendingChanges"] == [{"path": "credentials", "hidden": True}], "the failed rotation, hidden"
        outcomes.append(out)
        obj = after(obj, out)
    emulator.set_faults(outage=True, echoRequest=True)
    try:
        with pytest.raises(RetryLater) as kept:
            await reconciler.finalize(obj)
    finally:
        emulator.clear_faults()
    return {
        "conditions (as stored)": json.dumps([o.status for o in outcomes]),
        "pending changes": json.dumps([o.status.get("pendingChanges") for o in outcomes]),
        "condition messages": "\n".join(c["message"] for o in outcomes for c in o.status["conditions"]),
        "events": "\n".join(f"{e.type} {e.reason} {e.message}" for o in outcomes for e in o.events),
        "finalizer retry message": str(kept.value),
        "log records (DEBUG)": caplog.text,
    }


async def test_scan_finds_the_sentinel_when_redaction_is_off(
    emulator: Emulator,
    reconciler: Reconciler,
    secrets: FakeSecrets,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "redact", lambda text, secrets: text)
    places = await _drive(emulator, reconciler, secrets, caplog)
    result = scan(places, SENTINEL)
    assert result.leaks, "with redaction off the scan must find the sentinel"
    assert {"condition messages", "conditions (as stored)", "events"} <= set(result.leaks)
    # On the wire the key is JSON-escaped (the sentinel holds a quote): only the escaped forms show.
    assert "plain" not in result.leaks["condition messages"] and "json" in result.leaks["condition messages"]
    assert "jsonx2" in result.leaks["conditions (as stored)"]


async def test_scan_finds_what_plain_only_redaction_misses(
    emulator: Emulator,
    reconciler: Reconciler,
    secrets: FakeSecrets,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The redaction of the plain form alone (what the client did before issue #13) leaks the escaped one."""

    def plain_only(text: str, secrets: Any) -> str:
        for secret in secrets:
            text = text.replace(secret, "<redacted>") if secret else text
        return text

    monkeypatch.setattr(registry_module, "redact", plain_only)
    places = await _drive(emulator, reconciler, secrets, caplog)
    result = scan(places, SENTINEL)
    assert "json" in result.leaks.get("condition messages", [])


async def test_scan_finds_nothing_with_redaction_on(
    emulator: Emulator,
    reconciler: Reconciler,
    secrets: FakeSecrets,
    caplog: pytest.LogCaptureFixture,
) -> None:
    places = await _drive(emulator, reconciler, secrets, caplog)
    result = scan(places, SENTINEL)
    assert result.leaks == {}
    assert "<redacted>" in places["condition messages"], "the echo was there, redacted"
    assert result.bytes_scanned == sum(len(t.encode()) for t in places.values())
    assert len(sentinel_forms(SENTINEL)) >= 6  # plain, escaped x1..3, base64 at three alignments
