"""The Deployment as a real pod: hack/kubelet_experiment.py on a kubelet and containerd (issue #16 part 5).

The script runs Debian's containerd, kube-scheduler and a kubelet (built from hack/go/kube) beside the local control
plane, applies deploy/overlays/cluster-wide (with hostNetwork: see dev/goodmem_devcluster/README.md, "A kubelet
here") with the image built from this tree, then examples/, and fails unless the pod runs and every LLM becomes
Ready. It found that the image crashed on a real kubelet (uid 65532 without a passwd entry): podman hides that.

It needs root, containerd, runc, podman, gcc and Debian's CNI plugins (`make install` installs them as root);
without one of them this module skips loudly, and fails under CI (GOODMEM_REQUIRE_E2E=1 or CI=true), like the image
test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from goodmem_devcluster.image import BuildResult, EngineUnavailable, build_image
from goodmem_devcluster.testing import e2e_required

from .conftest import ROOT

pytestmark = pytest.mark.e2e

NEEDED = ("containerd", "ctr", "runc", "podman", "gcc", "mmdebstrap")
TAG = "localhost/goodmem-operator-kubelet-e2e:test"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "not root (containerd and the kubelet's mounts need it)"
    absent = [name for name in NEEDED if shutil.which(name) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        absent.append("/usr/lib/cni/bridge (containernetworking-plugins)")
    return f"missing: {', '.join(absent)} (apt-get install containerd ...)" if absent else None


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config) -> BuildResult:
    reason = _missing()
    if reason:
        if e2e_required():
            pytest.fail(f"{'!' * 20} THE KUBELET E2E IS REQUIRED (CI) BUT: {reason}", pytrace=False)
        pytest.skip(f"{'!' * 20} KUBELET E2E SKIPPED: {reason}")
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        try:
            return build_image(TAG, base=os.environ.get("GOODMEM_IMAGE_BASE", "debian"))
        except EngineUnavailable as exc:
            if e2e_required():
                pytest.fail(f"{'!' * 20} THE KUBELET E2E IS REQUIRED (CI) BUT: {exc}", pytrace=False)
            pytest.skip(f"{'!' * 20} KUBELET E2E SKIPPED: {exc}")


def _ours() -> list[str]:
    """Mounts and processes the script leaves behind (its temp dirs are /tmp/goodmem-kubelet.*)."""
    left = [line for line in Path("/proc/self/mounts").read_text().splitlines() if "/goodmem-kubelet." in line]
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/goodmem-kubelet." in cmdline and proc.name != str(os.getpid()):
            left.append(f"pid {proc.name}: {cmdline}")
    return left


def test_the_deployment_runs_as_a_pod_and_its_operator_makes_the_examples_ready(image: BuildResult) -> None:
    before = _ours()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "kubelet_experiment.py"), "--image", image.tag],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "node goodmem-node Ready after" in out
    assert "Running and ready" in out and "kube-api-access-" in out, "the pod ran with its ServiceAccount token volume"
    assert "all example LLMs Ready" in out
    assert "leads (Lease acquired)" in out, "the container's own log, written by the kubelet"
    assert _ours() == before, "the script stops what it starts and unmounts what the kubelet mounted"
