"""A local Kubernetes control plane (etcd + kube-apiserver built from source) for tests and benchmarks.

See README.md in this directory.
"""

from .controlplane import ADMIN_GROUPS, ADMIN_USER, ControlPlane, ControlPlaneError, KubectlError
from .gobuild import (
    ETCD_VERSION,
    KUBERNETES_VERSION,
    Binaries,
    BuildFailed,
    GoUnavailable,
    binaries,
    build,
    cache_dir,
    find_go,
    hack_dir,
)

__all__ = [
    "ADMIN_GROUPS",
    "ADMIN_USER",
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "Binaries",
    "BuildFailed",
    "ControlPlane",
    "ControlPlaneError",
    "GoUnavailable",
    "KubectlError",
    "binaries",
    "build",
    "cache_dir",
    "find_go",
    "hack_dir",
]
