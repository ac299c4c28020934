"""The Argo CD health check (deploy/argocd/health.lua) on the statuses the operator really writes.

The script runs in Lua 5.1 (lupa's lua51: the dialect of gopher-lua, which Argo CD embeds) with
`obj` set as Argo CD sets it. The statuses come from the operator's Reconciler and release handler
against the registry emulator (tests/integration/statuses.py), one per condition reason; those tests
are marked integration (they run the emulator on loopback), the rest are pure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51  # the test extra

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
CONNECTION_HEALTH_LUA = ROOT / "deploy" / "argocd" / "connection-health.lua"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
CM_KEY = "resource.customizations.health.goodmem.ai_LLM"
CONNECTION_CM_KEYS = [
    "resource.customizations.health.goodmem.ai_GoodMemConnection",
    "resource.customizations.health.goodmem.ai_ClusterGoodMemConnection",
]


def health(obj: dict[str, Any], script: Path = HEALTH_LUA) -> dict[str, str]:
    """Run a health script the way Argo CD does: a global `obj`, the chunk returns {status, message}."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    return dict(result.items())


def connection_health(obj: dict[str, Any]) -> dict[str, str]:
    return health(obj, CONNECTION_HEALTH_LUA)


def _cond(ctype: str, status: str, reason: str, message: str = "m") -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def _obj(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {"name": "x", "namespace": "ns", "generation": generation},
        "spec": {},
    }
    if status is not None:
        out["status"] = status
    return out


# -- the real statuses ---------------------------------------------------------------------------

EXPECTED = {
    "fresh": ("Progressing", "Waiting for the operator"),
    "available": ("Healthy", "Available: registry entry"),
    "spec-edited": ("Progressing", "Waiting for the operator to observe generation 2"),
    "creating": ("Progressing", "Creating: "),
    "registry-unavailable": ("Progressing", "RegistryUnavailable: "),
    "rate-limited": ("Progressing", "Creating: "),
    "unauthorized": ("Progressing", "Creating: "),
    "forbidden": ("Progressing", "Creating: "),
    "unexpected-response": ("Progressing", "UnexpectedResponse: GET /v1/llms/"),
    "invalid-llm-id": ("Degraded", "InvalidLLMId: llmId '../../_emulator/faults' is not a UUID"),
    "invalid-spec": ("Degraded", "InvalidSpec: "),
    "invalid-spec-after-create": ("Degraded", "InvalidSpec: "),
    "already-exists": ("Degraded", "AlreadyExists: another registry entry"),
    "conflict": ("Degraded", "Conflict: registry entry"),
    "observe-only": ("Healthy", "Observed: "),
    "observe-only-pending": (
        "Healthy",
        "Observed: registry entry",  # and, visible: "; UpToDate=False: managing it would change description ..."
    ),
    "dry-run": ("Suspended", "DryRun: dry run (goodmem.ai/dry-run=true): would create registry entry"),
    "observe-only-missing": ("Progressing", "NotFound: "),
    "secret-not-found": ("Progressing", "SecretNotFound: Secret ns1/key not found"),
    "secret-key-not-found": ("Progressing", "SecretKeyNotFound: "),
    "secret-not-labelled": (
        "Progressing",
        "SecretNotLabelled: Secret ns1/plain is not labelled goodmem.ai/credentials=true",
    ),
    "secret-not-allowed": ("Degraded", "SecretNotAllowed: "),
    "paused-before-sync": ("Suspended", "ReconcilePaused: annotation goodmem.ai/paused=true"),
    "paused-after-sync": ("Suspended", "ReconcilePaused: "),
    "paused-and-edited": ("Suspended", "ReconcilePaused: "),
    "deleting": ("Progressing", "Deleting: deleting registry entry"),
}


@pytest.fixture(scope="module")
def statuses() -> dict[str, dict[str, Any]]:
    from tests.integration.statuses import real_statuses

    return real_statuses()


@pytest.mark.integration
def test_every_scenario_has_an_expectation(statuses: dict[str, dict[str, Any]]) -> None:
    assert set(statuses) == set(EXPECTED)


@pytest.mark.integration
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_health_of_real_status(statuses: dict[str, dict[str, Any]], scenario: str) -> None:
    obj = statuses[scenario]
    status, message = EXPECTED[scenario]
    hs = health(obj)
    assert hs["status"] == status, (scenario, hs, obj.get("status"))
    assert hs["message"].startswith(message), (scenario, hs)


