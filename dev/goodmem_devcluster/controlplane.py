"""Run etcd + kube-apiserver as local processes (what controller-runtime's envtest runs).

No controller manager, scheduler or kubelet: see README.md for what that implies.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from . import audit as _audit
from . import gobuild as _build
from ._proc import free_ports, pid_alive, process_start_time, terminate_pid
from .kubeconfig import render_kubeconfig, write_kubeconfig
from .pki import CertificateAuthority, write_service_account_keys

__all__ = ["ControlPlane", "ControlPlaneError", "KubectlError", "ADMIN_USER", "ADMIN_GROUPS", "SERVICE_CLUSTER_IP_RANGE"]

ADMIN_USER = "goodmem-admin"
ADMIN_GROUPS = ("system:masters",)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
STATE_FILE = "state.json"
HOST = "127.0.0.1"


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready (the message carries its log tail)."""


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}\nstdout: {(self.stdout or '').strip()[:2000]}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _no_proxy_opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, with an admin kubeconfig.

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
        state_dir: str | os.PathLike | None = None,
        *,
        keep_state: bool = False,
        detached: bool = False,
        startup_timeout: float = 120.0,
        audit: bool = True,
        extra_apiserver_args: Sequence[str] = (),
        build: bool = True,
        stop_timeout: float = 15.0,
    ) -> None:
        self._state_dir_arg = Path(state_dir).expanduser().resolve() if state_dir is not None else None
        self.state_dir: Path | None = self._state_dir_arg
        self.keep_state = keep_state
        self.detached = detached
        self.startup_timeout = startup_timeout
        self.audit = audit
        self.extra_apiserver_args = list(extra_apiserver_args)
        self._build = build
        self.stop_timeout = stop_timeout
        self.binaries = _build.binaries()
        self.etcd_port: int | None = None
        self.etcd_peer_port: int | None = None
        self.apiserver_port: int | None = None
        self._procs: dict[str, subprocess.Popen | None] = {"etcd": None, "kube-apiserver": None}
        self._pids: dict[str, tuple[int, int | None] | None] = {"etcd": None, "kube-apiserver": None}
        #: seconds from process start to healthy, per component, for the latest start
        self.startup_seconds: dict[str, float] = {}
        self._atexit_registered = False

    # ------------------------------------------------------------------ paths
    def _p(self, *parts: str) -> Path:
        if self.state_dir is None:
            raise ControlPlaneError("control plane not started")
        return self.state_dir.joinpath(*parts)

    @property
    def kubeconfig_path(self) -> Path:
        """Admin kubeconfig (user goodmem-admin, group system:masters)."""
        return self._p("kubeconfig")

    @property
    def ca_cert_path(self) -> Path:
        return self._p("pki", "ca.crt")

    @property
    def admin_cert_path(self) -> Path:
        return self._p("pki", "admin.crt")

    @property
    def admin_key_path(self) -> Path:
        return self._p("pki", "admin.key")

    @property
    def audit_log_path(self) -> Path:
        """JSON-lines audit log: every write request (create/update/patch/delete) at Metadata level."""
        return self._p("logs", "audit.log")

    @property
    def etcd_log_path(self) -> Path:
        return self._p("logs", "etcd.log")

    @property
    def apiserver_log_path(self) -> Path:
        return self._p("logs", "kube-apiserver.log")

    @property
    def kubectl_path(self) -> Path:
        """The kubectl built from hack/go/kube (a kubectl on PATH is never used)."""
        return self.binaries.kubectl

    @property
    def server_url(self) -> str:
        return f"https://{HOST}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{HOST}:{self.etcd_port}"

    @property
    def etcd_pid(self) -> int | None:
        return self._pids["etcd"][0] if self._pids["etcd"] else None

    @property
    def apiserver_pid(self) -> int | None:
        return self._pids["kube-apiserver"][0] if self._pids["kube-apiserver"] else None

    @property
    def pids(self) -> dict[str, int]:
        return {k: v[0] for k, v in self._pids.items() if v}

    @property
    def ports(self) -> dict[str, int | None]:
        return {"etcd-client": self.etcd_port, "etcd-peer": self.etcd_peer_port, "kube-apiserver": self.apiserver_port}

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG pointing at the admin kubeconfig."""
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig_path))

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        """Build if needed, generate certificates, start etcd and kube-apiserver, wait for /readyz."""
        if self.is_running():
            raise ControlPlaneError("already started")
        if self._build:
            _build.build()
        elif not self.binaries.all_present():
            raise ControlPlaneError(f"binaries missing (build=False): {self.binaries}")
        self._prepare_state_dir()
        try:
            self._write_pki()
            if self.audit:
                self._p("audit-policy.yaml").write_text(_audit.AUDIT_POLICY)
            for attempt in range(3):
                self.etcd_port, self.etcd_peer_port, self.apiserver_port = free_ports(3)
                try:
                    self.start_etcd()
                    self.start_apiserver()
                    break
                except ControlPlaneError as exc:
                    in_use = "address already in use" in str(exc)
                    self._stop_all()
                    if not in_use or attempt == 2:
                        raise
                    shutil.rmtree(self._p("etcd-data"), ignore_errors=True)
            write_kubeconfig(
                self.kubeconfig_path,
                render_kubeconfig(
                    server=self.server_url,
                    ca_pem=self.ca_cert_path.read_bytes(),
                    user=ADMIN_USER,
                    client_cert_pem=self.admin_cert_path.read_bytes(),
                    client_key_pem=self.admin_key_path.read_bytes(),
                ),
            )
            self._save_state()
        except BaseException as exc:
            self._stop_all()
            if not self.keep_state:
                self._remove_state_dir()
                if isinstance(exc, ControlPlaneError):
                    exc.add_note(f"(state dir {self.state_dir} was removed; pass keep_state=True to keep it)")
            raise
        if not self.detached and not self._atexit_registered:
            atexit.register(self._atexit_stop)
            self._atexit_registered = True
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after `stop_timeout`); remove state unless kept."""
        self._stop_all()
        if self._atexit_registered:
            atexit.unregister(self._atexit_stop)
            self._atexit_registered = False
        if self.keep_state:
            if self.state_dir is not None and self.state_dir.exists():
                self._save_state()
        else:
            self._remove_state_dir()

    def _atexit_stop(self) -> None:
        try:
            self.stop()
        except Exception as exc:  # pragma: no cover - best effort at exit
            print(f"goodmem-devcluster: stopping at exit failed: {exc}", file=sys.stderr)

    def _stop_all(self) -> None:
        self.stop_apiserver()
        self.stop_etcd()

    def is_running(self) -> bool:
        return any(self._alive(name) for name in self._pids)

    def _alive(self, name: str) -> bool:
        rec = self._pids[name]
        if not rec:
            return False
        proc = self._procs[name]
        if proc is not None:
            return proc.poll() is None
        return pid_alive(rec[0], rec[1])

    # ---------------------------------------------------------------- etcd
    def start_etcd(self) -> None:
        """Start etcd (same ports and data dir as before, if it ran already) and wait for /health."""
        if self._alive("etcd"):
            raise ControlPlaneError("etcd already running")
        self._p("etcd-data").mkdir(mode=0o700, exist_ok=True)
        peer = f"http://{HOST}:{self.etcd_peer_port}"
        args = [
            str(self.binaries.etcd),
            "--name=goodmem-devcluster",
            f"--data-dir={self._p('etcd-data')}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=goodmem-devcluster={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        started = self._spawn("etcd", args, self.etcd_log_path)
        self._wait_healthy("etcd", self.etcd_log_path, started, self._etcd_healthy, timeout=min(60.0, self.startup_timeout))

    def stop_etcd(self) -> None:
        self._terminate("etcd")

    def _etcd_healthy(self) -> bool:
        try:
            with _no_proxy_opener().open(f"{self.etcd_url}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    # ---------------------------------------------------------- apiserver
    def apiserver_args(self) -> list[str]:
        """The kube-apiserver command line (without the binary)."""
        pki = self._p("pki")
        args = [
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_cert_path}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server_url}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # The `kubernetes` Service still exists; its Endpoints are not maintained
            # (they would point at 127.0.0.1, which Endpoints validation rejects).
            "--endpoint-reconciler-type=none",
            "--anonymous-auth=true",
            "--profiling=false",
        ]
        if self.audit:
            args += [
                f"--audit-policy-file={self._p('audit-policy.yaml')}",
                f"--audit-log-path={self.audit_log_path}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
            ]
        return args + self.extra_apiserver_args

    def start_apiserver(self) -> None:
        """Start kube-apiserver (same port and certificates as before, if it ran already); wait for /readyz."""
        if self._alive("kube-apiserver"):
            raise ControlPlaneError("kube-apiserver already running")
        if not self._alive("etcd"):
            raise ControlPlaneError("etcd is not running; start_etcd() first")
        args = [str(self.binaries.kube_apiserver), *self.apiserver_args()]
        started = self._spawn("kube-apiserver", args, self.apiserver_log_path)
        self._wait_healthy("kube-apiserver", self.apiserver_log_path, started, self._apiserver_ready, timeout=self.startup_timeout)

    def stop_apiserver(self) -> None:
        self._terminate("kube-apiserver")

    def _admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert_path))
        ctx.load_cert_chain(str(self.admin_cert_path), str(self.admin_key_path))
        return ctx

    def _apiserver_ready(self) -> bool:
        try:
            with _no_proxy_opener(self._admin_ssl_context()).open(f"{self.server_url}/readyz", timeout=5) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    # ------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str], log_path: Path) -> float:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(args)}\n".encode())
            log.flush()
            started = time.monotonic()
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=self.detached,
                close_fds=True,
            )
        self._procs[name] = proc
        self._pids[name] = (proc.pid, process_start_time(proc.pid))
        if self.state_dir is not None and self._p(STATE_FILE).exists():
            self._save_state()
        return started

    def _wait_healthy(self, name: str, log_path: Path, started: float, probe, *, timeout: float) -> None:
        deadline = started + timeout
        while True:
            proc = self._procs[name]
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode} during startup; last lines of {log_path}:\n{_tail(log_path)}"
                )
            if probe():
                self.startup_seconds[name] = time.monotonic() - started
                return
            if time.monotonic() > deadline:
                self._terminate(name)
                raise ControlPlaneError(
                    f"{name} not ready after {timeout:.0f}s; last lines of {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.1)

    def _terminate(self, name: str) -> None:
        rec = self._pids[name]
        if rec is None:
            return
        terminate_pid(rec[0], rec[1], timeout=self.stop_timeout, popen=self._procs[name])
        self._procs[name] = None
        self._pids[name] = None
        if self.state_dir is not None and self._p(STATE_FILE).exists():
            self._save_state()

    # ------------------------------------------------------------ state dir
    def _prepare_state_dir(self) -> None:
        if self._state_dir_arg is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="goodmem-devcluster-"))
            return
        d = self._state_dir_arg
        if d.exists() and any(d.iterdir()):
            state = d / STATE_FILE
            if not state.exists():
                raise ControlPlaneError(f"{d} exists, is not empty and holds no {STATE_FILE}; refusing to use it")
            other = ControlPlane.from_state_dir(d)
            if other.is_running():
                raise ControlPlaneError(f"a control plane is already running from {d} (pids {other.pids}); stop it first")
            shutil.rmtree(d)  # stale state from a control plane that died
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir = d

    def _remove_state_dir(self) -> None:
        if self.state_dir is not None and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _write_pki(self) -> None:
        pki = self._p("pki")
        pki.mkdir(mode=0o700, exist_ok=True)
        ca = CertificateAuthority()
        (pki / "ca.crt").write_bytes(ca.cert_pem)
        key = pki / "ca.key"
        key.touch(mode=0o600)
        key.write_bytes(ca.key_pem)
        ca.issue_serving(
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
            ips=[HOST, "10.0.0.1"],
        ).write(pki / "apiserver.crt", pki / "apiserver.key")
        ca.issue_client(ADMIN_USER, ADMIN_GROUPS).write(self.admin_cert_path, self.admin_key_path)
        write_service_account_keys(pki / "sa.key", pki / "sa.pub")

    def _load_ca(self) -> CertificateAuthority:
        return CertificateAuthority(cert_pem=self.ca_cert_path.read_bytes(), key_pem=self._p("pki", "ca.key").read_bytes())

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
            "processes": {
                name: ({"pid": rec[0], "start_time": rec[1]} if rec else None) for name, rec in self._pids.items()
            },
            "binaries": {k: str(v) for k, v in vars(self.binaries).items()},
            "detached": self.detached,
            "audit": self.audit,
            "extra_apiserver_args": self.extra_apiserver_args,
        }

    def _save_state(self) -> None:
        path = self._p(STATE_FILE)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def from_state_dir(cls, state_dir: str | os.PathLike) -> "ControlPlane":
        """Attach to a control plane started elsewhere (e.g. by `goodmem-devcluster up`).

        `stop()` on it stops the recorded pids and removes the directory.
        """
        d = Path(state_dir).expanduser().resolve()
        try:
            st = json.loads((d / STATE_FILE).read_text())
        except FileNotFoundError:
            raise ControlPlaneError(f"no control plane state at {d / STATE_FILE}") from None
        cp = cls(d, detached=True, audit=st.get("audit", True), extra_apiserver_args=st.get("extra_apiserver_args", ()), build=False)
        cp.state_dir = d
        ports = st["ports"]
        cp.etcd_port, cp.etcd_peer_port, cp.apiserver_port = ports["etcd-client"], ports["etcd-peer"], ports["kube-apiserver"]
        for name, rec in st["processes"].items():
            cp._pids[name] = (rec["pid"], rec["start_time"]) if rec else None
        return cp

    # --------------------------------------------------------------- clients
    def api_client(self, kubeconfig: str | os.PathLike | None = None):
        """A kubernetes.client.ApiClient: admin by default, or from the given kubeconfig file."""
        import kubernetes.client
        import kubernetes.config

        if kubeconfig is not None:
            return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        cfg = kubernetes.client.Configuration(
            host=self.server_url,
            ssl_ca_cert=str(self.ca_cert_path),
            cert_file=str(self.admin_cert_path),
            key_file=str(self.admin_key_path),
        )
        return kubernetes.client.ApiClient(cfg)

    def kubectl_command(self, *args: str, kubeconfig: str | os.PathLike | None = None) -> list[str]:
        """argv for the built kubectl against this control plane (admin unless `kubeconfig`)."""
        return [
            str(self.kubectl_path),
            f"--kubeconfig={kubeconfig or self.kubeconfig_path}",
            f"--cache-dir={self._p('kubectl-cache')}",
            *args,
        ]

    def kubectl_env(self, kubeconfig: str | os.PathLike | None = None) -> dict[str, str]:
        """Environment for kubectl_command(): KUBECONFIG set, ~/.kube/kuberc ignored (KUBERC=off)."""
        return dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig_path), KUBERC="off")

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        kubeconfig: str | os.PathLike | None = None,
        timeout: float | None = 120.0,
    ) -> subprocess.CompletedProcess:
        """Run the built kubectl against this control plane (admin unless `kubeconfig` is given).

        Output is captured (text unless `input` is bytes). With check=True a
        non-zero exit raises KubectlError, whose message includes stderr.
        """
        cmd = self.kubectl_command(*args, kubeconfig=kubeconfig)
        env = self.kubectl_env(kubeconfig)
        text = not isinstance(input, bytes)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=text, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubeconfig_for_user(
        self, user: str, groups: Sequence[str] = (), path: str | os.PathLike | None = None
    ) -> Path:
        """A kubeconfig authenticating with a client certificate (CN=user, O=groups) from the control plane's CA."""
        pair = self._load_ca().issue_client(user, tuple(groups))
        target = Path(path) if path is not None else self._p("kubeconfigs", f"user-{_safe(user)}.kubeconfig")
        return write_kubeconfig(
            target,
            render_kubeconfig(
                server=self.server_url, ca_pem=self.ca_cert_path.read_bytes(), user=user,
                client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem,
            ),
        )

    def service_account_token(self, namespace: str, name: str, *, expiration_seconds: int = 86400) -> str:
        """Create namespace and ServiceAccount if missing; return a token from the TokenRequest API."""
        import kubernetes.client
        from kubernetes.client.rest import ApiException

        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            for create in (
                lambda: core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))),
                lambda: core.create_namespaced_service_account(
                    namespace, kubernetes.client.V1ServiceAccount(metadata=kubernetes.client.V1ObjectMeta(name=name))
                ),
            ):
                try:
                    create()
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            tr = core.create_namespaced_service_account_token(
                name,
                namespace,
                kubernetes.client.AuthenticationV1TokenRequest(
                    spec=kubernetes.client.V1TokenRequestSpec(audiences=[self.server_url], expiration_seconds=expiration_seconds)
                ),
            )
            return tr.status.token

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, path: str | os.PathLike | None = None, *, expiration_seconds: int = 86400
    ) -> Path:
        """Kubeconfig authenticating as system:serviceaccount:<namespace>:<name> with a TokenRequest token.

        Creates the namespace and the ServiceAccount if missing. It has no RBAC
        bindings unless you create some. Default path: <state_dir>/kubeconfigs/sa-<ns>-<name>.kubeconfig.
        """
        token = self.service_account_token(namespace, name, expiration_seconds=expiration_seconds)
        target = Path(path) if path is not None else self._p("kubeconfigs", f"sa-{_safe(namespace)}-{_safe(name)}.kubeconfig")
        return write_kubeconfig(
            target,
            render_kubeconfig(
                server=self.server_url, ca_pem=self.ca_cert_path.read_bytes(),
                user=f"system:serviceaccount:{namespace}:{name}", token=token, namespace=namespace,
            ),
        )

    # ----------------------------------------------------------------- audit
    def audit_events(self):
        """Audit events recorded so far (iterator of dicts)."""
        return _audit.read_audit_events(self.audit_log_path)

    def writes_by_user(self):
        """collections.Counter of write requests per user name, from the audit log."""
        return _audit.count_writes_by_user(self.audit_events())

    def __repr__(self) -> str:
        return f"<ControlPlane {self.server_url if self.apiserver_port else '(not started)'} state_dir={self.state_dir} pids={self.pids}>"


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)
