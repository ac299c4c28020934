"""Pydantic models for the `LLM` custom resource (group goodmem.ai, v1alpha1).

These models are the single source of the CRD schema: every constraint of the
registry contract that a schema can express lives here (lengths, ranges,
enums, list and map sizes) together with CEL rules (`x-kubernetes-validations`)
for what JSON Schema cannot say (immutability, one-of).  `api.crd` renders
them into `crds/goodmem.ai_llms.yaml` and a test keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "goodmem.ai"
VERSION = "v1alpha1"
KIND = "LLM"
PLURAL = "llms"
SINGULAR = "llm"
SHORT_NAMES = ["gllm"]

# Labels the operator writes on every registry entry it manages.  User labels
# may not use this prefix, and the CRD keeps room for them within the
# registry's limit of 20 labels.
RESERVED_LABEL_PREFIX = "goodmem.ai/"
REGISTRY_MAX_LABELS = 20
RESERVED_LABEL_COUNT = 2
MAX_USER_LABELS = REGISTRY_MAX_LABELS - RESERVED_LABEL_COUNT
PENDING_CHANGES_MAX = 64  # status.pendingChanges: at most this many entries (plan.py folds the rest into one)

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
INT32_MAX = 2**31 - 1


def cel(rule: str, message: str, **extra: str) -> JsonDict:
    """One `x-kubernetes-validations` entry."""
    entry: JsonDict = {"rule": rule, "message": message}
    entry.update(extra)
    return entry


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields forbidden, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
    )


class ProviderType(StrEnum):
    OPENAI = "OPENAI"
    LITELLM_PROXY = "LITELLM_PROXY"
    OPEN_ROUTER = "OPEN_ROUTER"
    VLLM = "VLLM"
    OLLAMA = "OLLAMA"
    LLAMA_CPP = "LLAMA_CPP"
    CUSTOM_OPENAI_COMPATIBLE = "CUSTOM_OPENAI_COMPATIBLE"


class Modality(StrEnum):
    TEXT = "TEXT"
    IMAGE = "IMAGE"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class AdoptionPolicy(StrEnum):
    NEVER = "Never"
    IF_MATCHING = "IfMatching"


class ManagementPolicy(StrEnum):
    DEFAULT = "Default"
    OBSERVE_ONLY = "ObserveOnly"


CONNECTION_KIND = "GoodMemConnection"
CLUSTER_CONNECTION_KIND = "ClusterGoodMemConnection"


class ConnectionKind(StrEnum):
    NAMESPACED = CONNECTION_KIND
    CLUSTER = CLUSTER_CONNECTION_KIND


class ConnectionRef(_Model):
    """Which connection an LLM's registry entry lives under."""

    kind: ConnectionKind = Field(
        description=(
            "GoodMemConnection (in the LLM's own namespace) or ClusterGoodMemConnection (cluster-scoped; it must "
            "select the LLM's namespace)."
        )
    )
    name: str = Field(min_length=1, max_length=253, description="The connection's name.")


class SecretKeySelector(_Model):
    """A key of a Kubernetes Secret in the LLM's own namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret, in the same namespace as the LLM.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret's data that holds the API key.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        description=(
            "Must be empty or equal to the LLM's namespace: a Secret of another namespace is refused "
            "(condition reason SecretNotAllowed), so no one can borrow another namespace's key."
        ),
    )


class RegistrySecretRef(_Model):
    """A secret held by the registry side (for example in Vault), passed through as is."""

    uri: str = Field(min_length=1, max_length=2048, description="Registry-side secret URI, e.g. vault://path/to/key.")


class ApiKeyCredentials(_Model):
    """An API key sent to the model endpoint in a header."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.secretKeyRef) != has(self.secretRef)",
                    "apiKey needs exactly one of secretKeyRef (a Kubernetes Secret) or secretRef (a registry-side URI)",
                )
            ]
        }
    )

    secret_key_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "The API key, read from a Kubernetes Secret key. The Secret must carry the label "
            "goodmem.ai/credentials=true (else Ready=False, SecretNotLabelled). Inline keys are not accepted."
        ),
    )
    secret_ref: RegistrySecretRef | None = Field(
        default=None, description="A registry-side secret reference; the key never enters Kubernetes."
    )
    header_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Header that carries the key (registry default: Authorization).",
    )
    prefix: str | None = Field(
        default=None, max_length=256, description="Prefix written before the key in the header, e.g. 'Bearer '."
    )


