"""Run one container of a Deployment's pod template with podman, as a kubelet would run it (there is no kubelet here).

`PodTemplate.parse` reads the Deployment strictly: every securityContext field, volume kind and env source it
meets must be one it knows how to reproduce, so a change to deploy/ cannot be silently left out of the run.
`PodRun` then gives the container what a pod gets:

- the securityContext: `--user uid:gid` (+ fsGroup as a supplementary group), `--read-only` (no tmpfs of
  podman's own), `--cap-drop` (ALL), `no-new-privileges`, the runtime's default seccomp profile;
- resources.limits as `--memory` and `--cpus`;
- env from the ConfigMaps of `envFrom`, then `env` (which wins, as in Kubernetes), then what the kubelet adds
  (KUBERNETES_SERVICE_HOST/PORT; no service links: the Deployment turns them off);
- Secret volumes as files (mode `defaultMode`, group fsGroup), emptyDir{medium: Memory} as a tmpfs of its
  sizeLimit, and the ServiceAccount's token, ca.crt and namespace at /var/run/secrets/kubernetes.io/serviceaccount;
- `--network host`, so the container reaches the local API server and the registry emulator on loopback.

The objects come from the API server (`get(kind, name)`), so what runs is what `kubectl apply -k` stored.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .image import Engine

__all__ = ["SA_MOUNT", "PodRun", "PodTemplate", "UnsupportedPodSpec", "memory_bytes"]

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The securityContext fields this runner reproduces (PodTemplate.security_args); any other is refused.
_POD_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
_CONTAINER_SECURITY = {
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "privileged",
    "capabilities",
    "seccompProfile",
}
_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


class UnsupportedPodSpec(ValueError):
    """The pod template asks for something this runner does not reproduce."""


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("384Mi", "16Mi", "1G", "512") in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G|)", str(quantity))
    if not m:
        raise UnsupportedPodSpec(f"memory quantity {quantity!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def cpus(quantity: str) -> str:
    """A Kubernetes CPU quantity ("500m", "2") as podman's --cpus."""
    q = str(quantity)
    return f"{int(q[:-1]) / 1000:g}" if q.endswith("m") else f"{float(q):g}"


