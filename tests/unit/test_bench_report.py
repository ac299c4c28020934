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
