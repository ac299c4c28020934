"""The image tools of the dev distribution, without a container engine: how `make image` chooses its engine and
base, how the Debian base is cached, and how a Deployment's pod template becomes `podman run` arguments.
The real build and run: tests/e2e/test_image.py."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from goodmem_devcluster import image as image_mod
from goodmem_devcluster.container import SA_MOUNT, PodRun, PodTemplate, UnsupportedPodSpec, cpus, memory_bytes
from goodmem_devcluster.image import DebianBase, Engine, EngineUnavailable

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    monkeypatch.delenv("GOODMEM_CONTAINER_ENGINE", raising=False)
    return tmp_path / "cache"


# ----------------------------------------------------------------------------------------- engine and base
def test_no_engine_says_what_is_missing_and_make_image_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(image_mod.shutil, "which", lambda name: None)
    with pytest.raises(EngineUnavailable) as err:
        image_mod.find_engine()
    assert "podman is not installed" in str(err.value) and "docker is not installed" in str(err.value)
    assert "apt-get install podman runc mmdebstrap" in str(err.value)
    assert image_mod.main([]) == 1
    assert "the image was NOT built: no container engine" in capsys.readouterr().err


def test_podman_runs_with_runc_and_a_conf_without_default_ulimits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_mod.shutil, "which", lambda name: f"/usr/bin/{name}")
    engine = image_mod.find_engine()
    assert engine.name == "podman" and engine.command("build", ".") == [
        "/usr/bin/podman",
        "--runtime",
        "runc",
        "build",
        ".",
    ]
    assert engine.conf is not None and "default_ulimits = []" in engine.conf.read_text()
    assert engine.env()["CONTAINERS_CONF"] == str(engine.conf)
    monkeypatch.setenv("CONTAINERS_CONF", "/etc/mine.conf")  # the user's own choice is kept
    assert image_mod.find_engine().env()["CONTAINERS_CONF"] == "/etc/mine.conf"


def test_the_public_base_is_the_dockerfiles_default() -> None:
    assert image_mod.public_base() == "python:3.12-slim-bookworm"


def test_the_debian_base_is_minbase_with_python_and_security_updates(cache: Path) -> None:
    base = DebianBase()
    args = base.mmdebstrap_args(Path("/x/rootfs.tar"))
    assert args[:3] == ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates"]
    assert args[args.index("bookworm") + 1] == "/x/rootfs.tar"
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in args
    assert base.ref.startswith("localhost/goodmem-operator-base:bookworm-")
    assert base.tarball.parent == cache / "images"
    other = DebianBase(packages=(*base.packages, "tzdata"))
    assert other.digest != base.digest and other.ref != base.ref and other.tarball != base.tarball


def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_present: bool) -> Path:
    """mmdebstrap and podman stand-ins on PATH that log their calls; podman 'has' the base iff image_present."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mmdebstrap").write_text(
        f'#!/bin/sh\necho "mmdebstrap $*" >> {calls}\nfor a; do case "$a" in *.tar) echo rootfs > "$a";; esac; done\n'
    )
    exists = 0 if image_present else 1
    (bin_dir / "podman").write_text(
        f'#!/bin/sh\necho "podman $*" >> {calls}\n[ "$1 $2" = "image exists" ] && exit {exists}\nexit 0\n'
    )
    for tool in ("mmdebstrap", "podman"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    calls.write_text("")
    return calls


def test_the_debian_base_is_made_once_then_taken_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = DebianBase()
    calls = _fake_tools(tmp_path, monkeypatch, image_present=False)
    engine = Engine("podman", str(tmp_path / "bin" / "podman"))
    assert image_mod.ensure_debian_base(engine, base) == base.ref
    lines = calls.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["podman", "mmdebstrap", "podman"]  # exists?, make, import
    assert lines[2].startswith("podman import --change ENV PATH=") and lines[2].endswith(f"{base.tarball} {base.ref}")
    assert base.tarball.read_text() == "rootfs\n"

    calls.write_text("")  # the store lost the image, the tarball is cached: an import, no mmdebstrap
    image_mod.ensure_debian_base(engine, base)
    assert [line.split()[1] for line in calls.read_text().splitlines()] == ["image", "import"]

    calls = _fake_tools(tmp_path, monkeypatch, image_present=True)  # in the store: nothing to do
    image_mod.ensure_debian_base(engine, base)
    assert calls.read_text().splitlines() == [f"podman image exists {base.ref}"]


def test_auto_takes_the_public_base_when_it_can_else_the_debian_one(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine("podman", "podman")
    present: set[str] = set()
    monkeypatch.setattr(Engine, "image_exists", lambda self, ref: ref in present)
    monkeypatch.setattr(image_mod, "ensure_debian_base", lambda engine, refresh=False: "localhost/debian-base")
    monkeypatch.setattr(image_mod, "docker_hub_answers", lambda: False)
    assert image_mod.choose_base(engine, "auto")[0] == "localhost/debian-base"
    monkeypatch.setattr(image_mod, "docker_hub_answers", lambda: True)
    assert image_mod.choose_base(engine, "auto") == ("python:3.12-slim-bookworm", "Docker Hub answers")
    monkeypatch.setattr(image_mod, "docker_hub_answers", lambda: False)
    present.add("python:3.12-slim-bookworm")
    assert image_mod.choose_base(engine, "auto") == ("python:3.12-slim-bookworm", "podman has it")
    assert image_mod.choose_base(engine, "debian")[0] == "localhost/debian-base"
    assert image_mod.choose_base(engine, "registry.example/python:3.11")[0] == "registry.example/python:3.11"


def test_the_build_hands_pip_the_hosts_ca_bundle_with_podman(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    podman = Engine("podman", "podman", runtime="runc")
    cmd = image_mod.build_command(podman, "goodmem-operator:t", "localhost/base:1", bundle, context=ROOT)
    assert cmd[:4] == ["podman", "--runtime", "runc", "build"]
    joined = " ".join(cmd)
    assert f"-v {bundle}:{bundle}:ro --build-arg PIP_CERT={bundle}" in joined
    assert "--network host --build-arg PYTHON_IMAGE=localhost/base:1 -t goodmem-operator:t" in joined
    assert cmd[-3:] == ["-f", str(ROOT / "Dockerfile"), str(ROOT)]
    docker = image_mod.build_command(Engine("docker", "docker"), "t", "python:3.12-slim-bookworm", None, context=ROOT)
    assert "-v" not in docker and "PIP_CERT" not in " ".join(docker)


def test_the_ca_bundle_is_the_one_pip_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert image_mod.host_ca_bundle() == bundle
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.pem"))
    found = image_mod.host_ca_bundle()  # the next candidate (pip config, certifi): an existing file
    assert found is not None and found.is_file() and found != tmp_path / "missing.pem"


# --------------------------------------------------------------------------------- the Deployment as a run
@pytest.fixture
def deployment() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
    doc["metadata"]["namespace"] = "goodmem-system"
    return dict(doc)


def test_the_deployments_security_context_becomes_podman_flags(deployment: dict[str, Any]) -> None:
    template = PodTemplate.parse(deployment)
    assert template.security_args() == [
        "--user",
        "65532:65532",
        "--group-add",
        "65532",
        "--read-only",
        "--read-only-tmpfs=false",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    assert template.resource_args() == ["--memory", str(384 * 2**20), "--cpus", "0.5"]
    assert template.ports() == {"health": 8081, "metrics": 8080}


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("container", {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        ("container", {"procMount": "Unmasked"}),
        ("container", {"seccompProfile": {"type": "Unconfined"}}),
        ("container", {"privileged": True}),
        ("pod", {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"}]}),
    ],
)
def test_a_security_setting_the_runner_cannot_reproduce_is_refused(
    deployment: dict[str, Any], where: str, change: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    target = pod["containers"][0] if where == "container" else pod
    target["securityContext"].update(change)
    with pytest.raises(UnsupportedPodSpec):
        PodTemplate.parse(deployment)


def test_an_unknown_volume_or_env_source_is_refused(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    with pytest.raises(UnsupportedPodSpec, match="hostPath"):
        PodTemplate.parse(deployment)
    pod["volumes"].pop()
    pod["containers"][0]["env"].append({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    with pytest.raises(UnsupportedPodSpec, match="valueFrom"):
        PodTemplate.parse(deployment)
    pod["containers"][0]["env"][-1] = {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    with pytest.raises(UnsupportedPodSpec, match="valueFrom"):
        PodTemplate.parse(deployment)


def test_the_downward_apis_namespace_and_name_are_filled_in(deployment: dict[str, Any]) -> None:
    template = PodTemplate.parse(deployment)
    run = PodRun(
        template=template,
        engine=None,
        image="i",
        name="op-0",
        workdir=Path("/nonexistent"),  # type: ignore[arg-type]
        get=lambda kind, name: {"data": {}},
    )
    env = run.environment()
    assert env["GOODMEM_OPERATOR_NAMESPACE"] == template.namespace == "goodmem-system"


def test_quantities() -> None:
    assert memory_bytes("16Mi") == 16 * 2**20 and memory_bytes("1G") == 10**9 and memory_bytes("512") == 512
    assert cpus("500m") == "0.5" and cpus("2") == "2"
    with pytest.raises(UnsupportedPodSpec):
        memory_bytes("1.5Gi")


def test_the_pod_gets_its_env_volumes_and_service_account(deployment: dict[str, Any], tmp_path: Path) -> None:
    objects = {
        ("configmap", "goodmem-operator-config"): {
            "data": {"GOODMEM_BASE_URL": "http://127.0.0.1:1", "GOODMEM_API_KEY_FILE": "/overridden/by/env"}
        },
        ("secret", "goodmem-operator-registry"): {"data": {"api-key": base64.b64encode(b"the-key").decode()}},
    }
    run = PodRun(
        template=PodTemplate.parse(deployment),
        engine=Engine("podman", "true", runtime="runc"),  # `true unshare chown` where not root: no podman here
        image="localhost/goodmem-operator:t",
        name="goodmem-e2e-x",
        workdir=tmp_path / "pod",
        get=lambda kind, name: objects[(kind, name)],
        kubelet_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
        sa_token="a-token",
        ca_cert=b"CA",
    )
    env = run.environment()
    assert env["GOODMEM_API_KEY_FILE"] == "/etc/goodmem/registry/api-key", "env wins over envFrom, as in Kubernetes"
    assert env["GOODMEM_BASE_URL"] == "http://127.0.0.1:1" and env["KUBERNETES_SERVICE_PORT"] == "6443"
    args = run.run_args()
    assert args[-3:] == ["localhost/goodmem-operator:t", "--liveness=http://0.0.0.0:8081/healthz", "--leader-election"]
    assert env["GOODMEM_POD_NAME"] == "goodmem-e2e-x", "the pod's name from the downward API: the Lease identity"
    assert args[:5] == ["--detach", "--name", "goodmem-e2e-x", "--network", "host"]
    assert "--tmpfs" in args and args[args.index("--tmpfs") + 1] == f"/tmp:rw,mode=1777,size={16 * 2**20}"
    key_dir = tmp_path / "pod" / "volumes" / "registry-api-key"
    assert f"{key_dir}:/etc/goodmem/registry:ro" in args
    key = key_dir / "api-key"
    assert key.read_bytes() == b"the-key" and stat.S_IMODE(key.stat().st_mode) == 0o440
    if os.geteuid() == 0:
        assert key.stat().st_gid == 65532, "fsGroup owns the Secret's files"
    sa_dir = tmp_path / "pod" / "serviceaccount"
    assert f"{sa_dir}:{SA_MOUNT}:ro" in args
    assert {p.name: p.read_bytes() for p in sa_dir.iterdir()} == {
        "token": b"a-token",
        "ca.crt": b"CA",
        "namespace": b"goodmem-system",
    }
    run.stop()  # never started: nothing to remove in podman, the files go
    assert not (tmp_path / "pod").exists()


def test_the_image_test_skips_without_an_engine_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from goodmem_devcluster import testing

    def none() -> Engine:
        raise EngineUnavailable("no container engine: podman is not installed")

    monkeypatch.setattr(testing, "find_engine", none)
    monkeypatch.delenv("GOODMEM_REQUIRE_E2E", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"IMAGE E2E SKIPPED.*podman is not installed"):
        testing.require_container_engine()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"A CONTAINER ENGINE IS REQUIRED.*podman is not installed"):
        testing.require_container_engine()
