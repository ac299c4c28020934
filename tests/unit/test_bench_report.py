"""`bench/run.py --only fairness --write BENCHMARKS.md` replaces the fair-share section alone."""

from __future__ import annotations

import pytest

from bench.report import FAIR_HEADING, splice_fairness

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
