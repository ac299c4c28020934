"""The image, built from the repository and run as deploy/ says, against the local control plane and the emulator.

The image is what `make image` builds (goodmem_devcluster.image; the Debian base made by mmdebstrap unless
GOODMEM_IMAGE_BASE names another: Docker Hub is not reachable here). It runs as the Deployment's pod would
(goodmem_devcluster.container): deploy/overlays/cluster-wide is applied with an overlay of the kind the README
tells users to write (the registry's URL, its key, debug logs for the leak scan, and the liveness port: the
container shares the host's network, so the Deployment's fixed ports could be taken), and the Deployment,
its ConfigMap and its Secret are read back from the API server. The container gets the Deployment's
securityContext and limits, the ConfigMap as its environment, the key as the mounted file, and the
ServiceAccount's token (TokenRequest), CA and namespace where a pod has them, so it logs in in-cluster with
only the ServiceAccount's rights.

Without podman or a running Docker this module skips loudly, and fails under CI (GOODMEM_REQUIRE_E2E=1 or
CI=true); `make install` installs podman, runc and mmdebstrap when it runs as root on Debian/Ubuntu.
Every container started here is removed by name (`podman rm -f`), whatever the outcome.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from goodmem_devcluster import ControlPlane
from goodmem_devcluster._proc import free_ports
from goodmem_devcluster.container import SA_MOUNT, PodRun, PodTemplate
from goodmem_devcluster.image import BuildResult, Engine, EngineUnavailable, build_image
from goodmem_devcluster.stack import EmulatorProcess
from goodmem_devcluster.testing import control_plane_session, e2e_required, require_container_engine
from tests.leakscan import assert_no_leaks

from .conftest import ROOT, SENTINEL, Kube

pytestmark = pytest.mark.e2e

SYSTEM_NS = "goodmem-system"
SA_USER = f"system:serviceaccount:{SYSTEM_NS}:goodmem-operator"
#: The registry's API key, from the mounted file: a second sentinel (no quote: it travels in a CLI argument).
REGISTRY_KEY = "SENTINEL-registry-key-5d2e8b7f"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _no_proxy_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def _answers(url: str) -> bool:
    try:
        return _no_proxy_get(url, 2.0)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def engine() -> Engine:
    return require_container_engine()


@pytest.fixture(scope="module")
def image(engine: Engine, pytestconfig: pytest.Config) -> BuildResult:
    """The image `make image` builds (a warm build: the engine's layer cache and the cached base)."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # a cold build's progress shows on the terminal
        try:
            result = build_image(base=os.environ.get("GOODMEM_IMAGE_BASE", "debian"))
        except EngineUnavailable as exc:  # no mmdebstrap to make the base: as loud as no engine
            banner = "!" * 20
            if e2e_required():
                pytest.fail(f"{banner} THE IMAGE IS REQUIRED (CI) BUT CANNOT BE BUILT: {exc}", pytrace=False)
            pytest.skip(f"{banner} IMAGE E2E SKIPPED: {exc}")
    print(f"\nimage {result.tag}: {result.size_bytes / 1e6:.0f} MB on {result.base}, built in {result.seconds:.1f} s")
    return result


@pytest.fixture(scope="module")
def cluster(pytestconfig: pytest.Config) -> Iterator[ControlPlane]:
    """A control plane of this module's own: the session's operator (admin, every namespace) must not serve
    these LLMs, or the container would prove nothing."""
    with control_plane_session(pytestconfig) as cp:
        cp.install_crds(ROOT / "crds", server_side=True)
        yield cp


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(
        tmp_path_factory.mktemp("image-emulator") / "emulator.log", api_key=REGISTRY_KEY, admin_key="image-admin-key"
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


def write_overlay(directory: Path, base_url: str, health_port: int, metrics_port: int) -> Path:
    """An overlay on deploy/overlays/cluster-wide as the README's Install section writes one."""
    directory.mkdir(parents=True)
    (directory / "registry-api-key.txt").write_text(REGISTRY_KEY)
    deploy = os.path.relpath(ROOT / "deploy", directory)
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{deploy}/overlays/cluster-wide"],
        "configMapGenerator": [
            {
                "name": "goodmem-operator-config",
                "behavior": "merge",
                "literals": [
                    f"GOODMEM_BASE_URL={base_url}",
                    f"GOODMEM_METRICS_PORT={metrics_port}",
                    "GOODMEM_DEBUG=1",  # the leak scan covers debug logs
                ],
            }
        ],
        "secretGenerator": [
            {"name": "goodmem-operator-registry", "behavior": "replace", "files": ["api-key=registry-api-key.txt"]}
        ],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "goodmem-operator"},
                "patch": json.dumps(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/containers/0/args/0",
                            "value": f"--liveness=http://127.0.0.1:{health_port}/healthz",
                        }
                    ]
                ),
            }
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return directory


