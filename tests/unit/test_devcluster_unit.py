"""Pure parts of goodmem_devcluster: no processes, no network beyond binding loopback ports."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from goodmem_devcluster import ETCD_VERSION, KUBERNETES_VERSION, gobuild
from goodmem_devcluster._proc import free_ports
from goodmem_devcluster.audit import count_writes_by_user
from goodmem_devcluster.kubeconfig import render_kubeconfig
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
    assert b.kube_apiserver == tmp_path / "xdg" / "goodmem-operator" / "bin" / f"kubernetes-{KUBERNETES_VERSION}" / "kube-apiserver"
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
    cfg = yaml.safe_load(render_kubeconfig(
        server="https://127.0.0.1:6443", ca_pem=ca.cert_pem, user="goodmem-admin",
        client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem,
    ))
    assert cfg["current-context"] == "goodmem-admin"
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]) == ca.cert_pem
    cert = x509.load_pem_x509_certificate(base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "goodmem-admin"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    assert cert.issuer == ca.cert.subject

    tok = yaml.safe_load(render_kubeconfig(
        server="https://x", ca_pem=ca.cert_pem, user="system:serviceaccount:ns:sa", token="abc", namespace="ns",
    ))
    assert tok["users"][0]["user"] == {"token": "abc"}
    assert tok["contexts"][0]["context"]["namespace"] == "ns"
    with pytest.raises(ValueError):
        render_kubeconfig(server="https://x", ca_pem=ca.cert_pem, user="u")
    with pytest.raises(ValueError):
        render_kubeconfig(server="https://x", ca_pem=ca.cert_pem, user="u", token="t",
                          client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem)


def test_count_writes_by_user() -> None:
    def ev(user: str, verb: str, stage: str = "ResponseComplete") -> dict:
        return {"stage": stage, "verb": verb, "user": {"username": user}}

    events = [ev("op", "create"), ev("op", "patch"), ev("op", "get"), ev("op", "create", "ResponseStarted"), ev("admin", "delete")]
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
    assert "/hack/go/kube " in lines[1] and gobuild.kube_ldflags() in lines[1] and lines[1].endswith("./cmd/kube-apiserver")
    assert lines[2].endswith("./cmd/kubectl")
    assert sorted(p.name for p in b.etcd.parent.iterdir()) == ["etcd"]  # the temp file was renamed away
    err = capsys.readouterr().err
    assert "[1/3] building etcd" in err and "still building" in err and "all builds done" in err

    gobuild.build()
    assert len(calls.read_text().splitlines()) == 3
    assert capsys.readouterr().err == ""


def test_require_control_plane_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from goodmem_devcluster import testing

    monkeypatch.setattr(testing, "unavailable_reason", lambda: "Go toolchain not found")
    monkeypatch.delenv("GOODMEM_REQUIRE_E2E", raising=False)
    with pytest.raises(pytest.skip.Exception, match="E2E SKIPPED.*Go toolchain not found"):
        testing.require_control_plane()
    monkeypatch.setenv("GOODMEM_REQUIRE_E2E", "1")
    with pytest.raises(pytest.fail.Exception, match="E2E REQUIRED.*Go toolchain not found"):
        testing.require_control_plane()
    monkeypatch.setattr(testing, "unavailable_reason", lambda: None)
    testing.require_control_plane()
