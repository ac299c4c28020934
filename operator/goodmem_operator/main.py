"""`goodmem-operator`: kopf's runner with our settings, registry client and handlers."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from goodmem_operator import _kopf, connection_handlers, export
from goodmem_operator import config as config_mod
from goodmem_operator.api.connections import CLUSTER_CONNECTION_PLURAL, CONNECTION_PLURAL
from goodmem_operator.api.types import GROUP, PLURAL, VERSION
from goodmem_operator.connections import OPERATOR, Connections, ConnKey, KeyFile, Limits
from goodmem_operator.handlers import (
    ANNOTATION_PREFIX,
    FINALIZER,
    INDEX_HANDLER,
    ChangeAwareProgressStorage,
    DigestDiffBaseStorage,
    LeanMemories,
    Memo,
    Runtime,
    build_registry,
    select_credential_secrets,
)
from goodmem_operator.kube import KubeApi
from goodmem_operator.leader import KubeLeaseApi, LeaderElector, Timings, identity, run_when_leading
from goodmem_operator.metrics import Metrics
from goodmem_operator.reconcile import Reconciler, ReconcileSettings
from goodmem_operator.registry import RegistryClient
from goodmem_operator.secrets import KubeSecretReader, SecretCache
from goodmem_operator.watching import NamespaceWatch, choose, kube_can_i

log = logging.getLogger("goodmem_operator")


class StatusNotWritten(Exception):
    """The API server refused a status patch (its HTTP status only: the body may echo the patch)."""


async def patch_status(kube: KubeApi, path: str, status: dict[str, Any], what: str) -> None:
    """One merge patch of an object's `/status`; a refusal raises StatusNotWritten (its HTTP status only)."""
    answer = await kube.merge_patch(path, {"status": status})
    if not 200 <= answer.status < 300:
        raise StatusNotWritten(f"{what}: HTTP {answer.status}")


