"""Pure parts of goodmem_devcluster: no processes, no network beyond binding loopback ports."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from goodmem_devcluster import ETCD_VERSION, KUBERNETES_VERSION, components, gobuild
from goodmem_devcluster._proc import free_ports
from goodmem_devcluster._supervisor import ExitHook, Supervisor, http_probe, prepare_state_dir
from goodmem_devcluster.audit import count_writes_by_user
from goodmem_devcluster.clients import Clients
from goodmem_devcluster.controlplane import ControlPlane, ControlPlaneError
from goodmem_devcluster.credentials import ADMIN_USER, Credentials, file_safe
from goodmem_devcluster.kubeconfig import render_kubeconfig
from goodmem_devcluster.layout import Endpoints, Layout
from goodmem_devcluster.pki import CertificateAuthority

pytestmark = pytest.mark.unit


def test_parse_gomod_version_forms() -> None:
    text = """module x

go 1.24.0

require go.etcd.io/etcd/server/v3 v3.6.16

require (
\tk8s.io/client-go v0.34.4
\tk8s.io/kubernetes v1.34.4 // indirect
\tk8s.io/kubectl v0.0.0
)

replace (
\tk8s.io/kubectl => k8s.io/kubectl v0.34.4
)
"""
    assert gobuild.parse_gomod_version(text, "go.etcd.io/etcd/server/v3") == "v3.6.16"
    assert gobuild.parse_gomod_version(text, "k8s.io/kubernetes") == "v1.34.4"
    assert gobuild.parse_gomod_version(text, "k8s.io/kubectl") == "v0.0.0"  # the replace line is not a requirement
    with pytest.raises(ValueError):
        gobuild.parse_gomod_version(text, "k8s.io/api")
    with pytest.raises(ValueError):
        gobuild.parse_gomod_version("require k8s.io/kubernetes-extra v1.0.0\n", "k8s.io/kubernetes")


def test_versions_come_from_the_repo_gomods() -> None:
    hack = gobuild.hack_dir()
    assert hack == Path(__file__).resolve().parents[2] / "hack" / "go"
    assert f"go.etcd.io/etcd/server/v3 {ETCD_VERSION}" in (hack / "etcd" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {KUBERNETES_VERSION}" in (hack / "kube" / "go.mod").read_text()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", ETCD_VERSION) and re.fullmatch(r"v1\.\d+\.\d+", KUBERNETES_VERSION)


def test_kube_ldflags() -> None:
    assert gobuild.kube_ldflags("v1.34.4") == (
        "-s -w -X k8s.io/component-base/version.gitVersion=v1.34.4"
        " -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
        " -X k8s.io/client-go/pkg/version.gitVersion=v1.34.4"
    )


def test_cache_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GOODMEM_DEVCLUSTER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    b = gobuild.binaries()
    assert b.etcd == tmp_path / "xdg" / "goodmem-operator" / "bin" / f"etcd-{ETCD_VERSION}" / "etcd"
    assert (
        b.kube_apiserver
        == tmp_path / "xdg" / "goodmem-operator" / "bin" / f"kubernetes-{KUBERNETES_VERSION}" / "kube-apiserver"
    )
    assert b.kubectl.parent == b.kube_apiserver.parent
    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path / "c"))
    assert gobuild.binaries().etcd.is_relative_to(tmp_path / "c" / "bin")
    monkeypatch.delenv("GOODMEM_DEVCLUSTER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert gobuild.cache_dir() == Path.home() / ".cache" / "goodmem-operator"


def test_go_unavailable_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gobuild, "_is_executable", lambda p: False)
    with pytest.raises(gobuild.GoUnavailable, match="Go toolchain not found"):
        gobuild.find_go()
    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(gobuild.GoUnavailable):
        gobuild.build(quiet=True)


def test_free_ports_are_distinct_and_bindable() -> None:
    import socket

    ports = free_ports(5)
    assert len(set(ports)) == 5
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_render_kubeconfig_with_client_cert_and_token() -> None:
    ca = CertificateAuthority()
    pair = ca.issue_client("goodmem-admin", ["system:masters"])
    cfg = yaml.safe_load(
        render_kubeconfig(
            server="https://127.0.0.1:6443",
            ca_pem=ca.cert_pem,
            user="goodmem-admin",
            client_cert_pem=pair.cert_pem,
            client_key_pem=pair.key_pem,
        )
    )
    assert cfg["current-context"] == "goodmem-admin"
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]) == ca.cert_pem
    cert = x509.load_pem_x509_certificate(base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "goodmem-admin"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    assert cert.issuer == ca.cert.subject

    tok = yaml.safe_load(
        render_kubeconfig(
            server="https://x",
            ca_pem=ca.cert_pem,
            user="system:serviceaccount:ns:sa",
            token="abc",
            namespace="ns",
        )
    )
    assert tok["users"][0]["user"] == {"token": "abc"}
    assert tok["contexts"][0]["context"]["namespace"] == "ns"
    with pytest.raises(ValueError):
        render_kubeconfig(server="https://x", ca_pem=ca.cert_pem, user="u")
    with pytest.raises(ValueError):
        render_kubeconfig(
            server="https://x",
            ca_pem=ca.cert_pem,
            user="u",
            token="t",
            client_cert_pem=pair.cert_pem,
            client_key_pem=pair.key_pem,
        )


def test_count_writes_by_user() -> None:
    def ev(user: str, verb: str, stage: str = "ResponseComplete", resource: str = "llms") -> dict:
        return {"stage": stage, "verb": verb, "user": {"username": user}, "objectRef": {"resource": resource}}

    events = [
        ev("op", "create"),
        ev("op", "create", resource="selfsubjectaccessreviews"),  # a question, not a write
        ev("op", "patch"),
        ev("op", "get"),
        ev("op", "create", "ResponseStarted"),
        ev("admin", "delete"),
    ]
    assert count_writes_by_user(events) == {"op": 2, "admin": 1}


def test_build_with_a_fake_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Temp file + rename, flags passed, heartbeat, and a second build() builds nothing."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    calls = tmp_path / "calls.txt"
    (fake / "go").write_text(
        "#!/bin/sh\n"
        f'echo "$CGO_ENABLED $PWD $*" >> {calls}\n'
        "sleep 0.3\n"
        'while [ "$1" != "-o" ]; do shift; done; echo binary > "$2"\n'
    )
    (fake / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gobuild, "HEARTBEAT_SECONDS", 0.1)

    b = gobuild.build()
    assert b.all_present()
    lines = calls.read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("0 ") for line in lines)
    assert "/hack/go/etcd build -trimpath -ldflags -s -w -o " + str(b.etcd.parent) + "/.etcd." in lines[0]
    assert lines[0].endswith(" .")
    assert (
        "/hack/go/kube " in lines[1]
        and gobuild.kube_ldflags() in lines[1]
        and lines[1].endswith("./cmd/kube-apiserver")
    )
    assert lines[2].endswith("./cmd/kubectl")
    assert sorted(p.name for p in b.etcd.parent.iterdir()) == ["etcd"]  # the temp file was renamed away
    err = capsys.readouterr().err
    assert "[1/3] building etcd" in err and "still building" in err and "all builds done" in err

    gobuild.build()
    assert len(calls.read_text().splitlines()) == 3
    assert capsys.readouterr().err == ""


def test_kube_controller_manager_is_built_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Optional, from the kube module with the same version stamp as kube-apiserver, cached like the others."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    calls = tmp_path / "calls.txt"
    (fake / "go").write_text(
        f'#!/bin/sh\necho "$PWD $*" >> {calls}\nwhile [ "$1" != "-o" ]; do shift; done; echo binary > "$2"\n'
    )
    (fake / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path / "cache"))

    b = gobuild.build(quiet=True)
    assert b.all_present() and not b.all_present(controller_manager=True)
    assert not b.kube_controller_manager.exists() and len(calls.read_text().splitlines()) == 3
    assert b.kube_controller_manager.parent == b.kube_apiserver.parent

    gobuild.build(controller_manager=True)
    lines = calls.read_text().splitlines()
    assert len(lines) == 4, "only the missing binary is built"
    assert "/hack/go/kube " in lines[3] and gobuild.kube_ldflags() in lines[3]
    assert lines[3].endswith("./cmd/kube-controller-manager")
    assert b.all_present(controller_manager=True)
    assert "[1/1] building kube-controller-manager" in capsys.readouterr().err
    gobuild.build(controller_manager=True)
    assert len(calls.read_text().splitlines()) == 4
    assert b.required(controller_manager=True) == (b.etcd, b.kube_apiserver, b.kubectl, b.kube_controller_manager)
    assert (gobuild.hack_dir() / "kube" / "cmd" / "kube-controller-manager" / "main.go").is_file()


def test_kubelet_and_kube_scheduler_are_built_only_for_a_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Optional (hack/kubelet_experiment.py), from the kube module with kube-apiserver's version stamp, cached."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    calls = tmp_path / "calls.txt"
    (fake / "go").write_text(
        f'#!/bin/sh\necho "$PWD $*" >> {calls}\nwhile [ "$1" != "-o" ]; do shift; done; echo binary > "$2"\n'
    )
    (fake / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path / "cache"))

    b = gobuild.build(quiet=True)
    assert not b.kubelet.exists() and not b.kube_scheduler.exists() and not b.all_present(node=True)
    gobuild.build(quiet=True, node=True)
    lines = calls.read_text().splitlines()[3:]
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["./cmd/kubelet", "./cmd/kube-scheduler"]
    assert all("/hack/go/kube " in line and gobuild.kube_ldflags() in line for line in lines)
    assert b.all_present(node=True) and not b.kube_controller_manager.exists()
    assert b.required(node=True) == (b.etcd, b.kube_apiserver, b.kubectl, b.kubelet, b.kube_scheduler)
    assert b.kubelet.parent == b.kube_scheduler.parent == b.kube_apiserver.parent
    gobuild.build(quiet=True, node=True)
    assert len(calls.read_text().splitlines()) == 5, "nothing is built twice"
    for name in ("kubelet", "kube-scheduler"):
        assert (gobuild.hack_dir() / "kube" / "cmd" / name / "main.go").is_file()


def test_require_control_plane_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from goodmem_devcluster import testing

    monkeypatch.setattr(testing, "unavailable_reason", lambda **_: "Go toolchain not found")
    monkeypatch.delenv("GOODMEM_REQUIRE_E2E", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"E2E SKIPPED.*Go toolchain not found"):
        testing.require_control_plane()
    monkeypatch.setenv("CI", "true")  # what CI services set: a skip there would pass unseen
    with pytest.raises(pytest.fail.Exception, match=r"E2E REQUIRED.*Go toolchain not found"):
        testing.require_control_plane()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("GOODMEM_REQUIRE_E2E", "1")
    with pytest.raises(pytest.fail.Exception, match=r"E2E REQUIRED.*Go toolchain not found"):
        testing.require_control_plane()
    monkeypatch.setattr(testing, "unavailable_reason", lambda **_: None)
    testing.require_control_plane()
    testing.require_control_plane(controller_manager=True)


def test_a_missing_controller_manager_needs_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from goodmem_devcluster import testing

    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path))
    for path in gobuild.binaries().required():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("binary")
        path.chmod(0o755)

    def no_go() -> str:
        raise gobuild.GoUnavailable("no Go here")

    monkeypatch.setattr(testing, "find_go", no_go)
    assert testing.unavailable_reason() is None
    assert testing.unavailable_reason(controller_manager=True) == "no Go here"


# ---------------------------------------------------------------- the parts of ControlPlane

NO_SUCH_PID = 4_194_305  # above Linux's largest pid_max


def _subject(cert: x509.Certificate) -> tuple[str, list[str]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn), [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def test_layout_names_every_file_under_the_state_dir(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    assert lay.kubeconfig == tmp_path / "kubeconfig" and lay.state_file == tmp_path / "state.json"
    assert (lay.ca_cert, lay.admin_key, lay.sa_pub) == (
        tmp_path / "pki/ca.crt",
        tmp_path / "pki/admin.key",
        tmp_path / "pki/sa.pub",
    )
    assert (
        lay.log("kube-apiserver") == tmp_path / "logs/kube-apiserver.log"
        and lay.audit_log == tmp_path / "logs/audit.log"
    )
    assert (lay.etcd_data, lay.kubeconfigs, lay.kubectl_cache) == (
        tmp_path / "etcd-data",
        tmp_path / "kubeconfigs",
        tmp_path / "kubectl-cache",
    )


def test_endpoints_urls_and_ports_round_trip() -> None:
    ep = Endpoints(2379, 2380, 6443)
    assert (ep.etcd_url, ep.etcd_peer_url, ep.server_url) == (
        "http://127.0.0.1:2379",
        "http://127.0.0.1:2380",
        "https://127.0.0.1:6443",
    )
    assert ep.ports() == {"etcd-client": 2379, "etcd-peer": 2380, "kube-apiserver": 6443}
    assert Endpoints.from_ports(ep.ports()) == ep
    with_kcm = Endpoints(2379, 2380, 6443, controller_manager_port=10257)
    assert with_kcm.ports()["kube-controller-manager"] == 10257
    assert Endpoints.from_ports(with_kcm.ports()) == with_kcm


def test_component_command_lines(tmp_path: Path) -> None:
    lay, ep = Layout(tmp_path), Endpoints(2379, 2380, 6443)
    etcd = components.etcd(Path("/bin/etcd"), lay, ep, timeout=7.0)
    assert etcd.name == "etcd" and etcd.argv[0] == "/bin/etcd" and etcd.log_path == lay.log("etcd")
    assert etcd.cwd == tmp_path and etcd.timeout == 7.0
    assert f"--data-dir={lay.etcd_data}" in etcd.argv and "--listen-client-urls=http://127.0.0.1:2379" in etcd.argv
    assert "--initial-cluster=goodmem-devcluster=http://127.0.0.1:2380" in etcd.argv

    args = components.apiserver_args(lay, ep, audit=True, extra=["--v=4"])
    assert "--etcd-servers=http://127.0.0.1:2379" in args and "--secure-port=6443" in args
    assert "--service-account-issuer=https://127.0.0.1:6443" in args and f"--client-ca-file={lay.ca_cert}" in args
    assert f"--audit-log-path={lay.audit_log}" in args and args[-1] == "--v=4"  # extra args come last
    quiet = components.apiserver_args(lay, ep, audit=False)
    assert not [a for a in quiet if a.startswith("--audit")]
    assert components.ORDER == ("etcd", "kube-apiserver", "kube-controller-manager")
    assert components.order() == ("etcd", "kube-apiserver")
    assert components.order(controller_manager=True) == components.ORDER


def test_controller_manager_command_line_and_readiness(tmp_path: Path) -> None:
    lay, ep = Layout(tmp_path), Endpoints(2379, 2380, 6443, controller_manager_port=10257)
    args = components.controller_manager_args(lay, ep, extra=["--v=2"])
    assert f"--kubeconfig={lay.controller_manager_kubeconfig}" in args and "--secure-port=10257" in args
    assert "--controllers=namespace-controller,garbage-collector-controller,serviceaccount-token-controller" in args
    assert f"--service-account-private-key-file={lay.sa_key}" in args  # the key the API server signs tokens with
    assert "--use-service-account-credentials=true" in args and "--leader-elect=false" in args
    assert args[-1] == "--v=2"
    kcm = components.controller_manager(Path("/bin/kcm"), lay, ep, ca_tls=None, timeout=9.0)
    assert kcm.name == "kube-controller-manager" and kcm.argv[0] == "/bin/kcm" and kcm.timeout == 9.0
    assert kcm.log_path == lay.log("kube-controller-manager")
    started = b"[+]ping ok\n[+]serviceaccount-token-controller ok\n[+]namespace-controller ok\n"
    assert not components._controllers_started(200, started), "the garbage collector has not started yet"
    assert components._controllers_started(200, started + b"[+]garbage-collector-controller ok\nhealthz check passed")
    assert not components._controllers_started(500, started + b"[+]garbage-collector-controller ok\n")


def test_credentials_write_a_pki_and_kubeconfigs(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    creds = Credentials(lay, Endpoints(1, 2, 6443))
    creds.write_pki()
    ca = x509.load_pem_x509_certificate(lay.ca_cert.read_bytes())
    assert _subject(x509.load_pem_x509_certificate(lay.admin_cert.read_bytes())) == (ADMIN_USER, ["system:masters"])
    serving = x509.load_pem_x509_certificate(lay.apiserver_cert.read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.1"]
    for key in (lay.ca_key, lay.admin_key, lay.apiserver_key, lay.sa_key):
        assert key.stat().st_mode & 0o077 == 0, key

    admin = yaml.safe_load(creds.write_admin_kubeconfig().read_text())
    assert admin["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"

    path = creds.kubeconfig_for_user("alice/ops", ["team-a"])
    assert path == lay.kubeconfigs / "user-alice_ops.kubeconfig" and path.stat().st_mode & 0o077 == 0
    user = yaml.safe_load(path.read_text())["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert _subject(cert) == ("alice/ops", ["team-a"]) and cert.issuer == ca.subject

    kcm = yaml.safe_load(creds.write_controller_manager_credentials().read_text())
    kcm_cert = x509.load_pem_x509_certificate(base64.b64decode(kcm["users"][0]["user"]["client-certificate-data"]))
    assert _subject(kcm_cert) == ("system:kube-controller-manager", [])
    kcm_serving = x509.load_pem_x509_certificate(lay.controller_manager_cert.read_bytes())
    kcm_sans = kcm_serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in kcm_sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert lay.controller_manager_key.stat().st_mode & 0o077 == 0

    sa = yaml.safe_load(creds.kubeconfig_for_token("ns", "robot", "tok").read_text())
    assert sa["users"][0] == {"name": "system:serviceaccount:ns:robot", "user": {"token": "tok"}}
    assert (lay.kubeconfigs / "sa-ns-robot.kubeconfig").exists()
    assert file_safe("a b:c.d-e_f") == "a_b_c.d-e_f"


def test_clients_kubectl_command_env_and_audit_log(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    clients = Clients(lay, Endpoints(1, 2, 3), Path("/opt/kubectl"))
    assert clients.kubectl_command("get", "ns") == [
        "/opt/kubectl",
        f"--kubeconfig={lay.kubeconfig}",
        f"--cache-dir={lay.kubectl_cache}",
        "get",
        "ns",
    ]
    assert clients.kubectl_command("get", kubeconfig="/x")[1] == "--kubeconfig=/x"
    env = clients.kubectl_env("/x")
    assert env["KUBECONFIG"] == "/x" and env["KUBERC"] == "off"
    assert list(clients.audit_events()) == []  # no audit log yet
    lay.audit_log.parent.mkdir()
    lay.audit_log.write_text(
        '{"stage": "ResponseComplete", "verb": "create", "user": {"username": "op"}}\n{"stage": "ResponseCo'
    )
    assert clients.writes_by_user() == {"op": 1}  # the torn last line is skipped


def test_supervisor_knows_only_its_components_and_records_pids() -> None:
    sup = Supervisor(["a", "b"])
    with pytest.raises(ValueError, match="unknown component 'c'"):
        sup.stop("c")
    assert not sup.any_alive() and sup.pids == {} and sup.records() == {"a": None, "b": None}
    sup.adopt({"a": None, "b": {"pid": NO_SUCH_PID, "start_time": 1}})
    assert sup.pids == {"b": NO_SUCH_PID} and sup.pid("a") is None
    assert sup.records()["b"] == {"pid": NO_SUCH_PID, "start_time": 1}
    assert not sup.alive("b")


def test_http_probe_is_false_when_nothing_answers() -> None:
    port = free_ports(1)[0]
    assert http_probe(f"http://127.0.0.1:{port}/health", timeout=1.0)() is False


def test_exit_hook_arms_once_and_disarms(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[object] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("atexit.unregister", registered.remove)
    calls: list[int] = []
    hook = ExitHook(lambda: calls.append(1), "testing")
    hook.arm()
    hook.arm()
    assert len(registered) == 1
    registered[0]()  # what the interpreter does at exit
    assert calls == [1]
    hook.disarm()
    hook.disarm()
    assert registered == []


def test_prepare_state_dir_refuses_foreign_dirs_and_clears_stale_state(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("x")
    with pytest.raises(ControlPlaneError, match=r"holds no state\.json; refusing"):
        prepare_state_dir(foreign, components.ORDER)
    assert (foreign / "precious.txt").exists()

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "state.json").write_text(
        json.dumps({"processes": {"etcd": {"pid": NO_SUCH_PID, "start_time": 1}, "kube-apiserver": None}})
    )
    (stale / "leftover").write_text("x")
    assert prepare_state_dir(stale, components.ORDER) == stale and list(stale.iterdir()) == []

    temp = prepare_state_dir(None, components.ORDER)
    try:
        assert temp.is_dir() and temp.name.startswith("goodmem-devcluster-")
    finally:
        temp.rmdir()


def test_control_plane_facade_before_start_and_state_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneError, match="not started"):
        ControlPlane().kubeconfig_path  # noqa: B018 - the property raises
    cp = ControlPlane(tmp_path / "cp", detached=True, audit=False, extra_apiserver_args=["--v=2"])
    assert cp.kubeconfig_path == tmp_path / "cp" / "kubeconfig" and cp.pids == {} and not cp.is_running()
    cp.endpoints = Endpoints(11, 12, 13)
    cp.supervisor.adopt({"etcd": {"pid": NO_SUCH_PID, "start_time": 5}})
    (tmp_path / "cp").mkdir()
    cp._save_state()

    again = ControlPlane.from_state_dir(tmp_path / "cp")
    assert again.state() == cp.state()
    assert (again.etcd_pid, again.apiserver_pid, again.ports["kube-apiserver"]) == (NO_SUCH_PID, None, 13)
    assert again.server_url == "https://127.0.0.1:13" and again.apiserver_args()[-1] == "--v=2"
    assert not again.audit and not again.is_running() and not again.is_alive("etcd")
    assert not again.apiserver_ready()  # no certificates: not ready, no exception
    again.stop()  # nothing alive to signal; removes the directory
    assert not (tmp_path / "cp").exists()
    with pytest.raises(ControlPlaneError, match="no control plane state"):
        ControlPlane.from_state_dir(tmp_path / "cp")


def test_control_plane_with_a_controller_manager_records_it(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path / "cp", detached=True, controller_manager=True, extra_controller_manager_args=["--v=3"])
    assert cp.supervisor.order == ("etcd", "kube-apiserver", "kube-controller-manager")
    cp.endpoints = Endpoints(11, 12, 13, controller_manager_port=14)
    cp.supervisor.adopt({"kube-controller-manager": {"pid": NO_SUCH_PID, "start_time": 5}})
    (tmp_path / "cp").mkdir()
    cp._save_state()
    again = ControlPlane.from_state_dir(tmp_path / "cp")
    assert again.state() == cp.state() and again.controller_manager
    assert again.controller_manager_pid == NO_SUCH_PID and again.ports["kube-controller-manager"] == 14
    assert again.controller_manager_args()[-1] == "--v=3"
    again.stop()

    plain = ControlPlane(tmp_path / "plain")
    assert plain.supervisor.order == ("etcd", "kube-apiserver") and plain.controller_manager_pid is None
    with pytest.raises(ControlPlaneError, match="runs no kube-controller-manager"):
        plain.start_controller_manager()


def test_cli_build_builds_the_controller_manager_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from goodmem_devcluster import __main__ as cli

    monkeypatch.setenv("GOODMEM_DEVCLUSTER_CACHE", str(tmp_path))
    asked: list[bool] = []
    nodes: list[bool] = []

    def fake_build(*, quiet: bool = False, controller_manager: bool = False, node: bool = False) -> gobuild.Binaries:
        asked.append(controller_manager)
        nodes.append(node)
        return gobuild.binaries()

    monkeypatch.setattr(gobuild, "build", fake_build)
    assert cli.main(["build"]) == 0 and cli.main(["build", "--controller-manager"]) == 0
    assert asked == [False, True]
    out = capsys.readouterr().out
    assert "kube_controller_manager: " in out
    assert "kubelet: " in out and "(not built; optional: build --node)" in out
    assert cli.main(["build", "--node"]) == 0 and nodes == [False, False, True]
