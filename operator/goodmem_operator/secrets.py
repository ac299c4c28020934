"""Credentials from Kubernetes Secrets.

`resolve_credentials` turns the spec's credentials into the registry's
payload, reading a Secret only when `secretKeyRef` asks for it.  A Secret is
used only when it opts in with the label `goodmem.ai/credentials: "true"`
(CREDENTIALS_LABEL): whoever may create an LLM must not make the operator send
any Secret of the namespace to the registry (a confused deputy).  Values live
only in memory, only for labelled Secrets some LLM references (`SecretCache`),
and are never put into an exception message.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import aiohttp

from goodmem_operator.api.mapping import registry_credentials
from goodmem_operator.api.types import Credentials
from goodmem_operator.kube import KubeApi, LoginFailed

CREDENTIALS_LABEL = "goodmem.ai/credentials"
CREDENTIALS_LABEL_VALUE = "true"
#: The label selector of the Secret watch and of every Secret read: unlabelled Secrets never reach the operator.
CREDENTIALS_SELECTOR = f"{CREDENTIALS_LABEL}={CREDENTIALS_LABEL_VALUE}"


class CredentialError(Exception):
    """A credential that cannot be resolved.  Messages name Secrets and keys, never values."""

    reason = "SecretNotFound"
    permanent = False  # heals by itself when the Secret appears


class SecretNotFound(CredentialError):
    reason = "SecretNotFound"


class SecretKeyNotFound(CredentialError):
    reason = "SecretKeyNotFound"


class SecretNotLabelled(CredentialError):
    """The Secret exists but has not opted in as credentials.  Heals when it is labelled (a Secret event)."""

    reason = "SecretNotLabelled"


class SecretNotAllowed(CredentialError):
    reason = "SecretNotAllowed"
    permanent = True


def opted_in(labels: Mapping[str, str] | None) -> bool:
    """Whether a Secret with these labels may be used as LLM credentials."""
    return (labels or {}).get(CREDENTIALS_LABEL) == CREDENTIALS_LABEL_VALUE


def label_command(namespace: str, name: str) -> str:
    """The exact command that lets a Secret be used as credentials."""
    return f"kubectl label secret -n {namespace} {name} {CREDENTIALS_SELECTOR}"


@dataclass(frozen=True)
class SecretData:
    """A Secret as credential resolution sees it: its labels, and its decoded data when it is labelled.

    A reader may leave `data` empty for a Secret that has not opted in (the Kubernetes reader never
    receives it); nothing reads `data` unless `opted_in`.
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    # Where it came from, for status.credentialsSecretVersion and the rotation metric; not part of its value.
    resource_version: str = field(default="", compare=False)
    observed_at: float | None = field(default=None, compare=False)  # monotonic: when a watch event brought it

    @property
    def opted_in(self) -> bool:
        return opted_in(self.labels)


class SecretReader(Protocol):
    async def read(self, namespace: str, name: str) -> SecretData | None:
        """The Secret's labels and decoded data, or None when it does not exist."""


@runtime_checkable
class _Closeable(Protocol):
    async def aclose(self) -> None: ...


async def read_secret_key(reader: SecretReader, namespace: str, name: str, key: str) -> str:
    """One key of a Secret the operator may use (labelled goodmem.ai/credentials=true); a CredentialError (never
    the value) otherwise."""
    return (await checked_secret(reader, namespace, name, key)).data[key]


async def checked_secret(reader: SecretReader, namespace: str, name: str, key: str) -> SecretData:
    """A Secret the operator may use (labelled goodmem.ai/credentials=true) that has `key`; a CredentialError
    (never a value) otherwise."""
    secret = await reader.read(namespace, name)
    if secret is None:
        raise SecretNotFound(f"Secret {namespace}/{name} not found")
    if not secret.opted_in:
        raise SecretNotLabelled(
            f"Secret {namespace}/{name} is not labelled {CREDENTIALS_SELECTOR}, so the operator does not "
            f"use it as credentials; to allow it, run: {label_command(namespace, name)}; the LLM heals as "
            f"soon as the label is set"
        )
    if key not in secret.data:
        raise SecretKeyNotFound(f"Secret {namespace}/{name} has no key {key!r}")
    return secret


async def resolve_credentials(
    credentials: Credentials | None, namespace: str, reader: SecretReader
) -> dict[str, Any] | None:
    """The registry `credentials` payload for the spec, reading the referenced Secret."""
    return (await resolve(credentials, namespace, reader))[0]


async def resolve(
    credentials: Credentials | None, namespace: str, reader: SecretReader
) -> tuple[dict[str, Any] | None, SecretData | None]:
    """The registry `credentials` payload for the spec, and the Secret it came from (secretKeyRef; else None)."""
    if credentials is None:
        return None, None
    value = None
    secret: SecretData | None = None
    if credentials.api_key is not None and credentials.api_key.secret_key_ref is not None:
        ref = credentials.api_key.secret_key_ref
        if ref.namespace and ref.namespace != namespace:
            raise SecretNotAllowed(
                f"Secret {ref.namespace}/{ref.name} is in another namespace: an LLM may only use Secrets "
                f"of its own namespace ({namespace})"
            )
        secret = await checked_secret(reader, namespace, ref.name, ref.key)
        value = secret.data[ref.key]
    return registry_credentials(credentials, value), secret


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


