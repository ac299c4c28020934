"""The table of invalid and hostile LLM specs for issue #8 part 4 (see test_bad_input.py).

Each case is a change to a valid base spec (DROP removes a field) and what must happen:

- REJECTED: `kubectl apply` fails and stderr names the problem (the expected text);
- REFUSED: the API server stores it, and the operator reports Ready=False with a precise reason, making
  at most one write attempt per generation (and never retrying it while the spec stays the same);
- VALID_AT_BOUNDS: values at the edge of each constraint, which must be accepted and become Ready.
"""

from __future__ import annotations

from typing import Any

DROP = object()  # remove the field from the base spec

TEXT_101 = "s" * 101
UNICODE = "模型 🤖 ñandú Ωμέγα \u202e\u200b"  # CJK, emoji (astral), accents, Greek, RTL override, zero-width space
ASTRAL = "𝔘"  # noqa: RUF001 - one code point, four UTF-8 bytes: the hostile input is this character on purpose


def labels(n: int) -> dict[str, str]:
    return {f"k{i:02d}": f"v{i}" for i in range(n)}


# (case id, spec changes, expected text in kubectl's stderr)
REJECTED: list[tuple[str, dict[str, Any], str]] = [
    # displayName: required, 1..255
    ("displayName-empty", {"displayName": ""}, "spec.displayName: Invalid value"),
    ("displayName-256", {"displayName": "n" * 256}, "spec.displayName: Too long: may not be more than 255"),
    ("displayName-256-astral", {"displayName": ASTRAL * 256}, "spec.displayName: Too long: may not be more than 255"),
    ("displayName-int", {"displayName": 42}, 'spec.displayName: Invalid value: "integer"'),
    (
        "displayName-missing",
        {"displayName": DROP},
        "displayName, providerType, endpointUrl and modelIdentifier are required",
    ),
    # providerType: enum, required, immutable (immutability: tests/e2e/test_operator.py)
    ("providerType-unknown", {"providerType": "DASHSCOPE"}, 'spec.providerType: Unsupported value: "DASHSCOPE"'),
    ("providerType-lowercase", {"providerType": "openai"}, 'spec.providerType: Unsupported value: "openai"'),
    ("providerType-empty", {"providerType": ""}, 'spec.providerType: Unsupported value: ""'),
    (
        "providerType-missing",
        {"providerType": DROP},
        "displayName, providerType, endpointUrl and modelIdentifier are required",
    ),
    # endpointUrl / modelIdentifier / apiPath: non-empty, bounded
    ("endpointUrl-empty", {"endpointUrl": ""}, "spec.endpointUrl: Invalid value"),
    (
        "endpointUrl-2049",
        {"endpointUrl": "https://x.test/" + "p" * 2034},
        "spec.endpointUrl: Too long: may not be more than 2048",
    ),
    ("endpointUrl-list", {"endpointUrl": ["https://x.test/v1"]}, 'spec.endpointUrl: Invalid value: "array"'),
    ("modelIdentifier-empty", {"modelIdentifier": ""}, "spec.modelIdentifier: Invalid value"),
    (
        "modelIdentifier-1025",
        {"modelIdentifier": "m" * 1025},
        "spec.modelIdentifier: Too long: may not be more than 1024",
    ),
    ("apiPath-empty", {"apiPath": ""}, "spec.apiPath: Invalid value"),
    ("description-4097", {"description": "d" * 4097}, "spec.description: Too long: may not be more than 4096"),
    ("version-257", {"version": "v" * 257}, "spec.version: Too long: may not be more than 256"),
    # supportedModalities: 1..4 of the enum
    ("modalities-empty", {"supportedModalities": []}, "spec.supportedModalities: Invalid value: 0"),
    (
        "modalities-unknown",
        {"supportedModalities": ["SMELL"]},
        'spec.supportedModalities[0]: Unsupported value: "SMELL"',
    ),
    (
        "modalities-5",
        {"supportedModalities": ["TEXT", "IMAGE", "AUDIO", "VIDEO", "TEXT"]},
        "spec.supportedModalities: Too many: 5: must have at most 4 items",
    ),
    ("modalities-string", {"supportedModalities": "TEXT"}, 'spec.supportedModalities: Invalid value: "string"'),
    # labels: at most 18, string values, no reserved prefix
    ("labels-19", {"labels": labels(19)}, "spec.labels: Too many: 19: must have at most 18 items"),
    (
        "labels-reserved-prefix",
        {"labels": {"goodmem.ai/owner": "me"}},
        "label keys starting with goodmem.ai/ are reserved",
    ),
    ("labels-int-value", {"labels": {"n": 1}}, 'spec.labels.n: Invalid value: "integer"'),
    ("labels-list", {"labels": ["a"]}, 'spec.labels: Invalid value: "array"'),
    # capabilities: six booleans, nothing else
    (
        "capabilities-string",
        {"capabilities": {"supportsChat": "yes"}},
        'spec.capabilities.supportsChat: Invalid value: "string"',
    ),
    (
        "capabilities-unknown-flag",
        {"capabilities": {"supportsTelepathy": True}},
        'unknown field "spec.capabilities.supportsTelepathy"',
    ),
    # defaultSamplingParams: each bound just beyond
    (
        "temperature-2.01",
        {"defaultSamplingParams": {"temperature": 2.01}},
        "spec.defaultSamplingParams.temperature: Invalid value: 2.01",
    ),
    (
        "temperature-negative",
        {"defaultSamplingParams": {"temperature": -0.01}},
        "spec.defaultSamplingParams.temperature: Invalid value: -0.01",
    ),
    (
        "temperature-string",
        {"defaultSamplingParams": {"temperature": "hot"}},
        'spec.defaultSamplingParams.temperature: Invalid value: "string"',
    ),
    ("topP-1.01", {"defaultSamplingParams": {"topP": 1.01}}, "spec.defaultSamplingParams.topP: Invalid value: 1.01"),
    ("topK-0", {"defaultSamplingParams": {"topK": 0}}, "spec.defaultSamplingParams.topK: Invalid value: 0"),
    (
        "maxTokens-0",
        {"defaultSamplingParams": {"maxTokens": 0}},
        "spec.defaultSamplingParams.maxTokens: Invalid value: 0",
    ),
    (
        "maxTokens-int32-overflow",
        {"defaultSamplingParams": {"maxTokens": 2**31}},
        "spec.defaultSamplingParams.maxTokens: Invalid value: 2147483648",
    ),
    (
        "maxTokens-float",
        {"defaultSamplingParams": {"maxTokens": 1.5}},
        'spec.defaultSamplingParams.maxTokens: Invalid value: "number"',
    ),
    (
        "frequencyPenalty--2.01",
        {"defaultSamplingParams": {"frequencyPenalty": -2.01}},
        "spec.defaultSamplingParams.frequencyPenalty: Invalid value: -2.01",
    ),
    (
        "presencePenalty-2.01",
        {"defaultSamplingParams": {"presencePenalty": 2.01}},
        "spec.defaultSamplingParams.presencePenalty: Invalid value: 2.01",
    ),
    (
        "stopSequences-11",
        {"defaultSamplingParams": {"stopSequences": ["s"] * 11}},
        "spec.defaultSamplingParams.stopSequences: Too many: 11: must have at most 10 items",
    ),
    (
        "stopSequences-101-chars",
        {"defaultSamplingParams": {"stopSequences": [TEXT_101]}},
        "spec.defaultSamplingParams.stopSequences[0]: Too long: may not be more than 100",
    ),
    (
        "sampling-unknown-field",
        {"defaultSamplingParams": {"seed": 7}},
        'unknown field "spec.defaultSamplingParams.seed"',
    ),
    # maxContextLength: int32, > 0
    ("maxContextLength-0", {"maxContextLength": 0}, "spec.maxContextLength: Invalid value: 0"),
    ("maxContextLength-overflow", {"maxContextLength": 2**31}, "spec.maxContextLength: Invalid value: 2147483648"),
    ("maxContextLength-string", {"maxContextLength": "8k"}, 'spec.maxContextLength: Invalid value: "string"'),
    # clientConfig: an object of at most 64 keys
    (
        "clientConfig-65-keys",
        {"clientConfig": {f"k{i}": i for i in range(65)}},
        "spec.clientConfig: Too many: 65: must have at most 64 items",
    ),
    ("clientConfig-list", {"clientConfig": [1, 2]}, 'spec.clientConfig: Invalid value: "array"'),
    # ids and policies
    ("llmId-not-uuid", {"llmId": "12345"}, "spec.llmId: Invalid value"),
    ("llmId-braced", {"llmId": "{0b0e6f1c-3a4e-4b7d-9e8f-1c2d3e4f5a6b}"}, "spec.llmId: Invalid value"),
    ("ownerId-not-uuid", {"ownerId": "root"}, "spec.ownerId: Invalid value"),
    ("deletionPolicy-unknown", {"deletionPolicy": "Keep"}, 'spec.deletionPolicy: Unsupported value: "Keep"'),
    ("adoptionPolicy-unknown", {"adoptionPolicy": "Always"}, 'spec.adoptionPolicy: Unsupported value: "Always"'),
    (
        "managementPolicy-unknown",
        {"managementPolicy": "ReadOnly"},
        'spec.managementPolicy: Unsupported value: "ReadOnly"',
    ),
    ("observeOnly-without-llmId", {"managementPolicy": "ObserveOnly"}, "managementPolicy ObserveOnly needs llmId"),
    # credentials: exactly one kind, a reference never an inline key
    ("credentials-empty", {"credentials": {}}, "credentials needs exactly one of apiKey or gcpAdc"),
    (
        "credentials-both-kinds",
        {"credentials": {"apiKey": {"secretRef": {"uri": "vault://k"}}, "gcpAdc": {}}},
        "credentials needs exactly one of apiKey or gcpAdc",
    ),
    (
        "apiKey-both-sources",
        {"credentials": {"apiKey": {"secretRef": {"uri": "vault://k"}, "secretKeyRef": {"name": "s", "key": "k"}}}},
        "apiKey needs exactly one of secretKeyRef",
    ),
    (
        "apiKey-inline-secret",
        {"credentials": {"apiKey": {"inlineSecret": "sk-live-123"}}},
        'unknown field "spec.credentials.apiKey.inlineSecret"',
    ),
    (
        "secretKeyRef-empty-name",
        {"credentials": {"apiKey": {"secretKeyRef": {"name": "", "key": "k"}}}},
        "spec.credentials.apiKey.secretKeyRef.name: Invalid value",
    ),
    (
        "headerName-empty",
        {"credentials": {"apiKey": {"secretRef": {"uri": "vault://k"}, "headerName": ""}}},
        "spec.credentials.apiKey.headerName: Invalid value",
    ),
    # the spec itself
    ("unknown-spec-field", {"temperature": 0.5}, 'unknown field "spec.temperature"'),
]


