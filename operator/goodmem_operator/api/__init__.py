"""API types of the `LLM` custom resource and their mapping to the registry.

The pydantic models in `types` are the single source of truth: the CRD in
`crds/` is generated from them (`python -m goodmem_operator.api.crd`).
"""

from goodmem_operator.api.types import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    LLMSpec,
    LLMStatus,
)

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "LLMSpec", "LLMStatus"]
