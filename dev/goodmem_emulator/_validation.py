"""Pure request validation, normalisation and canonicalisation.

Nothing here does I/O.  Every function either returns a normalised value or
raises :class:`ValidationError` naming the offending field (dotted camelCase
path).  Error messages never contain the offending *value*: request data may
carry secrets and must not be echoed back.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROVIDER_TYPES: frozenset[str] = frozenset(
    {
        "OPENAI",
        "LITELLM_PROXY",
        "OPEN_ROUTER",
        "VLLM",
        "OLLAMA",
        "LLAMA_CPP",
        "CUSTOM_OPENAI_COMPATIBLE",
    }
)
MODALITIES: tuple[str, ...] = ("TEXT", "IMAGE", "AUDIO", "VIDEO")
CREDENTIAL_KIND_API_KEY = "CREDENTIAL_KIND_API_KEY"
CREDENTIAL_KIND_GCP_ADC = "CREDENTIAL_KIND_GCP_ADC"
CREDENTIAL_KINDS: dict[str, str] = {
    CREDENTIAL_KIND_API_KEY: "apiKey",
    CREDENTIAL_KIND_GCP_ADC: "gcpAdc",
}
CAPABILITY_FLAGS: tuple[str, ...] = (
    "supportsChat",
    "supportsCompletion",
    "supportsFunctionCalling",
    "supportsSystemMessages",
    "supportsStreaming",
    "supportsSamplingParameters",
)
#: The documented inference rule: every capability is assumed except raw
#: (non-chat) text completion, which OpenAI-compatible chat endpoints rarely
#: offer.
INFERRED_CAPABILITIES: dict[str, bool] = {
    "supportsChat": True,
    "supportsCompletion": False,
    "supportsFunctionCalling": True,
    "supportsSystemMessages": True,
    "supportsStreaming": True,
    "supportsSamplingParameters": True,
}
DEFAULT_API_PATH = "/chat/completions"
DEFAULT_MODALITIES: tuple[str, ...] = ("TEXT",)
MAX_DISPLAY_NAME = 255
MAX_LABELS = 20
MAX_STOP_SEQUENCES = 10
MAX_STOP_SEQUENCE_LEN = 100
INT32_MAX = 2**31 - 1
DEFAULT_PORTS = {"http": 80, "https": 443}
REDACTED = "<redacted>"

CREATE_FIELDS: frozenset[str] = frozenset(
    {
        "displayName",
        "description",
        "providerType",
        "endpointUrl",
        "apiPath",
        "modelIdentifier",
        "supportedModalities",
        "credentials",
        "labels",
        "version",
        "monitoringEndpoint",
        "capabilities",
        "defaultSamplingParams",
        "maxContextLength",
        "clientConfig",
        "ownerId",
        "llmId",
    }
)
UPDATE_FIELDS: frozenset[str] = frozenset(
    {
        "displayName",
        "description",
        "endpointUrl",
        "apiPath",
        "modelIdentifier",
        "supportedModalities",
        "credentials",
        "version",
        "monitoringEndpoint",
        "capabilities",
        "defaultSamplingParams",
        "maxContextLength",
        "clientConfig",
        "replaceLabels",
        "mergeLabels",
    }
)

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ValidationError(ValueError):
    """A request is invalid; ``field`` names the offending field (camelCase path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------


def parse_uuid(value: Any, field: str) -> str:
    """Accept only the hyphenated 8-4-4-4-12 form (any case); return it lowercased."""
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise ValidationError(field, "must be a UUID (8-4-4-4-12 hex form)")
    return value.lower()


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    return value


def _nonblank(value: Any, field: str) -> str:
    value = _string(value, field)
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    return value


def _display_name(value: Any, field: str = "displayName") -> str:
    value = _nonblank(value, field)
    if len(value) > MAX_DISPLAY_NAME:
        raise ValidationError(field, f"must be at most {MAX_DISPLAY_NAME} characters")
    return value


def _provider_type(value: Any, field: str = "providerType") -> str:
    if not isinstance(value, str) or value not in PROVIDER_TYPES:
        raise ValidationError(field, "must be one of " + ", ".join(sorted(PROVIDER_TYPES)))
    return value


def _endpoint_url(value: Any, field: str = "endpointUrl") -> str:
    value = _nonblank(value, field)
    try:
        canonicalize_url(value)
    except ValueError:
        raise ValidationError(field, "must be an absolute http(s) URL with a host") from None
    return value


def _api_path(value: Any, field: str = "apiPath") -> str:
    value = _string(value, field)
    if value == "":
        return DEFAULT_API_PATH
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValidationError(field, "must start with '/' and contain no whitespace")
    return value


def _int(value: Any, field: str, *, minimum: int, maximum: int = INT32_MAX) -> int:
    # bool is a subclass of int: reject it explicitly.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be an integer")
    if value < minimum or value > maximum:
        raise ValidationError(field, f"must be between {minimum} and {maximum}")
    return value


def _number(value: Any, field: str, *, minimum: float, maximum: float) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, "must be a finite number")
    if value < minimum or value > maximum:
        raise ValidationError(field, f"must be between {minimum} and {maximum}")
    return value


