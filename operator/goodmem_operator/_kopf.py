"""The one place the operator reaches into kopf's private modules.

kopf is pinned to one minor release (pyproject.toml); `tests/unit/test_kopf_compat.py` fails loudly when
the installed kopf is another one or when what is used here changed shape, so an upgrade is a deliberate
change made here, never a surprise somewhere else. Everything else uses kopf's public API only
(import-linter checks it: `make lint`).
"""

from __future__ import annotations

from collections.abc import Callable

from kopf._cogs.structs.references import (  # kopf's namespace observation: what revise_namespaces works on
    Insights,
    NamespaceName,
    NamespacePattern,
    match_namespace,
)
from kopf._core.reactor import observation as _observation
from kopf._core.reactor.inventory import (  # kopf.run(memories=...) takes one; not re-exported
    ResourceMemories,
    ResourceMemory,  # what ResourceMemories.recall returns
)

#: The kopf minor release the private names above were checked against.
KOPF_MINOR = "1.45"

__all__ = [
    "KOPF_MINOR",
    "Insights",
    "NamespaceName",
    "NamespacePattern",
    "ResourceMemories",
    "ResourceMemory",
    "match_namespace",
    "replace_namespace_revision",
]


def replace_namespace_revision(revise: Callable[..., None]) -> None:
    """Make kopf's namespace observation decide with `revise` which namespaces have watch streams.

    kopf's namespace observer calls `observation.revise_namespaces(insights=, namespaces=, raw_events=|raw_bodies=)`
    by its module-global name for its startup listing and for every namespace event; `revise` takes the same
    keywords and updates `insights.namespaces`. kopf has no public setting for it (goodmem_operator.watching says
    why the operator needs its own). Process-wide: call it once, before `kopf.run`.
    """
    _observation.revise_namespaces = revise