def status_writer(kube: KubeApi) -> Callable[[str, str, dict[str, Any]], Awaitable[None]]:
    """An LLM's `/status` patch; a refusal raises StatusNotWritten (the handler logs and retries)."""

    async def write_status(namespace: str, name: str, status: dict[str, Any]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        await patch_status(kube, path, status, f"{namespace}/{name}")

    return write_status


def connection_status_writer(kube: KubeApi) -> connection_handlers.StatusWriter:
    """A connection's `/status` patch (either kind), outside kopf's handlers (a rotated key)."""

    async def write_status(key: ConnKey, status: dict[str, Any]) -> None:
        where = f"namespaces/{key.namespace}/{CONNECTION_PLURAL}" if key.namespace else CLUSTER_CONNECTION_PLURAL
        await patch_status(kube, f"/apis/{GROUP}/{VERSION}/{where}/{key.name}/status", status, str(key))

    return write_status


class ListingFailed(Exception):
    """The API server refused a listing (its HTTP status only)."""


def lister(kube: KubeApi, api: str, plural: str) -> Callable[[str | None], Awaitable[list[dict[str, Any]]]]:
    """The objects of a kind in a namespace (None: every namespace, or a cluster-scoped kind) from the API server,
    page by page. `api`: "/api/v1" or "/apis/<group>/<version>"."""

    async def list_objects(namespace: str | None) -> list[dict[str, Any]]:
        where = f"namespaces/{namespace}/" if namespace else ""
        path = f"{api}/{where}{plural}"
        items: list[dict[str, Any]] = []
        params = {"limit": "500"}
        while True:
            answer = await kube.get(path, params=params)
            if answer.status != 200:
                raise ListingFailed(f"listing {path}: HTTP {answer.status}")
            data = answer.json()
            items.extend(data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": "500", "continue": token}

    return list_objects


def connection_listers(kube: KubeApi) -> connection_handlers.Listers:
    """The connection objects of both kinds and the namespaces, as the startup seed reads them."""
    api = f"/apis/{GROUP}/{VERSION}"
    return connection_handlers.Listers(
        connections=lister(kube, api, CONNECTION_PLURAL),
        cluster_connections=lister(kube, api, CLUSTER_CONNECTION_PLURAL),
        namespaces=lister(kube, "/api/v1", "namespaces"),
    )


def fingerprint_key(api_key: str) -> bytes:
    """The HMAC key for credential fingerprints: derived from the operator's own registry key."""
    return hashlib.sha256(b"goodmem-operator/credentials-fingerprint/" + api_key.encode()).digest()


def serve_metrics(cfg: config_mod.Config) -> Metrics:
    """The metrics, served from the start (a standby shows `goodmem_operator_leader 0`)."""
    metrics = Metrics()
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    return metrics


def build_runtime(
    cfg: config_mod.Config, namespaces: NamespaceWatch | None = None, metrics: Metrics | None = None
) -> Runtime:
    if metrics is None:
        metrics = serve_metrics(cfg)
    # The operator's own Kubernetes requests go as the identity kopf logs in with (its own login function), async,
    # without a thread: the Secret reads, and the status patch of reconciles outside kopf's change handlers.
    login = functools.partial(kopf.login_via_client, logger=log, settings=kopf.OperatorSettings())
    kube = KubeApi(login)

    # The operator's own key: re-read from its file when that changes (a rotated Secret volume), so the next request
    # uses the new key; the credentials' fingerprint key stays the one derived at startup.
    operator_key = KeyFile(cfg.api_key.get_secret_value(), cfg.api_key_file)
    registry = RegistryClient(
        cfg.base_url,
        operator_key,
        timeout=cfg.registry_timeout,
        concurrency=cfg.registry_concurrency,
        rate=cfg.registry_rps,
        observer=metrics.registry_request,
    )
    cache = SecretCache(fallback=KubeSecretReader(kube))
    connections = Connections(
        registry,
        cache,
        operator_namespace=cfg.operator_namespace,
        defaults=Limits(cfg.registry_timeout, cfg.registry_rps, cfg.registry_concurrency),
        observer=metrics.registry_request,
        cluster_scoped=not cfg.namespaces,
        operator_key=operator_key,
    )
    settings = ReconcileSettings(
        cluster_name=cfg.cluster_name,
        fingerprint_key=fingerprint_key(cfg.api_key.get_secret_value()),
        default_deletion_policy=cfg.default_deletion_policy,
        owner_id_grants=cfg.owner_id_grants,
        rotation_observer=metrics.credentials_rotated,
    )
    rt = Runtime(
        reconciler=Reconciler(connections, cache, settings),
        secret_cache=cache,
        status_writer=status_writer(kube),
        drift_interval=cfg.drift_interval,
        metrics=metrics,
        # A requeue slot holds a reconcile for all of it (registry requests, the status write, Events): twice the
        # registry's concurrency keeps the registry client's limiter, not the queue, the bound on requests.
        concurrency=2 * cfg.registry_concurrency,
        connections=connections,
        list_llms=lister(kube, f"/apis/{GROUP}/{VERSION}", PLURAL),
        connection_listers=connection_listers(kube),
        connection_secret_changed=connection_handlers.connection_secret_changed(connection_status_writer(kube)),
    )
    if namespaces is not None:  # with namespace observation, the operator knows which namespaces are being deleted
        rt.terminating = namespaces.terminating
    return rt


async def start_connections(rt: Runtime, cfg: config_mod.Config, *, labels_known: bool) -> None:
    """Before any watch starts: the operator's key file watched, and the connections that exist applied (with the
    namespaces' labels, when it may read them), so LLMs resumed now find theirs instead of showing
    ConnectionNotFound until the connection's own resume."""
    if rt.connections is not None:
        rt.connections.namespace_labels_known = labels_known
    watch_operator_key(rt)
    if rt.connections is not None:  # a registry back after an outage: its LLMs retry at once, not on their backoff
        rt.connections.on_recovered = lambda key: connection_handlers.requeue_waiting(rt, key)
        rt.tasks.append(asyncio.get_running_loop().create_task(rt.connections.watch_breakers()))
    await connection_handlers.seed(rt, cfg.namespaces)


def watch_operator_key(rt: Runtime) -> None:
    """The operator's key file, watched for a rotation: its waiting LLMs retry at once (the key is used by the next
    request anyway)."""
    if rt.connections is not None:
        watch = rt.connections.watch_operator_key(lambda: connection_handlers.requeue_waiting(rt, OPERATOR))
        rt.tasks.append(asyncio.get_running_loop().create_task(watch))


def event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop when it is installed (a dependency except on Windows), as `kopf run` would pick it;
    else None (asyncio's)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


class QuietIndexLog(logging.Filter):
    """Drops kopf's `Handler 'llm-index' succeeded.` line (and the namespace labels' one): it would come with every
    LLM (namespace) event and says nothing."""

    MESSAGES = frozenset(f"Handler {h!r} succeeded." for h in (INDEX_HANDLER, connection_handlers.NAMESPACE_HANDLER))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.MESSAGES


def elector(cfg: config_mod.Config, metrics: Metrics, own_identity: str) -> LeaderElector:
    """The candidate `own_identity` for the Lease `--lease-name` in the operator namespace, as the identity kopf logs
    in with."""
    login = functools.partial(kopf.login_via_client, logger=log, settings=kopf.OperatorSettings())
    api = KubeLeaseApi(KubeApi(login, timeout=cfg.lease_retry_period), cfg.operator_namespace, cfg.lease_name)
    timings = Timings(cfg.lease_duration, cfg.lease_renew_deadline, cfg.lease_retry_period)
    metrics.leader.set(0)
    return LeaderElector(api, own_identity, timings, on_change=metrics.leader.set)


def run_elected(cfg: config_mod.Config, metrics: Metrics, options: dict[str, Any]) -> None:
    """Several replicas: stand by until this one holds the Lease, then run kopf while renewing it (leader.py).
    The Lease's candidate is kopf's identity (options["identity"])."""
    candidate = elector(cfg, metrics, options["identity"])
    log.info(
        "goodmem-operator: leader election on, Lease %s/%s, identity %s",
        cfg.operator_namespace,
        cfg.lease_name,
        candidate.identity,
    )
    work = run_when_leading(candidate, functools.partial(kopf.operator, **options), liveness=cfg.liveness)
    loop = event_loop()
    if loop is None:
        asyncio.run(work)
        return
    try:
        loop.run_until_complete(work)
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """`goodmem-operator [FLAGS]` runs the operator; `goodmem-operator export ...` writes registry entries as
    manifests (export.py)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["export"]:
        raise SystemExit(export.main(args[1:]))
    run(argv)


def run(argv: list[str] | None = None) -> None:
    """The operator: settings, handlers, kopf (elected when several replicas run)."""
    cfg = config_mod.parse(argv)
    metrics = serve_metrics(cfg)
    registry = build_registry()
    shared = Memo()  # kopf.run(memo=...): every object's handlers get a shallow copy, so `runtime` is one object
    namespaces = NamespaceWatch()  # with namespace observation: which namespaces have streams, which are being deleted

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        # A digest, not a copy of the spec: a large spec must not overflow the annotations (kopf#1087).
        diffbase = DigestDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
        settings.persistence.diffbase_storage = diffbase
        # A changed spec ends a kopf retry delay at once (kopf alone would wait it out): the release handler's, and a
        # record left by an older operator; the reconcile's own retries are the requeue's (handlers.py).
        settings.persistence.progress_storage = ChangeAwareProgressStorage(diffbase=diffbase)
        settings.posting.loggers = False  # our own Events only, never log lines (they could carry anything)
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        settings.watching.inactivity_timeout = 600
        settings.networking.request_timeout = 60
        # The API server's errors (and its absence) are retried on this backoff; the watches reconnect on it
        # after an API server restart. kopf's default (1, 1, 2, 3, 5, 8, 13, 21) leaves up to 21 s between
        # attempts, so a restart could go unnoticed for that long: cap the gap at 5 s (about a minute in
        # all before a request gives up, as before; a watch then starts over).
        settings.networking.error_backoffs = (1, 1, 2, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5)
        settings.execution.max_workers = 8
        # A per-object worker waits this long for the object's next event before it exits (kopf: 5 s). Every
        # Secret of the cluster gets a worker when it is listed, though the `when=` filter drops it at once: 0.1 s
        # lets 10,000 of them go before they pile up, so unrelated Secrets leave RSS flat (bench/ANALYSIS.md #2).
        # A worker waiting for its own patch to come back stays for that regardless (kopf's consistency wait).
        settings.queueing.idle_timeout = 0.1
        # The initial listings come in pages, not as one response of every Secret of the cluster.
        settings.watching.chunk_size = 500
        rt = memo.runtime = build_runtime(
            cfg, namespaces if scope.observe_namespaces else None, metrics
        )  # kopf's root memo (`shared`), before any watch starts
        await start_connections(rt, cfg, labels_known=not scope.fallback)
        log.info("goodmem-operator: registry %s, watching %s", cfg.base_url, scope.description)

    @kopf.on.login(registry=registry)
    def login(logger: kopf.Logger, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        # The handlers live on a registry of their own, so kopf's default login handlers must be named.
        return kopf.login_via_client(logger=logger, settings=settings)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Memo, **_: Any) -> None:
        rt: Runtime | None = memo.get("runtime")
        if rt is not None:
            await rt.aclose()  # the requeue's reconciles and timer, the registry client, the Secret reader

    if cfg.liveness:

        @kopf.on.probe(id="registry", registry=registry)
        def probe(**_: Any) -> str:
            return "ok"

    log_format = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}[
        cfg.log_format
    ]
    kopf.configure(verbose=cfg.verbose, debug=cfg.debug, log_format=log_format)
    logging.getLogger("kopf.objects").addFilter(QuietIndexLog())
    settings = kopf.OperatorSettings()
    # One watch stream per namespace when watching them all (watching.py: fair share between namespaces), which
    # needs kopf's namespace observation; it comes with kopf following the CRDs too (list/watch, granted in
    # deploy/). Named namespaces: those exactly, nothing cluster-scoped read. Set before the run (not in the
    # startup handler): the observers start with the run.
    scope = choose(cfg.namespaces, cfg.watch_streams, kube_can_i)
    if scope.fallback:
        log.warning("goodmem-operator: %s", scope.fallback)
    # Without the right to list/watch namespaces (the fallback), their labels cannot be followed: a
    # ClusterGoodMemConnection's selector then selects nothing, and says why.
    connection_handlers.register(registry, cluster_scoped=not cfg.namespaces, namespace_labels=not scope.fallback)
    settings.scanning.disabled = not scope.observe_namespaces
    if scope.observe_namespaces:
        # A namespace being deleted keeps its streams until its LLMs are released (watching.namespace_gone).
        _kopf.replace_namespace_revision(namespaces.revise)
    select_credential_secrets(settings)  # Secrets without goodmem.ai/credentials=true never reach the operator
    options: dict[str, Any] = {
        "settings": settings,
        "registry": registry,
        "standalone": True,  # no kopf peering: leader election (below) decides who works
        # Always given: kopf's default identity is getpass.getuser()@host, which raises KeyError ("getpwuid(): uid not
        # found: 65532") where the uid has no /etc/passwd entry: the image's user under containerd (a real kubelet),
        # CRI-O or Docker. podman adds the entry itself, so only a real pod showed it (hack/kubelet_experiment.py).
        "identity": identity(cfg.pod_name),
        "clusterwide": scope.clusterwide,
        "namespaces": list(scope.namespaces),
        "liveness_endpoint": cfg.liveness,
        "memo": shared,
        "memories": LeanMemories(),  # no per-object memory for Secrets no LLM uses
    }
    if not cfg.leader_election:
        metrics.leader.set(1)
        kopf.run(loop=event_loop(), **options)
        return
    run_elected(cfg, metrics, options)


if __name__ == "__main__":
    main()
