"""Credentials from Kubernetes Secrets.

`resolve_credentials` turns the spec's credentials into the registry's
payload, reading a Secret only when `secretKeyRef` asks for it.  Values live
only in memory, only for Secrets some LLM references (`SecretCache`), and are
never put into an exception message.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any, Protocol

from goodmem_operator.api.mapping import registry_credentials
from goodmem_operator.api.types import Credentials


class CredentialError(Exception):
    """A credential that cannot be resolved.  Messages name Secrets and keys, never values."""

    reason = "SecretNotFound"
    permanent = False  # heals by itself when the Secret appears


class SecretNotFound(CredentialError):
    reason = "SecretNotFound"


class SecretKeyNotFound(CredentialError):
    reason = "SecretKeyNotFound"


class SecretNotAllowed(CredentialError):
    reason = "SecretNotAllowed"
    permanent = True


class SecretReader(Protocol):
    async def read(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's decoded data, or None when it does not exist."""


def secret_ref(credentials: Credentials | None, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the Kubernetes Secret these credentials read, if any."""
    if credentials is None or credentials.api_key is None or credentials.api_key.secret_key_ref is None:
        return None
    ref = credentials.api_key.secret_key_ref
    return (ref.namespace or namespace, ref.name)


async def resolve_credentials(
    credentials: Credentials | None, namespace: str, reader: SecretReader
) -> dict[str, Any] | None:
    """The registry `credentials` payload for the spec, reading the referenced Secret."""
    if credentials is None:
        return None
    value = None
    if credentials.api_key is not None and credentials.api_key.secret_key_ref is not None:
        ref = credentials.api_key.secret_key_ref
        if ref.namespace and ref.namespace != namespace:
            raise SecretNotAllowed(
                f"Secret {ref.namespace}/{ref.name} is in another namespace: an LLM may only use Secrets "
                f"of its own namespace ({namespace})"
            )
        data = await reader.read(namespace, ref.name)
        if data is None:
            raise SecretNotFound(f"Secret {namespace}/{ref.name} not found")
        if ref.key not in data:
            raise SecretKeyNotFound(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        value = data[ref.key]
    return registry_credentials(credentials, value)


def decode_secret_data(body: Any) -> dict[str, str]:
    """`data` (base64) and `stringData` of a Secret body, decoded.  Undecodable values are skipped."""
    out: dict[str, str] = {}
    for key, raw in ((body or {}).get("data") or {}).items():
        try:
            out[key] = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
    for key, raw in ((body or {}).get("stringData") or {}).items():
        out[key] = str(raw)
    return out


UNKNOWN: Any = object()  # `SecretCache.peek` of a Secret it holds nothing about (unlike data None: known not to exist)


@dataclass
class _Entry:
    data: dict[str, str] | None  # None: known not to exist


class SecretCache:
    """Decoded data of referenced Secrets, fed by Secret watch events, with a read-through fallback.

    Only Secrets that some LLM references are kept (the caller says which);
    everything else seen on the watch is dropped at once, so memory does not
    grow with unrelated Secrets.
    """

    def __init__(self, fallback: SecretReader | None = None) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._fallback = fallback

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, namespace: str, name: str, body: Any, *, deleted: bool, referenced: bool) -> None:
        key = (namespace, name)
        if not referenced:
            self._entries.pop(key, None)
        elif deleted:
            self._entries[key] = _Entry(None)
        else:
            self._entries[key] = _Entry(decode_secret_data(body))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def peek(self, namespace: str, name: str) -> Any:
        """The cached data (None: known not to exist), or UNKNOWN when nothing is cached; never reads."""
        entry = self._entries.get((namespace, name))
        return UNKNOWN if entry is None else entry.data

    def forget(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    async def read(self, namespace: str, name: str) -> dict[str, str] | None:
        entry = self._entries.get((namespace, name))
        if entry is not None and entry.data is not None:
            return entry.data
        if self._fallback is None:
            return None
        data = await self._fallback.read(namespace, name)
        self._entries[(namespace, name)] = _Entry(data)
        return data


class KubeSecretReader:
    """Reads a Secret through the Kubernetes API (the `kubernetes` client, in a worker thread)."""

    def __init__(self, core_v1: Any) -> None:
        self._api = core_v1

    async def read(self, namespace: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        def _get() -> dict[str, str] | None:
            try:
                secret = self._api.read_namespaced_secret(name, namespace, _preload_content=False)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise RuntimeError(f"reading Secret {namespace}/{name} failed: HTTP {exc.status}") from None
            import json

            return decode_secret_data(json.loads(secret.data))

        return await asyncio.to_thread(_get)
