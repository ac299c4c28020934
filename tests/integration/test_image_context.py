"""The Dockerfile's builder step on the real build context, without Docker.

The context is what .dockerignore lets through (an allow-list: pyproject.toml, README.md, operator/);
the project's wheel is built from a copy of it the way the builder stage does (`pip wheel`, with
build isolation, dependencies left out here), and the wheel must carry the entry point the image's
ENTRYPOINT names and no test dependency. The built image itself is checked the same way (no emulator, no dev
cluster, no test tool, no pip) in tests/e2e/test_image.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_from_the_docker_build_context(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "operator", context / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "wheels"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    [wheel] = (tmp_path / "wheels").glob("goodmem_operator-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "goodmem-operator = goodmem_operator.main:main" in entry_points
    assert "goodmem_operator/main.py" in names and "goodmem_operator/py.typed" in names
    # Only the operator: the emulator and the local control plane are the development distribution in dev/.
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"goodmem_operator"}, packages
    assert "goodmem-emulator" not in entry_points and "goodmem-devcluster" not in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("Requires-Dist: kopf") for r in runtime)
    assert not any("pytest" in r or "goodmem==" in r for r in runtime), "test dependencies must stay in the extra"