def _string_map(value: Any, field: str, *, max_entries: int | None = MAX_LABELS) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError(field, "must be an object mapping strings to strings")
    if max_entries is not None and len(value) > max_entries:
        raise ValidationError(field, f"must have at most {max_entries} entries")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or key == "":
            raise ValidationError(field, "keys must be non-empty strings")
        if not isinstance(val, str):
            raise ValidationError(f"{field}.{key}", "must be a string")
        out[key] = val
    return out


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(field, "must be an object")
    return value


def _reject_unknown(obj: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
    allowed = set(allowed)
    for key in obj:
        if key not in allowed:
            raise ValidationError(f"{prefix}{key}", "unknown field")


def _present(obj: Mapping[str, Any], key: str) -> bool:
    """JSON ``null`` is treated exactly like an omitted field."""
    return obj.get(key) is not None


# --------------------------------------------------------------------------
# Nested types
# --------------------------------------------------------------------------


def _modalities(value: Any, field: str = "supportedModalities") -> list[str]:
    if not isinstance(value, list):
        raise ValidationError(field, "must be a list")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in MODALITIES:
            raise ValidationError(f"{field}[{i}]", "must be one of " + ", ".join(MODALITIES))
        if item not in out:  # duplicates collapse, order preserved
            out.append(item)
    return out


def validate_credentials(value: Any, field: str = "credentials") -> dict[str, Any]:
    """Validate an EndpointAuthentication and return its normalised form."""
    obj = _object(value, field)
    _reject_unknown(obj, ("kind", "apiKey", "gcpAdc", "labels"), f"{field}.")
    if not obj:
        raise ValidationError(field, "must not be empty")
    kind = obj.get("kind")
    if kind is None:
        raise ValidationError(f"{field}.kind", "is required")
    if kind not in CREDENTIAL_KINDS:
        raise ValidationError(f"{field}.kind", "must be one of " + ", ".join(sorted(CREDENTIAL_KINDS)))
    expected = CREDENTIAL_KINDS[kind]
    for payload in CREDENTIAL_KINDS.values():
        if payload != expected and _present(obj, payload):
            raise ValidationError(f"{field}.{payload}", f"is not allowed with kind {kind}")
    if not _present(obj, expected):
        raise ValidationError(f"{field}.{expected}", f"is required with kind {kind}")
    out: dict[str, Any] = {"kind": kind}
    if expected == "apiKey":
        out["apiKey"] = _api_key_auth(obj["apiKey"], f"{field}.apiKey")
    else:
        out["gcpAdc"] = _gcp_adc_auth(obj["gcpAdc"], f"{field}.gcpAdc")
    if _present(obj, "labels"):
        out["labels"] = _string_map(obj["labels"], f"{field}.labels")
    return out


def _api_key_auth(value: Any, field: str) -> dict[str, Any]:
    obj = _object(value, field)
    _reject_unknown(obj, ("inlineSecret", "secretRef", "headerName", "prefix"), f"{field}.")
    has_inline = _present(obj, "inlineSecret")
    has_ref = _present(obj, "secretRef")
    if has_inline == has_ref:
        raise ValidationError(field, "must carry exactly one of inlineSecret or secretRef")
    out: dict[str, Any] = {}
    if has_inline:
        secret = obj["inlineSecret"]
        if not isinstance(secret, str) or secret == "":
            raise ValidationError(f"{field}.inlineSecret", "must be a non-empty string")
        out["inlineSecret"] = secret
    else:
        ref = _object(obj["secretRef"], f"{field}.secretRef")
        _reject_unknown(ref, ("uri", "hints"), f"{field}.secretRef.")
        uri = ref.get("uri")
        if uri is None:
            raise ValidationError(f"{field}.secretRef.uri", "is required")
        ref_out: dict[str, Any] = {"uri": _nonblank(uri, f"{field}.secretRef.uri")}
        if _present(ref, "hints"):
            ref_out["hints"] = _string_map(ref["hints"], f"{field}.secretRef.hints", max_entries=None)
        out["secretRef"] = ref_out
    for key in ("headerName", "prefix"):
        if _present(obj, key):
            out[key] = _string(obj[key], f"{field}.{key}")
    return out


def _gcp_adc_auth(value: Any, field: str) -> dict[str, Any]:
    obj = _object(value, field)
    _reject_unknown(obj, ("scopes", "quotaProjectId"), f"{field}.")
    out: dict[str, Any] = {}
    if _present(obj, "scopes"):
        scopes = obj["scopes"]
        if not isinstance(scopes, list):
            raise ValidationError(f"{field}.scopes", "must be a list of strings")
        out["scopes"] = [_nonblank(s, f"{field}.scopes[{i}]") for i, s in enumerate(scopes)]
    if _present(obj, "quotaProjectId"):
        out["quotaProjectId"] = _string(obj["quotaProjectId"], f"{field}.quotaProjectId")
    return out


# C901 excepted: the contract's fields checked one after the other, in the order the docs list them (the test
# oracle reads best as that list; see README: independent of the operator's mapping on purpose).
def validate_sampling_params(value: Any, field: str = "defaultSamplingParams") -> dict[str, Any]:  # noqa: C901
    obj = _object(value, field)
    _reject_unknown(
        obj,
        (
            "maxTokens",
            "temperature",
            "topP",
            "topK",
            "frequencyPenalty",
            "presencePenalty",
            "stopSequences",
        ),
        f"{field}.",
    )
    out: dict[str, Any] = {}
    if _present(obj, "maxTokens"):
        out["maxTokens"] = _int(obj["maxTokens"], f"{field}.maxTokens", minimum=1)
    if _present(obj, "temperature"):
        out["temperature"] = _number(obj["temperature"], f"{field}.temperature", minimum=0.0, maximum=2.0)
    if _present(obj, "topP"):
        out["topP"] = _number(obj["topP"], f"{field}.topP", minimum=0.0, maximum=1.0)
    if _present(obj, "topK"):
        out["topK"] = _int(obj["topK"], f"{field}.topK", minimum=1)
    for key in ("frequencyPenalty", "presencePenalty"):
        if _present(obj, key):
            out[key] = _number(obj[key], f"{field}.{key}", minimum=-2.0, maximum=2.0)
    if _present(obj, "stopSequences"):
        seqs = obj["stopSequences"]
        if not isinstance(seqs, list):
            raise ValidationError(f"{field}.stopSequences", "must be a list of strings")
        if len(seqs) > MAX_STOP_SEQUENCES:
            raise ValidationError(f"{field}.stopSequences", f"must have at most {MAX_STOP_SEQUENCES} entries")
        for i, s in enumerate(seqs):
            _string(s, f"{field}.stopSequences[{i}]")
            if len(s) > MAX_STOP_SEQUENCE_LEN:
                raise ValidationError(
                    f"{field}.stopSequences[{i}]",
                    f"must be at most {MAX_STOP_SEQUENCE_LEN} characters",
                )
        out["stopSequences"] = list(seqs)
    return out


def _capabilities(value: Any, field: str = "capabilities", *, require_all: bool) -> dict[str, bool]:
    obj = _object(value, field)
    _reject_unknown(obj, CAPABILITY_FLAGS, f"{field}.")
    out: dict[str, bool] = {}
    for flag in CAPABILITY_FLAGS:
        if obj.get(flag) is None:
            if require_all:
                raise ValidationError(f"{field}.{flag}", "is required (send all six flags)")
            continue
        if not isinstance(obj[flag], bool):
            raise ValidationError(f"{field}.{flag}", "must be a boolean")
        out[flag] = obj[flag]
    return out


def infer_capabilities(
    given: Mapping[str, bool] | None,
) -> tuple[dict[str, bool], list[dict[str, Any]]]:
    """Complete a (possibly partial or absent) capability set.

    Returns the full six-flag set and the ``statuses`` entries reporting what
    was inferred (empty when the client sent every flag).
    """
    given = dict(given or {})
    inferred = {f: INFERRED_CAPABILITIES[f] for f in CAPABILITY_FLAGS if f not in given}
    caps = {f: given[f] if f in given else inferred[f] for f in CAPABILITY_FLAGS}
    statuses: list[dict[str, Any]] = []
    if inferred:
        statuses.append(
            {
                "code": "LLM_CAPABILITY_INFERRED",
                "message": "capabilities not provided were inferred: "
                + ", ".join(f"{k}={str(v).lower()}" for k, v in inferred.items()),
                "details": {k: str(v).lower() for k, v in inferred.items()},
            }
        )
    return caps, statuses


def _client_config(value: Any, field: str = "clientConfig") -> dict[str, Any]:
    return _object(value, field)


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


# C901 excepted: the contract's fields checked one after the other, in the order the docs list them (the test
# oracle reads best as that list; see README: independent of the operator's mapping on purpose).
def validate_create_request(body: Any) -> dict[str, Any]:  # noqa: C901
    """Validate an LLMCreationRequest and return it normalised.

    Defaults are applied (``apiPath``, ``supportedModalities``).  A missing or
    partial ``capabilities`` is kept as given (``capabilities`` maps only the
    flags the client sent); the store completes it with
    :func:`infer_capabilities`.  Unset optional fields are absent from the
    result.
    """
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    _reject_unknown(body, CREATE_FIELDS, "")
    for req in ("displayName", "providerType", "endpointUrl", "modelIdentifier"):
        if body.get(req) is None:
            raise ValidationError(req, "is required")
    out: dict[str, Any] = {
        "displayName": _display_name(body["displayName"]),
        "providerType": _provider_type(body["providerType"]),
        "endpointUrl": _endpoint_url(body["endpointUrl"]),
        "modelIdentifier": _nonblank(body["modelIdentifier"], "modelIdentifier"),
        "apiPath": _api_path(body["apiPath"]) if _present(body, "apiPath") else DEFAULT_API_PATH,
    }
    modalities = _modalities(body["supportedModalities"]) if _present(body, "supportedModalities") else []
    out["supportedModalities"] = modalities or list(DEFAULT_MODALITIES)
    for key in ("description", "version", "monitoringEndpoint"):
        if _present(body, key):
            out[key] = _string(body[key], key)
    out["labels"] = _string_map(body["labels"], "labels") if _present(body, "labels") else {}
    if _present(body, "credentials"):
        out["credentials"] = validate_credentials(body["credentials"])
    out["capabilities"] = (
        _capabilities(body["capabilities"], require_all=False) if _present(body, "capabilities") else {}
    )
    if _present(body, "defaultSamplingParams"):
        out["defaultSamplingParams"] = validate_sampling_params(body["defaultSamplingParams"])
    if _present(body, "maxContextLength"):
        out["maxContextLength"] = _int(body["maxContextLength"], "maxContextLength", minimum=1)
    if _present(body, "clientConfig"):
        out["clientConfig"] = _client_config(body["clientConfig"])
    if _present(body, "ownerId"):
        out["ownerId"] = parse_uuid(body["ownerId"], "ownerId")
    if _present(body, "llmId"):
        out["llmId"] = parse_uuid(body["llmId"], "llmId")
    return out


# C901 excepted: the contract's fields checked one after the other, in the order the docs list them (the test
# oracle reads best as that list; see README: independent of the operator's mapping on purpose).
def validate_update_request(body: Any) -> dict[str, Any]:  # noqa: C901
    """Validate an LLMUpdateRequest; return only the fields that change something.

    ``supportedModalities: []`` is dropped (no change); ``replaceLabels`` and
    ``mergeLabels`` are mutually exclusive.
    """
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    if "providerType" in body:
        raise ValidationError("providerType", "is immutable after creation and cannot be updated")
    _reject_unknown(body, UPDATE_FIELDS, "")
    if _present(body, "replaceLabels") and _present(body, "mergeLabels"):
        raise ValidationError("mergeLabels", "cannot be combined with replaceLabels")
    out: dict[str, Any] = {}
    if _present(body, "displayName"):
        out["displayName"] = _display_name(body["displayName"])
    if _present(body, "modelIdentifier"):
        out["modelIdentifier"] = _nonblank(body["modelIdentifier"], "modelIdentifier")
    if _present(body, "endpointUrl"):
        out["endpointUrl"] = _endpoint_url(body["endpointUrl"])
    if _present(body, "apiPath"):
        out["apiPath"] = _api_path(body["apiPath"])
    if _present(body, "supportedModalities"):
        modalities = _modalities(body["supportedModalities"])
        if modalities:
            out["supportedModalities"] = modalities
    for key in ("description", "version", "monitoringEndpoint"):
        if _present(body, key):
            out[key] = _string(body[key], key)
    if _present(body, "credentials"):
        out["credentials"] = validate_credentials(body["credentials"])
    if _present(body, "capabilities"):
        out["capabilities"] = _capabilities(body["capabilities"], require_all=True)
    if _present(body, "defaultSamplingParams"):
        out["defaultSamplingParams"] = validate_sampling_params(body["defaultSamplingParams"])
    if _present(body, "maxContextLength"):
        out["maxContextLength"] = _int(body["maxContextLength"], "maxContextLength", minimum=1)
    if _present(body, "clientConfig"):
        out["clientConfig"] = _client_config(body["clientConfig"])
    if _present(body, "replaceLabels"):
        out["replaceLabels"] = _string_map(body["replaceLabels"], "replaceLabels")
    if _present(body, "mergeLabels"):
        out["mergeLabels"] = _string_map(body["mergeLabels"], "mergeLabels")
    return out


# --------------------------------------------------------------------------
# Query parameters
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilters:
    owner_id: str | None = None
    provider_type: str | None = None
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)


