#!/usr/bin/env python3
"""Issue #16 part 5: run the operator's Deployment as a real pod, on a real kubelet, on this machine.

Run as root from the repository's venv (`sudo .venv/bin/python hack/kubelet_experiment.py [--keep-seconds N]`).
Everything lives in one temporary directory and is stopped by pid (and unmounted) at the end:

- containerd (Debian's package, 1.6) with its own config, root, state and socket in the temp dir, runc as runtime,
  cgroupfs; a CNI bridge config (Debian's containernetworking-plugins) only so that the runtime reports its network
  ready and the Node turns Ready; the operator's pod itself uses hostNetwork;
- a pause image made here (a static C `pause`, `podman import`), since registry.k8s.io is not reachable;
- the operator image from podman (`make image`: localhost/goodmem-operator:0.1.0), `podman save` | `ctr import`;
- the dev control plane with kube-controller-manager running the deployment, replicaset and root-CA publisher
  controllers too, and the ServiceAccount admission plugin ON (the pod gets its token volume as in a cluster);
- kube-scheduler and kubelet (v1.34.4, built from hack/go/kube like kube-apiserver), the kubelet as
  system:node:<name> (group system:nodes, bound to the bootstrap ClusterRole system:node: no Node authorizer here);
- the registry emulator on loopback, the CRD, `kubectl apply -k` of an overlay of deploy/overlays/cluster-wide that
  sets the image, the emulator's URL and key, hostNetwork, one replica, free host ports, and
  KUBERNETES_SERVICE_HOST=127.0.0.1 (no kube-proxy: the `kubernetes` Service's ClusterIP leads nowhere);
- then the examples are applied and the script waits until every LLM is Ready.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goodmem_devcluster import components
from goodmem_devcluster.controlplane import ControlPlane
from goodmem_devcluster.gobuild import binaries, build
from goodmem_devcluster.stack import EmulatorProcess

ROOT = Path(__file__).resolve().parents[1]
KUBELET = binaries().kubelet
SCHEDULER = binaries().kube_scheduler
NODE = "goodmem-node"
IMAGE = "localhost/goodmem-operator:0.1.0"  # --image
PAUSE = "localhost/goodmem-pause:3.10"
NAMESPACE = "goodmem-system"
EXAMPLES_NS = "kubelet-demo"
EXTRA_CONTROLLERS = (
    "deployment-controller,replicaset-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller"
)

PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {.sa_handler = down}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL); sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
"""


