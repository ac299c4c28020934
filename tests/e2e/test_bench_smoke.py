"""The benchmark harness at toy size (bench/run.py --smoke), so it cannot rot.

It starts a stack of its own (control plane with its own audit policy, emulator, operator processes): the
session's operator must not see its LLMs.  Only that every figure is produced and sane is asserted, never a time.
"""

from __future__ import annotations

import pytest

from bench.harness import SMOKE, run_bench
from bench.report import render
from goodmem_devcluster.testing import build_visibly, require_control_plane

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def results(pytestconfig: pytest.Config) -> dict:
    require_control_plane()
    build_visibly(pytestconfig)
    return run_bench(SMOKE, log=lambda _msg: None)


def _positive(x: float) -> bool:
    return isinstance(x, float | int) and x > 0


def test_convergence_and_floor(results: dict) -> None:
    conv = results["convergence"]
    assert len(conv["runs"]) == SMOKE.convergence_runs
    for run in conv["runs"]:
        assert _positive(run["converge_s"]) and _positive(run["floor"]["create_s"]) and _positive(run["apply_s"])
        assert run["create"]["registry"]["POST"] == SMOKE.convergence  # one POST per LLM created
        assert run["create"]["registry"]["errors"] == 0
        assert sum(run["create"]["api_writes"].values()) >= SMOKE.convergence  # the operator wrote status at least
    assert _positive(conv["ratio_median"])


def test_calls_per_change(results: dict) -> None:
    calls = results["calls"]
    reg = calls["registry_total"]
    assert calls["created"] > 0 and reg["POST"] == calls["created"]
    assert reg["PUT"] == calls["updated"] + calls["rotated"]
    assert reg["DELETE"] == calls["deleted"] > 0
    assert calls["api_writes_per_create_at_scale"] >= 1 and calls["api_writes_per_create_idle"] >= 1


def test_steady_state_writes_nothing(results: dict) -> None:
    steady = results["convergence"]["runs"][-1]["steady"]
    assert steady["checks_per_llm_min"] >= 1 + SMOKE.drift_cycles
    assert steady["registry"]["GET"] >= SMOKE.convergence * (1 + SMOKE.drift_cycles)
    assert steady["registry"]["POST"] == steady["registry"]["PUT"] == steady["registry"]["DELETE"] == 0
    assert steady["api_writes"] == {}
    assert steady["api_reads"]  # reads are reported (the watches at least)
    assert steady["drift_checks"] > 0 and steady["drift_cpu_s"] > 0


def test_rotation_fan_out(results: dict) -> None:
    rot = results["rotation"]
    assert len(rot["rounds"]) == SMOKE.rotation_runs
    for r in rot["rounds"]:
        assert r["registry"]["PUT"] == r["n"] == SMOKE.rotation
        assert r["entries_changed"] == SMOKE.rotation
        assert r["puts_with_credentials_only"] == SMOKE.rotation
        assert _positive(r["rotate_s"])


def test_latency(results: dict) -> None:
    lat = results["latency"]
    assert len(lat["samples_s"]) == SMOKE.latency_samples
    assert all(_positive(x) for x in lat["samples_s"])
    assert lat["min_s"] <= lat["p50_s"] <= lat["p95_s"] <= lat["max_s"]


def test_memory(results: dict) -> None:
    mem = results["memory"]
    llms = [p["llms"] for p in mem["points"] if p["secrets"] == 0]
    assert llms == [0, *SMOKE.memory_llms]
    assert all(p["rss_mb"] > 10 and p["hwm_mb"] >= p["rss_mb"] * 0.9 for p in mem["points"])
    sec = mem["secrets"]
    assert sec["n"] == SMOKE.unrelated_secrets and sec["fresh"]["secrets"] == SMOKE.unrelated_secrets
    assert sum(v for k, v in sec["churn_registry"].items() if k != "errors") == 0  # unrelated: no registry call
    assert sec["churn_api_writes"] == {}


def test_fair_share(results: dict) -> None:
    fair = results["fairness"]
    assert fair["n"] == SMOKE.fairness and len(fair["runs"]) == len(fair["idle_s"]) == SMOKE.fairness_runs
    assert all(_positive(x) for x in fair["idle_s"] + fair["loaded_s"])
    for run in fair["runs"]:
        assert run["a_ready_at_b_create"] >= max(1, SMOKE.fairness // 4)  # B came while A was converging
        assert run["registry"]["POST"] == SMOKE.fairness + 1 and run["registry"]["errors"] == 0
        assert run["delete"]["registry"]["DELETE"] == SMOKE.fairness


def test_connections(results: dict) -> None:
    conn = results["connections"]
    n = SMOKE.connection_namespaces * SMOKE.connection_llms
    assert len(conn["runs"]) == len(conn["baseline"]) == SMOKE.connection_runs
    for run in conn["runs"] + conn["baseline"]:
        assert run["n"] == n and _positive(run["converge_s"])
        assert run["owners_ok"] == n and run["owners_wrong"] == 0  # each entry under its namespace's principal
        assert run["registry"]["POST"] == n and run["registry"]["errors"] == 0
        assert run["delete_registry"]["DELETE"] == n
    iso = conn["isolation"]
    assert len(iso["idle_s"]) == SMOKE.isolation_runs and all(_positive(x) for x in iso["idle_s"])
    (outage,) = iso["modes"]
    assert outage["mode"] == "outage" and len(outage["lone_s"]) == SMOKE.isolation_runs
    assert all(_positive(x) for x in outage["lone_s"])
    assert outage["a_reasons"] == {"RegistryUnavailable": SMOKE.isolation_llms * SMOKE.isolation_runs}
    assert outage["b_registry"]["errors"] == 0  # team-b's registry saw none of team-a's failures
    mem = conn["memory"]
    assert mem["n"] == SMOKE.memory_connections
    assert all(p["rss_mb"] > 10 for p in (mem["before"], mem["after"], mem["again"]))


def test_report_renders_every_section(results: dict) -> None:
    text = render(results)
    for heading in (
        "## Results",
        "## 1. Convergence",
        "## 2. Calls per change",
        "## 3. Steady state",
        "## 4. Rotation",
        "## 5. Latency",
        "## 6. Memory",
        "## 7. Fair share",
        "## 8. Connections",
        "## Scale plan",
        "make bench",
    ):
        assert heading in text
    assert "**miss**" not in text and "(smoke)" in text  # no targets judged at smoke size
