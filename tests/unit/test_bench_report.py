"""`bench/run.py --only fairness|connections --write BENCHMARKS.md` replaces that phase's section alone."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import ALONE, CONN_HEADING, FAIR_HEADING, render_only, splice_fairness, splice_only

pytestmark = pytest.mark.unit

DOC = "# Benchmarks\n\n## 6. Memory\n\nmem\n\n## Scale plan\n\nplan\n"


def test_a_new_section_goes_before_the_scale_plan() -> None:
    out = splice_fairness(DOC, f"{FAIR_HEADING}\n\nfirst\n")
    assert out == f"# Benchmarks\n\n## 6. Memory\n\nmem\n\n{FAIR_HEADING}\n\nfirst\n\n## Scale plan\n\nplan\n"


def test_an_existing_section_is_replaced_and_nothing_else() -> None:
    once = splice_fairness(DOC, f"{FAIR_HEADING}\n\nfirst\n")
    twice = splice_fairness(once, f"{FAIR_HEADING}\n\nsecond\n")
    assert twice == once.replace("first", "second")


def test_a_document_without_a_scale_plan_gets_it_at_the_end() -> None:
    assert splice_fairness("# B\n", f"{FAIR_HEADING}\n\nx\n").endswith(f"{FAIR_HEADING}\n\nx\n")


def test_the_baseline_comparison_puts_each_run_in_its_column() -> None:
    """bench/compare.py against the committed baseline (bench/baseline.json): a changed figure shows in the
    right column, and the baseline's own figures are read from where the harness writes them."""
    import copy

    from bench.compare import compare_section, load_baseline

    base = load_baseline()
    assert base is not None, "bench/baseline.json is committed (the before-run of issue #14)"
    after = copy.deepcopy(base)
    after["source"]["commit"] = "abcdef0123"
    after["rotation"]["rotate_median_s"] = 9.87
    after["calls"]["api_writes_per_create_at_scale"] = 4.0
    text = compare_section(base, after)
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in text.splitlines() if line.startswith("| ")
    }
    rotation = rows["one Secret used by 200 LLMs rotated (median)"]
    assert rotation[0].startswith(f"{base['rotation']['rotate_median_s']:.2f} s") and rotation[1].startswith("9.87 s")
    assert rows["API-server writes per create"] == [f"{base['calls']['api_writes_per_create_at_scale']:.2f}", "4.00 |"]
    assert f"baseline `{base['source']['commit'][:7]}`" in text and "this run `abcdef0`" in text


def _point(rss: float) -> dict[str, Any]:
    return {"tag": "t", "llms": 0, "pid": 1, "rss_mb": rss, "hwm_mb": rss + 1, "startup_s": 1.0}


def _conn_run(converge_s: float, wrong: int = 0) -> dict[str, Any]:
    return {
        "with_connections": True,
        "n": 20,
        "apply_s": 0.5,
        "converge_s": converge_s,
        "registry": {"POST": 20, "GET": 0, "LIST": 0, "PUT": 0, "DELETE": 0, "GET 404": 0, "errors": 0},
        "requests_per_create": 1.0,
        "owners_ok": 20 - wrong,
        "owners_wrong": wrong,
        "cpu": {"operator": 1.0, "kube-apiserver": 2.0, "other": 0.1},
        "delete_s": 1.5,
        "delete_registry": {"DELETE": 20},
    }


def connections_run() -> dict[str, Any]:
    """The results of a `--only connections` run, small and made up (the shape `bench.results` gives them)."""
    mode = {
        "mode": "outage",
        "faults": {"outage": True},
        "lone_s": [0.1, 0.3, 0.2],
        "median_s": 0.2,
        "a_failed_at_b_create": [3, 8, 12],
        "a_reasons": {"RegistryUnavailable": 12},
        "a_requests": {"POST": 5, "GET": 0, "LIST": 0, "PUT": 0, "DELETE": 0, "GET 404": 0, "errors": 5},
        "b_registry": {"POST": 3},
        "a_recover_s": 7.5,
    }
    return {
        "only": "connections",
        "started": "2026-12-04 18:00:00 UTC",
        "sizes": {"registry_concurrency": 16, "registry_rps": 100.0, "quiet_s": 2.0},
        "machine": {"cores": 2},
        "load_start": (1.0, 1.0, 1.0),
        "load_end": (1.0, 1.0, 1.0),
        "wall_s": 60.0,
        "cpu_total": {"other": 3.0, "wall": 60.0},
        "connections": {
            "namespaces": 2,
            "per_namespace": 10,
            "connections_ready_s": 0.4,
            "runs": [_conn_run(3.0), _conn_run(5.0, wrong=1), _conn_run(4.0)],
            "baseline": [_conn_run(2.0)],
            "converge_median_s": 4.0,
            "baseline_median_s": 2.0,
            "isolation": {
                "a_llms": 4,
                "request_timeout_s": 2.0,
                "idle_s": [0.02, 0.03, 0.04],
                "idle_median_s": 0.03,
                "modes": [mode],
            },
            "memory": {
                "n": 10,
                "ready_s": 1.0,
                "before": _point(80.0),
                "after": _point(90.0),
                "again": _point(80.5),
                "running_rss_mb": 91.0,
                "per_connection_kb": 1024.0,
            },
        },
    }


def test_only_accepts_each_phase_that_runs_alone() -> None:
    assert sorted(ALONE) == ["connections", "fairness"]


def test_a_connections_run_renders_its_section_with_its_figures() -> None:
    text = render_only(connections_run())  # type: ignore[arg-type] # made-up results of the documented shape
    assert text.startswith("# Benchmarks: connections only\n\n" + CONN_HEADING)
    assert "`make bench-connections`" in text
    assert "**4.0 s** (median of 3 runs)" in text  # own connections; the baseline's single run beside it
    assert "| 59 / 60 |" in text  # every entry checked: one under the wrong principal shows
    assert "**0.20 s** (median of 3 runs)" in text and "RegistryUnavailable 12" in text
    assert "**1024 KB per connection**" in text


def test_a_connections_run_replaces_only_its_own_section() -> None:
    doc = f"# Benchmarks\n\n{FAIR_HEADING}\n\nfair\n\n## Scale plan\n\nplan\n"
    once = splice_only(doc, connections_run())  # type: ignore[arg-type] # made-up results of the documented shape
    assert once.index(FAIR_HEADING) < once.index(CONN_HEADING) < once.index("## Scale plan")
    assert "\nfair\n" in once and once.endswith("## Scale plan\n\nplan\n")
    again = connections_run()
    again["connections"]["memory"]["per_connection_kb"] = 7.0
    twice = splice_only(once, again)  # type: ignore[arg-type] # made-up results of the documented shape
    assert twice == once.replace("**1024 KB per connection**", "**7 KB per connection**")