def say(msg: str) -> None:
    print(f"==> [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*cmd: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


class Procs:
    """Child processes started by this script, stopped by pid in reverse order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], log: Path, **kw) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.items.append((name, proc))
        say(f"{name} started, pid {proc.pid}, log {log}")
        return proc

    def stop(self, name: str) -> None:
        for n, proc in reversed(self.items):
            if n == name and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                say(f"{name} (pid {proc.pid}) stopped")

    def stop_all(self) -> None:
        for name, _ in reversed(self.items):
            self.stop(name)


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def containerd_config(t: Path) -> Path:
    c = t / "containerd"
    for d in ("root", "state"):
        (c / d).mkdir(parents=True)
    (t / "cni").mkdir()
    (t / "cni" / "10-bridge.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "goodmem-kubelet",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "gmkub0",
                        "isGateway": True,
                        "ipMasq": False,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": "10.244.77.0/24"}]],
                            "dataDir": str(t / "cni-ipam"),
                        },
                    }
                ],
            }
        )
    )
    cfg = c / "config.toml"
    cfg.write_text(
        f"""version = 2
root = "{c}/root"
state = "{c}/state"
[grpc]
  address = "{c}/containerd.sock"
[ttrpc]
  address = "{c}/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  enable_selinux = false
  # No CAP_SYS_RESOURCE here: lowering oom_score_adj (the sandbox asks for -998) makes runc fail with
  # "can't get final child's PID from pipe: EOF". Clamp it to containerd's own instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{t}/cni"
"""
    )
    return cfg


def images(t: Path, ctr: list[str], image: str) -> None:
    """The pause image (made here) and the operator image (from podman) into containerd's k8s.io namespace."""
    d = t / "images"
    d.mkdir()
    (d / "pause.c").write_text(PAUSE_C)
    run("gcc", "-Os", "-static", "-o", str(d / "pause"), str(d / "pause.c"))
    run("tar", "-C", str(d), "-cf", str(d / "pause-rootfs.tar"), "pause")
    run("podman", "import", "--change", 'ENTRYPOINT=["/pause"]', str(d / "pause-rootfs.tar"), PAUSE)
    try:
        run("podman", "save", "-o", str(d / "pause.tar"), PAUSE)
    finally:
        subprocess.run(["podman", "rmi", PAUSE], capture_output=True, check=False)
    run("podman", "save", "-o", str(d / "operator.tar"), image)
    for tar in ("pause.tar", "operator.tar"):
        run(*ctr, "images", "import", str(d / tar))
        (d / tar).unlink()
    say("images in containerd: " + " ".join(run(*ctr, "images", "ls", "-q").stdout.split()))


def kubelet_config(t: Path, cp: ControlPlane, sock: Path) -> Path:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(cp.ca_cert_path)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{sock}",
        "podLogsDir": str(t / "kubelet" / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": True,
    }
    path = t / "kubelet" / "config.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # YAML is a superset of JSON
    return path


def overlay(t: Path, cp: ControlPlane, emu: EmulatorProcess, image: str) -> Path:
    o = t / "overlay"
    o.mkdir()
    metrics, health = free_port(), free_port()
    (o / "api-key").write_text(emu.api_key)
    (o / "kustomization.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(ROOT / "deploy" / "overlays" / "cluster-wide", o)],
                "images": [
                    {"name": "goodmem-operator", "newName": image.rsplit(":", 1)[0], "newTag": image.rsplit(":", 1)[1]}
                ],
                "configMapGenerator": [
                    {
                        "name": "goodmem-operator-config",
                        "behavior": "merge",
                        "literals": [f"GOODMEM_BASE_URL={emu.base_url}", f"GOODMEM_METRICS_PORT={metrics}"],
                    }
                ],
                "secretGenerator": [
                    {"name": "goodmem-operator-registry", "behavior": "replace", "files": ["api-key=api-key"]}
                ],
                "patches": [
                    {
                        # hostNetwork (and its host ports) is what "restricted" forbids: for this experiment only,
                        # the namespace enforces nothing, and the violations are still reported (warn/audit).
                        "target": {"kind": "Namespace", "name": NAMESPACE},
                        "patch": json.dumps(
                            [
                                {
                                    "op": "replace",
                                    "path": "/metadata/labels/pod-security.kubernetes.io~1enforce",
                                    "value": "privileged",
                                },
                                {
                                    "op": "add",
                                    "path": "/metadata/labels/pod-security.kubernetes.io~1warn",
                                    "value": "restricted",
                                },
                            ]
                        ),
                    },
                    {
                        "target": {"kind": "Deployment", "name": "goodmem-operator"},
                        "patch": json.dumps(
                            [
                                {"op": "replace", "path": "/spec/replicas", "value": 1},
                                {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
                                {
                                    "op": "replace",
                                    "path": "/spec/template/spec/containers/0/args/0",
                                    "value": f"--liveness=http://0.0.0.0:{health}/healthz",
                                },
                                {
                                    "op": "replace",
                                    "path": "/spec/template/spec/containers/0/ports",
                                    "value": [
                                        {"name": "health", "containerPort": health, "protocol": "TCP"},
                                        {"name": "metrics", "containerPort": metrics, "protocol": "TCP"},
                                    ],
                                },
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/containers/0/env/-",
                                    "value": {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                                },
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/containers/0/env/-",
                                    "value": {"name": "KUBERNETES_SERVICE_PORT", "value": str(cp.apiserver_port)},
                                },
                            ]
                        ),
                    },
                ],
            },
            indent=1,
        )
    )
    return o


def container_log(t: Path, pod: str, lines: int) -> None:
    """The last lines of the operator container's log, as the kubelet wrote it (the API server cannot reach the
    kubelet for `kubectl logs`: it has no kubelet client certificate here)."""
    for log in sorted((t / "kubelet" / "pod-logs").glob(f"{NAMESPACE}_{pod}_*/operator/*.log")):
        tail = log.read_text().splitlines()[-lines:]
        say(f"the container's log ({log.parent.parent.name}/operator/{log.name}), last {len(tail)} lines:")
        print("\n".join(tail), flush=True)


