"""Where a control plane lives: the files of its state directory, and its loopback ports and URLs.

Pure naming, no I/O: every other part (supervisor, credentials, clients) asks these two objects for paths and
URLs, so the layout of the state directory is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["HOST", "STATE_FILE", "Endpoints", "Layout"]

HOST = "127.0.0.1"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Layout:
    """The files under a control plane's state directory (see README.md, "What `ControlPlane` starts")."""

    root: Path

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.pki / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.pki / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.pki / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.pki / "admin.key"

    @property
    def sa_key(self) -> Path:
        """The ServiceAccount token signing key (private)."""
        return self.pki / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.pki / "sa.pub"

    @property
    def controller_manager_cert(self) -> Path:
        """kube-controller-manager's serving certificate (signed by the CA)."""
        return self.pki / "controller-manager.crt"

    @property
    def controller_manager_key(self) -> Path:
        return self.pki / "controller-manager.key"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        """kube-controller-manager's kubeconfig: user system:kube-controller-manager (a client certificate)."""
        return self.kubeconfigs / "kube-controller-manager.kubeconfig"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.yaml"

    def log(self, component: str) -> Path:
        """logs/<component>.log: a component's stdout and stderr."""
        return self.root / "logs" / f"{component}.log"

    @property
    def audit_log(self) -> Path:
        return self.root / "logs" / "audit.log"

    @property
    def kubeconfigs(self) -> Path:
        """Where kubeconfig_for_user / kubeconfig_for_service_account write by default."""
        return self.root / "kubeconfigs"

    @property
    def kubectl_cache(self) -> Path:
        """kubectl --cache-dir, so nothing is written to ~/.kube."""
        return self.root / "kubectl-cache"


@dataclass
class Endpoints:
    """The loopback ports of a control plane (None until start() picks them) and the URLs made from them."""

    etcd_port: int | None = None
    etcd_peer_port: int | None = None
    apiserver_port: int | None = None
    host: str = HOST
    controller_manager_port: int | None = None  # only when the control plane runs kube-controller-manager

    @property
    def server_url(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.host}:{self.etcd_port}"

    @property
    def etcd_peer_url(self) -> str:
        return f"http://{self.host}:{self.etcd_peer_port}"

    def ports(self) -> dict[str, int | None]:
        """What state.json records under "ports" (kube-controller-manager's only when it has one)."""
        ports = {"etcd-client": self.etcd_port, "etcd-peer": self.etcd_peer_port, "kube-apiserver": self.apiserver_port}
        if self.controller_manager_port is not None:
            ports["kube-controller-manager"] = self.controller_manager_port
        return ports

    @classmethod
    def from_ports(cls, ports: dict[str, int | None]) -> Endpoints:
        return cls(
            ports["etcd-client"],
            ports["etcd-peer"],
            ports["kube-apiserver"],
            controller_manager_port=ports.get("kube-controller-manager"),
        )
