"""hack/install-system-packages (run by `make install`): apt-get only for what is missing, only as root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "install-system-packages"


def run(tmp_path: Path, uid: int, present: tuple[str, ...], **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """The script with PATH = a directory of stand-ins only (`id`, `apt-get` logging its calls, the tools
    `present`); the script adds /usr/sbin:/sbin itself, where this machine's runc may be."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "apt-calls"
    calls.write_text("")
    stubs = {"id": f"echo {uid}", "apt-get": f'echo "apt-get $*" >> {calls}'}
    stubs.update({tool: "exit 0" for tool in present})
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    cni = tmp_path / "cni"
    cni.mkdir(exist_ok=True)
    if "containernetworking-plugins" in present:
        (cni / "bridge").write_text("#!/bin/sh\n")
        (cni / "bridge").chmod(0o755)
    res = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(bin_dir), "CNI_DIR": str(cni), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return res, calls.read_text()


ALL = ("podman", "runc", "mmdebstrap", "containerd", "gcc", "containernetworking-plugins")


def test_nothing_happens_when_everything_is_there(tmp_path: Path) -> None:
    res, calls = run(tmp_path, 0, ALL)
    assert (res.returncode, res.stdout, res.stderr, calls) == (0, "", "", "")


def test_as_root_the_missing_ones_are_installed_after_an_update(tmp_path: Path) -> None:
    res, calls = run(tmp_path, 0, ("podman", "runc", "containerd", "gcc"))
    assert res.returncode == 0, res.stderr
    assert "installing mmdebstrap containernetworking-plugins with apt-get" in res.stdout
    assert calls.splitlines() == [
        "apt-get update -q",
        "apt-get install -y -q mmdebstrap containernetworking-plugins",
    ]
    assert "apt-get install -y -q mmdebstrap" in res.stderr, "the commands are printed as they run (set -x)"


def test_not_root_it_says_what_to_run_and_installs_nothing(tmp_path: Path) -> None:
    res, calls = run(tmp_path, 1000, ("runc", "containerd", "gcc", "containernetworking-plugins"))
    assert res.returncode == 0 and calls == ""
    assert "missing podman mmdebstrap" in res.stderr and "apt-get install -y podman mmdebstrap" in res.stderr
    assert "not root" in res.stderr


def test_it_can_be_switched_off(tmp_path: Path) -> None:
    res, calls = run(tmp_path, 0, (), SYSTEM_PACKAGES="0")
    assert (res.returncode, res.stdout, calls) == (0, "", "")