# Accepted by the API server, refused with a precise reason (the registry would reject them, or the
# operator must not even ask). expected: (Ready reason, Synced reason, text in the message, writes allowed
# per generation). "writes" are POST/PUT/DELETE calls naming the entry; reads are counted separately.
REFUSED: list[tuple[str, dict[str, Any], tuple[str, str, str, int]]] = [
    ("displayName-blank", {"displayName": "   "}, ("InvalidSpec", "InvalidSpec", "registry answered 400", 1)),
    ("modelIdentifier-blank", {"modelIdentifier": " \t "}, ("InvalidSpec", "InvalidSpec", "registry answered 400", 1)),
    ("endpointUrl-not-a-url", {"endpointUrl": "not a url"}, ("InvalidSpec", "InvalidSpec", "registry answered 400", 1)),
    (
        "endpointUrl-ftp",
        {"endpointUrl": "ftp://files.example.test/v1"},
        ("InvalidSpec", "InvalidSpec", "registry answered 400", 1),
    ),
    ("endpointUrl-no-host", {"endpointUrl": "https:///v1"}, ("InvalidSpec", "InvalidSpec", "registry answered 400", 1)),
    ("apiPath-no-slash", {"apiPath": "chat/completions"}, ("InvalidSpec", "InvalidSpec", "registry answered 400", 1)),
    ("label-key-empty", {"labels": {"": "x"}}, ("InvalidSpec", "InvalidSpec", "registry answered 400", 1)),
    (
        "secret-missing",
        {"credentials": {"apiKey": {"secretKeyRef": {"name": "no-such-secret", "key": "api-key"}}}},
        ("SecretNotFound", "SecretNotFound", "not found", 0),
    ),
    (
        "secret-key-missing",
        {"credentials": {"apiKey": {"secretKeyRef": {"name": "llm-key", "key": "no-such-key"}}}},
        ("SecretKeyNotFound", "SecretKeyNotFound", "has no key 'no-such-key'", 0),
    ),
    (
        "secret-other-namespace",
        {
            "credentials": {
                "apiKey": {"secretKeyRef": {"name": "llm-key", "key": "api-key", "namespace": "kube-system"}}
            }
        },
        ("SecretNotAllowed", "SecretNotAllowed", "another namespace", 0),
    ),
    (
        "ownerId-not-allowed",
        {"ownerId": "0b0e6f1c-3a4e-4b7d-9e8f-1c2d3e4f5a6b"},
        ("OwnerIdNotAllowed", "OwnerIdNotAllowed", "--allow-owner-id", 0),
    ),
    (
        "observeOnly-unknown-entry",
        {"managementPolicy": "ObserveOnly", "llmId": "0b0e6f1c-3a4e-4b7d-9e8f-000000000000"},
        ("NotFound", "NotFound", "not found (ObserveOnly never creates it)", 0),
    ),
]


