"""Fixtures shared by the end-to-end and reliability tiers: a real kube-apiserver + etcd
(goodmem_devcluster), the registry emulator and the operator as processes, one of each per session.

They live here (not in tests/e2e/conftest.py) so that tests/e2e and tests/reliability share the same
session objects: a fixture re-exported into a second conftest would be a second fixture, and a second
control plane. Fixtures are lazy: the unit and integration tiers never start any of this.

Skips loudly when no control plane can be built (no Go, nothing cached);
GOODMEM_REQUIRE_E2E=1 turns that skip into a failure.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_devcluster.testing import control_plane_session


@pytest.fixture(scope="session")
def control_plane(pytestconfig: pytest.Config):
    """A started ControlPlane shared by the session; stopped (and its state removed) at the end."""
    with control_plane_session(pytestconfig) as cp:
        yield cp


@pytest.fixture(scope="module")
def control_plane_with_controller_manager(pytestconfig: pytest.Config):
    """A control plane of its own that also runs kube-controller-manager (the namespace controller, the garbage
    collector): deleted namespaces finish deleting, ownerReferences cascade. Started only for a module that asks
    for it, and stopped after that module, so the rest of the session neither waits for it nor shares its
    cluster-wide behaviour. The first run builds kube-controller-manager (then cached like the others)."""
    with control_plane_session(pytestconfig, controller_manager=True) as cp:
        yield cp


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace per test. Never wait for namespace deletion: without a
    controller manager a deleted namespace stays Terminating forever."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    return name


# --- the operator stack: registry emulator + CRD + operator process, shared by the session ---------------

ROOT = Path(__file__).resolve().parents[1]
# Planted as an API key; must never show anywhere but the registry. The quote makes its JSON-escaped form
# differ from the plain one (an echoed request body carries only the escaped form): tests/leakscan.py looks
# for both, and for base64.
SENTINEL = 'SENTINEL-e2e-7c1d"9a3b5f'


#: More registry keys of the session emulator, each its own principal (the teams' connections).
TEAM_KEYS = ("e2e-team-a-key", "e2e-team-b-key", "e2e-platform-key")
#: The namespace the session operator takes as its own (where ClusterGoodMemConnection Secrets live).
OPERATOR_NAMESPACE = "goodmem-e2e-operator"


@pytest.fixture(scope="session")
def emulator(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(
        tmp_path_factory.mktemp("emulator") / "emulator.log",
        api_key="e2e-operator-key",
        admin_key="e2e-admin-key",
        more_keys=(*TEAM_KEYS, SENTINEL + "-connection"),  # the principals of tests/e2e/test_connections.py
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def _second_emulator_process(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(
        tmp_path_factory.mktemp("emulator-2") / "emulator.log",
        api_key="e2e-second-registry-key",
        admin_key="e2e-second-admin-key",
    ).start()
    try:
        yield emu
    finally:
        emu.stop()  # by its pid (SIGTERM, then SIGKILL): never by name


@pytest.fixture
def second_emulator(_second_emulator_process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """A SECOND registry beside `emulator`: its own process, port, keys and principals (issue #15: team-a's registry
    down while team-b's keeps working). One process per session; each test gets it running and with no faults, and
    its faults (an outage, latency...) are cleared after the test whatever the outcome. A test may also stop it (a
    registry that is gone: connection refused); the next test then gets it started again (a new port, an empty
    store). Its entries otherwise stay for the session, like the first emulator's. Keys: `api_key` (an ordinary
    principal) and `admin_key`; add team keys with `add_key` (rotate with `add_key(new, same_as=old)`, `revoke_key`)."""
    emu = _second_emulator_process
    if emu.proc is None or emu.proc.poll() is not None:
        emu.start()
    emu.clear_faults()
    try:
        yield emu
    finally:
        if emu.proc is not None and emu.proc.poll() is None:
            emu.clear_faults()


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    control_plane.install_crds(ROOT / "crds")


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, emulator: EmulatorProcess, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a real process, at debug log level (so the leak scan covers debug logs).

    Drift checks default to an hour (so tests see no background calls); a test asks for fast
    drift checks on its own LLMs with the goodmem.ai/drift-interval annotation.
    """
    op = OperatorProcess(
        tmp_path_factory.mktemp("operator") / "operator.log",
        kubeconfig=control_plane.kubeconfig_path,
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        extra_args=[
            "--debug",
            "--log-format",
            "full",
            "--drift-interval",
            "3600",
            "--metrics-port",
            str(free_port()),
            "--operator-namespace",
            OPERATOR_NAMESPACE,
        ],
    ).start()
    try:
        yield op
    finally:
        op.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_port(op: OperatorProcess) -> int:
    args = op.extra_args
    return int(args[args.index("--metrics-port") + 1])


def scrape_metrics(op: OperatorProcess) -> str:
    """The operator's Prometheus exposition text (no proxy: it is on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(f"http://127.0.0.1:{metrics_port(op)}/metrics", timeout=5).read().decode()


class Kube:
    """kubectl with JSON parsing and polling, bound to the session's control plane."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def run(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cp.kubectl(*args, input=input, check=check)

    def apply(self, namespace: str, manifest: str, check: bool = True) -> Any:
        return self.run("-n", namespace, "apply", "-f", "-", input=manifest, check=check)

    def get(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        res = self.run("-n", namespace, "get", kind, name, "-o", "json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def wait_for(self, what: Callable[[], Any], timeout: float = 30.0, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = what()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {message or what}; last: {last!r}")

    def condition(self, namespace: str, name: str, ctype: str = "Ready") -> dict[str, Any] | None:
        obj = self.get(namespace, "llm", name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)

    def wait_condition(
        self,
        namespace: str,
        name: str,
        status: str = "True",
        reason: str | None = None,
        ctype: str = "Ready",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.condition(namespace, name, ctype)
            if c and c["status"] == status and (reason is None or c["reason"] == reason):
                return c
            return None

        return self.wait_for(check, timeout, f"{namespace}/{name} {ctype}={status} {reason or ''}")

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return json.loads(self.run("-n", namespace, "get", "events", "-o", "json").stdout)["items"]


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    return Kube(control_plane)


def llm_manifest(name: str, **spec: Any) -> str:
    body = {
        "displayName": f"LLM {name}",
        "providerType": "OPENAI",
        "endpointUrl": f"https://{name}.models.example.test/v1",
        "modelIdentifier": f"model-{name}",
    }
    body.update(spec)
    return json.dumps({"apiVersion": "goodmem.ai/v1alpha1", "kind": "LLM", "metadata": {"name": name}, "spec": body})


#: The label a Secret needs before the operator uses it as LLM credentials (README: Secrets opt in).
CREDENTIALS_LABELS = {"goodmem.ai/credentials": "true"}


def secret_manifest(name: str, data: dict[str, str], *, labelled: bool = True) -> str:
    """A Secret manifest; labelled as LLM credentials unless `labelled=False`."""
    meta: dict[str, Any] = {"name": name}
    if labelled:
        meta["labels"] = dict(CREDENTIALS_LABELS)
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": data})