def secret_labels(body: Any) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("labels") or {})


UNKNOWN: Any = object()  # `SecretCache.peek` of a Secret it holds nothing about (unlike data None: known not to exist)
NOT_LABELLED: Any = object()  # `SecretCache.peek` of a Secret known to exist without the label (no data kept)


@dataclass
class _Entry:
    secret: SecretData | None  # None: known not to exist; a Secret that has not opted in is kept without its data


def _keepable(secret: SecretData | None) -> SecretData | None:
    """What the cache may keep of a Secret: everything when it is labelled, else its labels only."""
    if secret is None or secret.opted_in:
        return secret
    return SecretData(labels=dict(secret.labels), data={})


class SecretCache:
    """Decoded data of labelled, referenced Secrets, fed by Secret watch events, with a read-through fallback.

    Only Secrets that some LLM references are kept (the caller says which), and of those only the
    labelled ones with their data: of a referenced Secret without the label only that fact is kept
    (so that its labelling is seen as a change, even on a re-list). Everything else seen on the watch
    is dropped at once, so memory does not grow with unrelated Secrets.
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
            # Also what the API server sends when a Secret loses the label under the watch's label selector.
            self._entries[key] = _Entry(None)
        else:
            labels = secret_labels(body)
            data = decode_secret_data(body) if opted_in(labels) else {}
            version = str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")
            self._entries[key] = _Entry(_keepable(SecretData(labels, data, version, time.monotonic())))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def peek(self, namespace: str, name: str) -> Any:
        """The cached data (None: known not to exist; NOT_LABELLED: exists without the label), or UNKNOWN when
        nothing is cached; never reads.  Labels other than the credentials label do not show."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return UNKNOWN
        if entry.secret is None:
            return None
        return dict(entry.secret.data) if entry.secret.opted_in else NOT_LABELLED

    def forget(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    async def aclose(self) -> None:
        """Closes the fallback reader's connections, when it holds any."""
        if isinstance(self._fallback, _Closeable):
            await self._fallback.aclose()

    async def read(self, namespace: str, name: str) -> SecretData | None:
        entry = self._entries.get((namespace, name))
        if entry is not None and entry.secret is not None and entry.secret.opted_in:
            return entry.secret
        # Unknown, known missing or known unlabelled: the watch says nothing of a Secret without the label
        # (it is selected away), so ask the API server again rather than trust an old answer.
        if self._fallback is None:
            return None
        secret = _keepable(await self._fallback.read(namespace, name))
        self._entries[(namespace, name)] = _Entry(secret)
        return secret


#: What the API server accepts as a Secret's name (a DNS-1123 subdomain).
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")

#: A metadata-only answer (labels, no data): how an unlabelled Secret is told from a missing one.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class KubeSecretReader:
    """Reads a Secret through the Kubernetes API (`kube.KubeApi`: async, as the identity kopf logs in with).

    The read is a list by name with the credentials label selector, so the API server hands over the
    data of a labelled Secret only. When that finds nothing, a metadata-only GET tells a Secret that
    does not exist from one that has not opted in, without receiving the latter's data.
    """

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    async def read(self, namespace: str, name: str) -> SecretData | None:
        if not _SECRET_NAME.fullmatch(name) or len(name) > 253:
            return None  # no Secret can have this name; nor may it reach a URL path or a field selector
        secrets = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets"
        for _ in range(2):
            listed = await self._get(
                namespace,
                name,
                secrets,
                params={"labelSelector": CREDENTIALS_SELECTOR, "fieldSelector": f"metadata.name={name}"},
            )
            if listed is None:
                return None
            items = listed.get("items") or []
            if items:
                version = str((items[0].get("metadata") or {}).get("resourceVersion") or "")
                return SecretData(secret_labels(items[0]), decode_secret_data(items[0]), version)
            meta = await self._get(namespace, name, f"{secrets}/{quote(name, safe='')}", accept=METADATA_ONLY)
            if meta is None:
                return None
            found = SecretData(secret_labels(meta), {})
            if not found.opted_in:
                return found
            # Labelled between the two requests: list again, for the data.
        raise RuntimeError(f"reading Secret {namespace}/{name} failed: its label changed while it was read")

    async def _get(self, namespace: str, name: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """The answer's JSON, or None for a 404. Errors name the Secret and the status only."""
        try:
            answer = await self._api.get(path, **kwargs)
        except (aiohttp.ClientError, TimeoutError, LoginFailed) as exc:
            raise RuntimeError(f"reading Secret {namespace}/{name} failed: {type(exc).__name__}") from None
        if answer.status == HTTPStatus.NOT_FOUND:
            return None
        if answer.status != HTTPStatus.OK:
            raise RuntimeError(f"reading Secret {namespace}/{name} failed: HTTP {answer.status}")
        try:
            body: dict[str, Any] = answer.json()
        except ValueError:
            raise RuntimeError(f"reading Secret {namespace}/{name} failed: the answer is not JSON") from None
        return body

    async def aclose(self) -> None:
        await self._api.aclose()
