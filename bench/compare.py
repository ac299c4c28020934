"""This run against a committed baseline run (bench/baseline.json): the same measures side by side.

The baseline is a full `make bench` of an earlier commit on the same machine, saved with `--json`. Issue #14 asked
for one before its refactor (engine, requeue, memo, settings, async Kubernetes requests) and one after, so that a
regression beyond noise in convergence, calls per change, steady-state writes, rotation or memory shows. Replace
the baseline (and say why in the commit) when a later change needs its own before/after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.results import pick_point, steady_writes

BASELINE = Path(__file__).with_name("baseline.json")


def load_baseline(path: Path = BASELINE) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _rss(r: dict[str, Any], llms: int) -> float | None:
    point = pick_point(r["memory"]["points"], llms)
    return float(point["rss_mb"]) if point else None


def _secrets_rss(r: dict[str, Any]) -> float | None:
    fresh = (r["memory"].get("secrets") or {}).get("fresh")
    return float(fresh["rss_mb"]) if fresh else None


def _steady_writes(r: dict[str, Any]) -> str:
    registry, api = steady_writes(r["convergence"]["runs"][-1]["steady"])
    return f"{registry} / {api}"


def _per_change(r: dict[str, Any]) -> str:
    calls = r["calls"]
    reg = calls["registry_total"]
    return (
        f"{reg['POST'] / max(1, calls['created']):.2f} / {reg['PUT'] / max(1, calls['updated'] + calls['rotated']):.2f}"
        f" / {reg['DELETE'] / max(1, calls['deleted']):.2f}"
    )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _other_cpu(r: dict[str, Any]) -> str:
    return ", ".join(f"{run['create']['cpu']['other']:.1f}" for run in r["convergence"]["runs"])


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} MB"


def compare_section(base: dict[str, Any], r: dict[str, Any]) -> str:
    """A Markdown section: each measure for the baseline and for this run."""

    def row(measure: str, f: Any) -> str:
        return f"| {measure} | {f(base)} | {f(r)} |"

    lines = [
        "## Against the baseline",
        "",
        f"The baseline is `make bench` at commit `{base['source']['commit'][:7]}` on {base['started']} (saved in "
        f"`bench/baseline.json`, rendered by `bench/compare.py`); this run is commit `{r['source']['commit'][:7]}`. "
        "Same machine and sizes; medians of 3 where the phase repeats. 'Other processes' is CPU the rest of the "
        "machine used during each convergence run: a run where it is high was disturbed.",
        "",
        f"| measure | baseline `{base['source']['commit'][:7]}` | this run `{r['source']['commit'][:7]}` |",
        "|---|---|---|",
        row("1,000 LLMs → all `Ready` (median)", lambda x: f"{x['convergence']['converge_median_s']:.1f} s"),
        row("1,000 LLMs → all `Ready`: each run", lambda x: _runs(x["convergence"]["converge_s"]) + " s"),
        row("1,000 LLMs: CPU of other processes in each run", lambda x: _other_cpu(x) + " s"),
        row("floor (bare client, median)", lambda x: f"{x['convergence']['floor_median_s']:.2f} s"),
        row("registry POST / PUT / DELETE per change", _per_change),
        row("API-server writes per create", lambda x: f"{x['calls']['api_writes_per_create_at_scale']:.2f}"),
        row("steady state: registry / API-server writes", _steady_writes),
        row(
            "one Secret used by 200 LLMs rotated (median)",
            lambda x: f"{x['rotation']['rotate_median_s']:.2f} s, PUTs {', '.join(map(str, x['rotation']['puts']))}",
        ),
        row(
            "latency p50 / p95", lambda x: f"{x['latency']['p50_s'] * 1000:.0f} / {x['latency']['p95_s'] * 1000:.0f} ms"
        ),
        row(
            "RSS, fresh operator: 0 / 100 / 1,000 / 5,000 LLMs",
            lambda x: " / ".join(_mb(_rss(x, n)) for n in (0, 100, 1000, 5000)),
        ),
        row("RSS with 1,000 LLMs and 10,000 unrelated Secrets", lambda x: _mb(_secrets_rss(x))),
        "",
    ]
    return "\n".join(lines)
