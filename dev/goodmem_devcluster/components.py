"""The processes of the control plane, as `Component`s for the supervisor: etcd, kube-apiserver and, when a
control plane asks for it, kube-controller-manager.

Each function gives the command line, log, readiness probe and startup timeout of one process, from the state
directory's `Layout` and the `Endpoints`. To run another process, add a function here, its name to `ORDER` (and to
`order()` when it is optional), and a `start_...`/`stop_...` pair to `ControlPlane`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from pathlib import Path

from ._supervisor import Component, http_probe
from .layout import HOST, Endpoints, Layout

__all__ = [
    "CONTROLLERS",
    "ETCD",
    "KUBE_APISERVER",
    "KUBE_CONTROLLER_MANAGER",
    "ORDER",
    "SERVICE_CLUSTER_IP_RANGE",
    "apiserver",
    "apiserver_args",
    "controller_manager",
    "controller_manager_args",
    "etcd",
    "etcd_args",
    "order",
]

ETCD = "etcd"
KUBE_APISERVER = "kube-apiserver"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"
#: every process a control plane may run, in start order (each needs the ones before it); stopped in reverse
ORDER = (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER)
#: what kube-controller-manager runs: namespace deletion, garbage collection (ownerReferences cascade), and the
#: legacy token controller that --service-account-private-key-file is for. Nothing that needs nodes, a cloud,
#: or a scheduler (no Deployments, Jobs, node lifecycle, IPAM, volumes, CSR signing).
CONTROLLERS = ("namespace-controller", "garbage-collector-controller", "serviceaccount-token-controller")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ETCD_MEMBER = "goodmem-devcluster"


def order(*, controller_manager: bool = False) -> tuple[str, ...]:
    """The processes of one control plane, in start order: kube-controller-manager only when it is asked for."""
    return ORDER if controller_manager else tuple(n for n in ORDER if n != KUBE_CONTROLLER_MANAGER)


def etcd_args(layout: Layout, endpoints: Endpoints) -> list[str]:
    """The etcd command line (without the binary): one member, client and peer on loopback, no fsync."""
    peer = endpoints.etcd_peer_url
    return [
        f"--name={ETCD_MEMBER}",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={endpoints.etcd_url}",
        f"--advertise-client-urls={endpoints.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={ETCD_MEMBER}={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _etcd_healthy(status: int, body: bytes) -> bool:
    answer: object = json.loads(body)
    return status == 200 and isinstance(answer, dict) and answer.get("health") == "true"


def etcd(binary: Path, layout: Layout, endpoints: Endpoints, *, timeout: float) -> Component:
    """etcd, ready when GET /health answers {"health":"true"}."""
    return Component(
        ETCD,
        [str(binary), *etcd_args(layout, endpoints)],
        layout.log(ETCD),
        http_probe(f"{endpoints.etcd_url}/health", accept=_etcd_healthy, timeout=2.0),
        timeout,
        cwd=layout.root,
    )


def apiserver_args(layout: Layout, endpoints: Endpoints, *, audit: bool, extra: Sequence[str] = ()) -> list[str]:
    """The kube-apiserver command line (without the binary); `extra` comes last, so it can override."""
    args = [
        f"--etcd-servers={endpoints.etcd_url}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={endpoints.apiserver_port}",
        f"--tls-cert-file={layout.apiserver_cert}",
        f"--tls-private-key-file={layout.apiserver_key}",
        f"--client-ca-file={layout.ca_cert}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={endpoints.server_url}",
        f"--service-account-key-file={layout.sa_pub}",
        f"--service-account-signing-key-file={layout.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        # The `kubernetes` Service still exists; its Endpoints are not maintained
        # (they would point at 127.0.0.1, which Endpoints validation rejects).
        "--endpoint-reconciler-type=none",
        "--anonymous-auth=true",
        "--profiling=false",
    ]
    if audit:
        args += [
            f"--audit-policy-file={layout.audit_policy}",
            f"--audit-log-path={layout.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=0",
        ]
    return args + list(extra)


def apiserver(
    binary: Path,
    layout: Layout,
    endpoints: Endpoints,
    *,
    admin_tls: ssl.SSLContext,
    audit: bool,
    extra: Sequence[str] = (),
    timeout: float,
) -> Component:
    """kube-apiserver, ready when GET /readyz answers 200 to the admin certificate (`admin_tls`)."""
    return Component(
        KUBE_APISERVER,
        [str(binary), *apiserver_args(layout, endpoints, audit=audit, extra=extra)],
        layout.log(KUBE_APISERVER),
        http_probe(f"{endpoints.server_url}/readyz", context=admin_tls, timeout=5.0),
        timeout,
        cwd=layout.root,
    )


def controller_manager_args(layout: Layout, endpoints: Endpoints, *, extra: Sequence[str] = ()) -> list[str]:
    """The kube-controller-manager command line (without the binary); `extra` comes last, so it can override.

    It logs in as system:kube-controller-manager (a client certificate; the API server's bootstrap RBAC binds that
    user), and each controller runs as its own ServiceAccount in kube-system with a TokenRequest token
    (--use-service-account-credentials, as kubeadm runs it): the namespace controller may delete every namespaced
    kind, custom resources included, through its bootstrap ClusterRole. One instance, so no leader election.
    """
    return [
        f"--kubeconfig={layout.controller_manager_kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={endpoints.controller_manager_port}",
        f"--tls-cert-file={layout.controller_manager_cert}",
        f"--tls-private-key-file={layout.controller_manager_key}",
        f"--controllers={','.join(CONTROLLERS)}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={layout.sa_key}",
        f"--root-ca-file={layout.ca_cert}",
        "--leader-elect=false",
        "--profiling=false",
        *extra,
    ]


def _controllers_started(status: int, body: bytes) -> bool:
    """/healthz?verbose lists a `[+]<name> ok` line for each controller once it has started."""
    return status == 200 and all(f"[+]{name} ok".encode() in body for name in CONTROLLERS)


def controller_manager(
    binary: Path,
    layout: Layout,
    endpoints: Endpoints,
    *,
    ca_tls: ssl.SSLContext,
    extra: Sequence[str] = (),
    timeout: float,
) -> Component:
    """kube-controller-manager, ready when GET /healthz?verbose (open to anyone: its default always-allowed path)
    answers 200 and lists every controller of `CONTROLLERS` as started. `ca_tls` trusts the control plane's CA."""
    return Component(
        KUBE_CONTROLLER_MANAGER,
        [str(binary), *controller_manager_args(layout, endpoints, extra=extra)],
        layout.log(KUBE_CONTROLLER_MANAGER),
        http_probe(
            f"https://{HOST}:{endpoints.controller_manager_port}/healthz?verbose",
            context=ca_tls,
            accept=_controllers_started,
            timeout=5.0,
        ),
        timeout,
        cwd=layout.root,
    )
