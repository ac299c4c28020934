"""The Ready gauge follows each LLM's Ready condition, forgets deleted ones, and never double counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from goodmem_operator.metrics import Metrics

pytestmark = pytest.mark.unit


def outcome(ready: str) -> SimpleNamespace:
    return SimpleNamespace(
        result="success", events=[], drift_corrected=False, status={"conditions": [{"type": "Ready", "status": ready}]}
    )


def gauge(m: Metrics) -> dict[str, float]:
    return {s: m.registry.get_sample_value("goodmem_operator_llms", {"ready": s}) for s in ("True", "False", "Unknown")}


def test_ready_gauge_moves_llms_between_states() -> None:
    m = Metrics()
    assert gauge(m) == {"True": 0, "False": 0, "Unknown": 0}
    for i in range(5):
        m.reconciled(f"u{i}", "create", outcome("True"), 0.01)
    m.reconciled("u0", "secret", outcome("False"), 0.01)
    m.reconciled("u1", "drift", outcome("True"), 0.01)  # unchanged: not counted twice
    m.reconciled(
        "u2", "update", SimpleNamespace(result="paused", events=[], drift_corrected=False, status={}), 0.01
    )  # no Ready: kept
    assert gauge(m) == {"True": 4, "False": 1, "Unknown": 0}
    m.forget("u0")
    m.forget("u0")
    m.forget("never-seen")
    assert gauge(m) == {"True": 4, "False": 0, "Unknown": 0}
    m.reconciled("u3", "update", outcome("Unknown"), 0.01)
    assert gauge(m) == {"True": 3, "False": 0, "Unknown": 1}
    assert (
        m.registry.get_sample_value("goodmem_operator_reconcile_total", {"trigger": "create", "result": "success"}) == 5
    )