@pytest.mark.integration
def test_observe_only_out_of_date_is_healthy_but_visible(statuses: dict[str, dict[str, Any]]) -> None:
    """The documented choice (README, Plan before apply): ObserveOnly never writes, so an entry that differs from the
    spec is no failure of the operator; Argo CD shows it Healthy, and its message names what managing would change."""
    hs = health(statuses["observe-only-pending"])
    assert hs["status"] == "Healthy"
    assert "; UpToDate=False: managing it would change description (status.pendingChanges)" in hs["message"]
    assert "UpToDate" not in health(statuses["available"])["message"], "only when it is False"


@pytest.mark.integration
def test_real_statuses_cover_every_reason_the_docs_name(statuses: dict[str, dict[str, Any]]) -> None:
    reasons = {c["reason"] for obj in statuses.values() for c in (obj.get("status") or {}).get("conditions", [])}
    documented = {
        "Available",
        "Creating",
        "InvalidSpec",
        "AlreadyExists",
        "Conflict",
        "Unauthorized",
        "Forbidden",
        "RegistryUnavailable",
        "RateLimited",
        "SecretNotFound",
        "SecretKeyNotFound",
        "SecretNotAllowed",
        "SecretNotLabelled",
        "ReconcilePaused",
        "Deleting",
        "Observed",
        "NotFound",
        "UnexpectedResponse",
        "InvalidLLMId",
    }
    assert documented <= reasons, documented - reasons


@pytest.mark.integration
def test_retry_and_permanent_messages_agree_with_the_mapping(statuses: dict[str, dict[str, Any]]) -> None:
    """Degraded exactly when the operator says it will not retry: the message is the contract."""
    for scenario, obj in statuses.items():
        ready = next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None)
        if ready is None or ready["status"] != "False":
            continue
        expect = "Degraded" if "not retried" in ready["message"] else "Progressing"
        if obj["metadata"]["generation"] == obj["status"].get("observedGeneration"):
            assert health(obj)["status"] == expect, scenario


# -- edges no reconcile produces -----------------------------------------------------------------


@pytest.mark.unit
def test_status_without_conditions_waits_for_the_operator() -> None:
    assert health(_obj({"llmId": "x"})) == {"status": "Progressing", "message": "Waiting for the operator"}


@pytest.mark.unit
def test_observed_generation_missing_is_progressing() -> None:
    hs = health(_obj({"conditions": [_cond("Ready", "True", "Available")]}))
    assert hs["status"] == "Progressing"


@pytest.mark.unit
def test_not_retried_message_degrades_whatever_the_reason() -> None:
    msg = "registry said no (not retried until the spec or a referenced Secret changes)"
    hs = health(_obj({"observedGeneration": 1, "conditions": [_cond("Ready", "False", "SomethingNew", msg)]}))
    assert hs == {"status": "Degraded", "message": f"SomethingNew: {msg}"}


@pytest.mark.unit
def test_ready_unknown_is_progressing() -> None:
    hs = health(_obj({"observedGeneration": 1, "conditions": [_cond("Ready", "Unknown", "Whatever", "")]}))
    assert hs == {"status": "Progressing", "message": "Whatever"}


@pytest.mark.unit
def test_argocd_cm_carries_the_scripts_verbatim() -> None:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert set(data) == {CM_KEY, *CONNECTION_CM_KEYS}
    assert data[CM_KEY] == HEALTH_LUA.read_text(), "deploy/argocd/argocd-cm.yaml is out of date with health.lua"
    for key in CONNECTION_CM_KEYS:
        assert data[key] == CONNECTION_HEALTH_LUA.read_text(), f"{key} is out of date with connection-health.lua"


@pytest.mark.unit
def test_argocd_cm_keys_name_the_kinds_of_crds() -> None:
    """Argo CD's key is resource.customizations.health.<group>_<Kind>: a typo would silently never match."""
    kinds = set()
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        kinds.add(f"resource.customizations.health.{crd['spec']['group']}_{crd['spec']['names']['kind']}")
    assert set(yaml.safe_load(ARGOCD_CM.read_text())["data"]) == kinds


