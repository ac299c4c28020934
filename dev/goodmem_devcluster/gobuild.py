"""Build etcd, kube-apiserver and kubectl (and, when asked, kube-controller-manager) from the Go modules in hack/go.

The versions are read from hack/go/*/go.mod, so the cache directory names and
the `-X ...version.gitVersion` link flags cannot disagree with what is built.
Binaries are cached per version and never rebuilt once present. kube-controller-manager is optional: only a
control plane that runs it (`ControlPlane(controller_manager=True)`) builds it. kubelet and kube-scheduler (a node,
for hack/kubelet_experiment.py) are optional too: `build(node=True)`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "TOOLS",
    "Binaries",
    "BuildFailed",
    "GoUnavailable",
    "binaries",
    "build",
    "build_tool",
    "cache_dir",
    "find_go",
    "hack_dir",
    "kube_ldflags",
    "parse_gomod_version",
    "tool_path",
]

HEARTBEAT_SECONDS = 30.0


class GoUnavailable(RuntimeError):
    """No Go toolchain was found, and a binary has to be built."""


class BuildFailed(RuntimeError):
    """`go build` exited non-zero."""


def hack_dir() -> Path:
    """hack/go of the repository: $GOODMEM_HACK_DIR, else <repo>/hack/go relative to this package."""
    override = os.environ.get("GOODMEM_HACK_DIR")
    if override:
        return Path(override).expanduser().resolve()
    # dev/goodmem_devcluster/gobuild.py -> <repo>/hack/go
    return (Path(__file__).resolve().parent.parent.parent / "hack" / "go").resolve()


def parse_gomod_version(gomod_text: str, module: str) -> str:
    """The version `module` is required at in a go.mod text ("v3.6.16").

    Accepts both the single-line `require mod vX` form and `require ( ... )`
    blocks; ignores `replace` lines (`mod => mod vX`) and comments.
    """
    pattern = re.compile(
        r"^\s*(?:require\s+)?" + re.escape(module) + r"\s+(v\d+\.\d+\.\d+(?:[-+][\w.\-+]*)?)\s*(?://.*)?$",
        re.M,
    )
    found = {m.group(1) for m in pattern.finditer(gomod_text)}
    if not found:
        raise ValueError(f"{module} is not required in this go.mod")
    if len(found) > 1:
        raise ValueError(f"{module} is required at several versions: {sorted(found)}")
    return found.pop()


def _version_from(module_dir: str, module: str) -> str:
    gomod = hack_dir() / module_dir / "go.mod"
    try:
        text = gomod.read_text()
    except OSError as exc:
        raise RuntimeError(
            f"cannot read {gomod} ({exc}); goodmem_devcluster needs the repository's hack/go "
            "directory (set GOODMEM_HACK_DIR to point at it)"
        ) from exc
    return parse_gomod_version(text, module)


#: Versions pinned by hack/go/etcd/go.mod and hack/go/kube/go.mod.
ETCD_VERSION: str = _version_from("etcd", "go.etcd.io/etcd/server/v3")
KUBERNETES_VERSION: str = _version_from("kube", "k8s.io/kubernetes")


def kube_ldflags(version: str = KUBERNETES_VERSION) -> str:
    """Link flags for kube-apiserver/kubectl: strip symbols, stamp the version."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", version)
    if not m:
        raise ValueError(f"not a Kubernetes version: {version!r}")
    major, minor = m.group(1), m.group(2)
    return (
        f"-s -w -X k8s.io/component-base/version.gitVersion={version}"
        f" -X k8s.io/component-base/version.gitMajor={major}"
        f" -X k8s.io/component-base/version.gitMinor={minor}"
        f" -X k8s.io/client-go/pkg/version.gitVersion={version}"
    )


