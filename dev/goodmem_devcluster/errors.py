"""The two exceptions of the local control plane."""

from __future__ import annotations

import subprocess

__all__ = ["ControlPlaneError", "KubectlError"]


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready (the message carries its log tail), or the control plane is
    not in a state that allows the call (not started, already running)."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; the message carries its stderr (and the start of its stdout)."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}\nstdout: {(self.stdout or '').strip()[:2000]}"
        )
