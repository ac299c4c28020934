"""`goodmem-operator export`: registry entries as LLM manifests, the first step of onboarding (issue #17).

Reads the registry through the operator's own settings (`--base-url`, `GOODMEM_API_KEY` / `GOODMEM_API_KEY_FILE`:
config.Config) and writes one `kind: LLM` manifest per entry, with `spec.llmId` and `managementPolicy: ObserveOnly`
and every field the registry returned that the spec can hold, so that applying the output gives `UpToDate=True`
for every entry and writes nothing. Filters: labels (`--label k=v`, asked of the registry) and provider types.
Entries the operator already manages (its ownership label) are left out unless `--include-managed`.

Never credentials: the registry does not return them, and a manifest must not carry them anyway. Each manifest
ends with a commented `secretKeyRef` placeholder saying what to do before managing the entry.

`export_manifests` takes the registry client it reads through, so that a connection (issue #15) can supply one;
`main` builds it from the operator's settings. Nothing here writes to the registry: it calls `list_llms` only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import ssl
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from goodmem_operator.api.connections import CLUSTER_CONNECTION_PLURAL, CONNECTION_PLURAL, GoodMemConnectionSpec
from goodmem_operator.api.mapping import CAPABILITY_FLAGS, OWNER_UID_LABEL
from goodmem_operator.api.types import (
    CLUSTER_CONNECTION_KIND,
    CONNECTION_KIND,
    GROUP,
    KIND,
    RESERVED_LABEL_PREFIX,
    VERSION,
    LLMSpec,
    ManagementPolicy,
    SamplingParams,
)
from goodmem_operator.config import Config, from_flags
from goodmem_operator.registry import RegistryClient, RegistryError, tls_context
from goodmem_operator.secrets import CREDENTIALS_SELECTOR
from goodmem_operator.trust import grant_label

# Registry fields copied into the spec as they are (camelCase, as both name them).
_FIELDS = (
    "displayName",
    "description",
    "providerType",
    "endpointUrl",
    "apiPath",
    "modelIdentifier",
    "supportedModalities",
    "version",
    "monitoringEndpoint",
    "maxContextLength",
    "clientConfig",
)
_SAMPLING = frozenset(f.alias or name for name, f in SamplingParams.model_fields.items())
_NAME_MAX = 63


class Lister(Protocol):
    """What the export needs of a registry client (registry.RegistryClient; later a connection's)."""

    async def list_llms(
        self, *, provider_type: str | None = None, owner_id: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]: ...


def resource_name(entry: Mapping[str, Any]) -> str:
    """A DNS-1123 name from the display name, made unique by the id's first 8 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(entry.get("displayName") or "llm").lower()).strip("-") or "llm"
    suffix = str(entry["llmId"]).lower()[:8]
    return f"{slug[: _NAME_MAX - len(suffix) - 1].rstrip('-')}-{suffix}"


def spec_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ObserveOnly spec that matches the entry: every field the spec can hold, the operator's labels left out."""
    spec: dict[str, Any] = {"llmId": entry["llmId"], "managementPolicy": ManagementPolicy.OBSERVE_ONLY.value}
    spec.update({f: entry[f] for f in _FIELDS if entry.get(f) is not None})
    labels = {k: v for k, v in (entry.get("labels") or {}).items() if not k.startswith(RESERVED_LABEL_PREFIX)}
    if labels:
        spec["labels"] = labels
    caps = entry.get("capabilities")
    if isinstance(caps, Mapping):
        spec["capabilities"] = {f: bool(caps.get(f)) for f in CAPABILITY_FLAGS}
    sampling = entry.get("defaultSamplingParams")
    if isinstance(sampling, Mapping):
        kept = {k: v for k, v in sampling.items() if k in _SAMPLING and v is not None and v != []}
        if kept:
            spec["defaultSamplingParams"] = kept
    return spec


def manifest_of(entry: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": resource_name(entry)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": spec_of(entry)}


def _header(entry: Mapping[str, Any], namespace: str | None, cluster: str) -> str:
    target = namespace or "<namespace>"
    return (
        f"# Registry entry {entry['llmId']} ({entry.get('displayName', '')}), exported by goodmem-operator export.\n"
        "# ObserveOnly: the operator only reads the entry; status.pendingChanges and the UpToDate condition show\n"
        "# what managing it would change. The entry must let the namespace see it: registry label\n"
        f"# {grant_label(cluster, target)}=observe (adopt, to manage it later).\n"
    )


def _credentials_placeholder() -> str:
    return (
        "  # credentials: never exported (the registry does not return them). Before switching managementPolicy to\n"
        "  # Default, either leave them out (the entry keeps the credentials it has) or reference a Secret labelled\n"
        f"  # {CREDENTIALS_SELECTOR} (the operator then sends them):\n"
        "  # credentials:\n"
        "  #   apiKey:\n"
        "  #     secretKeyRef: {name: REPLACE-ME, key: api-key}\n"
    )


# Plain scalars that YAML 1.1 readers take for booleans or null. kubectl reads YAML 1.1 (go-yaml v2), PyYAML writes
# `n` or `y` unquoted: a label `n: "0"` came back as the key `false` (found by the e2e round trip). Always quoted.
_YAML11_SPECIAL = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""})


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value.lower() in _YAML11_SPECIAL else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(manifest: Mapping[str, Any], entry: Mapping[str, Any], namespace: str | None, cluster: str) -> str:
    """One YAML document with its comments."""
    body = yaml.dump(dict(manifest), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return _header(entry, namespace, cluster) + body + _credentials_placeholder()


def _selected(entry: Mapping[str, Any], providers: Sequence[str], include_managed: bool) -> bool:
    if providers and entry.get("providerType") not in providers:
        return False
    return include_managed or OWNER_UID_LABEL not in (entry.get("labels") or {})


async def export_manifests(
    registry: Lister,
    *,
    labels: Mapping[str, str] | None = None,
    providers: Sequence[str] = (),
    include_managed: bool = False,
    namespace: str | None = None,
    connection_ref: Mapping[str, str] | None = None,
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]]:
    """(manifest, entry) per selected entry, sorted by name; and a note per entry the spec cannot hold. With
    `connection_ref`, each manifest names the connection the entries were read through (spec.connectionRef)."""
    provider = providers[0] if len(providers) == 1 else None
    entries = await registry.list_llms(provider_type=provider, labels=dict(labels or {}) or None)
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    skipped: list[str] = []
    for entry in entries:
        if not _selected(entry, providers, include_managed):
            continue
        manifest = manifest_of(entry, namespace)
        if connection_ref is not None:
            manifest["spec"]["connectionRef"] = dict(connection_ref)
        try:
            LLMSpec.model_validate(manifest["spec"])  # what the CRD would refuse is not written
        except ValidationError as exc:
            first = exc.errors()[0]
            skipped.append(f"{entry['llmId']}: {'.'.join(map(str, first['loc']))}: {first['msg']}")
            continue
        out.append((manifest, dict(entry)))
    out.sort(key=lambda pair: str(pair[0]["metadata"]["name"]))
    return out, skipped


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="goodmem-operator export",
        description="Write an LLM manifest (managementPolicy ObserveOnly, spec.llmId) for each registry entry. "
        "Reads the registry with the operator's settings; never writes to it; never writes credentials.",
    )
    p.add_argument("--base-url", help="registry base URL (env GOODMEM_BASE_URL, default http://localhost:8080)")
    p.add_argument(
        "--api-key-file", help="file holding the registry API key (env GOODMEM_API_KEY_FILE; else env GOODMEM_API_KEY)"
    )
    p.add_argument("--registry-timeout", type=float, help="seconds per registry request (env GOODMEM_REGISTRY_TIMEOUT)")
    p.add_argument("--cluster-name", help="the operator's cluster name, for the grant label the comments name")
    p.add_argument(
        "-l",
        "--label",
        action="append",
        type=_label,
        default=[],
        metavar="KEY=VALUE",
        help="only entries with this label (repeatable: all of them)",
    )
    p.add_argument(
        "--provider",
        action="append",
        default=[],
        metavar="PROVIDER_TYPE",
        help="only entries of this providerType (repeatable: any of them)",
    )
    p.add_argument(
        "--include-managed",
        action="store_true",
        help="also entries the operator already manages (they carry its ownership label)",
    )
    p.add_argument("-n", "--namespace", help="metadata.namespace of the manifests (default: none, kubectl -n decides)")
    p.add_argument(
        "--connection",
        metavar="KIND/NAME",
        help="read through this connection instead of the operator's settings: GoodMemConnection/NAME (in the "
        "-n namespace) or ClusterGoodMemConnection/NAME (its Secrets in --operator-namespace); the connection and its "
        "key Secret are read with your kubeconfig; the manifests name it in spec.connectionRef",
    )
    p.add_argument(
        "--operator-namespace",
        default="goodmem-system",
        help="where a ClusterGoodMemConnection's Secrets live (default goodmem-system)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, help="write all manifests to this file (default: standard output)")
    out.add_argument("--output-dir", type=Path, help="write one file per entry, <name>.yaml, into this directory")
    return p


def _config(p: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    names = ("base_url", "api_key_file", "registry_timeout", "cluster_name")
    return from_flags(p, {k: getattr(args, k) for k in names if getattr(args, k) is not None})


def _write(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]], args: argparse.Namespace, cluster: str) -> int:
    documents = [(m, render(m, e, args.namespace, cluster)) for m, e in pairs]
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for manifest, text in documents:
            (args.output_dir / f"{manifest['metadata']['name']}.yaml").write_text(text, encoding="utf-8")
    else:
        stream = "---\n".join(text for _, text in documents)
        if args.output is not None:
            args.output.write_text(stream, encoding="utf-8")
        else:
            sys.stdout.write(stream)
    return len(documents)