@pytest.mark.unit
@pytest.mark.parametrize("script", [HEALTH_LUA, CONNECTION_HEALTH_LUA], ids=lambda p: p.name)
def test_health_lua_is_lua51(script: Path) -> None:
    """No syntax beyond Lua 5.1 (gopher-lua): goto, integer division, bit operators, <const>."""
    text = script.read_text()
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    for token in ("goto ", "//", "<const>", "<close>", " & ", " | ", "<<", ">>"):
        assert token not in code, token
    lua51.LuaRuntime().compile(text)


# -- connections (GoodMemConnection, ClusterGoodMemConnection): connection-health.lua ------------------------

CONNECTION_EXPECTED = {
    "fresh": ("Progressing", "Waiting for the operator to check the connection"),
    "no-ready-yet": ("Progressing", "Waiting for the operator to check the connection"),
    "connected": ("Healthy", "Connected: the registry accepted the key"),
    "connected-unused": ("Healthy", "Connected"),
    "rotated": ("Healthy", "Connected: "),
    "spec-edited": ("Progressing", "Waiting for the operator to observe generation 2"),
    "in-use-deleting": ("Healthy", "Connected: "),  # Argo CD says "Pending deletion" before running the script
    "cluster-connected": ("Healthy", "Connected: "),
    "cluster-not-ready": ("Degraded", "Unreachable: GET /v1/llms: connection refused"),
    "unauthorized": ("Degraded", "Unauthorized: the registry refused the key (401)"),
    "unreachable": ("Degraded", "Unreachable: "),
    "registry-error": ("Degraded", "RegistryError: "),
    "secret-not-found": ("Degraded", "SecretNotFound: Secret team-a/goodmem-key not found"),
    "secret-not-labelled": ("Degraded", "SecretNotLabelled: "),
    "invalid-ca-bundle": ("Degraded", "InvalidCABundle: "),
    "not-allowed": ("Degraded", "NotAllowed: "),
}


@pytest.fixture(scope="module")
def connections() -> dict[str, dict[str, Any]]:
    from tests.integration.connection_statuses import connection_statuses

    return connection_statuses()


@pytest.mark.unit
def test_every_connection_scenario_has_an_expectation(connections: dict[str, dict[str, Any]]) -> None:
    assert set(connections) == set(CONNECTION_EXPECTED)


@pytest.mark.unit
@pytest.mark.parametrize("scenario", sorted(CONNECTION_EXPECTED))
def test_health_of_connection(connections: dict[str, dict[str, Any]], scenario: str) -> None:
    obj = connections[scenario]
    status, message = CONNECTION_EXPECTED[scenario]
    hs = connection_health(obj)
    assert hs["status"] == status, (scenario, hs, obj.get("status"))
    assert hs["message"].startswith(message), (scenario, hs)


@pytest.mark.unit
def test_every_connection_ready_false_reason_degrades(connections: dict[str, dict[str, Any]]) -> None:
    """Ready=False means the LLMs bound to the connection cannot reach their registry: Degraded, whatever the reason
    (the connection kind has no retry-or-not distinction of its own; it is probed again on the drift interval)."""
    from tests.integration.connection_statuses import FALSE_REASONS

    for scenario in FALSE_REASONS:
        assert connection_health(connections[scenario])["status"] == "Degraded", scenario


@pytest.mark.unit
def test_connection_healthy_only_once_the_current_generation_is_observed(
    connections: dict[str, dict[str, Any]],
) -> None:
    obj = connections["connected"]
    del obj["status"]["observedGeneration"]
    assert connection_health(obj)["status"] == "Progressing"
    obj["status"]["observedGeneration"] = 1
    obj["metadata"]["generation"] = 3
    assert connection_health(obj)["message"] == "Waiting for the operator to observe generation 3"
    obj["metadata"]["generation"] = 1
    assert connection_health(obj)["status"] == "Healthy"


@pytest.mark.unit
def test_connection_ready_unknown_is_progressing(connections: dict[str, dict[str, Any]]) -> None:
    obj = connections["connected"]
    obj["status"]["conditions"][0].update(status="Unknown", reason="Probing", message="")
    assert connection_health(obj) == {"status": "Progressing", "message": "Probing"}


@pytest.mark.unit
def test_connection_check_ignores_other_conditions(connections: dict[str, dict[str, Any]]) -> None:
    obj = connections["unauthorized"]
    obj["status"]["conditions"].insert(0, _cond("Synced", "True", "ReconcileSuccess"))
    assert connection_health(obj)["status"] == "Degraded"
