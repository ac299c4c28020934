"""Talking to the control plane: the built kubectl, a kubernetes.client.ApiClient, and the audit log the API
server writes. Admin unless given another kubeconfig; a kubectl on PATH is never used.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import audit as _audit
from .errors import KubectlError
from .layout import Endpoints, Layout

__all__ = ["Clients"]

Kubeconfig = str | os.PathLike[str] | None


class Clients:
    """kubectl, the Python client and the audit log of one control plane (`kubectl_binary` built from hack/go/kube)."""

    def __init__(self, layout: Layout, endpoints: Endpoints, kubectl_binary: Path) -> None:
        self.layout = layout
        self.endpoints = endpoints
        self.kubectl_binary = kubectl_binary

    def kubectl_command(self, *args: str, kubeconfig: Kubeconfig = None) -> list[str]:
        """argv for the built kubectl against this control plane (admin unless `kubeconfig`)."""
        return [
            str(self.kubectl_binary),
            f"--kubeconfig={kubeconfig or self.layout.kubeconfig}",
            f"--cache-dir={self.layout.kubectl_cache}",
            *args,
        ]

    def kubectl_env(self, kubeconfig: Kubeconfig = None) -> dict[str, str]:
        """Environment for kubectl_command(): KUBECONFIG set, ~/.kube/kuberc ignored (KUBERC=off)."""
        return dict(os.environ, KUBECONFIG=str(kubeconfig or self.layout.kubeconfig), KUBERC="off")

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        kubeconfig: Kubeconfig = None,
        timeout: float | None = 120.0,
    ) -> subprocess.CompletedProcess[Any]:
        """Run the built kubectl (admin unless `kubeconfig` is given); output captured, text unless `input` is
        bytes. With check=True a non-zero exit raises KubectlError, whose message includes stderr."""
        cmd = self.kubectl_command(*args, kubeconfig=kubeconfig)
        text = not isinstance(input, bytes)
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=text,
            env=self.kubectl_env(kubeconfig),
            timeout=timeout,
            check=False,  # the exit code is turned into KubectlError below, with kubectl's stderr
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def api_client(self, kubeconfig: Kubeconfig = None) -> Any:
        """A kubernetes.client.ApiClient: admin by default, or from the given kubeconfig file."""
        import kubernetes.client
        import kubernetes.config

        if kubeconfig is not None:
            return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        cfg = kubernetes.client.Configuration(
            host=self.endpoints.server_url,
            ssl_ca_cert=str(self.layout.ca_cert),
            cert_file=str(self.layout.admin_cert),
            key_file=str(self.layout.admin_key),
        )
        return kubernetes.client.ApiClient(cfg)

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Audit events recorded so far (every write request at Metadata level)."""
        return _audit.read_audit_events(self.layout.audit_log)

    def writes_by_user(self) -> Counter[str]:
        """Write requests per user name, from the audit log."""
        return _audit.count_writes_by_user(self.audit_events())