@dataclass(frozen=True)
class Through:
    """Where the export reads: a base URL, a key, a TLS context; and the connection to name, if any."""

    base_url: str
    key: str = field(repr=False)
    verify: ssl.SSLContext | None = None
    connection_ref: dict[str, str] | None = None


def _decoded(secret: Any, key: str, where: str) -> str:
    data = secret.data or {}
    if key not in data:
        raise ConnectionProblem(f"Secret {where} has no key {key!r}")
    return base64.b64decode(data[key]).decode("utf-8").strip()


class ConnectionProblem(Exception):
    """The connection named by --connection cannot be used (never a key in the message)."""


def through_connection(ref: str, namespace: str | None, operator_namespace: str) -> Through:
    """The connection's base URL, key and CA, read with the caller's kubeconfig (their own rights, not the
    operator's)."""
    import kubernetes  # the CLI only: the operator never loads the sync client's API classes

    kind, _, name = ref.partition("/")
    if kind not in (CONNECTION_KIND, CLUSTER_CONNECTION_KIND) or not name:
        raise ConnectionProblem(f"--connection {ref!r}: want GoodMemConnection/NAME or ClusterGoodMemConnection/NAME")
    try:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]  # untyped client
    except kubernetes.config.ConfigException:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped client
    objects = kubernetes.client.CustomObjectsApi()
    try:
        body: Any  # the untyped client's answer: a dict
        if kind == CONNECTION_KIND:
            if not namespace:
                raise ConnectionProblem("--connection GoodMemConnection/NAME needs -n NAMESPACE")
            body = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, CONNECTION_PLURAL, name)
            where = namespace
        else:
            body = objects.get_cluster_custom_object(GROUP, VERSION, CLUSTER_CONNECTION_PLURAL, name)
            where = operator_namespace
        found: dict[str, Any] = dict(body)
        spec = GoodMemConnectionSpec.model_validate(
            {k: v for k, v in (found.get("spec") or {}).items() if k != "namespaceSelector"}
        )
        core = kubernetes.client.CoreV1Api()
        ref_key = spec.api_key_secret_ref
        key = _decoded(core.read_namespaced_secret(ref_key.name, where), ref_key.key, f"{where}/{ref_key.name}")
        verify = None
        if spec.ca_bundle_secret_ref is not None:
            ca = spec.ca_bundle_secret_ref
            verify = tls_context(_decoded(core.read_namespaced_secret(ca.name, where), ca.key, f"{where}/{ca.name}"))
    except kubernetes.client.ApiException as exc:
        raise ConnectionProblem(f"{kind} {name}: the API server answered {exc.status} ({exc.reason})") from None
    except (ValidationError, ValueError) as exc:
        raise ConnectionProblem(f"{kind} {name}: {type(exc).__name__}") from None
    return Through(spec.base_url, key, verify, {"kind": kind, "name": name})


