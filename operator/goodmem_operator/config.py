"""Operator configuration: command-line flags over `GOODMEM_*` environment variables over defaults.

`Config` is a pydantic-settings model: it reads the environment (prefix `GOODMEM_`, an empty variable counts
as unset) and validates every value. `parse` adds the command line: argparse keeps the documented flags (and
their own error messages for a value of the wrong type or choice) and hands the flags that were given to the
model, where they win over the environment. Any bad value ends the program with a usage error that names the
flag or variable it came from; a message never carries the registry key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from goodmem_operator.trust import parse_owner_id_grants
from goodmem_operator.watching import Streams

ENV_PREFIX = "GOODMEM_"
#: Never echoed in an error message (values) nor in a repr.
_SECRET_FIELDS = frozenset({"api_key", "api_key_file"})


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_OPERATOR_NAMESPACE = "goodmem-system"


def default_operator_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The namespace a pod's service account file names; outside a pod, goodmem-system."""
    try:
        return path.read_text(encoding="utf-8").strip() or FALLBACK_OPERATOR_NAMESPACE
    except OSError:
        return FALLBACK_OPERATOR_NAMESPACE


def _comma_list(value: Any) -> Any:
    """A comma-separated environment variable as a list; a flag's list as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Config(BaseSettings):
    """The operator's settings. The registry key is a SecretStr; it and the key file stay out of repr and dumps."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # `GOODMEM_X=` counts as unset
        extra="forbid",
        frozen=True,
    )

    base_url: str = "http://localhost:8080"
    api_key: SecretStr = Field(SecretStr(""), repr=False, exclude=True)
    api_key_file: Path | None = Field(None, repr=False, exclude=True)
    # NoDecode: a comma list, not JSON (pydantic-settings would parse a list-typed variable as JSON).
    namespaces: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="GOODMEM_WATCH_NAMESPACES")
    cluster_name: str = "default"
    drift_interval: float = Field(600.0, gt=0)
    metrics_port: int = Field(0, ge=0, le=65535)
    default_deletion_policy: Literal["Delete", "Orphan"] = "Delete"
    registry_timeout: float = Field(10.0, gt=0)
    registry_concurrency: int = Field(16, ge=1)
    registry_rps: float = Field(100.0, gt=0)
    log_format: Literal["plain", "full", "json"] = "plain"
    verbose: bool = False
    debug: bool = False
    liveness: str | None = None
    owner_id_grants: Annotated[dict[str, frozenset[str]], NoDecode] = Field(
        default_factory=dict, validation_alias="GOODMEM_ALLOW_OWNER_ID"
    )
    watch_streams: Streams = Streams.PER_NAMESPACE  # without --namespace: a stream per namespace, or one for all
    # The namespace the operator runs in (the Deployment sets it from the downward API): where the Secrets of
    # ClusterGoodMemConnections live, and the leader-election Lease. Default: the service account's namespace file.
    operator_namespace: str = Field(default_factory=default_operator_namespace, min_length=1)
    # Leader election (leader.py): with several replicas, only the holder of the Lease `lease_name` in the operator
    # namespace works. Off by default for a lone process; deploy/ turns it on.
    leader_election: bool = False
    lease_name: str = Field("goodmem-operator", min_length=1, max_length=253)
    lease_duration: int = Field(10, ge=1)
    lease_renew_deadline: float = Field(8.0, gt=0)
    lease_retry_period: float = Field(2.0, gt=0)
    # The pod's name (the Deployment sets it from the downward API): the first part of the Lease holder's identity.
    pod_name: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments), then the environment; no .env file, no secrets directory."""
        return init_settings, env_settings

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespaces(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("owner_id_grants", mode="before")
    @classmethod
    def _owner_id_grants(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        return parse_owner_id_grants(_comma_list(value))

    @model_validator(mode="before")
    @classmethod
    def _read_key_file(cls, data: Any) -> Any:
        """The key file, when given, wins over GOODMEM_API_KEY (it is read here, once, at startup)."""
        if isinstance(data, dict) and data.get("api_key_file"):
            path = Path(str(data["api_key_file"]))
            try:
                key = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read the registry API key file {path}: {exc.strerror}") from None
            data = {**data, "api_key": key}
        return data

    @model_validator(mode="after")
    def _lease_timings(self) -> Config:
        """client-go's rule: the leader gives up (renew deadline) before a standby may take over (lease duration),
        and tries more than once in that time (retry period)."""
        if not self.lease_duration > self.lease_renew_deadline > self.lease_retry_period:
            raise ValueError(
                "GOODMEM_LEASE_DURATION > GOODMEM_LEASE_RENEW_DEADLINE > GOODMEM_LEASE_RETRY_PERIOD is required "
                f"(got {self.lease_duration}, {self.lease_renew_deadline:g}, {self.lease_retry_period:g})"
            )
        return self

    @model_validator(mode="after")
    def _require_key(self) -> Config:
        if not self.api_key.get_secret_value():
            raise ValueError("no registry API key: set GOODMEM_API_KEY or GOODMEM_API_KEY_FILE")
        return self


#: The settings read from a variable not named ENV_PREFIX + the field's name, and that variable.
_ENV_ALIASES = {name: str(f.validation_alias) for name, f in Config.model_fields.items() if f.validation_alias}


def env_name(field: str) -> str:
    """The environment variable a setting is read from."""
    return _ENV_ALIASES.get(field, ENV_PREFIX + field.upper())


def env_names() -> set[str]:
    """Every environment variable the operator reads."""
    return {env_name(field) for field in Config.model_fields}


def _parser() -> argparse.ArgumentParser:
    """The documented flags. Every default is None: a flag not given leaves the setting to the environment."""
    p = argparse.ArgumentParser(
        prog="goodmem-operator",
        description="Reconcile goodmem.ai/v1alpha1 LLM resources against the GoodMem LLM registry.",
        argument_default=None,
    )
    p.add_argument("--base-url", help="registry base URL (env GOODMEM_BASE_URL, default http://localhost:8080)")
    p.add_argument(
        "--api-key-file",
        help="file holding the registry API key (env GOODMEM_API_KEY_FILE; else env GOODMEM_API_KEY)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        metavar="NAMESPACE",
        action="append",
        help="namespace to watch, repeatable (env GOODMEM_WATCH_NAMESPACES, comma separated; default: all)",
    )
    p.add_argument(
        "--watch-streams",
        choices=[s.value for s in Streams],
        help="without --namespace: one watch stream per namespace, so one namespace's load does not delay "
        "another's (needs list/watch on namespaces; the default), or one cluster-wide stream "
        "(env GOODMEM_WATCH_STREAMS)",
    )
    p.add_argument(
        "--cluster-name",
        help="name of this cluster in the registry entries' ownership labels (env GOODMEM_CLUSTER_NAME)",
    )
    p.add_argument(
        "--drift-interval",
        type=float,
        help="seconds between drift checks of each LLM (env GOODMEM_DRIFT_INTERVAL, default 600)",
    )
    p.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port, 0 = off (env GOODMEM_METRICS_PORT)"
    )
    p.add_argument(
        "--default-deletion-policy",
        choices=["Delete", "Orphan"],
        help="deletion policy for LLMs that set none (env GOODMEM_DEFAULT_DELETION_POLICY)",
    )
    p.add_argument("--registry-timeout", type=float, help="seconds per registry request (env GOODMEM_REGISTRY_TIMEOUT)")
    p.add_argument(
        "--registry-concurrency",
        type=int,
        help="registry requests in flight at most (env GOODMEM_REGISTRY_CONCURRENCY)",
    )
    p.add_argument(
        "--registry-rps",
        type=float,
        help="registry requests per second at most (env GOODMEM_REGISTRY_RPS)",
    )
    p.add_argument("--log-format", choices=["plain", "full", "json"], help="log format (env GOODMEM_LOG_FORMAT)")
    p.add_argument("--verbose", action="store_const", const=True, help="more logging (env GOODMEM_VERBOSE=1)")
    p.add_argument("--debug", action="store_const", const=True, help="debug logging (env GOODMEM_DEBUG=1)")
    p.add_argument(
        "--liveness",
        help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz (env GOODMEM_LIVENESS)",
    )
    p.add_argument(
        "--allow-owner-id",
        dest="owner_id_grants",
        action="append",
        metavar="NAMESPACE=OWNER_ID[|OWNER_ID...]",
        help="let LLMs of NAMESPACE set spec.ownerId to these registry principals (OWNER_ID '*': any; "
        "NAMESPACE '*': every namespace); repeatable (env GOODMEM_ALLOW_OWNER_ID, comma separated). "
        "Without it spec.ownerId is refused (OwnerIdNotAllowed)",
    )
    p.add_argument(
        "--operator-namespace",
        help="the namespace the operator runs in: where ClusterGoodMemConnection Secrets live (env "
        "GOODMEM_OPERATOR_NAMESPACE; default: the service account's namespace, else goodmem-system)",
    )
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        help="work only while holding the Lease (several replicas: one works, the others stand by) "
        "(env GOODMEM_LEADER_ELECTION; default off)",
    )
    p.add_argument(
        "--lease-name", help="the leader election's Lease, in the operator namespace (env GOODMEM_LEASE_NAME)"
    )
    p.add_argument(
        "--lease-duration",
        type=int,
        help="seconds a standby waits after the Lease's last renewal before taking it (env GOODMEM_LEASE_DURATION)",
    )
    p.add_argument(
        "--lease-renew-deadline",
        type=float,
        help="seconds the leader keeps working without renewing the Lease, then exits (env "
        "GOODMEM_LEASE_RENEW_DEADLINE)",
    )
    p.add_argument(
        "--lease-retry-period",
        type=float,
        help="seconds between the Lease's renewals, and between a standby's attempts (env GOODMEM_LEASE_RETRY_PERIOD)",
    )
    p.add_argument("--pod-name", help="this pod's name, for the Lease holder's identity (env GOODMEM_POD_NAME)")
    return p


def _flag_names(p: argparse.ArgumentParser) -> dict[str, str]:
    """Setting -> its long flag."""
    return {
        a.dest: next(o for o in a.option_strings if o.startswith("--"))  # --namespace (not -n), --leader-election
        for a in p._actions
        if a.option_strings and a.dest != "help"
    }


def _describe(exc: ValidationError, given: set[str], flags: dict[str, str]) -> str:
    """One line per problem, each naming where the value came from. Values are echoed, never the key's."""
    by_alias = {alias: field for field, alias in _ENV_ALIASES.items()}
    lines = []
    for err in exc.errors(include_url=False):
        loc = str(err["loc"][0]) if err["loc"] else ""
        field = by_alias.get(loc, loc)
        message = str(err["msg"]).removeprefix("Value error, ")
        if not field:
            lines.append(message)
            continue
        source = flags[field] if field in given else env_name(field)
        # A value error's message names the bad item itself; a key is never shown.
        quiet = field in _SECRET_FIELDS or err["type"] == "value_error" or "input" not in err
        shown = "" if quiet else f" (got {err['input']!r})"
        lines.append(f"{source}: {message}{shown}")
    return "; ".join(lines)


def from_flags(p: argparse.ArgumentParser, given: dict[str, Any]) -> Config:
    """The settings from the flags another command line was given (`goodmem-operator export`), the environment and
    the defaults; a bad value is that parser's usage error, naming the flag or variable."""
    try:
        return Config(**{_ENV_ALIASES.get(k, k): v for k, v in given.items()})
    except ValidationError as exc:
        p.error(_describe(exc, set(given), _flag_names(p)))


def parse(argv: list[str] | None = None) -> Config:
    """The settings from these flags (default: the command line), the environment and the defaults."""
    p = _parser()
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    try:
        # A setting read from a differently named variable takes that name as its init argument too.
        return Config(**{_ENV_ALIASES.get(k, k): v for k, v in given.items()})
    except ValidationError as exc:
        p.error(_describe(exc, set(given), _flag_names(p)))  # usage + `goodmem-operator: error: ...`, exit 2