class Running:
    """The operator's container and what the test needs to reach it."""

    def __init__(self, run: PodRun, health_port: int, metrics_port: int, started: datetime) -> None:
        self.run, self.health_port, self.metrics_port, self.started = run, health_port, metrics_port, started

    def get(self, path: str, port: int) -> tuple[int, str]:
        return _no_proxy_get(f"http://127.0.0.1:{port}{path}")


@pytest.fixture(scope="module")
def container(
    engine: Engine,
    image: BuildResult,
    cluster: ControlPlane,
    registry: EmulatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    health_port, metrics_port = free_ports(2)
    overlay = write_overlay(tmp_path_factory.mktemp("image") / "overlay", registry.base_url, health_port, metrics_port)
    cluster.kubectl("apply", "-k", str(overlay))
    deployment = json.loads(cluster.kubectl("-n", SYSTEM_NS, "get", "deploy", "goodmem-operator", "-o", "json").stdout)

    def get(kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(cluster.kubectl("-n", SYSTEM_NS, "get", kind, name, "-o", "json").stdout))

    template = PodTemplate.parse(deployment)
    run = PodRun(
        template=template,
        engine=engine,
        image=image.tag,
        name=f"goodmem-e2e-{uuid.uuid4().hex[:10]}",
        workdir=tmp_path_factory.mktemp("pod"),
        get=get,
        kubelet_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster.apiserver_port)},
        sa_token=cluster.service_account_token(
            SYSTEM_NS, deployment["spec"]["template"]["spec"]["serviceAccountName"], expiration_seconds=3600
        ),
        ca_cert=cluster.ca_cert_path.read_bytes(),
    )
    started = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        run.start()
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{health_port}/healthz"):
            assert run.running(), f"the container exited:\n{run.logs()[-4000:]}"
            assert time.monotonic() < deadline, f"no /healthz within 60 s:\n{run.logs()[-4000:]}"
            time.sleep(0.2)
        print(f"\ncontainer {run.name}: /healthz answered {time.monotonic() - t0:.1f} s after `podman run`")
        yield Running(run, health_port, metrics_port, started)
    finally:
        run.stop()
        assert run.name not in engine.run("ps", "--all", "--format", "{{.Names}}").stdout, "the container is gone"


def _proc_status(run: PodRun) -> dict[str, str]:
    res = run.exec("cat", "/proc/1/status")
    assert res.returncode == 0, res.stderr
    return dict(line.split(":\t", 1) for line in res.stdout.splitlines() if ":\t" in line)


