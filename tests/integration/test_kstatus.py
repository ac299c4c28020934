"""kstatus (what Flux and cli-utils use to wait for resources) on the statuses the operator really writes.

The real kstatus is Go: hack/go/kstatus wraps sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute
(v0.37.2), built and cached by goodmem_devcluster.gobuild.build_tool("kstatus"). What it does with an
LLM, read from that version's source (status.go, generic.go):

1. metadata.deletionTimestamp set -> Terminating.
2. status.observedGeneration present and != metadata.generation -> InProgress (LatestGenerationNotObserved).
3. a condition Reconciling=True -> InProgress; Stalled=True -> Failed (the only way to Failed).
4. LLM is no built-in kind, so: Ready=True -> Current; Ready=False or Unknown -> InProgress,
   with the Ready reason and message. kstatus never turns Ready=False into Failed.
5. no Ready condition at all (no status yet) -> Current. An LLM the operator has not seen yet looks done.

So the operator adds Stalled=True (same reason and message) to every permanent error (InvalidSpec,
AlreadyExists, Conflict, SecretNotAllowed): kstatus then says Failed, and a Flux Kustomization with
health checks fails fast instead of waiting for its timeout. Retryable errors stay InProgress.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from goodmem_devcluster.testing import require_tool

from .connection_statuses import connection_statuses
from .statuses import real_statuses

pytestmark = pytest.mark.integration

EXPECTED = {
    "fresh": "Current",  # (5): no status yet
    "available": "Current",
    "spec-edited": "InProgress",  # (2)
    "creating": "InProgress",
    "registry-unavailable": "InProgress",
    "rate-limited": "InProgress",
    "unauthorized": "InProgress",
    "forbidden": "InProgress",
    "unexpected-response": "InProgress",  # a redirect or malformed answer: retried
    "invalid-llm-id": "Failed",  # Stalled=True: permanent until the spec or Secret changes
    "invalid-spec": "Failed",  # Stalled=True: permanent until the spec or Secret changes
    "invalid-spec-after-create": "Failed",  # Stalled=True: permanent until the spec or Secret changes
    "already-exists": "Failed",  # Stalled=True: permanent until the spec or Secret changes
    "conflict": "Failed",  # Stalled=True: permanent until the spec or Secret changes
    "observe-only": "Current",
    "observe-only-pending": "Current",  # UpToDate=False under ObserveOnly: healthy, visible in UpToDate itself
    "dry-run": "InProgress",  # Ready=Unknown: nothing applied yet
    "observe-only-missing": "InProgress",
    "secret-not-found": "InProgress",
    "secret-key-not-found": "InProgress",
    "secret-not-labelled": "InProgress",  # heals when the Secret is labelled
    "secret-not-allowed": "Failed",  # Stalled=True: permanent until the spec or Secret changes
    "paused-before-sync": "InProgress",  # Ready=Unknown
    "paused-after-sync": "Current",  # Ready stays True while paused
    "paused-and-edited": "InProgress",  # (2): a paused LLM never observes the new generation
    "deleting": "Terminating",  # (1)
}


@pytest.fixture(scope="module")
def kstatus(pytestconfig: pytest.Config) -> Path:
    return require_tool("kstatus", pytestconfig)


def compute(kstatus: Path, obj: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run([str(kstatus)], input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.fixture(scope="module")
def statuses() -> dict[str, dict[str, Any]]:
    return real_statuses()


def test_every_scenario_has_an_expectation(statuses: dict[str, dict[str, Any]]) -> None:
    assert set(statuses) == set(EXPECTED)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_kstatus_of_real_status(kstatus: Path, statuses: dict[str, dict[str, Any]], scenario: str) -> None:
    obj = statuses[scenario]
    result = compute(kstatus, obj)
    assert result["status"] == EXPECTED[scenario], (scenario, result, obj.get("status"))
    ready = next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None)
    if (
        result["status"] == "InProgress"
        and ready is not None
        and ready["status"] != "True"
        and obj["metadata"]["generation"] == obj["status"].get("observedGeneration", obj["metadata"]["generation"])
    ):
        # Flux shows this message: it is the operator's own Ready message, retry hint included.
        assert result["message"] == ready["message"]
        assert result["conditions"] == [
            {"type": "Reconciling", "status": "True", "reason": ready["reason"], "message": ready["message"]}
        ]


def test_ready_and_observed_generation_decide_current(kstatus: Path, statuses: dict[str, dict[str, Any]]) -> None:
    """Current exactly when Ready=True and observedGeneration == generation (the kstatus contract the README states)."""
    for scenario, obj in statuses.items():
        status = obj.get("status")
        if not status or obj["metadata"].get("deletionTimestamp"):
            continue
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        current = ready.get("status") == "True" and status.get("observedGeneration") == obj["metadata"]["generation"]
        assert (compute(kstatus, obj)["status"] == "Current") is current, scenario


def test_only_stalled_makes_failed(kstatus: Path, statuses: dict[str, dict[str, Any]]) -> None:
    """Failed comes from Stalled=True alone: without it the same permanent error would be InProgress."""
    obj = statuses["invalid-spec"]
    assert any(c["type"] == "Stalled" and c["status"] == "True" for c in obj["status"]["conditions"])
    assert compute(kstatus, obj)["status"] == "Failed"
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Stalled"]
    assert compute(kstatus, obj)["status"] == "InProgress"


# -- connections (GoodMemConnection, ClusterGoodMemConnection) ------------------------------------------------
# The same rules apply to a connection (no built-in kind, no Reconciling/Stalled conditions): Ready=True with the
# current generation observed -> Current; Ready=False (any reason) -> InProgress, never Failed (a connection has no
# Stalled: a wrong key or an unreachable registry may heal, so Flux waits for its timeout); no Ready -> Current
# (rule 5: a connection the operator has not checked yet looks done to kstatus, as for LLMs).

CONNECTION_EXPECTED = {
    "fresh": "Current",  # (5)
    "no-ready-yet": "Current",  # (5): a status without a Ready condition
    "connected": "Current",
    "connected-unused": "Current",
    "rotated": "Current",
    "spec-edited": "InProgress",  # (2)
    "in-use-deleting": "Terminating",  # (1): the finalizer holds while LLMs use it
    "cluster-connected": "Current",  # cluster-scoped: the same rules
    "cluster-not-ready": "InProgress",
    "unauthorized": "InProgress",
    "unreachable": "InProgress",
    "registry-error": "InProgress",
    "secret-not-found": "InProgress",
    "secret-not-labelled": "InProgress",
    "invalid-ca-bundle": "InProgress",
    "not-allowed": "InProgress",
}


@pytest.fixture(scope="module")
def connections() -> dict[str, dict[str, Any]]:
    return connection_statuses()


def test_every_connection_scenario_has_an_expectation(connections: dict[str, dict[str, Any]]) -> None:
    assert set(connections) == set(CONNECTION_EXPECTED)


@pytest.mark.parametrize("scenario", sorted(CONNECTION_EXPECTED))
def test_kstatus_of_connection(kstatus: Path, connections: dict[str, dict[str, Any]], scenario: str) -> None:
    obj = connections[scenario]
    result = compute(kstatus, obj)
    assert result["status"] == CONNECTION_EXPECTED[scenario], (scenario, result, obj.get("status"))
    ready = next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None)
    if result["status"] == "InProgress" and ready is not None and ready["status"] == "False":
        # Flux shows the connection's own Ready message (which names Secrets, never the key).
        assert result["message"] == ready["message"]


def test_connection_is_current_only_when_ready_for_the_current_generation(
    kstatus: Path, connections: dict[str, dict[str, Any]]
) -> None:
    obj = connections["connected"]
    assert compute(kstatus, obj)["status"] == "Current"
    obj["metadata"]["generation"] = 2
    assert compute(kstatus, obj)["status"] == "InProgress"
    obj["status"]["observedGeneration"] = 2
    assert compute(kstatus, obj)["status"] == "Current"
    obj["status"]["conditions"][0]["status"] = "False"
    assert compute(kstatus, obj)["status"] == "InProgress"