_LABEL_DOT = re.compile(r"^label\.(.+)$", re.S)
_LABEL_BRACKET = re.compile(r"^label\[(.+)\]$", re.S)


def _single(params: Iterable[tuple[str, str]], names: tuple[str, ...]) -> str | None:
    values = [v for k, v in params if k in names]
    if not values:
        return None
    if len(set(values)) > 1:
        raise ValidationError(names[0], "given more than once with different values")
    return values[0]


def parse_list_query(params: Iterable[tuple[str, str]]) -> ListFilters:
    """Parse the query of ``GET /v1/llms`` (camelCase or snake_case names)."""
    params = list(params)
    labels: list[tuple[str, str]] = []
    for key, value in params:
        if key in ("ownerId", "owner_id", "providerType", "provider_type"):
            continue
        m = _LABEL_DOT.match(key) or _LABEL_BRACKET.match(key)
        if m:
            labels.append((m.group(1), value))
            continue
        raise ValidationError(key, "unknown query parameter")
    owner = _single(params, ("ownerId", "owner_id"))
    provider = _single(params, ("providerType", "provider_type"))
    return ListFilters(
        owner_id=parse_uuid(owner, "ownerId") if owner is not None else None,
        provider_type=_provider_type(provider) if provider is not None else None,
        labels=tuple(labels),
    )