def _only(what: str, mapping: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(mapping) - known
    if unknown:
        raise UnsupportedPodSpec(f"{what}: {sorted(unknown)} not reproduced by this runner")


def _check_security(security: Mapping[str, Any]) -> None:
    if "seccompProfile" in security and security["seccompProfile"] != {"type": "RuntimeDefault"}:
        raise UnsupportedPodSpec(f"seccompProfile {security['seccompProfile']}: only RuntimeDefault (podman's default)")
    if security.get("privileged"):
        raise UnsupportedPodSpec("privileged")
    _only("capabilities", security.get("capabilities") or {}, {"drop"})
    if security.get("runAsNonRoot") and not security.get("runAsUser"):
        raise UnsupportedPodSpec("runAsNonRoot needs a runAsUser here (the image's USER is not read)")


#: The downward API's pod fields this runner fills in (`fieldRef.fieldPath`).
_FIELDS = {"metadata.namespace", "metadata.name"}


def _check_sources(ctr: Mapping[str, Any], pod: Mapping[str, Any]) -> None:
    """env values or the downward API's metadata fields, envFrom ConfigMaps only, Secret and in-memory emptyDir
    volumes only."""
    for env in ctr.get("env") or []:
        source = env.get("valueFrom")
        if source is not None and (set(source) != {"fieldRef"} or source["fieldRef"].get("fieldPath") not in _FIELDS):
            raise UnsupportedPodSpec(f"env {env['name']}: valueFrom {source}")
    for source in ctr.get("envFrom") or []:
        _only("envFrom", source, {"configMapRef"})
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds == {"emptyDir"}:
            _only("emptyDir", volume["emptyDir"], {"medium", "sizeLimit"})
            if volume["emptyDir"].get("medium") != "Memory":
                raise UnsupportedPodSpec(f"emptyDir {volume['name']}: only medium Memory (a tmpfs)")
        elif kinds == {"secret"}:
            _only("secret volume", volume["secret"], {"secretName", "defaultMode"})
        else:
            raise UnsupportedPodSpec(f"volume {volume['name']}: {sorted(kinds)}")


@dataclass(frozen=True)
class PodTemplate:
    """What a Deployment's pod template asks of one container, checked field by field."""

    namespace: str
    container: dict[str, Any]
    pod: dict[str, Any]
    security: dict[str, Any]  # the container's securityContext over the pod's

    @classmethod
    def parse(cls, deployment: Mapping[str, Any], container: str = "operator") -> PodTemplate:
        pod = dict(deployment["spec"]["template"]["spec"])
        [ctr] = [c for c in pod["containers"] if c["name"] == container]
        if pod.get("initContainers") or len(pod["containers"]) != 1:
            raise UnsupportedPodSpec("one container and no init containers")
        pod_sec = pod.get("securityContext") or {}
        ctr_sec = ctr.get("securityContext") or {}
        _only("pod securityContext", pod_sec, _POD_SECURITY)
        _only("container securityContext", ctr_sec, _CONTAINER_SECURITY)
        security = {**pod_sec, **ctr_sec}
        _check_security(security)
        _check_sources(ctr, pod)
        return cls(
            namespace=deployment["metadata"].get("namespace", "default"), container=ctr, pod=pod, security=security
        )

    @property
    def user(self) -> str:
        uid = self.security.get("runAsUser")
        gid = self.security.get("runAsGroup")
        return f"{uid}:{gid}" if gid is not None else str(uid)

    def security_args(self) -> list[str]:
        args = ["--user", self.user] if self.security.get("runAsUser") is not None else []
        if self.pod.get("securityContext", {}).get("fsGroup") is not None:
            args += ["--group-add", str(self.pod["securityContext"]["fsGroup"])]
        if self.security.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if self.security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        for cap in (self.security.get("capabilities") or {}).get("drop") or []:
            args += ["--cap-drop", cap]
        return args

    def resource_args(self) -> list[str]:
        limits = (self.container.get("resources") or {}).get("limits") or {}
        args = []
        if "memory" in limits:
            args += ["--memory", str(memory_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", cpus(limits["cpu"])]
        return args

    def ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.container.get("ports") or []}


Getter = Callable[[str, str], Mapping[str, Any]]  # (kind, name) -> the object, from the API server


@dataclass
class PodRun:
    """One run of a PodTemplate's container with podman. `start`, then `stop` (podman rm -f, by name)."""

    template: PodTemplate
    engine: Engine
    image: str
    name: str
    workdir: Path  # where the Secret volumes and the ServiceAccount files are written
    get: Getter
    kubelet_env: dict[str, str] = field(default_factory=dict)  # KUBERNETES_SERVICE_HOST/PORT
    sa_token: str = ""
    ca_cert: bytes = b""
    started: bool = False

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in self.template.container.get("envFrom") or []:
            data = self.get("configmap", source["configMapRef"]["name"]).get("data") or {}
            env.update({str(k): str(v) for k, v in data.items()})
        fields = {"metadata.namespace": self.template.namespace, "metadata.name": self.name}
        for item in self.template.container.get("env") or []:
            source = item.get("valueFrom")
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]] if source else str(item.get("value", ""))
        env.update(self.kubelet_env)
        return env

    def _group_owned(self, path: Path, mode: int) -> None:
        path.chmod(mode)
        fs_group = (self.template.pod.get("securityContext") or {}).get("fsGroup")
        if fs_group is not None:
            if os.geteuid() == 0:
                os.chown(path, 0, int(fs_group))
            else:  # rootless podman: the host user is the container's root
                subprocess.run(
                    self.engine.command("unshare", "chown", f"0:{fs_group}", str(path)),
                    env=self.engine.env(),
                    check=True,
                    capture_output=True,
                )

    def volume_args(self) -> list[str]:
        """Mounts for every volumeMount, and the ServiceAccount's files; their contents written under workdir."""
        volumes = {v["name"]: v for v in self.template.pod.get("volumes") or []}
        args: list[str] = []
        for mount in self.template.container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            ro = ":ro" if mount.get("readOnly") else ""
            if "emptyDir" in volume:
                spec = volume["emptyDir"]
                size = f",size={memory_bytes(spec['sizeLimit'])}" if "sizeLimit" in spec else ""
                args += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777{size}"]
                continue
            secret = volume["secret"]
            folder = self.workdir / "volumes" / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            self._group_owned(folder, 0o750)
            data = self.get("secret", secret["secretName"]).get("data") or {}
            for key, value in data.items():
                path = folder / key
                path.write_bytes(base64.b64decode(value))
                self._group_owned(path, int(secret.get("defaultMode", 0o644)))
            args += ["-v", f"{folder}:{mount['mountPath']}{ro}"]
        if self.template.pod.get("automountServiceAccountToken", True) and self.sa_token:
            folder = self.workdir / "serviceaccount"
            folder.mkdir(parents=True, exist_ok=True)
            self._group_owned(folder, 0o750)
            for key, content in (
                ("token", self.sa_token.encode()),
                ("ca.crt", self.ca_cert),
                ("namespace", self.template.namespace.encode()),
            ):
                (folder / key).write_bytes(content)
                self._group_owned(folder / key, 0o640 if key == "token" else 0o644)
            args += ["-v", f"{folder}:{SA_MOUNT}:ro"]
        return args

    def run_args(self) -> list[str]:
        """`podman run` arguments (after `run`), the image and the container's args included."""
        env_args = [arg for key, value in sorted(self.environment().items()) for arg in ("--env", f"{key}={value}")]
        return [
            "--detach",
            "--name",
            self.name,
            "--network",
            "host",
            "--log-driver",
            "k8s-file",
            *self.template.security_args(),
            *self.template.resource_args(),
            *self.volume_args(),
            *env_args,
            self.image,
            *(self.template.container.get("args") or []),
        ]

    def start(self) -> PodRun:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = self.run_args()
        self.started = True  # from here on, stop() removes it whatever happens
        self.engine.run("run", *args, timeout=120)
        return self

    def running(self) -> bool:
        res = self.engine.run("container", "inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return res.stdout.strip() == "true"

    def logs(self) -> str:
        res = self.engine.run("logs", self.name, check=False, timeout=60)
        return res.stdout + res.stderr

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.engine.run("exec", self.name, *argv, check=False, timeout=60)

    def stop(self) -> None:
        """`podman rm -f` the container (by name) and remove the files written for it."""
        if self.started:
            self.engine.run("rm", "--force", "--time", "10", self.name, check=False, timeout=120)
        shutil.rmtree(self.workdir, ignore_errors=True)