def cache_dir() -> Path:
    """${GOODMEM_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/goodmem-operator}"""
    override = os.environ.get("GOODMEM_DEVCLUSTER_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "goodmem-operator"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    #: optional: built only for a control plane that runs it (same module and version as kube-apiserver)
    kube_controller_manager: Path
    #: optional (`build(node=True)`): a node, for hack/kubelet_experiment.py (same module and version)
    kubelet: Path
    kube_scheduler: Path

    def required(self, *, controller_manager: bool = False, node: bool = False) -> tuple[Path, ...]:
        """The binaries a control plane needs: etcd, kube-apiserver, kubectl, and kube-controller-manager if asked;
        kubelet and kube-scheduler with `node`."""
        core = (self.etcd, self.kube_apiserver, self.kubectl)
        core = (*core, self.kube_controller_manager) if controller_manager else core
        return (*core, self.kubelet, self.kube_scheduler) if node else core

    def all_present(self, *, controller_manager: bool = False, node: bool = False) -> bool:
        return all(_is_executable(p) for p in self.required(controller_manager=controller_manager, node=node))


def binaries() -> Binaries:
    """Where the binaries live in the cache (whether built yet or not)."""
    bin_dir = cache_dir() / "bin"
    kube = bin_dir / f"kubernetes-{KUBERNETES_VERSION}"
    return Binaries(
        etcd=bin_dir / f"etcd-{ETCD_VERSION}" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kubectl=kube / "kubectl",
        kube_controller_manager=kube / "kube-controller-manager",
        kubelet=kube / "kubelet",
        kube_scheduler=kube / "kube-scheduler",
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_go() -> str:
    """Path of the `go` command: on PATH, else /usr/local/go/bin/go; GoUnavailable otherwise."""
    found = shutil.which("go")
    if found:
        return found
    if _is_executable(Path("/usr/local/go/bin/go")):
        return "/usr/local/go/bin/go"
    raise GoUnavailable(
        "Go toolchain not found (neither `go` on PATH nor /usr/local/go/bin/go). "
        "goodmem_devcluster builds etcd, kube-apiserver and kubectl from source with Go; "
        "install Go >= 1.24 (https://go.dev/dl/), or put prebuilt binaries at "
        f"{binaries().etcd} and {binaries().kube_apiserver.parent}/{{kube-apiserver,kubectl}}."
    )


def _log(msg: str) -> None:
    print(f"[goodmem-devcluster] {msg}", file=sys.stderr, flush=True)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass(frozen=True)
class _Step:
    name: str
    module_dir: Path
    package: str
    ldflags: str
    output: Path


def _steps(*, controller_manager: bool = False, node: bool = False) -> list[_Step]:
    b = binaries()
    hd = hack_dir()
    steps = [
        _Step(f"etcd {ETCD_VERSION}", hd / "etcd", ".", "-s -w", b.etcd),
        _Step(
            f"kube-apiserver {KUBERNETES_VERSION}",
            hd / "kube",
            "./cmd/kube-apiserver",
            kube_ldflags(),
            b.kube_apiserver,
        ),
        _Step(f"kubectl {KUBERNETES_VERSION}", hd / "kube", "./cmd/kubectl", kube_ldflags(), b.kubectl),
    ]
    if controller_manager:
        steps.append(
            _Step(
                f"kube-controller-manager {KUBERNETES_VERSION}",
                hd / "kube",
                "./cmd/kube-controller-manager",
                kube_ldflags(),
                b.kube_controller_manager,
            )
        )
    if node:
        steps += [
            _Step(f"{name} {KUBERNETES_VERSION}", hd / "kube", f"./cmd/{name}", kube_ldflags(), path)
            for name, path in (("kubelet", b.kubelet), ("kube-scheduler", b.kube_scheduler))
        ]
    return steps


def build(*, quiet: bool = False, controller_manager: bool = False, node: bool = False) -> Binaries:
    """Build whatever is missing from the cache; return the binaries' paths.

    kube-controller-manager only with `controller_manager=True`, kubelet and kube-scheduler only with `node=True`
    (measured: kubelet 1 min 44 s, kube-scheduler 10 s, with the build cache kube-apiserver's build left).
    A second call builds nothing. Progress goes to
    stderr: a line per step with elapsed time, and a heartbeat every ~30 s (a cold build takes 10+ minutes).
    Raises GoUnavailable if something must be built and Go is absent.
    """
    b = binaries()
    missing = [s for s in _steps(controller_manager=controller_manager, node=node) if not _is_executable(s.output)]
    if not missing:
        return b
    log = (lambda _msg: None) if quiet else _log
    go = find_go()
    lock_path = cache_dir() / "bin" / ".build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building into {lock_path.parent}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [s for s in _steps(controller_manager=controller_manager, node=node) if not _is_executable(s.output)]
        t0 = time.monotonic()
        for i, step in enumerate(missing, 1):
            _build_one(go, step, f"[{i}/{len(missing)}]", log)
        if missing:
            log(f"all builds done in {_fmt(time.monotonic() - t0)}")
    return b


def _build_one(go: str, step: _Step, prefix: str, log) -> None:
    step.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{step.output.name}.", suffix=".tmp", dir=step.output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [go, "build", "-trimpath", "-ldflags", step.ldflags, "-o", str(tmp), step.package]
    env = dict(os.environ, CGO_ENABLED="0")
    shown = shlex.join(["go", *cmd[1:]])
    log(f"{prefix} building {step.name} -> {step.output} (cd {step.module_dir} && CGO_ENABLED=0 {shown})")
    start = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            log(f"{prefix} still building {step.name}... {_fmt(time.monotonic() - start)} elapsed")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run(
                cmd,
                cwd=step.module_dir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,  # a failed build is reported below with the tail of its output
            )
            out.seek(0)
            output = out.read().decode(errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(output.splitlines()[-60:])
            raise BuildFailed(f"building {step.name} failed (exit {proc.returncode}):\n{tail}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, step.output)
    finally:
        done.set()
        beat.join()
        tmp.unlink(missing_ok=True)
    log(f"{prefix} built {step.name} in {_fmt(time.monotonic() - start)}")


# -- extra tools for the tests (not part of the control plane) -----------------------------------------


@dataclass(frozen=True)
class _Tool:
    module_dir: str  # under hack/go
    module: str  # the pinned module whose version names the cache directory
    package: str
    ldflags: str  # "{version}" is replaced


#: Tools built on demand from their own module in hack/go, cached like the control plane's binaries:
#: kstatus (tests/integration/test_kstatus.py) and helm (tests/e2e/test_deploy_helm.py).
TOOLS: dict[str, _Tool] = {
    "kstatus": _Tool("kstatus", "sigs.k8s.io/cli-utils", ".", "-s -w"),
    "helm": _Tool(
        "helm",
        "helm.sh/helm/v3",
        "helm.sh/helm/v3/cmd/helm",
        "-s -w -X helm.sh/helm/v3/internal/version.version={version}",
    ),
}


def tool_path(name: str) -> Path:
    """Where tool `name` lives in the cache: bin/<name>-<version>/<name>, the version from its go.mod."""
    tool = TOOLS[name]
    version = _version_from(tool.module_dir, tool.module)
    return cache_dir() / "bin" / f"{name}-{version}" / name


def build_tool(name: str, *, quiet: bool = False) -> Path:
    """Build tool `name` unless it is cached; return its path.  GoUnavailable if it must be built without Go."""
    path = tool_path(name)
    if _is_executable(path):
        return path
    tool = TOOLS[name]
    log = (lambda _msg: None) if quiet else _log
    go = find_go()
    lock_path = cache_dir() / "bin" / ".build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building into {lock_path.parent}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_executable(path):
            version = _version_from(tool.module_dir, tool.module)
            step = _Step(
                f"{name} {version}",
                hack_dir() / tool.module_dir,
                tool.package,
                tool.ldflags.format(version=version),
                path,
            )
            _build_one(go, step, "[1/1]", log)
    return path
