"""The registry's update rules as a pure function, for the mapping tests."""

from __future__ import annotations

from typing import Any


def apply_update(observed: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """What the registry holds after `update`, by the contract's update rules: a model of the registry the
    property tests check the operator's diff against (test-only, so it lives here, not in the operator)."""
    result = dict(observed)
    for key, value in update.items():
        if key == "replaceLabels":
            result["labels"] = dict(value)
        elif key == "mergeLabels":
            result["labels"] = {**(result.get("labels") or {}), **value}
        elif key == "supportedModalities" and not value:
            continue
        else:
            result[key] = value
    return result
