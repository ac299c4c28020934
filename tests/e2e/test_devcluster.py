"""The local control plane itself: version, CRUD, RBAC, restart, clean stop, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goodmem_devcluster import KUBERNETES_VERSION, ControlPlane
from goodmem_devcluster._proc import pid_alive, port_is_listening
from goodmem_devcluster._supervisor import Component, Supervisor
from goodmem_devcluster.errors import ControlPlaneError
from goodmem_devcluster.testing import build_visibly, require_control_plane

pytestmark = pytest.mark.e2e


def test_server_version_is_the_pinned_one(control_plane: ControlPlane) -> None:
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == KUBERNETES_VERSION == "v1.34.4"
    assert out["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_namespace_and_configmap(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "cm", "-n", namespace, "--from-literal=k=v")
    got = json.loads(control_plane.kubectl("get", "configmap", "cm", "-n", namespace, "-o", "json").stdout)
    assert got["data"] == {"k": "v"}


def test_service_account_without_bindings_is_forbidden(control_plane: ControlPlane, namespace: str) -> None:
    import kubernetes.client
    from kubernetes.client.rest import ApiException

    kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "no-rights")
    with control_plane.api_client(kubeconfig) as api, pytest.raises(ApiException) as exc:
        kubernetes.client.CoreV1Api(api).list_namespaced_secret(namespace)
    assert exc.value.status == 403
    assert f"system:serviceaccount:{namespace}:no-rights" in exc.value.body

    proc = control_plane.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr

    # The same identity can act once bound: the token really authenticates as the ServiceAccount.
    # RBAC reads bindings from an informer cache, so a new binding takes effect after a short delay.
    # (Bind a Role with explicit rules: the aggregated ClusterRoles admin/edit/view are EMPTY
    # here, because aggregation is done by kube-controller-manager, which does not run.)
    control_plane.kubectl("create", "role", "read-secrets", "-n", namespace, "--verb=list", "--resource=secrets")
    control_plane.kubectl(
        "create",
        "rolebinding",
        "read-secrets",
        "-n",
        namespace,
        "--role=read-secrets",
        f"--serviceaccount={namespace}:no-rights",
    )
    deadline = time.monotonic() + 10
    with control_plane.api_client(kubeconfig) as api:
        while True:
            try:
                kubernetes.client.CoreV1Api(api).list_namespaced_secret(namespace)
                break
            except ApiException as err:
                if err.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_audit_log_records_writes_by_user(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "audited", "-n", namespace)
    events = [
        e
        for e in control_plane.audit_events()
        if e.get("stage") == "ResponseComplete" and e["objectRef"].get("namespace") == namespace
    ]
    assert any(
        e["verb"] == "create"
        and e["objectRef"]["resource"] == "configmaps"
        and e["user"]["username"] == "goodmem-admin"
        for e in events
    )
    assert control_plane.writes_by_user()["goodmem-admin"] >= 2


@pytest.fixture
def own_control_plane(pytestconfig: pytest.Config):
    """A private control plane (the lifecycle tests stop and restart it)."""
    require_control_plane()
    build_visibly(pytestconfig)
    cp = ControlPlane().start()
    try:
        yield cp
    finally:
        cp.stop()


def test_restart_apiserver_keeps_data_then_stop_leaves_nothing(own_control_plane: ControlPlane) -> None:
    cp = own_control_plane
    cp.kubectl("create", "namespace", "keep")
    cp.kubectl("create", "configmap", "survivor", "-n", "keep", "--from-literal=a=b")
    old_pid, port = cp.apiserver_pid, cp.apiserver_port

    cp.stop_apiserver()
    assert not pid_alive(old_pid)
    assert not port_is_listening(port)
    assert cp.kubectl("get", "ns", check=False, timeout=30).returncode != 0

    cp.start_apiserver()
    assert cp.apiserver_port == port and cp.apiserver_pid != old_pid
    got = json.loads(cp.kubectl("get", "configmap", "survivor", "-n", "keep", "-o", "json").stdout)
    assert got["data"] == {"a": "b"}

    cp.stop_etcd()
    cp.start_etcd()
    assert json.loads(cp.kubectl("get", "configmap", "survivor", "-n", "keep", "-o", "json").stdout)["data"] == {
        "a": "b"
    }

    pids, ports, state_dir = list(cp.pids.values()), [p for p in cp.ports.values() if p], cp.state_dir
    assert len(pids) == 2 and len(ports) == 3
    cp.stop()
    assert not any(pid_alive(p) for p in pids)
    assert not any(port_is_listening(p) for p in ports)
    assert not state_dir.exists()
    assert not cp.is_running()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "goodmem_devcluster", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_up_status_sa_kubeconfig_down(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    require_control_plane()
    build_visibly(pytestconfig)
    state_dir = tmp_path / "cluster"
    up = _cli("up", "--state-dir", str(state_dir))
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip().splitlines()[-1] == f"export KUBECONFIG={state_dir / 'kubeconfig'}"
        state = json.loads((state_dir / "state.json").read_text())
        pids = [p["pid"] for p in state["processes"].values()]
        # The CLI process has exited; the control plane lives on in its own session.
        assert all(pid_alive(p) for p in pids)
        assert all(os.getsid(p) == p for p in pids)

        status = _cli("status", "--state-dir", str(state_dir))
        assert status.returncode == 0 and "ready" in status.stdout, status.stdout + status.stderr

        sa = _cli("sa-kubeconfig", "ns-cli", "robot", "--state-dir", str(state_dir))
        assert sa.returncode == 0, sa.stderr
        kubeconfig = Path(sa.stdout.strip())
        assert "token:" in kubeconfig.read_text()

        cp = ControlPlane.from_state_dir(state_dir)
        who = cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
        assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "system:serviceaccount:ns-cli:robot"
    finally:
        down = _cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    assert not any(pid_alive(p) for p in pids)
    assert not any(port_is_listening(p) for p in state["ports"].values())
    assert _cli("status", "--state-dir", str(state_dir)).returncode == 1


# ------------------------------------------------------- the supervisor, with small Python processes
_CHILD = """
import pathlib, signal, sys, time
name, ready, stops = sys.argv[1:4]
def on_term(*_):
    with open(stops, "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print(name, "up", flush=True)
if ready != "-":
    pathlib.Path(ready).touch()
time.sleep(600)
"""


def _child(tmp_path: Path, name: str, *, ready: bool = True, timeout: float = 30.0, code: str = _CHILD) -> Component:
    flag = tmp_path / f"{name}.ready"
    argv = [sys.executable, "-c", code, name, str(flag) if ready else "-", str(tmp_path / "stops")]
    return Component(name, argv, tmp_path / "logs" / f"{name}.log", flag.exists, timeout, cwd=tmp_path)


def test_supervisor_starts_in_order_stops_in_reverse_and_reports_failures(tmp_path: Path) -> None:
    changes: list[dict[str, int]] = []
    sup = Supervisor(["first", "second", "never"], on_change=lambda: changes.append(sup.pids))
    try:
        sup.start(_child(tmp_path, "first"))
        sup.start(_child(tmp_path, "second"))
        pids = sup.pids
        assert set(pids) == {"first", "second"} and all(pid_alive(p) for p in pids.values())
        assert changes[-1] == pids and set(sup.startup_seconds) == {"first", "second"}
        assert "first up" in (tmp_path / "logs" / "first.log").read_text()
        with pytest.raises(ControlPlaneError, match="first already running"):
            sup.start(_child(tmp_path, "first"))

        sup.stop_all()
        assert (tmp_path / "stops").read_text().split() == ["second", "first"]
        assert not any(pid_alive(p) for p in pids.values()) and sup.pids == {} and changes[-1] == {}

        with pytest.raises(ControlPlaneError, match=r"never exited with code 3 during startup(.|\n)*boom"):
            sup.start(_child(tmp_path, "never", code="import sys; print('boom', flush=True); sys.exit(3)"))
        with pytest.raises(ControlPlaneError, match=r"never not ready after 1s(.|\n)*never up"):
            sup.start(_child(tmp_path, "never", ready=False, timeout=1.0))
        assert not sup.any_alive() and sup.pids == {}  # the one that was never ready was stopped
    finally:
        sup.stop_all()
