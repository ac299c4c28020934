"""The one place the operator reaches into kopf's private modules.

kopf is pinned to one minor release (pyproject.toml); `tests/unit/test_kopf_compat.py` fails loudly when
the installed kopf is another one or when what is used here changed shape, so an upgrade is a deliberate
change made here, never a surprise somewhere else. Everything else uses kopf's public API only
(import-linter checks it: `make lint`).
"""

from __future__ import annotations

from kopf._core.reactor.inventory import (  # kopf.run(memories=...) takes one; not re-exported
    ResourceMemories,
    ResourceMemory,  # what ResourceMemories.recall returns
)

#: The kopf minor release the private names above were checked against.
KOPF_MINOR = "1.45"

__all__ = ["KOPF_MINOR", "ResourceMemories", "ResourceMemory"]