async def _run(through: Through, timeout: float, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    client = RegistryClient(through.base_url, through.key, timeout=timeout, verify=through.verify)
    async with client as registry:
        return await export_manifests(
            registry,
            labels=dict(args.label),
            providers=args.provider,
            include_managed=args.include_managed,
            namespace=args.namespace,
            connection_ref=through.connection_ref,
        )


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    # Through a connection, the operator's own key is not needed (nor read).
    cluster, timeout = args.cluster_name or "default", args.registry_timeout or 10.0
    try:
        if args.connection:
            through = through_connection(args.connection, args.namespace, args.operator_namespace)
        else:
            cfg = _config(p, args)
            cluster, timeout = cfg.cluster_name, cfg.registry_timeout
            through = Through(cfg.base_url, cfg.api_key.get_secret_value())
        pairs, skipped = asyncio.run(_run(through, timeout, args))
    except (RegistryError, ConnectionProblem) as exc:  # registry.py's messages are redacted: never the key
        print(f"goodmem-operator export: {exc}", file=sys.stderr)
        return 1
    count = _write(pairs, args, cluster)
    for note in skipped:
        print(f"goodmem-operator export: skipped {note}", file=sys.stderr)
    print(f"goodmem-operator export: {count} manifests, {len(skipped)} skipped", file=sys.stderr)
    return 0
