"""RELIABILITY.md is generated from the reliability scenarios' JSON summaries (tests/reliability/report.py):
its figures come from the summaries, a reduced run is marked as such and never lands in the committed
results, and the committed document equals what the committed summaries render to."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import report

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LEAKS = {"leak_scan": {"places": ["operator log (debug)", "Events"], "bytes_scanned": 30_600_000, "leaks_found": 0}}
COMMON = {
    "mode": "full",
    "date": "2026-12-04 13:00 UTC",
    "cpus": 2,
    "kubernetes_version": "v1.34.4",
    "etcd_version": "v3.6.16",
    **LEAKS,
}

SUMMARIES: dict[str, dict[str, Any]] = {
    "registry-faults": {
        **COMMON,
        "scenario": "registry-faults",
        "scenario_s": 412.0,
        "seed": 1959653349,
        "operations_planned": 300,
        "phases": {
            "warm-up": {
                "faults": None,
                "seconds": 20.1,
                "operations": 43,
                "requests": 86,
                "by_status": {"200": 41, "201": 20},
                "peak_requests_per_1s": 6,
            },
            "outage": {
                "faults": {"outage": True},
                "seconds": 60.2,
                "operations": 129,
                "requests": 381,
                "by_status": {"503": 381},
                "peak_requests_per_1s": 14,
            },
        },
        "outage_rate": {
            "peak_requests_per_1s": 14,
            "bound_global_per_1s": "< 100 (--registry-rps)",
            "llms_with_requests": 78,
            "max_requests_per_llm": 8,
            "bound_per_llm": "1 + floor(log2(70 + 1)) = 7, plus 1 per change to that LLM",
        },
        "converged_after_s": 222.4,
        "operations": {"create": 140, "update": 106, "delete": 54},
        "llms_live_at_end": 86,
        "llms_deleted": 54,
    },
    "operator-crashes": {
        **COMMON,
        "scenario": "operator-crashes",
        "scenario_s": 250.0,
        "seed": 206362817,
        "rounds_run": 1,
        "parameters": {
            "held_round_latency_ms": 1500,
            "latencies_ms": [0, 100, 300],
            "kill_window_s": [0.1, 2.5],
            "ops_before_kill": [4, 10],
            "traffic_s": 2.5,
            "ops_while_down": [0, 4],
            "rotation_while_down_probability": 0.3,
        },
        "rounds": [
            {
                "round": 1,
                "latency_ms": 1500,
                "kill": "when a create was in flight",
                "killed_after_s": 0.31,
                "creates_in_flight_at_kill": 3,
                "requests_in_flight_at_kill": 4,
                "creates_answered_after_kill": 3,
                "llms_unfinished_at_kill": 5,
                "ops_while_down": 2,
                "secret_rotated_while_down": True,
                "restart_s": 1.7,
                "converged_after_s": 2.4,
                "objects_checked": 29,
            }
        ],
        "rounds_with_a_create_in_flight_at_kill": 1,
        "operations": {"create": 83},
        "objects_checked_total": 577,
        "max_converged_after_s": 2.4,
    },
    "apiserver-restart": {
        **COMMON,
        "scenario": "apiserver-restart",
        "scenario_s": 180.0,
        "seed": 1395947020,
        "down_s": 20,
        "restarts_run": 1,
        "restarts": [
            {
                "stopped": "kube-apiserver + etcd",
                "operator": "running",
                "down_s": 38.5,
                "picked_up_s_after_ready": 4.2,
                "later_changes_picked_up_s": 1.1,
                "objects_checked": 15,
            }
        ],
    },
    "bad-input": {
        **COMMON,
        "scenario": "bad-input",
        "scenario_s": 90.0,
        "rejected_at_apply": 60,
        "refused_by_the_operator": 13,
        "refused_reasons": {"InvalidSpec": 8},
        "valid_at_bounds_ready": 22,
        "invalid_or_hostile_inputs_tried": 73,
        "max_writes_per_generation": 1.0,
        "registry_calls_over_2_generations": {"b-x": {"writes": 2, "reads": 0}},
        "objects_deleted": 36,
        "operator_restarts": 0,
        "rejected_cases": ["labels-19"],
        "valid_cases": ["labels-18"],
    },
    "failover": {
        **{k: v for k, v in COMMON.items() if k != "leak_scan"},  # no Secret in this scenario: nothing to scan
        "scenario": "failover",
        "scenario_s": 60.0,
        "timings": {"--lease-duration": "10", "--lease-renew-deadline": "8", "--lease-retry-period": "2"},
        "sigkill": {
            "llms": 200,
            "registry_latency_ms": 200,
            "registry_concurrency": 8,
            "created_before_kill": 70,
            "creates_in_flight_at_kill": 6,
            "changed_while_down": 20,
            "created_while_down": 10,
            "lease_acquired_after_kill_s": 10.41,
            "first_registry_write_after_kill_s": 11.93,
            "all_ready_after_kill_s": 19.2,
            "converged_after_takeover_s": 7.1,
            "registry_writes": {"POST 201": 210, "POST 409": 6, "PUT 200": 20},
            "rss_at_kill": {"working_mb": 88.1, "standby_mb": 61.2},
        },
        "rolling_upgrade": {
            "llms": 330,
            "registry_latency_ms": 50,
            "load": "60 updates and 60 creates over 8 s",
            "sigterm_after_load_start_s": 2.7,
            "old_replica_exited_after_sigterm_s": 0.81,
            "lease_taken_after_sigterm_s": 1.37,
            "lease_taken_after_old_replica_exited_s": 0.56,
            "converged_after_load_s": 0.9,
            "registry_writes": {"POST 201": 60, "PUT 200": 60},
        },
    },
}


def _write(directory: Path, summaries: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for scenario, data in summaries.items():
        (directory / f"{scenario}-{data['mode']}.json").write_text(json.dumps(data))
    return directory


def test_every_figure_comes_from_the_summaries(tmp_path: Path) -> None:
    text = report.render(report.load(_write(tmp_path / "results", SUMMARIES)))
    for figure in (
        "1959653349",
        "222.4 s",
        "| 14 |",
        "78 LLMs",
        "206362817",
        "**577 LLM/entry",
        "| 3 / 4 |",
        "38.5 s",
        "**60 rejected",
        "`InvalidSpec` ×8",  # noqa: RUF001 - the report's typographic multiplication sign, asserted as rendered
        "all 36 objects",
        "labels-19",
        "kube-apiserver v1.34.4 + etcd v3.6.16",
        "**0 leaks** in 122.4 MB",
        "16.5 min",
        "first registry write 11.93 s after the SIGKILL",
        "10.41 s after the SIGKILL",
        "1.37 s after the SIGTERM",
        "210× POST 201, 6× POST 409, 20× PUT 200",  # noqa: RUF001 - the report's typographic multiplication sign
        "the standby 61.2 MB",
    ):
        assert figure in text, figure
    assert "Not run" not in text and "not the full size" not in text
    # Change a figure in a summary: the document follows.
    changed = copy.deepcopy(SUMMARIES)
    changed["registry-faults"]["converged_after_s"] = 17.9
    text2 = report.render(report.load(_write(tmp_path / "changed", changed)))
    assert "222.4 s" not in text2 and "converged exactly 17.9 s after" in text2


def test_a_reduced_run_is_marked_and_a_missing_scenario_listed(tmp_path: Path) -> None:
    reduced = {k: {**v, "mode": "reduced"} for k, v in SUMMARIES.items() if k != "bad-input"}
    results = _write(tmp_path / "results", reduced)
    text = report.render(report.load(results), results)
    assert text.count("A reduced run, not the full size") == 4
    assert "**Not run (no summary): bad-input.**" in text
    assert f"JSON summaries in `{results}/`" in text


def test_the_cli_writes_the_document_and_refuses_an_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "RELIABILITY.md"
    assert report.main(["--results", str(tmp_path / "empty"), "--out", str(out)]) == 1 and not out.exists()
    assert report.main(["--results", str(_write(tmp_path / "r", SUMMARIES)), "--out", str(out)]) == 0
    assert out.read_text().startswith("# Reliability\n")


@pytest.mark.parametrize(("full", "where"), [("", "build/reliability"), ("1", "tests/reliability/results")])
def test_only_the_full_run_writes_the_committed_summaries(full: str, where: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOODMEM_RELIABILITY")}
    env["GOODMEM_RELIABILITY_FULL"] = full
    res = subprocess.run(
        [sys.executable, "-c", "from tests.reliability import support; print(support.RESULTS_DIR)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    assert Path(res.stdout.strip()) == ROOT / where


def test_reliability_md_is_generated_from_the_committed_summaries() -> None:
    data = report.load(report.RESULTS)
    if not data:
        pytest.skip("no committed summaries in tests/reliability/results/ yet: `make reliability` writes them")
    assert all(d.get("mode") == "full" for d in data.values()), "the committed summaries are from a full run"
    assert (ROOT / "RELIABILITY.md").read_text() == report.render(data), (
        "RELIABILITY.md is out of date: regenerate it with `python -m tests.reliability.report`"
    )
