"""goodmem-devcluster: build / up / down / status / sa-kubeconfig / kubectl."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import gobuild as _build
from ._proc import port_is_listening
from .controlplane import STATE_FILE, ControlPlane, ControlPlaneError


def default_state_dir() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "goodmem-devcluster"


def _err(msg: str) -> None:
    print(f"goodmem-devcluster: {msg}", file=sys.stderr, flush=True)


def _attach(state_dir: Path) -> ControlPlane | None:
    if not (state_dir / STATE_FILE).exists():
        return None
    return ControlPlane.from_state_dir(state_dir)


def cmd_build(args: argparse.Namespace) -> int:
    b = _build.build(controller_manager=args.controller_manager, node=getattr(args, "node", False))
    for name, path in vars(b).items():
        flag = "--node" if name in ("kubelet", "kube_scheduler") else "--controller-manager"
        print(f"{name}: {path}" + ("" if path.exists() else f"  (not built; optional: build {flag})"))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    d = args.state_dir.resolve()
    existing = _attach(d)
    if existing is not None and existing.is_running():
        _err(f"already up at {d} (pids {existing.pids}); `down` first to restart")
        print(f"export KUBECONFIG={existing.kubeconfig_path}")
        return 0
    _build.build(controller_manager=args.controller_manager)
    cp = ControlPlane(d, detached=True, startup_timeout=args.timeout, controller_manager=args.controller_manager)
    cp.start()
    kcm = (
        f"kube-controller-manager (pid {cp.controller_manager_pid}, ready in "
        f"{cp.startup_seconds.get('kube-controller-manager', 0):.1f}s), "
        if args.controller_manager
        else ""
    )
    _err(
        f"kube-apiserver {_build.KUBERNETES_VERSION} at {cp.server_url} (pid {cp.apiserver_pid}, ready in "
        f"{cp.startup_seconds.get('kube-apiserver', 0):.1f}s), {kcm}etcd {_build.ETCD_VERSION} at {cp.etcd_url} "
        f"(pid {cp.etcd_pid}); state in {d}; audit log {cp.audit_log_path}; kubectl {cp.kubectl_path}"
    )
    print(f"export KUBECONFIG={cp.kubeconfig_path}", flush=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    d = args.state_dir.resolve()
    cp = _attach(d)
    if cp is None:
        _err(f"nothing recorded at {d / STATE_FILE}; nothing to stop")
        return 0
    pids = cp.pids
    cp.stop()
    _err(f"stopped {pids}; removed {d}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    d = args.state_dir.resolve()
    cp = _attach(d)
    if cp is None:
        print(f"down (no {d / STATE_FILE})")
        return 1
    st = cp.state()
    up = True
    for name, rec in st["processes"].items():
        alive = rec is not None and cp.is_alive(name)
        up &= alive
        print(f"{name}: {'running pid ' + str(rec['pid']) if alive else 'not running'}")
    ready = cp.apiserver_ready() if up else False
    print(f"server: {st['server']} ({'ready' if ready else 'NOT ready'})")
    print(f"etcd: {st['etcd_url']} ({'listening' if port_is_listening(cp.etcd_port) else 'not listening'})")
    print(f"kubeconfig: {st['kubeconfig']}")
    print(f"audit log: {st['audit_log']}")
    print(f"kubectl: {cp.kubectl_path}")
    print(f"versions: kubernetes {st['kubernetes_version']}, etcd {st['etcd_version']}")
    return 0 if up and ready else 1


def _running(d: Path) -> ControlPlane:
    cp = _attach(d)
    if cp is None or not cp.is_running():
        raise ControlPlaneError(f"no control plane running at {d}; run `goodmem-devcluster up` first")
    return cp


def cmd_sa_kubeconfig(args: argparse.Namespace) -> int:
    cp = _running(args.state_dir.resolve())
    print(cp.kubeconfig_for_service_account(args.namespace, args.name, args.output))
    return 0


def cmd_kubectl(args: argparse.Namespace) -> int:
    cp = _running(args.state_dir.resolve())
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return subprocess.run(cp.kubectl_command(*rest), env=cp.kubectl_env(), check=False).returncode  # its exit code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="goodmem-devcluster",
        description=(
            f"Local Kubernetes control plane: etcd {_build.ETCD_VERSION} + kube-apiserver "
            f"{_build.KUBERNETES_VERSION}, built from hack/go."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-dir", type=Path, default=default_state_dir(), help="default: %(default)s")

    kcm = argparse.ArgumentParser(add_help=False)
    kcm.add_argument(
        "--controller-manager",
        action="store_true",
        help="also kube-controller-manager (namespace deletion, garbage collection); built on first use",
    )
    build = sub.add_parser("build", parents=[kcm], help="build (or find cached) etcd, kube-apiserver, kubectl")
    build.add_argument(
        "--node", action="store_true", help="also kubelet and kube-scheduler (hack/kubelet_experiment.py)"
    )
    build.set_defaults(func=cmd_build)
    p = sub.add_parser("up", parents=[state, kcm], help="start detached; prints `export KUBECONFIG=...` last")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", parents=[state], help="stop the recorded processes and remove the state dir").set_defaults(
        func=cmd_down
    )
    sub.add_parser("status", parents=[state], help="exit 0 if up and ready").set_defaults(func=cmd_status)
    p = sub.add_parser(
        "sa-kubeconfig", parents=[state], help="kubeconfig for a ServiceAccount (TokenRequest); prints its path"
    )
    p.add_argument("namespace")
    p.add_argument("name")
    p.add_argument("-o", "--output", type=Path, default=None)
    p.set_defaults(func=cmd_sa_kubeconfig)
    p = sub.add_parser("kubectl", parents=[state], help="run the built kubectl as admin: kubectl -- ARGS")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_kubectl)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ControlPlaneError, _build.GoUnavailable, _build.BuildFailed) as exc:
        _err(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
