"""Operator configuration: command-line flags over environment variables over defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from goodmem_operator.trust import parse_owner_id_grants
from goodmem_operator.watching import Streams


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str
    namespaces: tuple[str, ...]  # empty: all namespaces
    cluster_name: str
    drift_interval: float
    metrics_port: int
    default_deletion_policy: str
    registry_timeout: float
    registry_concurrency: int
    registry_rps: float
    log_format: str
    verbose: bool
    debug: bool
    liveness: str | None
    owner_id_grants: dict[str, frozenset[str]] = field(default_factory=dict)  # --allow-owner-id
    watch_streams: Streams = Streams.PER_NAMESPACE  # without --namespace: a stream per namespace, or one for all

    def __repr__(self) -> str:  # never print the key
        return f"Config(base_url={self.base_url!r}, namespaces={self.namespaces!r}, cluster_name={self.cluster_name!r})"


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def parse(argv: list[str] | None = None) -> Config:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="goodmem-operator",
        description="Reconcile goodmem.ai/v1alpha1 LLM resources against the GoodMem LLM registry.",
    )
    p.add_argument(
        "--base-url",
        default=env("GOODMEM_BASE_URL", "http://localhost:8080"),
        help="registry base URL (env GOODMEM_BASE_URL)",
    )
    p.add_argument(
        "--api-key-file",
        default=env("GOODMEM_API_KEY_FILE"),
        help="file holding the registry API key (env GOODMEM_API_KEY_FILE; else env GOODMEM_API_KEY)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch, repeatable (env GOODMEM_WATCH_NAMESPACES, comma separated; default: all)",
    )
    p.add_argument(
        "--watch-streams",
        choices=[s.value for s in Streams],
        default=env("GOODMEM_WATCH_STREAMS", Streams.PER_NAMESPACE.value),
        help="without --namespace: one watch stream per namespace, so one namespace's load does not delay "
        "another's (needs list/watch on namespaces; the default), or one cluster-wide stream "
        "(env GOODMEM_WATCH_STREAMS)",
    )
    p.add_argument(
        "--cluster-name",
        default=env("GOODMEM_CLUSTER_NAME", "default"),
        help="name of this cluster in the registry entries' ownership labels (env GOODMEM_CLUSTER_NAME)",
    )
    p.add_argument(
        "--drift-interval",
        type=float,
        default=float(env("GOODMEM_DRIFT_INTERVAL", "600")),
        help="seconds between drift checks of each LLM (env GOODMEM_DRIFT_INTERVAL, default 600)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("GOODMEM_METRICS_PORT", "0")),
        help="serve Prometheus metrics on this port, 0 = off (env GOODMEM_METRICS_PORT)",
    )
    p.add_argument(
        "--default-deletion-policy",
        choices=["Delete", "Orphan"],
        default=env("GOODMEM_DEFAULT_DELETION_POLICY", "Delete"),
        help="deletion policy for LLMs that set none (env GOODMEM_DEFAULT_DELETION_POLICY)",
    )
    p.add_argument("--registry-timeout", type=float, default=float(env("GOODMEM_REGISTRY_TIMEOUT", "10")))
    p.add_argument(
        "--registry-concurrency",
        type=int,
        default=int(env("GOODMEM_REGISTRY_CONCURRENCY", "16")),
        help="registry requests in flight at most (env GOODMEM_REGISTRY_CONCURRENCY)",
    )
    p.add_argument(
        "--registry-rps",
        type=float,
        default=float(env("GOODMEM_REGISTRY_RPS", "100")),
        help="registry requests per second at most (env GOODMEM_REGISTRY_RPS)",
    )
    p.add_argument("--log-format", choices=["plain", "full", "json"], default=env("GOODMEM_LOG_FORMAT", "plain"))
    p.add_argument("--verbose", action="store_true", default=env("GOODMEM_VERBOSE") == "1")
    p.add_argument("--debug", action="store_true", default=env("GOODMEM_DEBUG") == "1")
    p.add_argument(
        "--liveness",
        default=env("GOODMEM_LIVENESS"),
        help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz (env GOODMEM_LIVENESS)",
    )
    p.add_argument(
        "--allow-owner-id",
        action="append",
        default=None,
        metavar="NAMESPACE=OWNER_ID[|OWNER_ID...]",
        help="let LLMs of NAMESPACE set spec.ownerId to these registry principals (OWNER_ID '*': any; "
        "NAMESPACE '*': every namespace); repeatable (env GOODMEM_ALLOW_OWNER_ID, comma separated). "
        "Without it spec.ownerId is refused (OwnerIdNotAllowed)",
    )
    args = p.parse_args(argv)
    try:
        owner_id_grants = parse_owner_id_grants(args.allow_owner_id or _env_list("GOODMEM_ALLOW_OWNER_ID"))
    except ValueError as exc:
        p.error(f"--allow-owner-id: {exc}")

    if args.api_key_file:
        api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
    else:
        api_key = env("GOODMEM_API_KEY", "")
    if not api_key:
        p.error("no registry API key: set GOODMEM_API_KEY or GOODMEM_API_KEY_FILE")
    namespaces = tuple(args.namespace or _env_list("GOODMEM_WATCH_NAMESPACES"))
    return Config(
        base_url=args.base_url,
        api_key=api_key,
        namespaces=namespaces,
        cluster_name=args.cluster_name,
        drift_interval=args.drift_interval,
        metrics_port=args.metrics_port,
        default_deletion_policy=args.default_deletion_policy,
        registry_timeout=args.registry_timeout,
        registry_concurrency=args.registry_concurrency,
        registry_rps=args.registry_rps,
        log_format=args.log_format,
        verbose=args.verbose,
        debug=args.debug,
        liveness=args.liveness,
        owner_id_grants=owner_id_grants,
        watch_streams=Streams(args.watch_streams),
    )
