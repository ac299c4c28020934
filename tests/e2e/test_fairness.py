"""Fair share on the real control plane (issue #13 part 5): the drift-interval annotation has a floor, and a change
to it is honoured. Counts come from the emulator's request log; the waits are generous windows, never assertions
on a time."""

from __future__ import annotations

import json
import time

import pytest

from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .conftest import Kube, llm_manifest

pytestmark = pytest.mark.e2e

ANNOTATION = "goodmem.ai/drift-interval"


def _gets(emulator: EmulatorProcess, llm_id: str) -> int:
    return sum(1 for e in emulator.stats()["log"] if e["method"] == "GET" and e["path"] == f"/v1/llms/{llm_id}")


def _clamped_events(kube: Kube, namespace: str, name: str) -> list[dict]:
    return [
        e
        for e in kube.events(namespace)
        if e["reason"] == "DriftIntervalClamped" and e["involvedObject"]["name"] == name
    ]


def test_a_drift_loop_annotation_is_clamped_to_the_floor_with_a_warning(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """`drift-interval: "0.0001"` once made 395 GETs in 3 s from one LLM; now it is a 30 s interval."""
    manifest = json.loads(llm_manifest("tight-loop"))
    manifest["metadata"]["annotations"] = {ANNOTATION: "0.0001"}
    kube.apply(namespace, json.dumps(manifest))
    kube.wait_condition(namespace, "tight-loop")
    llm_id = kube.get(namespace, "llm", "tight-loop")["status"]["llmId"]
    event = kube.wait_for(
        lambda: next(iter(_clamped_events(kube, namespace, "tight-loop")), None), 30, "the DriftIntervalClamped Warning"
    )
    assert event["type"] == "Warning"
    assert "'0.0001'" in event["message"] and "every 30s" in event["message"]
    before = _gets(emulator, llm_id)
    time.sleep(10)  # a counting window: at the floor, at most one drift check fits in it
    assert _gets(emulator, llm_id) - before <= 1
    assert len(_clamped_events(kube, namespace, "tight-loop")) == 1, "one Warning per value, not one per loop"


def test_a_drift_interval_set_after_creation_is_honoured(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """Created with the operator's default (an hour here), then annotated 30 s: a drift check follows within about
    a minute (the annotation is re-read at least every 30 s), not after the first default interval."""
    kube.apply(namespace, llm_manifest("late-annotation"))
    kube.wait_condition(namespace, "late-annotation")
    llm_id = kube.get(namespace, "llm", "late-annotation")["status"]["llmId"]
    before = _gets(emulator, llm_id)
    kube.run("-n", namespace, "annotate", "llm", "late-annotation", f"{ANNOTATION}=30")
    # The annotation change is an update (one GET at once); the second GET can only be a drift check.
    kube.wait_for(lambda: _gets(emulator, llm_id) - before >= 2, 90, "a drift check after the annotation")
    assert _clamped_events(kube, namespace, "late-annotation") == []
