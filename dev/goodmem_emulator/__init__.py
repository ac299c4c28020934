"""A faithful in-process emulator of the GoodMem LLM registry (``/v1/llms``).

See ``README.md`` beside this file for the contract choices it makes.
"""

from ._emulator import Emulator
from ._store import LLMStore, Principal, owner_id_for_key
from ._validation import (
    ValidationError,
    canonicalize_url,
    credentials_fingerprint,
)

__all__ = [
    "Emulator",
    "LLMStore",
    "Principal",
    "ValidationError",
    "canonicalize_url",
    "credentials_fingerprint",
    "owner_id_for_key",
]
