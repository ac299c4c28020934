"""Certificates and kubeconfigs: the control plane's PKI, the admin kubeconfig, kubeconfigs for users (client
certificates from the control plane's CA) and for ServiceAccounts (tokens from the TokenRequest API).

Every file lives under the state directory (`Layout`): pki/, kubeconfig, kubeconfigs/.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .kubeconfig import render_kubeconfig, write_kubeconfig
from .layout import HOST, Endpoints, Layout
from .pki import CertificateAuthority, write_service_account_keys

__all__ = [
    "ADMIN_GROUPS",
    "ADMIN_USER",
    "APISERVER_DNS_NAMES",
    "CONTROLLER_MANAGER_USER",
    "Credentials",
    "file_safe",
    "request_service_account_token",
]

ADMIN_USER = "goodmem-admin"
ADMIN_GROUPS = ("system:masters",)
#: the names the API server's serving certificate is valid for (with the IPs 127.0.0.1 and 10.0.0.1)
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = (HOST, "10.0.0.1")
#: the user kube-controller-manager logs in as; the API server's bootstrap RBAC binds its ClusterRole to it
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"


def file_safe(name: str) -> str:
    """`name` with every character but letters, digits and -_. replaced by _ (for a file name)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class Credentials:
    """The PKI of one control plane and the kubeconfigs made from it."""

    def __init__(self, layout: Layout, endpoints: Endpoints) -> None:
        self.layout = layout
        self.endpoints = endpoints

    def write_pki(self) -> None:
        """A new CA (EC P-256), the API server's serving certificate, the admin client certificate and the
        ServiceAccount signing keys (RSA 2048), under pki/ (private keys readable by the owner only)."""
        lay = self.layout
        lay.pki.mkdir(mode=0o700, exist_ok=True)
        ca = CertificateAuthority()
        lay.ca_cert.write_bytes(ca.cert_pem)
        lay.ca_key.touch(mode=0o600)
        lay.ca_key.write_bytes(ca.key_pem)
        ca.issue_serving(dns=list(APISERVER_DNS_NAMES), ips=list(APISERVER_IPS)).write(
            lay.apiserver_cert, lay.apiserver_key
        )
        ca.issue_client(ADMIN_USER, ADMIN_GROUPS).write(lay.admin_cert, lay.admin_key)
        write_service_account_keys(lay.sa_key, lay.sa_pub)

    def write_controller_manager_credentials(self) -> Path:
        """kube-controller-manager's serving certificate (127.0.0.1, localhost) and its kubeconfig (a client
        certificate for system:kube-controller-manager); returns the kubeconfig's path."""
        lay = self.layout
        self.load_ca().issue_serving(dns=["localhost"], ips=[HOST]).write(
            lay.controller_manager_cert, lay.controller_manager_key
        )
        return self.kubeconfig_for_user(CONTROLLER_MANAGER_USER, (), lay.controller_manager_kubeconfig)

    def ca_tls(self) -> ssl.SSLContext:
        """TLS that trusts the control plane's CA, with no client certificate (an anonymous client)."""
        return ssl.create_default_context(cafile=str(self.layout.ca_cert))

    def load_ca(self) -> CertificateAuthority:
        return CertificateAuthority(cert_pem=self.layout.ca_cert.read_bytes(), key_pem=self.layout.ca_key.read_bytes())

    def admin_tls(self) -> ssl.SSLContext:
        """TLS to the API server as the admin: trusts the control plane's CA, presents the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.layout.ca_cert))
        ctx.load_cert_chain(str(self.layout.admin_cert), str(self.layout.admin_key))
        return ctx

    def write_admin_kubeconfig(self) -> Path:
        """The admin kubeconfig (user goodmem-admin, group system:masters; its client certificate inlined)."""
        return write_kubeconfig(
            self.layout.kubeconfig,
            render_kubeconfig(
                server=self.endpoints.server_url,
                ca_pem=self.layout.ca_cert.read_bytes(),
                user=ADMIN_USER,
                client_cert_pem=self.layout.admin_cert.read_bytes(),
                client_key_pem=self.layout.admin_key.read_bytes(),
            ),
        )

    def kubeconfig_for_user(
        self, user: str, groups: Sequence[str] = (), path: str | os.PathLike[str] | None = None
    ) -> Path:
        """A kubeconfig authenticating with a client certificate (CN=user, O=groups) from the control plane's CA.

        Default path: <state_dir>/kubeconfigs/user-<user>.kubeconfig.
        """
        pair = self.load_ca().issue_client(user, tuple(groups))
        target = Path(path) if path is not None else self.layout.kubeconfigs / f"user-{file_safe(user)}.kubeconfig"
        return write_kubeconfig(
            target,
            render_kubeconfig(
                server=self.endpoints.server_url,
                ca_pem=self.layout.ca_cert.read_bytes(),
                user=user,
                client_cert_pem=pair.cert_pem,
                client_key_pem=pair.key_pem,
            ),
        )

    def kubeconfig_for_token(
        self, namespace: str, name: str, token: str, path: str | os.PathLike[str] | None = None
    ) -> Path:
        """A kubeconfig authenticating as system:serviceaccount:<namespace>:<name> with `token`.

        Default path: <state_dir>/kubeconfigs/sa-<namespace>-<name>.kubeconfig.
        """
        target = (
            Path(path)
            if path is not None
            else self.layout.kubeconfigs / f"sa-{file_safe(namespace)}-{file_safe(name)}.kubeconfig"
        )
        return write_kubeconfig(
            target,
            render_kubeconfig(
                server=self.endpoints.server_url,
                ca_pem=self.layout.ca_cert.read_bytes(),
                user=f"system:serviceaccount:{namespace}:{name}",
                token=token,
                namespace=namespace,
            ),
        )

    def kubeconfig_for_service_account(
        self,
        api: Any,
        namespace: str,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        expiration_seconds: int = 86400,
    ) -> Path:
        """kubeconfig_for_token() with a token from the TokenRequest API, asked through `api` (an admin
        kubernetes.client.ApiClient); creates the namespace and the ServiceAccount if missing."""
        token = request_service_account_token(
            api, namespace, name, audience=self.endpoints.server_url, expiration_seconds=expiration_seconds
        )
        return self.kubeconfig_for_token(namespace, name, token, path)


def request_service_account_token(
    api: Any, namespace: str, name: str, *, audience: str, expiration_seconds: int
) -> str:
    """Create the namespace and the ServiceAccount if missing; return a token from the TokenRequest API."""
    import kubernetes.client
    from kubernetes.client.rest import ApiException

    core = kubernetes.client.CoreV1Api(api)
    meta = kubernetes.client.V1ObjectMeta
    for create in (
        lambda: core.create_namespace(kubernetes.client.V1Namespace(metadata=meta(name=namespace))),
        lambda: core.create_namespaced_service_account(
            namespace, kubernetes.client.V1ServiceAccount(metadata=meta(name=name))
        ),
    ):
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=expiration_seconds)
    )
    token: str = core.create_namespaced_service_account_token(name, namespace, request).status.token
    return token
