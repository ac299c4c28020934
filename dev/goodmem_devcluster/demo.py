"""`make demo`: the main job on the embedded default, end to end on this machine.

Builds (first run only, with progress) and starts a local kube-apiserver +
etcd, starts the GoodMem registry emulator, installs the CRD, runs the
operator, applies every manifest in examples/, waits until each LLM is
Ready, prints `kubectl get llms -o wide` and the registry's view, then tears
everything down (or, with --keep, leaves it running and says how to use it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from goodmem_devcluster.controlplane import ControlPlane
from goodmem_devcluster.gobuild import binaries, build
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "goodmem-demo"


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


# C901 excepted: the demo is a script read top to bottom (start, apply, wait, show, stop), kept in one piece.
def main(argv: list[str] | None = None) -> int:  # noqa: C901
    p = argparse.ArgumentParser(prog="goodmem-demo", description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="leave the control plane, emulator and operator running")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the examples to be Ready")
    args = p.parse_args(argv)

    started = time.monotonic()
    if not binaries().all_present():
        say("building etcd, kube-apiserver and kubectl from their Go modules (first run only; progress below)")
    build()
    if args.keep:
        from goodmem_devcluster.__main__ import default_state_dir

        cp = ControlPlane(state_dir=default_state_dir(), keep_state=True, detached=True)
    else:
        cp = ControlPlane()  # a temporary state dir, removed on stop
    say("starting the local control plane (etcd + kube-apiserver on loopback)")
    cp.start()
    emu = op = None
    ok = False
    try:
        emu = EmulatorProcess(Path(cp.state_dir) / "logs" / "emulator.log").start()
        say(f"registry emulator at {emu.base_url}")
        cp.install_crds(ROOT / "crds")
        op = OperatorProcess(
            Path(cp.state_dir) / "logs" / "operator.log",
            kubeconfig=cp.kubeconfig_path,
            base_url=emu.base_url,
            api_key=emu.api_key,
            extra_args=["--verbose"],
        ).start()
        say(f"operator running (pid {op.pid}, log {op.log_path})")
        cp.kubectl("create", "namespace", NAMESPACE)
        for manifest in sorted((ROOT / "examples").glob("*.yaml")):
            say(f"kubectl apply -f examples/{manifest.name}")
            cp.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))
        deadline = time.monotonic() + args.timeout
        while True:
            items = json.loads(cp.kubectl("-n", NAMESPACE, "get", "llms", "-o", "json").stdout)["items"]
            ready = [
                i
                for i in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (i.get("status") or {}).get("conditions") or []
                )
            ]
            if items and len(ready) == len(items):
                break
            if time.monotonic() > deadline:
                print(cp.kubectl("-n", NAMESPACE, "get", "llms", "-o", "wide").stdout)
                say(f"not all LLMs became Ready within {args.timeout:g}s")
                return 1
            time.sleep(0.5)
        say(f"all {len(items)} LLMs Ready ({time.monotonic() - started:.1f}s since start)")
        print(cp.kubectl("-n", NAMESPACE, "get", "llms", "-o", "wide").stdout, flush=True)
        say("the registry's view (GET /v1/llms through the emulator):")
        for rec in sorted(emu.records(), key=lambda r: r["displayName"]):
            labels = {k: v for k, v in (rec.get("labels") or {}).items()}
            print(
                f"  {rec['llmId']}  {rec['providerType']:<14} {rec['modelIdentifier']:<36} "
                f"credentials-fp={str(rec.get('credentialsFingerprint'))[:12]}  labels={labels}"
            )
        ok = True
        if args.keep:
            say("kept running. Point kubectl at it with:")
            print(f"export KUBECONFIG={cp.kubeconfig_path}")
            print(f"# kubectl: {cp.kubectl_path}; registry: {emu.base_url} (admin key {emu.admin_key})")
            print(f"# stop everything: kill {op.pid} {emu.pid} && {sys.executable} -m goodmem_devcluster down")
            return 0
        return 0
    finally:
        if not (args.keep and ok):
            say("tearing down")
            if op is not None:
                op.stop()
            if emu is not None:
                emu.stop()
            cp.stop()


if __name__ == "__main__":
    sys.exit(main())
