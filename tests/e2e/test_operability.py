"""Operability: structured logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .conftest import Kube, llm_manifest

pytestmark = pytest.mark.e2e


def test_json_log_format(
    control_plane: ControlPlane, emulator: EmulatorProcess, crds: None, kube: Kube, tmp_path: Path
) -> None:
    """`--log-format json` writes one JSON object per line (a second operator, confined to its own namespace)."""
    ns = f"json-{int(time.time() * 1000) % 10**9}"
    control_plane.kubectl("create", "namespace", ns)
    op = OperatorProcess(
        tmp_path / "op.log",
        kubeconfig=control_plane.kubeconfig_path,
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        extra_args=["--log-format", "json", "--verbose", "-n", ns],
    )
    # The session operator sees this namespace too; both converge on the same derived id (a second
    # create gets 409 for its own id and reads it back), so two operators at once stay harmless.
    op.start()
    try:
        kube.apply(ns, llm_manifest("jsonlog"))
        kube.wait_condition(ns, "jsonlog")
        time.sleep(1.0)
    finally:
        op.stop()
    lines = [line for line in op.log_text().splitlines() if line.strip()]
    assert lines
    parsed = [json.loads(line) for line in lines]  # every line is JSON
    assert all("message" in p for p in parsed)
    assert any(p.get("object", {}).get("name") == "jsonlog" for p in parsed if isinstance(p.get("object"), dict))