def unmount_under(t: Path) -> None:
    """Unmount everything below t (deepest first): kubelet's volume tmpfs, containerd's rootfs and shm mounts."""
    for _ in range(3):
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        ours = sorted((m for m in mounts if m.startswith(str(t) + "/")), key=len, reverse=True)
        if not ours:
            return
        for m in ours:
            subprocess.run(["umount", m], capture_output=True, check=False)
    left = [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(t) in line]
    if left:
        say("STILL MOUNTED:\n" + "\n".join(left))


def main() -> int:  # noqa: C901 - an experiment read top to bottom
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep-seconds", type=float, default=0, help="keep everything running this long at the end")
    p.add_argument("--image", default=IMAGE, help=f"the operator image in podman's store (default {IMAGE})")
    args = p.parse_args()
    image = args.image
    if os.geteuid() != 0:
        print("needs root (containerd, mounts)", file=sys.stderr)
        return 2
    build(controller_manager=True, node=True)  # kubelet and kube-scheduler too: from hack/go/kube, cached
    t = Path(tempfile.mkdtemp(prefix="goodmem-kubelet."))
    (t / "logs").mkdir()
    procs = Procs()
    cp = emu = None
    ctr: list[str] = []
    ok = False
    try:
        cfg = containerd_config(t)
        sock = t / "containerd" / "containerd.sock"
        procs.start("containerd", ["/usr/bin/containerd", "--config", str(cfg)], t / "logs" / "containerd.log")
        wait_for("containerd's socket", sock.exists, 30, 0.2)
        ctr = ["ctr", "-a", str(sock), "-n", "k8s.io"]
        images(t, ctr, image)

        # the control plane, with the ServiceAccount admission plugin on (token volumes as in a cluster)
        orig = components.apiserver_args
        components.apiserver_args = lambda *a, **k: [  # type: ignore[assignment]
            x for x in orig(*a, **k) if x != "--disable-admission-plugins=ServiceAccount"
        ]
        cp = ControlPlane(
            t / "cp",
            controller_manager=True,
            extra_controller_manager_args=[f"--controllers={EXTRA_CONTROLLERS}"],
        )
        cp.start()
        say(f"control plane at {cp.server_url}")
        cp.kubectl("create", "clusterrolebinding", "goodmem-nodes", "--clusterrole=system:node", "--group=system:nodes")

        sched_kc = cp.kubeconfig_for_user("system:kube-scheduler")
        (t / "scheduler").mkdir()
        procs.start(
            "kube-scheduler",
            [
                str(SCHEDULER),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={t / 'scheduler'}",
                "--leader-elect=false",
            ],
            t / "logs" / "kube-scheduler.log",
        )

        (t / "kubelet").mkdir()
        node_kc = cp.kubeconfig_for_user(f"system:node:{NODE}", ["system:nodes"])
        kcfg = kubelet_config(t, cp, sock)
        procs.start(
            "kubelet",
            [
                str(KUBELET),
                f"--config={kcfg}",
                f"--kubeconfig={node_kc}",
                f"--root-dir={t / 'kubelet' / 'root'}",
                f"--cert-dir={t / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE}",
                "--v=2",
            ],
            t / "logs" / "kubelet.log",
        )

        def node_ready() -> bool:
            r = cp.kubectl("get", "node", NODE, "-o", "json", check=False)
            if r.returncode != 0:
                return False
            conds = json.loads(r.stdout)["status"].get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        t0 = time.monotonic()
        wait_for(f"node {NODE} Ready", node_ready, 120)
        say(f"node {NODE} Ready after {time.monotonic() - t0:.1f}s")
        print(cp.kubectl("get", "nodes", "-o", "wide").stdout, flush=True)

        def untainted() -> bool:  # the kubelet registers with not-ready:NoSchedule; node-lifecycle-controller lifts it
            return not json.loads(cp.kubectl("get", "node", NODE, "-o", "json").stdout)["spec"].get("taints")

        wait_for(f"node {NODE} without taints", untainted, 60)
        say(f"node {NODE} untainted")

        emu = EmulatorProcess(t / "logs" / "emulator.log").start()
        say(f"registry emulator at {emu.base_url}")
        cp.install_crds(ROOT / "crds", server_side=True)
        o = overlay(t, cp, emu, image)
        cp.kubectl("apply", "-k", str(o))
        t0 = time.monotonic()

        def pod_running() -> str | None:
            r = cp.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json")
            for pod in json.loads(r.stdout)["items"]:
                st = pod.get("status") or {}
                cs = st.get("containerStatuses") or []
                if st.get("phase") == "Running" and cs and all(c.get("ready") for c in cs):
                    return str(pod["metadata"]["name"])
            return None

        try:
            pod = wait_for("the operator pod Running and ready", pod_running, 180, 2)
        finally:
            print(cp.kubectl("-n", NAMESPACE, "get", "deploy,rs,pods", "-o", "wide").stdout, flush=True)
            print(cp.kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout)
        say(f"pod {pod} Running and ready {time.monotonic() - t0:.1f}s after apply")
        spec = json.loads(cp.kubectl("-n", NAMESPACE, "get", "pod", pod, "-o", "json").stdout)["spec"]
        say("pod volumes: " + ", ".join(v["name"] for v in spec["volumes"]))

        cp.kubectl("create", "namespace", EXAMPLES_NS)
        for manifest in sorted((ROOT / "examples").glob("*.yaml")):
            cp.kubectl("-n", EXAMPLES_NS, "apply", "-f", str(manifest))
        t0 = time.monotonic()

        def all_ready() -> bool:
            items = json.loads(cp.kubectl("-n", EXAMPLES_NS, "get", "llms", "-o", "json").stdout)["items"]
            return bool(items) and all(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (i.get("status") or {}).get("conditions") or []
                )
                for i in items
            )

        try:
            wait_for("every example LLM Ready", all_ready, 120, 1)
        finally:
            print(cp.kubectl("-n", EXAMPLES_NS, "get", "llms", "-o", "wide").stdout, flush=True)
            container_log(t, pod, 40)
        say(f"all example LLMs Ready {time.monotonic() - t0:.1f}s after apply, reconciled by the pod")
        print(f"registry records: {len(emu.records())}")
        ok = True
        if args.keep_seconds:
            say(f"keeping everything for {args.keep_seconds:g}s: export KUBECONFIG={cp.kubeconfig_path}")
            time.sleep(args.keep_seconds)
        return 0
    finally:
        say("tearing down")
        if cp is not None and cp.is_running():
            # delete the pod through the API while the kubelet runs, so the kubelet stops its containers
            cp.kubectl("-n", NAMESPACE, "delete", "deployment", "goodmem-operator", "--wait=false", check=False)
            try:
                wait_for(
                    "the pods to go",
                    lambda: not json.loads(cp.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)["items"],
                    60,
                    1,
                )
            except Exception as exc:  # teardown goes on whatever went wrong
                say(f"pods did not go: {exc}")
        procs.stop("kubelet")
        procs.stop("kube-scheduler")
        if ctr:
            # whatever the kubelet left: kill the tasks, remove containers and sandboxes
            for cid in run(*ctr, "containers", "ls", "-q").stdout.split():
                subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", cid], capture_output=True, check=False)
                time.sleep(0.5)
                subprocess.run([*ctr, "tasks", "delete", cid], capture_output=True, check=False)
                subprocess.run([*ctr, "containers", "delete", cid], capture_output=True, check=False)
        if emu is not None:
            emu.stop()
        if cp is not None:
            if not ok:
                shutil.copytree(t / "cp" / "logs", t / "logs" / "cp", dirs_exist_ok=True)
            cp.stop()
        procs.stop("containerd")
        unmount_under(t)
        subprocess.run(["ip", "link", "delete", "gmkub0"], capture_output=True, check=False)
        if ok:
            shutil.rmtree(t, ignore_errors=True)
        else:
            say(f"FAILED; logs kept in {t / 'logs'} (remove {t} when done)")


if __name__ == "__main__":
    sys.exit(main())