class GcpAdcCredentials(_Model):
    """Google Cloud application default credentials, resolved by the registry."""

    scopes: list[str] | None = Field(default=None, max_length=50, description="OAuth scopes to request.")
    quota_project_id: str | None = Field(default=None, max_length=256, description="Quota project to bill.")


class Credentials(_Model):
    """How the registry authenticates to the model endpoint. Omit for local providers without auth."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.apiKey) != has(self.gcpAdc)", "credentials needs exactly one of apiKey or gcpAdc")
            ]
        }
    )

    api_key: ApiKeyCredentials | None = Field(default=None, description="Authenticate with an API key.")
    gcp_adc: GcpAdcCredentials | None = Field(
        default=None, description="Authenticate with Google Cloud application default credentials."
    )
    labels: dict[str, str] | None = Field(
        default=None, max_length=20, description="Labels stored with the credentials (at most 20)."
    )


class Capabilities(_Model):
    """What the model supports. When given, all six flags are managed (unset flags default to false);
    when omitted, the registry infers them and status.observed reports what it chose."""

    supports_chat: bool = Field(default=False, description="Chat completions.")
    supports_completion: bool = Field(default=False, description="Plain text completions.")
    supports_function_calling: bool = Field(default=False, description="Function/tool calling.")
    supports_system_messages: bool = Field(default=False, description="System messages.")
    supports_streaming: bool = Field(default=False, description="Streaming responses.")
    supports_sampling_parameters: bool = Field(default=False, description="Sampling parameters.")


class SamplingParams(_Model):
    """Default sampling parameters for generation requests."""

    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX, description="Maximum tokens to generate (> 0).")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="Sampling temperature, 0.0 to 2.0.")
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Nucleus sampling, 0.0 to 1.0.")
    top_k: int | None = Field(default=None, ge=1, le=INT32_MAX, description="Top-k sampling (> 0).")
    frequency_penalty: float | None = Field(
        default=None, ge=-2.0, le=2.0, description="Frequency penalty, -2.0 to 2.0."
    )
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="Presence penalty, -2.0 to 2.0.")
    stop_sequences: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=10, description="At most 10 stop sequences of at most 100 characters each."
    )


class LLMSpec(_Model):
    """Desired state of a GoodMem LLM registry entry. Mirrors the registry's create request,
    except that an API key is referenced from a Secret and never written inline."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.managementPolicy) && self.managementPolicy == 'ObserveOnly') || (has(self.displayName)"
                    " && has(self.providerType) && has(self.endpointUrl) && has(self.modelIdentifier))",
                    "displayName, providerType, endpointUrl and modelIdentifier are required "
                    "(unless managementPolicy is ObserveOnly)",
                ),
                cel(
                    "!has(self.managementPolicy) || self.managementPolicy != 'ObserveOnly' || has(self.llmId)",
                    "managementPolicy ObserveOnly needs llmId: the registry entry to observe",
                    fieldPath=".llmId",
                ),
                cel(
                    "has(self.providerType) == has(oldSelf.providerType)"
                    " && (!has(self.providerType) || self.providerType == oldSelf.providerType)",
                    "providerType is immutable: the registry cannot change it after creation; create a new LLM instead",
                    fieldPath=".providerType",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "has(self.llmId) == has(oldSelf.llmId) && (!has(self.llmId) || self.llmId == oldSelf.llmId)",
                    "llmId is immutable: it names the registry entry this resource manages",
                    fieldPath=".llmId",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "has(self.connectionRef) == has(oldSelf.connectionRef)"
                    " && (!has(self.connectionRef) || self.connectionRef == oldSelf.connectionRef)",
                    "connectionRef is immutable: an entry lives with the registry principal that created it; to move "
                    "an LLM, delete it with deletionPolicy Orphan and adopt the entry under the other connection",
                    fieldPath=".connectionRef",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "has(self.ownerId) == has(oldSelf.ownerId)"
                    " && (!has(self.ownerId) || self.ownerId == oldSelf.ownerId)",
                    "ownerId is immutable: the registry cannot change an entry's owner",
                    fieldPath=".ownerId",
                    reason="FieldValueForbidden",
                ),
            ]
        }
    )

    display_name: str | None = Field(
        default=None, min_length=1, max_length=255, description="User-facing name, 1 to 255 characters. Required."
    )
    description: str | None = Field(default=None, max_length=4096, description="Free-text description.")
    provider_type: ProviderType | None = Field(
        default=None, description="The provider's API flavour. Required. Immutable."
    )
    endpoint_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Base URL of the model API (OpenAI-compatible base, usually ending in /v1). Required.",
    )
    api_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Path of the chat/completions call (registry default /chat/completions).",
    )
    model_identifier: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Model name at the provider, e.g. gpt-4o-mini. Required.",
    )
    supported_modalities: list[Modality] | None = Field(
        default=None, min_length=1, max_length=4, description="Content modalities (registry default [TEXT])."
    )
    credentials: Credentials | None = Field(
        default=None,
        description="How the registry authenticates to the endpoint; omit for local providers without auth.",
    )
    labels: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_USER_LABELS,
        description=(
            f"Labels on the registry entry (at most {MAX_USER_LABELS}: the registry allows 20 and the operator "
            f"keeps {RESERVED_LABEL_COUNT} for its ownership marks; keys may not start with {RESERVED_LABEL_PREFIX})."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
                    f"label keys starting with {RESERVED_LABEL_PREFIX} are reserved for the operator",
                )
            ]
        },
    )
    version: str | None = Field(default=None, max_length=256, description="Version information.")
    monitoring_endpoint: str | None = Field(default=None, max_length=2048, description="Monitoring endpoint URL.")
    capabilities: Capabilities | None = Field(
        default=None, description="Supported features; inferred by the registry when omitted."
    )
    default_sampling_params: SamplingParams | None = Field(default=None, description="Default sampling parameters.")
    max_context_length: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Context window in tokens (int32); inferred for known models when omitted.",
    )
    client_config: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Provider-specific client configuration, stored as given (replaced whole on change). A large one: "
            "client-side kubectl apply keeps a copy of the whole object in an annotation (all annotations share "
            "256 KiB), so use kubectl apply --server-side or kubectl create; a request the registry refuses as "
            "too large (413) gives Ready=False, InvalidSpec."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "maxProperties": 64},
    )
    owner_id: str | None = Field(
        default=None,
        pattern=UUID_PATTERN,
        description=(
            "Owner principal UUID. Needs an admin registry key, and the operator must allow this namespace that "
            "principal (--allow-owner-id); otherwise Ready=False, OwnerIdNotAllowed. Immutable."
        ),
    )
    llm_id: str | None = Field(
        default=None,
        pattern=UUID_PATTERN,
        description=(
            "Registry id to use. Unset: derived from the resource's UID, so retries never duplicate. "
            "Set: creates the entry with this id if none exists; an existing entry is adopted only if it grants "
            "this namespace adoption (entry label goodmem.ai/grant.<cluster>.<namespace>=adopt, which deletionPolicy "
            "Orphan leaves for the namespace the entry came from). Immutable."
        ),
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description=(
            "Delete (default, or the operator's --default-deletion-policy) removes the registry entry with the "
            "resource; Orphan leaves it in place and removes the operator's ownership labels."
        ),
    )
    adoption_policy: AdoptionPolicy | None = Field(
        default=None,
        description=(
            "What a create that hits an identical existing entry (409) does: Never (default) reports AlreadyExists; "
            "IfMatching adopts that entry when exactly one entry of the same owner matches and it grants this "
            "namespace adoption; several candidates give AmbiguousMatch and adopt nothing."
        ),
    )
    management_policy: ManagementPolicy | None = Field(
        default=None,
        description=(
            "Default: create, update and delete the entry. ObserveOnly: never write to the registry; mirror the "
            "entry named by llmId into status.observed (the other fields are then optional), if the entry belongs "
            "to this namespace or grants it observe or adopt."
        ),
    )
    connection_ref: ConnectionRef | None = Field(
        default=None,
        description=(
            "The connection (registry URL and key) this LLM's entry lives under. Unset: the namespace's "
            "GoodMemConnection named default, else the ClusterGoodMemConnection named default if it selects the "
            "namespace, else the operator's own settings; status.connection records the choice, which then stays. "
            "Immutable."
        ),
    )

    @model_validator(mode="after")
    def _required_unless_observe_only(self) -> LLMSpec:
        if self.management_policy != ManagementPolicy.OBSERVE_ONLY.value:
            missing = [
                alias
                for alias, value in (
                    ("displayName", self.display_name),
                    ("providerType", self.provider_type),
                    ("endpointUrl", self.endpoint_url),
                    ("modelIdentifier", self.model_identifier),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)} required (unless managementPolicy is ObserveOnly)")
        elif self.llm_id is None:
            raise ValueError("managementPolicy ObserveOnly needs llmId (the entry to observe)")
        return self

    @property
    def observe_only(self) -> bool:
        return self.management_policy == ManagementPolicy.OBSERVE_ONLY.value


