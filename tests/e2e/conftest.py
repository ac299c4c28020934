"""The e2e fixtures (control_plane, namespace, emulator, crds, operator, kube) live in tests/conftest.py,
shared with tests/reliability; the helpers are re-exported here for `from .conftest import ...`."""

from tests.conftest import (  # noqa: F401 - re-exports
    CREDENTIALS_LABELS,
    OPERATOR_NAMESPACE,
    ROOT,
    SENTINEL,
    TEAM_KEYS,
    Kube,
    free_port,
    llm_manifest,
    metrics_port,
    scrape_metrics,
    secret_manifest,
)
