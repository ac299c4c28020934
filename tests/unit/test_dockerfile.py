"""The Dockerfile, read statically: the stages, the user, the entry point, that the final stage carries no build
tool and no wheel layer, and that the build context (.dockerignore) holds what the builder stage needs. The image
itself is built and run in tests/e2e/test_image.py (podman, on a Debian base: see goodmem_devcluster.image).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions((ROOT / "Dockerfile").read_text()):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_two_stages_on_a_slim_python(stages: list[list[tuple[str, str]]]) -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", base.group(1)), base
    assert len(stages) == 2
    assert stages[0][0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert stages[1][0] == ("FROM", "${PYTHON_IMAGE}")


def test_builder_makes_wheels_of_the_runtime_only(stages: list[list[tuple[str, str]]]) -> None:
    runs = [args for ins, args in stages[0] if ins == "RUN"]
    # In a venv of its own: a Debian base has no pip outside one (and refuses system-wide installs, PEP 668).
    assert runs[0] == "python3 -m venv /opt/build && /opt/build/bin/pip wheel --wheel-dir /wheels .", (
        "the [test] extra must not reach the image"
    )
    # pip's CA bundle can be handed in (`make image` mounts the host's with podman); no default, so none is baked in.
    assert ("ARG", "PIP_CERT") in stages[0]
    assert not [a for ins, a in stages[1] if ins == "ARG"], "the final stage takes no build argument"


def test_the_venv_holds_only_the_wheels_and_no_pip(stages: list[list[tuple[str, str]]]) -> None:
    install = [args for ins, args in stages[0] if ins == "RUN"][1]
    assert install.startswith("python3 -m venv /opt/goodmem-operator ")
    assert "/opt/goodmem-operator/bin/pip install --no-cache-dir --no-index --find-links=/wheels goodmem-operator" in (
        install
    ), "offline, from the wheels only"
    assert "/opt/goodmem-operator/bin/pip uninstall --yes pip setuptools" in install
    assert "rm -rf /opt/goodmem-operator/lib/python3*/site-packages/kubernetes/aio" in install


def test_final_stage_takes_only_the_venv(stages: list[list[tuple[str, str]]]) -> None:
    final = stages[1]
    copies = [args for ins, args in final if ins in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/goodmem-operator /opt/goodmem-operator"], "no wheel, no source, no tool"
    runs = " ".join(args for ins, args in final if ins == "RUN")
    assert "pip uninstall --yes pip" in runs, "the base's own pip goes too"
    for tool in ("apt-get", "apk", "gcc", "build-essential", "make ", "git ", "pip install"):
        assert tool not in runs, tool
    env = " ".join(args for ins, args in final if ins == "ENV")
    path = re.search(r"PATH=(\S+)", env)
    # The PATH is spelled out: an imported base (mmdebstrap's tarball) may have none to extend.
    assert path and path.group(1).split(":")[0] == "/opt/goodmem-operator/bin" and "/usr/bin" in path.group(1)


def test_non_root_user_and_entrypoint(stages: list[list[tuple[str, str]]]) -> None:
    final = stages[1]
    users = [args for ins, args in final if ins == "USER"]
    assert users == ["65532:65532"]
    assert [i for i, _ in final].index("USER") > max(i for i, (ins, _) in enumerate(final) if ins == "RUN")
    [entry] = [args for ins, args in final if ins == "ENTRYPOINT"]
    assert json.loads(entry) == ["goodmem-operator"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["goodmem-operator"] == "goodmem_operator.main:main"


def test_read_only_root_friendly(stages: list[list[tuple[str, str]]]) -> None:
    env = " ".join(args for ins, args in stages[1] if ins == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env, setting
    deployment = yaml.safe_load((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    assert pod["securityContext"]["runAsUser"] == 65532  # the image's USER


def test_build_context_holds_what_the_builder_copies(stages: list[list[tuple[str, str]]]) -> None:
    lines = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied: set[str] = set()
    for ins, args in stages[0]:
        if ins == "COPY":
            copied.update(p.rstrip("/") for p in args.split()[:-1])
    assert copied == included == {"pyproject.toml", "README.md", "operator"}
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in included, "the wheel's metadata reads the README"