class Condition(_Model):
    """A Kubernetes-style condition."""

    type: str = Field(description="Ready or Synced.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="metadata.generation the condition is about.")


class ObservedValues(_Model):
    """Values the registry holds for fields the spec leaves unset (inferred or defaulted)."""

    display_name: str | None = Field(default=None, description="The registry's displayName.")
    provider_type: str | None = Field(default=None, description="The registry's providerType.")
    endpoint_url: str | None = Field(default=None, description="The registry's endpointUrl.")
    model_identifier: str | None = Field(default=None, description="The registry's modelIdentifier.")
    labels: dict[str, str] | None = Field(default=None, description="The registry's labels.")
    api_path: str | None = Field(default=None, description="The registry's apiPath.")
    supported_modalities: list[str] | None = Field(default=None, description="The registry's modalities.")
    capabilities: dict[str, bool] | None = Field(default=None, description="The registry's capability flags.")
    max_context_length: int | None = Field(default=None, description="The registry's context length.")
    owner_id: str | None = Field(default=None, description="Owner principal of the entry.")


class PendingChange(_Model):
    """One field the next apply would change (status.pendingChanges; rendered by plan.py)."""

    path: str = Field(description="Spec field path, e.g. description, labels.team, capabilities.supportsChat.")
    old: Any = Field(
        default=None,
        description="The registry's value (absent: the registry has none); long values as a size and digest.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    new: Any = Field(
        default=None,
        description="The value the apply would write (absent: removed).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    hidden: bool | None = Field(
        default=None, description="True for credentials: only that they change is shown, never a value."
    )


class LLMStatus(_Model):
    """Observed state, written by the operator through the status subresource."""

    llm_id: str | None = Field(default=None, description="Id of the registry entry this resource manages.")
    connection: str | None = Field(
        default=None,
        description=(
            "The connection the entry lives under: GoodMemConnection/<name>, ClusterGoodMemConnection/<name>, or "
            "Operator (the operator's own settings). Recorded once the entry exists, then kept."
        ),
    )
    observed_generation: int | None = Field(default=None, description="Last metadata.generation reconciled.")
    conditions: list[Condition] | None = Field(default=None, description="Ready and Synced conditions.")
    credentials_fingerprint: str | None = Field(
        default=None,
        description=(
            "Keyed fingerprint of the credentials last sent (not reversible); drift on credentials is judged by it."
        ),
    )
    last_attempt: str | None = Field(
        default=None,
        description=(
            "Fingerprint of the inputs of the last permanently failed attempt; the same inputs are not retried."
        ),
    )
    observed: ObservedValues | None = Field(
        default=None, description="Registry-side values for fields the spec leaves unset."
    )
    last_synced_time: str | None = Field(default=None, description="When the registry entry last matched the spec.")
    kopf: dict[str, Any] | None = Field(
        default=None,
        description=(
            "kopf's bookkeeping: a digest of the last-handled spec, labels and annotations, and handler progress."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    # -- plan before apply (issue #17) --
    pending_changes: list[PendingChange] | None = Field(
        default=None,
        max_length=PENDING_CHANGES_MAX,
        description=(
            "What the next apply would change, field by field (ObserveOnly, dry run, a failed apply; empty when "
            "the entry matches the spec). Credentials only as hidden: changed, never a value."
        ),
    )
    planned_action: str | None = Field(
        default=None,
        description="Dry run (annotation goodmem.ai/dry-run=true): Create, Update or None (nothing to do).",
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        description="The last value of the annotation goodmem.ai/reconcile-requested-at that a reconcile handled.",
    )
    credentials_secret_version: str | None = Field(
        default=None,
        description="resourceVersion of the Secret (secretKeyRef) whose key the entry's credentials last came from.",
    )
    credentials_changed_time: str | None = Field(
        default=None, description="When the operator last sent the entry new credentials (a create or a rotation)."
    )