def parse_get_query(params: Iterable[tuple[str, str]]) -> bool:
    """Parse the query of ``GET /v1/llms/{id}``; return ``includeCredentials``."""
    params = list(params)
    for key, _ in params:
        if key not in ("includeCredentials", "include_credentials"):
            raise ValidationError(key, "unknown query parameter")
    raw = _single(params, ("includeCredentials", "include_credentials"))
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise ValidationError("includeCredentials", "must be true or false")
    return lowered == "true"


# --------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------


def canonicalize_url(url: str) -> str:
    """Canonical form of an endpoint URL for duplicate detection.

    Lowercases scheme and host, drops the scheme's default port and strips
    trailing slashes from the path.  Raises ``ValueError`` for anything that is
    not an absolute http(s) URL with a host.
    """
    if not isinstance(url, str) or url != url.strip() or any(c.isspace() for c in url):
        raise ValueError("URL must not contain whitespace")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("scheme must be http or https")
    host = parts.hostname  # already lowercased, brackets removed
    if not host:
        raise ValueError("URL must have a host")
    port = parts.port  # raises ValueError when malformed
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rpartition("@")[0] + "@" + netloc
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def credentials_fingerprint(credentials: Mapping[str, Any] | None) -> str:
    """SHA-256 (hex) of the canonical JSON of the normalised credentials, or of ``""``."""
    payload = "" if not credentials else canonical_json(credentials)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def redact_secrets(value: Any) -> Any:
    """Deep copy of ``value`` with every ``inlineSecret`` value replaced by ``<redacted>``."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in ("inlineSecret", "inline_secret") and v is not None else redact_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value