def test_the_container_runs_as_the_deployment_says(container: Running, cluster: ControlPlane) -> None:
    """The operator process (pid 1) runs as 65532, with no capability, no way to gain privileges, under seccomp,
    on a read-only root with a writable /tmp, and talks to the API server as its ServiceAccount."""
    status = _proc_status(container.run)
    assert status["Uid"].split() == ["65532"] * 4 and status["Gid"].split() == ["65532"] * 4
    assert "65532" in status["Groups"].split()  # fsGroup: the mounted key's group
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps].strip(), 16) == 0, f"{caps}: {status[caps]}"
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2", "a seccomp filter (the runtime's default profile)"
    cmdline = container.run.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[0].endswith("python3") and cmdline[1] == "/opt/goodmem-operator/bin/goodmem-operator", cmdline
    assert cmdline[2] == f"--liveness=http://127.0.0.1:{container.health_port}/healthz"

    write = container.run.exec("python3", "-c", "open('/opt/goodmem-operator/x', 'w')")
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    assert container.run.exec("python3", "-c", "open('/tmp/x', 'w').write('ok')").returncode == 0
    mounts = container.run.exec("cat", "/proc/1/mounts").stdout
    assert re.search(r"^\S+ / \S+ ro[,\s]", mounts, re.M), "the root filesystem is mounted read-only"
    assert re.search(r"^tmpfs /tmp tmpfs rw\S*size=16384k", mounts, re.M), "/tmp: the 16Mi emptyDir"
    key = container.run.exec("cat", "/etc/goodmem/registry/api-key")
    assert key.returncode == 0 and key.stdout == REGISTRY_KEY, "the key is readable where the Deployment mounts it"
    for name in ("token", "ca.crt", "namespace"):
        assert container.run.exec("test", "-s", f"{SA_MOUNT}/{name}").returncode == 0, name

    # In-cluster login: every write the operator made went out as the ServiceAccount, and it made some (its
    # startup SelfSubjectAccessReview at least). The test's own writes since the start are kubectl's.
    users = {
        ev["user"]["username"]
        for ev in cluster.audit_events()
        if datetime.fromisoformat(ev["requestReceivedTimestamp"]) >= container.started
        and not ev.get("userAgent", "").startswith("kubectl")
    }
    assert users == {SA_USER}, users


@pytest.fixture(scope="module")
def examples_ready(container: Running, cluster: ControlPlane, registry: EmulatorProcess) -> dict[str, Any]:
    """Every manifest of examples/ applied in a fresh namespace, the Secret's key replaced by the sentinel;
    returns the namespace, the LLMs' names and the seconds until all were Ready."""
    kube = Kube(cluster)
    ns = f"image-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    assert EXAMPLES, "examples/ must ship manifests"
    names = []
    started = time.monotonic()
    for path in EXAMPLES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            if doc["kind"] == "Secret":
                doc["stringData"] = {k: SENTINEL for k in doc.get("stringData", {})}
            if doc["kind"] == "LLM":
                names.append(doc["metadata"]["name"])
            kube.apply(ns, json.dumps(doc))
    assert len(names) >= 4
    for name in names:
        kube.wait_condition(ns, name, "True", "Available", timeout=60)
    return {"namespace": ns, "names": names, "seconds": time.monotonic() - started}


def test_the_examples_reach_ready_through_the_container(
    examples_ready: dict[str, Any], cluster: ControlPlane, registry: EmulatorProcess
) -> None:
    kube, ns = Kube(cluster), examples_ready["namespace"]
    print(f"\n{len(examples_ready['names'])} examples Ready in {examples_ready['seconds']:.1f} s")
    for name in examples_ready["names"]:
        obj = kube.get(ns, "llm", name)
        record = registry.record(obj["status"]["llmId"])
        assert record is not None, f"{name}: no registry entry"
        assert record["displayName"] == obj["spec"]["displayName"]
        assert record["labels"]["goodmem.ai/owner-uid"] == obj["metadata"]["uid"]
        assert obj["metadata"]["finalizers"] == ["goodmem.ai/finalizer"]
    writers = cluster.writes_by_user()
    assert writers[SA_USER] > 0, writers


def test_healthz_and_metrics_answer_from_the_container(container: Running, examples_ready: dict[str, Any]) -> None:
    status, body = container.get("/healthz", container.health_port)
    assert status == 200, body
    status, text = container.get("/metrics", container.metrics_port)
    assert status == 200
    ready = re.search(r'^goodmem_operator_llms\{ready="True"\} (\S+)$', text, re.M)
    assert ready and float(ready.group(1)) >= len(examples_ready["names"]), text[:2000]
    created = re.search(r'^goodmem_operator_registry_requests_total\{status="201",verb="create"\} (\S+)$', text, re.M)
    assert created and float(created.group(1)) >= len(examples_ready["names"]), text[:2000]


def test_the_container_output_holds_no_secret(
    container: Running, examples_ready: dict[str, Any], cluster: ControlPlane
) -> None:
    """The container's whole output (debug logs: GOODMEM_DEBUG=1 in the ConfigMap), the LLMs' statuses and the
    Events: no form of the LLM credentials' sentinel, nor of the registry key read from the mounted file."""
    ns = examples_ready["namespace"]
    logs = container.run.logs()
    assert "gpt-4o-mini" in logs, "the scan looks at the operator's real output"
    places = {
        "container output": logs,
        "llms": cluster.kubectl("-n", ns, "get", "llms", "-o", "json").stdout,
        "events": cluster.kubectl("-n", ns, "get", "events", "-o", "json").stdout,
    }
    result = assert_no_leaks(places, SENTINEL)
    assert_no_leaks(places, REGISTRY_KEY)
    print(f"\nleak scan: {result.bytes_scanned} bytes, container output {len(logs)} bytes")


def test_the_image_holds_the_operator_and_no_dev_tool(engine: Engine, image: BuildResult) -> None:
    """In the image: the operator and its runtime dependencies only (no emulator, no dev cluster, no test tool,
    no pip), as user 65532 with the operator as its entry point."""
    config = json.loads(engine.run("image", "inspect", image.tag).stdout)[0]["Config"]
    assert config["User"] == "65532:65532" and config["Entrypoint"] == ["goodmem-operator"], config
    name = f"goodmem-e2e-probe-{uuid.uuid4().hex[:8]}"
    probe = (
        "import importlib.metadata as m, importlib.util as u, json; "
        "print(json.dumps({'dists': sorted(d.metadata['Name'].lower() for d in m.distributions()), "
        "'modules': {n: u.find_spec(n) is not None for n in "
        "('goodmem_operator', 'goodmem_emulator', 'goodmem_devcluster', 'pytest', 'pip', 'kopf', 'uvloop', "
        "'kubernetes.config', 'kubernetes.aio')}}))"
    )
    try:
        res = engine.run(
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "none",
            "--read-only",
            "--entrypoint",
            "python3",
            image.tag,
            "-c",
            probe,
        )
    finally:
        engine.run("rm", "--force", name, check=False)
    found = json.loads(res.stdout)
    assert found["modules"] == {
        "goodmem_operator": True,
        "kopf": True,
        "uvloop": True,
        "kubernetes.config": True,
        "kubernetes.aio": False,  # removed: nothing imports it (Dockerfile)
        "goodmem_emulator": False,
        "goodmem_devcluster": False,
        "pytest": False,
        "pip": False,
    }, found
    assert "goodmem-operator" in found["dists"]
    assert not {"goodmem-operator-dev", "pytest", "pip", "setuptools", "hypothesis"} & set(found["dists"]), found
