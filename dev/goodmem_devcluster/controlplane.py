"""Run etcd + kube-apiserver as local processes (what controller-runtime's envtest runs), and, when asked
(`controller_manager=True`), kube-controller-manager with the namespace controller and the garbage collector.

No scheduler or kubelet; by default no controller manager: see README.md for what that implies. `ControlPlane` is a
facade over four parts, each usable alone:

- `_supervisor.Supervisor`: spawns the processes (`components.py` says which), waits for them, stops them by
  pid; the state directory and the stop at exit;
- `credentials.Credentials`: the PKI, the admin kubeconfig, kubeconfigs for users and ServiceAccounts;
- `clients.Clients`: the built kubectl, the Python client, the audit log;
- `layout.Layout` / `layout.Endpoints`: the files of the state directory, the ports and URLs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import audit as _audit
from . import components
from . import gobuild as _build
from ._proc import free_ports
from ._supervisor import Component, ExitHook, Supervisor, prepare_state_dir, read_state, remove_state_dir, write_state
from .clients import Clients
from .components import SERVICE_CLUSTER_IP_RANGE
from .credentials import ADMIN_GROUPS, ADMIN_USER, Credentials, request_service_account_token
from .errors import ControlPlaneError, KubectlError
from .layout import HOST, STATE_FILE, Endpoints, Layout

__all__ = [
    "ADMIN_GROUPS",
    "ADMIN_USER",
    "HOST",
    "SERVICE_CLUSTER_IP_RANGE",
    "STATE_FILE",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
]

Kubeconfig = str | os.PathLike[str] | None


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, with an admin kubeconfig; kube-controller-manager too with
    `controller_manager=True` (namespaces then finish deleting, ownerReferences cascade).

    Usage::

        with ControlPlane() as cp:
            cp.kubectl("get", "namespaces")
            sa_kubeconfig = cp.kubeconfig_for_service_account("ns", "operator")

    `state_dir` holds certificates, etcd data, logs, the audit log and the
    kubeconfig. Without one a temporary directory is used. `stop()` removes the
    state directory unless `keep_state=True`. `detached=True` starts the
    processes in their own session so they outlive this Python process (the CLI
    `up` does that); otherwise they are also stopped at interpreter exit.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        keep_state: bool = False,
        detached: bool = False,
        startup_timeout: float = 120.0,
        audit: bool = True,
        extra_apiserver_args: Sequence[str] = (),
        build: bool = True,
        stop_timeout: float = 15.0,
        controller_manager: bool = False,
        extra_controller_manager_args: Sequence[str] = (),
    ) -> None:
        self._state_dir_arg = Path(state_dir).expanduser().resolve() if state_dir is not None else None
        self.keep_state = keep_state
        self.detached = detached
        self.startup_timeout = startup_timeout
        self.audit = audit
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.controller_manager = controller_manager
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self._build = build
        self.binaries = _build.binaries()
        self.endpoints = Endpoints()
        self.supervisor = Supervisor(
            components.order(controller_manager=controller_manager),
            detached=detached,
            stop_timeout=stop_timeout,
            on_change=self._record,
        )
        self._exit_hook = ExitHook(self.stop, "stopping")
        self._layout: Layout | None = None
        if self._state_dir_arg is not None:
            self._layout = Layout(self._state_dir_arg)

    # ------------------------------------------------------------------ parts
    @property
    def layout(self) -> Layout:
        if self._layout is None:
            raise ControlPlaneError("control plane not started")
        return self._layout

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.layout, self.endpoints)

    @property
    def clients(self) -> Clients:
        return Clients(self.layout, self.endpoints, self.binaries.kubectl)

    # ---------------------------------------------------- where it lives
    @property
    def state_dir(self) -> Path | None:
        return self._layout.root if self._layout is not None else None

    @property
    def kubeconfig_path(self) -> Path:
        """Admin kubeconfig (user goodmem-admin, group system:masters)."""
        return self.layout.kubeconfig

    @property
    def ca_cert_path(self) -> Path:
        return self.layout.ca_cert

    @property
    def admin_cert_path(self) -> Path:
        return self.layout.admin_cert

    @property
    def admin_key_path(self) -> Path:
        return self.layout.admin_key

    @property
    def audit_log_path(self) -> Path:
        """JSON-lines audit log: every write request (create/update/patch/delete) at Metadata level."""
        return self.layout.audit_log

    @property
    def etcd_log_path(self) -> Path:
        return self.layout.log(components.ETCD)

    @property
    def apiserver_log_path(self) -> Path:
        return self.layout.log(components.KUBE_APISERVER)

    @property
    def controller_manager_log_path(self) -> Path:
        return self.layout.log(components.KUBE_CONTROLLER_MANAGER)

    @property
    def kubectl_path(self) -> Path:
        """The kubectl built from hack/go/kube (a kubectl on PATH is never used)."""
        return self.binaries.kubectl

    @property
    def etcd_port(self) -> int | None:
        return self.endpoints.etcd_port

    @property
    def etcd_peer_port(self) -> int | None:
        return self.endpoints.etcd_peer_port

    @property
    def apiserver_port(self) -> int | None:
        return self.endpoints.apiserver_port

    @property
    def ports(self) -> dict[str, int | None]:
        return self.endpoints.ports()

    @property
    def server_url(self) -> str:
        return self.endpoints.server_url

    @property
    def etcd_url(self) -> str:
        return self.endpoints.etcd_url

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG pointing at the admin kubeconfig."""
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig_path))

    # ------------------------------------------------------------ processes
    @property
    def etcd_pid(self) -> int | None:
        return self.supervisor.pid(components.ETCD)

    @property
    def apiserver_pid(self) -> int | None:
        return self.supervisor.pid(components.KUBE_APISERVER)

    @property
    def controller_manager_pid(self) -> int | None:
        if not self.controller_manager:
            return None
        return self.supervisor.pid(components.KUBE_CONTROLLER_MANAGER)

    @property
    def pids(self) -> dict[str, int]:
        return self.supervisor.pids

    @property
    def startup_seconds(self) -> dict[str, float]:
        """Seconds from process start to ready, per component, for its latest start."""
        return self.supervisor.startup_seconds

    @property
    def stop_timeout(self) -> float:
        return self.supervisor.stop_timeout

    def is_running(self) -> bool:
        return self.supervisor.any_alive()

    def is_alive(self, component: str) -> bool:
        """Whether the process `component` ("etcd", "kube-apiserver", "kube-controller-manager") runs."""
        return self.supervisor.alive(component)

    def apiserver_ready(self) -> bool:
        """GET /readyz as the admin answers 200."""
        try:
            probe = self._apiserver_component().ready
        except OSError:  # no certificates (yet)
            return False
        return probe()

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Build if needed, generate certificates, start etcd and kube-apiserver, wait for /readyz; then
        kube-controller-manager if asked for, and wait until its controllers have started."""
        if self.is_running():
            raise ControlPlaneError("already started")
        if self._build:
            _build.build(controller_manager=self.controller_manager)
        elif not self.binaries.all_present(controller_manager=self.controller_manager):
            raise ControlPlaneError(f"binaries missing (build=False): {self.binaries}")
        self._layout = Layout(prepare_state_dir(self._state_dir_arg, components.ORDER))
        try:
            self.credentials.write_pki()
            if self.audit:
                self.layout.audit_policy.write_text(_audit.AUDIT_POLICY)
            self._start_on_free_ports()
            self.credentials.write_admin_kubeconfig()
            if self.controller_manager:
                self.credentials.write_controller_manager_credentials()
                self._start_controller_manager_on_a_free_port()
            self._save_state()
        except BaseException as exc:
            self.supervisor.stop_all()
            if not self.keep_state:
                remove_state_dir(self.state_dir)
                if isinstance(exc, ControlPlaneError):
                    exc.add_note(f"(state dir {self.state_dir} was removed; pass keep_state=True to keep it)")
            raise
        if not self.detached:
            self._exit_hook.arm()
        return self

    def _start_on_free_ports(self) -> None:
        """Start every process on free ports; pick new ports (and start afresh) if one was taken meanwhile."""
        for attempt in range(3):
            self.endpoints.etcd_port, self.endpoints.etcd_peer_port, self.endpoints.apiserver_port = free_ports(3)
            try:
                self.start_etcd()
                self.start_apiserver()
                return
            except ControlPlaneError as exc:
                self.supervisor.stop_all()
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                shutil.rmtree(self.layout.etcd_data, ignore_errors=True)

    def _start_controller_manager_on_a_free_port(self) -> None:
        for attempt in range(3):
            self.endpoints.controller_manager_port = free_ports(1)[0]
            try:
                self.start_controller_manager()
                return
            except ControlPlaneError as exc:
                if "address already in use" not in str(exc) or attempt == 2:
                    raise

    def stop(self) -> None:
        """Stop kube-controller-manager (if it runs), kube-apiserver, then etcd (SIGTERM, SIGKILL after
        `stop_timeout`); remove state unless kept."""
        self.supervisor.stop_all()
        self._exit_hook.disarm()
        if not self.keep_state:
            remove_state_dir(self.state_dir)
        elif self.state_dir is not None and self.state_dir.exists():
            self._save_state()

    def start_etcd(self) -> None:
        """Start etcd (same ports and data dir as before, if it ran already) and wait for /health."""
        self.layout.etcd_data.mkdir(mode=0o700, exist_ok=True)
        self.supervisor.start(
            components.etcd(self.binaries.etcd, self.layout, self.endpoints, timeout=min(60.0, self.startup_timeout))
        )

    def stop_etcd(self) -> None:
        self.supervisor.stop(components.ETCD)

    def apiserver_args(self) -> list[str]:
        """The kube-apiserver command line (without the binary)."""
        return components.apiserver_args(self.layout, self.endpoints, audit=self.audit, extra=self.extra_apiserver_args)

    def _apiserver_component(self) -> Component:
        return components.apiserver(
            self.binaries.kube_apiserver,
            self.layout,
            self.endpoints,
            admin_tls=self.credentials.admin_tls(),
            audit=self.audit,
            extra=self.extra_apiserver_args,
            timeout=self.startup_timeout,
        )

    def start_apiserver(self) -> None:
        """Start kube-apiserver (same port and certificates as before, if it ran already); wait for /readyz."""
        if self.supervisor.alive(components.KUBE_APISERVER):
            raise ControlPlaneError("kube-apiserver already running")
        if not self.supervisor.alive(components.ETCD):
            raise ControlPlaneError("etcd is not running; start_etcd() first")
        self.supervisor.start(self._apiserver_component())

    def stop_apiserver(self) -> None:
        self.supervisor.stop(components.KUBE_APISERVER)

    def controller_manager_args(self) -> list[str]:
        """The kube-controller-manager command line (without the binary)."""
        return components.controller_manager_args(self.layout, self.endpoints, extra=self.extra_controller_manager_args)

    def start_controller_manager(self) -> None:
        """Start kube-controller-manager (same port and credentials as before, if it ran already) and wait until
        its controllers have started. Only on a control plane made with `controller_manager=True`."""
        if not self.controller_manager:
            raise ControlPlaneError("this control plane runs no kube-controller-manager (controller_manager=False)")
        if not self.supervisor.alive(components.KUBE_APISERVER):
            raise ControlPlaneError("kube-apiserver is not running; start_apiserver() first")
        self.supervisor.start(
            components.controller_manager(
                self.binaries.kube_controller_manager,
                self.layout,
                self.endpoints,
                ca_tls=self.credentials.ca_tls(),
                extra=self.extra_controller_manager_args,
                timeout=self.startup_timeout,
            )
        )

    def stop_controller_manager(self) -> None:
        """Stop kube-controller-manager: namespaces being deleted then stay Terminating until it starts again."""
        if self.controller_manager:
            self.supervisor.stop(components.KUBE_CONTROLLER_MANAGER)

    # -------------------------------------------------------------- state.json
    def state(self) -> dict[str, Any]:
        """What state.json records."""
        return {
            "kubernetes_version": _build.KUBERNETES_VERSION,
            "etcd_version": _build.ETCD_VERSION,
            "state_dir": str(self.state_dir),
            "server": self.server_url,
            "kubeconfig": str(self.kubeconfig_path),
            "audit_log": str(self.audit_log_path) if self.audit else None,
            "etcd_url": self.etcd_url,
            "ports": self.ports,
            "processes": self.supervisor.records(),
            "binaries": {k: str(v) for k, v in vars(self.binaries).items()},
            "detached": self.detached,
            "audit": self.audit,
            "extra_apiserver_args": self.extra_apiserver_args,
            "controller_manager": self.controller_manager,
            "extra_controller_manager_args": self.extra_controller_manager_args,
        }

    def _save_state(self) -> None:
        write_state(self.layout.root, self.state())

    def _record(self) -> None:
        """After a process started or stopped: update state.json, if the control plane has written one."""
        if self._layout is not None and self._layout.state_file.exists():
            self._save_state()

    @classmethod
    def from_state_dir(cls, state_dir: str | os.PathLike[str]) -> ControlPlane:
        """Attach to a control plane started elsewhere (e.g. by `goodmem-devcluster up`).

        `stop()` on it stops the recorded pids and removes the directory.
        """
        d = Path(state_dir).expanduser().resolve()
        st = read_state(d)
        cp = cls(
            d,
            detached=True,
            audit=st.get("audit", True),
            extra_apiserver_args=st.get("extra_apiserver_args", ()),
            build=False,
            controller_manager=st.get("controller_manager", False),
            extra_controller_manager_args=st.get("extra_controller_manager_args", ()),
        )
        cp.endpoints = Endpoints.from_ports(st["ports"])
        cp.supervisor.adopt(st["processes"])
        return cp

    # --------------------------------------------------- credentials, clients
    def kubeconfig_for_user(self, user: str, groups: Sequence[str] = (), path: Kubeconfig = None) -> Path:
        """A kubeconfig authenticating with a client certificate (CN=user, O=groups) from the control plane's CA."""
        return self.credentials.kubeconfig_for_user(user, groups, path)

    def service_account_token(self, namespace: str, name: str, *, expiration_seconds: int = 86400) -> str:
        """Create namespace and ServiceAccount if missing; return a token from the TokenRequest API."""
        with self.api_client() as api:
            return request_service_account_token(
                api, namespace, name, audience=self.server_url, expiration_seconds=expiration_seconds
            )

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, path: Kubeconfig = None, *, expiration_seconds: int = 86400
    ) -> Path:
        """Kubeconfig authenticating as system:serviceaccount:<namespace>:<name> with a TokenRequest token.

        Creates the namespace and the ServiceAccount if missing. It has no RBAC
        bindings unless you create some. Default path: <state_dir>/kubeconfigs/sa-<ns>-<name>.kubeconfig.
        """
        with self.api_client() as api:
            return self.credentials.kubeconfig_for_service_account(
                api, namespace, name, path, expiration_seconds=expiration_seconds
            )

    def api_client(self, kubeconfig: Kubeconfig = None) -> Any:
        """A kubernetes.client.ApiClient: admin by default, or from the given kubeconfig file."""
        return self.clients.api_client(kubeconfig)

    def kubectl_command(self, *args: str, kubeconfig: Kubeconfig = None) -> list[str]:
        """argv for the built kubectl against this control plane (admin unless `kubeconfig`)."""
        return self.clients.kubectl_command(*args, kubeconfig=kubeconfig)

    def kubectl_env(self, kubeconfig: Kubeconfig = None) -> dict[str, str]:
        """Environment for kubectl_command(): KUBECONFIG set, ~/.kube/kuberc ignored (KUBERC=off)."""
        return self.clients.kubectl_env(kubeconfig)

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        kubeconfig: Kubeconfig = None,
        timeout: float | None = 120.0,
    ) -> subprocess.CompletedProcess[Any]:
        """Run the built kubectl against this control plane (admin unless `kubeconfig` is given).

        Output is captured (text unless `input` is bytes). With check=True a
        non-zero exit raises KubectlError, whose message includes stderr.
        """
        return self.clients.kubectl(*args, input=input, check=check, kubeconfig=kubeconfig, timeout=timeout)

    def install_crds(self, path: Path | str, *, server_side: bool = False) -> None:
        """Apply every CRD under `path` (a file or a directory) and wait until each one is established."""
        self.kubectl("apply", *(["--server-side"] if server_side else []), "-f", str(path))
        self.kubectl("wait", "--for", "condition=established", "-f", str(path), "--timeout=60s")

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Audit events recorded so far (iterator of dicts)."""
        return self.clients.audit_events()

    def writes_by_user(self) -> Counter[str]:
        """collections.Counter of write requests per user name, from the audit log."""
        return self.clients.writes_by_user()

    def __repr__(self) -> str:
        server = self.server_url if self.apiserver_port else "(not started)"
        return f"<ControlPlane {server} state_dir={self.state_dir} pids={self.pids}>"