# At the edge of every constraint: accepted by the API server, by the operator and by the registry.
VALID_AT_BOUNDS: list[tuple[str, dict[str, Any]]] = [
    ("displayName-255", {"displayName": "n" * 255}),
    ("displayName-255-astral", {"displayName": ASTRAL * 255}),
    ("displayName-1", {"displayName": "x"}),
    (
        "unicode-everywhere",
        {
            "displayName": UNICODE,
            "description": UNICODE * 20,
            "labels": {"ünïcødé": UNICODE, "emoji-🤖": "✓"},
            "clientConfig": {"note": UNICODE},
        },
    ),
    ("control-characters", {"description": "tab\there\nnewline \u0007 bell", "version": "\u0001"}),
    ("description-4096", {"description": "d" * 4096}),
    ("modelIdentifier-1024", {"modelIdentifier": "m" * 1024}),
    ("endpointUrl-2048", {"endpointUrl": "https://bounds.example.test/" + "p" * 2020}),
    ("labels-18", {"labels": labels(18)}),
    ("label-value-64KiB", {"labels": {"big": "v" * 65536}}),
    ("label-key-odd", {"labels": {"a b/c:d@e": "spaces and punctuation", "k": ""}}),
    ("modalities-all-4", {"supportedModalities": ["TEXT", "IMAGE", "AUDIO", "VIDEO"]}),
    (
        "sampling-at-bounds",
        {
            "defaultSamplingParams": {
                "temperature": 2.0,
                "topP": 1.0,
                "topK": 2**31 - 1,
                "maxTokens": 2**31 - 1,
                "frequencyPenalty": -2.0,
                "presencePenalty": 2.0,
                "stopSequences": [TEXT_101[:100]] * 10,
            }
        },
    ),
    (
        "sampling-lower-bounds",
        {
            "defaultSamplingParams": {
                "temperature": 0.0,
                "topP": 0.0,
                "topK": 1,
                "maxTokens": 1,
                "frequencyPenalty": 2.0,
                "presencePenalty": -2.0,
                "stopSequences": [""],
            }
        },
    ),
    ("maxContextLength-int32-max", {"maxContextLength": 2**31 - 1}),
    ("maxContextLength-1", {"maxContextLength": 1}),
    (
        "clientConfig-64-keys-nested",
        {"clientConfig": {f"k{i}": {"deep": [i, {"x": None, "y": True}]} for i in range(64)}},
    ),
    ("capabilities-all-false", {"capabilities": {}}),
    ("empty-strings-where-allowed", {"description": "", "version": "", "monitoringEndpoint": ""}),
]
