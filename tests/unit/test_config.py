"""The operator's settings (`config.parse`, a pydantic-settings model fed by argparse): flag over environment
over default for every setting, every documented variable and flag, bad values as clear usage errors naming
where they came from, and the registry key in no repr and no message."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from goodmem_operator import config
from goodmem_operator.config import Config, env_names, parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KEY = "SENTINEL-config-key-5d1f0a"
OWNER = "9b2a4c1e-6f0d-4a8b-9c3e-2d7f5e1a0b6c"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GOODMEM_* setting from the machine running the tests; the key set, as every run needs one."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOODMEM_API_KEY", KEY)
    return monkeypatch


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The `goodmem-operator: error: ...` line of a refused configuration (exit status 2, as argparse's)."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: goodmem-operator"), err
    [line] = [x for x in err.splitlines() if x.startswith("goodmem-operator: error: ")]
    return line.removeprefix("goodmem-operator: error: ")


def test_defaults() -> None:
    cfg = parse([])
    assert cfg.base_url == "http://localhost:8080"
    assert cfg.api_key.get_secret_value() == KEY
    assert cfg.api_key_file is None
    assert cfg.namespaces == ()
    assert cfg.cluster_name == "default"
    assert cfg.drift_interval == 600.0
    assert cfg.metrics_port == 0
    assert cfg.default_deletion_policy == "Delete"
    assert cfg.registry_timeout == 10.0
    assert cfg.registry_concurrency == 16
    assert cfg.registry_rps == 100.0
    assert cfg.log_format == "plain"
    assert cfg.verbose is False and cfg.debug is False
    assert cfg.liveness is None
    assert cfg.owner_id_grants == {}
    assert cfg.operator_namespace == config.default_operator_namespace()
    assert cfg.leader_election is False and cfg.pod_name is None
    assert (cfg.lease_name, cfg.lease_duration, cfg.lease_renew_deadline, cfg.lease_retry_period) == (
        "goodmem-operator",
        10,
        8.0,
        2.0,
    )


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--lease-duration", "8"], "(got 8, 8, 2)"),
        (["--lease-renew-deadline", "1"], "(got 10, 1, 2)"),
        (["--lease-duration", "3", "--lease-retry-period", "3"], "(got 3, 8, 3)"),
    ],
)
def test_lease_timings_must_leave_the_leader_time_to_give_up_first(
    capsys: pytest.CaptureFixture[str], argv: list[str], shown: str
) -> None:
    """The leader stops (renew deadline) before a standby may take over (lease duration), and retries in between."""
    message = usage_error(capsys, argv)
    assert "GOODMEM_LEASE_DURATION > GOODMEM_LEASE_RENEW_DEADLINE > GOODMEM_LEASE_RETRY_PERIOD" in message
    assert message.endswith(shown)


def test_operator_namespace_comes_from_the_service_account_file(tmp_path: Path) -> None:
    named = tmp_path / "namespace"
    named.write_text("ops\n")
    assert config.default_operator_namespace(named) == "ops"
    assert config.default_operator_namespace(tmp_path / "absent") == "goodmem-system"


# field, environment variable, its value, what it gives, flag arguments, what they give
PRECEDENCE: list[tuple[str, str, str, Any, list[str], Any]] = [
    ("base_url", "GOODMEM_BASE_URL", "http://env:1", "http://env:1", ["--base-url", "http://flag:2"], "http://flag:2"),
    ("namespaces", "GOODMEM_WATCH_NAMESPACES", " a, b ,,", ("a", "b"), ["-n", "c", "--namespace", "d"], ("c", "d")),
    ("cluster_name", "GOODMEM_CLUSTER_NAME", "env-eu1", "env-eu1", ["--cluster-name", "flag-us2"], "flag-us2"),
    ("drift_interval", "GOODMEM_DRIFT_INTERVAL", "30", 30.0, ["--drift-interval", "2.5"], 2.5),
    ("metrics_port", "GOODMEM_METRICS_PORT", "8080", 8080, ["--metrics-port", "9090"], 9090),
    (
        "default_deletion_policy",
        "GOODMEM_DEFAULT_DELETION_POLICY",
        "Orphan",
        "Orphan",
        ["--default-deletion-policy", "Delete"],
        "Delete",
    ),
    ("registry_timeout", "GOODMEM_REGISTRY_TIMEOUT", "3", 3.0, ["--registry-timeout", "4.5"], 4.5),
    ("registry_concurrency", "GOODMEM_REGISTRY_CONCURRENCY", "4", 4, ["--registry-concurrency", "2"], 2),
    ("registry_rps", "GOODMEM_REGISTRY_RPS", "50", 50.0, ["--registry-rps", "7.5"], 7.5),
    ("log_format", "GOODMEM_LOG_FORMAT", "json", "json", ["--log-format", "full"], "full"),
    ("verbose", "GOODMEM_VERBOSE", "0", False, ["--verbose"], True),  # switches: the variable "1" below
    ("debug", "GOODMEM_DEBUG", "0", False, ["--debug"], True),
    (
        "liveness",
        "GOODMEM_LIVENESS",
        "http://0.0.0.0:1/h",
        "http://0.0.0.0:1/h",
        ["--liveness", "http://0.0.0.0:2/h"],
        "http://0.0.0.0:2/h",
    ),
    (
        "watch_streams",
        "GOODMEM_WATCH_STREAMS",
        "cluster",
        "cluster",
        ["--watch-streams", "per-namespace"],
        "per-namespace",
    ),
    (
        "operator_namespace",
        "GOODMEM_OPERATOR_NAMESPACE",
        "ops-env",
        "ops-env",
        ["--operator-namespace", "ops-flag"],
        "ops-flag",
    ),
    ("leader_election", "GOODMEM_LEADER_ELECTION", "true", True, ["--no-leader-election"], False),
    ("lease_name", "GOODMEM_LEASE_NAME", "lease-env", "lease-env", ["--lease-name", "lease-flag"], "lease-flag"),
    ("lease_duration", "GOODMEM_LEASE_DURATION", "15", 15, ["--lease-duration", "12"], 12),
    ("lease_renew_deadline", "GOODMEM_LEASE_RENEW_DEADLINE", "6", 6.0, ["--lease-renew-deadline", "5"], 5.0),
    ("lease_retry_period", "GOODMEM_LEASE_RETRY_PERIOD", "1", 1.0, ["--lease-retry-period", "1.5"], 1.5),
    ("pod_name", "GOODMEM_POD_NAME", "pod-env", "pod-env", ["--pod-name", "pod-flag"], "pod-flag"),
    (
        "owner_id_grants",
        "GOODMEM_ALLOW_OWNER_ID",
        f"team-a={OWNER}, platform=*",
        {"team-a": frozenset({OWNER}), "platform": frozenset({"*"})},
        ["--allow-owner-id", f"team-b={OWNER}|*", "--allow-owner-id", "*=*"],
        {"team-b": frozenset({OWNER, "*"}), "*": frozenset({"*"})},
    ),
]


def test_every_setting_is_in_the_precedence_table() -> None:
    """A new setting gets its row (the key and the key file have tests of their own)."""
    assert {row[0] for row in PRECEDENCE} | {"api_key", "api_key_file"} == set(Config.model_fields)
    assert {row[1] for row in PRECEDENCE} | {"GOODMEM_API_KEY", "GOODMEM_API_KEY_FILE"} == env_names()


@pytest.mark.parametrize(
    ("field", "env", "raw", "from_env", "flags", "from_flag"), PRECEDENCE, ids=[r[0] for r in PRECEDENCE]
)
def test_flag_over_environment_over_default(
    clean_env: pytest.MonkeyPatch, field: str, env: str, raw: str, from_env: Any, flags: list[str], from_flag: Any
) -> None:
    default = getattr(parse([]), field)
    clean_env.setenv(env, raw)
    assert getattr(parse([]), field) == from_env
    assert from_env != default or field in SWITCHES, "the variable is read"
    assert getattr(parse(flags), field) == from_flag != from_env, "the flag wins over the variable"
    clean_env.delenv(env)
    assert getattr(parse(flags), field) == from_flag


SWITCHES = ("verbose", "debug")


@pytest.mark.parametrize("field", SWITCHES)
@pytest.mark.parametrize("value", ["1", "true"])
def test_a_switch_variable_turns_it_on(clean_env: pytest.MonkeyPatch, field: str, value: str) -> None:
    clean_env.setenv(config.env_name(field), value)
    assert getattr(parse([]), field) is True


def test_an_empty_variable_counts_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("GOODMEM_DRIFT_INTERVAL", "GOODMEM_VERBOSE", "GOODMEM_WATCH_NAMESPACES", "GOODMEM_LIVENESS"):
        clean_env.setenv(name, "")
    cfg = parse([])
    assert (cfg.drift_interval, cfg.verbose, cfg.namespaces, cfg.liveness) == (600.0, False, (), None)


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_a_switch_variable_can_say_off(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("GOODMEM_VERBOSE", value)
    assert parse([]).verbose is False


# -- the registry key ------------------------------------------------------------------------------


def test_the_key_file_wins_over_the_variable_and_is_stripped(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(f"  {KEY}-from-file\n")
    clean_env.setenv("GOODMEM_API_KEY_FILE", str(key_file))
    assert parse([]).api_key.get_secret_value() == f"{KEY}-from-file"
    other = tmp_path / "other"
    other.write_text("from-flag")
    assert parse(["--api-key-file", str(other)]).api_key.get_secret_value() == "from-flag"


def test_no_key_is_a_usage_error(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.delenv("GOODMEM_API_KEY")
    assert usage_error(capsys, []) == "no registry API key: set GOODMEM_API_KEY or GOODMEM_API_KEY_FILE"
    clean_env.setenv("GOODMEM_API_KEY", "")
    assert usage_error(capsys, []) == "no registry API key: set GOODMEM_API_KEY or GOODMEM_API_KEY_FILE"


def test_an_empty_key_file_is_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "api-key"
    empty.write_text("\n")
    assert usage_error(capsys, ["--api-key-file", str(empty)]).startswith("no registry API key")


def test_an_unreadable_key_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert usage_error(capsys, ["--api-key-file", str(missing)]) == (
        f"cannot read the registry API key file {missing}: No such file or directory"
    )


def test_the_key_is_in_no_repr_str_or_dump(tmp_path: Path) -> None:
    key_file = tmp_path / f"{KEY}-dir-name"
    key_file.write_text(KEY)
    cfg = parse(["--api-key-file", str(key_file)])
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), str(cfg.model_dump())):
        assert KEY not in text
    assert cfg.api_key.get_secret_value() == KEY


def test_errors_never_echo_the_key(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("GOODMEM_DRIFT_INTERVAL", "abc")
    line = usage_error(capsys, [])
    assert line.startswith("GOODMEM_DRIFT_INTERVAL: ")
    assert KEY not in line


# -- bad values ------------------------------------------------------------------------------------

BAD_ENV = [
    (
        "GOODMEM_DRIFT_INTERVAL",
        "abc",
        "GOODMEM_DRIFT_INTERVAL: Input should be a valid number, unable to parse string as a number (got 'abc')",
    ),
    ("GOODMEM_DRIFT_INTERVAL", "0", "GOODMEM_DRIFT_INTERVAL: Input should be greater than 0 (got '0')"),
    (
        "GOODMEM_METRICS_PORT",
        "http",
        "GOODMEM_METRICS_PORT: Input should be a valid integer, unable to parse string as an integer (got 'http')",
    ),
    (
        "GOODMEM_METRICS_PORT",
        "70000",
        "GOODMEM_METRICS_PORT: Input should be less than or equal to 65535 (got '70000')",
    ),
    (
        "GOODMEM_DEFAULT_DELETION_POLICY",
        "delete",
        "GOODMEM_DEFAULT_DELETION_POLICY: Input should be 'Delete' or 'Orphan' (got 'delete')",
    ),
    ("GOODMEM_REGISTRY_TIMEOUT", "-1", "GOODMEM_REGISTRY_TIMEOUT: Input should be greater than 0 (got '-1')"),
    (
        "GOODMEM_REGISTRY_CONCURRENCY",
        "0",
        "GOODMEM_REGISTRY_CONCURRENCY: Input should be greater than or equal to 1 (got '0')",
    ),
    (
        "GOODMEM_REGISTRY_RPS",
        "fast",
        "GOODMEM_REGISTRY_RPS: Input should be a valid number, unable to parse string as a number (got 'fast')",
    ),
    ("GOODMEM_LOG_FORMAT", "xml", "GOODMEM_LOG_FORMAT: Input should be 'plain', 'full' or 'json' (got 'xml')"),
    ("GOODMEM_VERBOSE", "2", "GOODMEM_VERBOSE: Input should be a valid boolean, unable to interpret input (got '2')"),
    ("GOODMEM_ALLOW_OWNER_ID", "team-a", "GOODMEM_ALLOW_OWNER_ID: 'team-a': expected NAMESPACE=OWNER_ID[|OWNER_ID...]"),
    ("GOODMEM_ALLOW_OWNER_ID", "team-a=not-a-uuid", "GOODMEM_ALLOW_OWNER_ID: badly formed hexadecimal UUID string"),
]


@pytest.mark.parametrize(("env", "raw", "message"), BAD_ENV, ids=[f"{e}={r}" for e, r, _ in BAD_ENV])
def test_a_bad_variable_is_a_usage_error_naming_it(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str, raw: str, message: str
) -> None:
    clean_env.setenv(env, raw)
    assert usage_error(capsys, []) == message


BAD_FLAGS = [
    # argparse's own messages, as before pydantic-settings: the type and the choices are checked by the parser
    (["--drift-interval", "abc"], "argument --drift-interval: invalid float value: 'abc'"),
    (["--metrics-port", "x"], "argument --metrics-port: invalid int value: 'x'"),
    (
        ["--default-deletion-policy", "Keep"],
        "argument --default-deletion-policy: invalid choice: 'Keep' (choose from Delete, Orphan)",
    ),
    (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml' (choose from plain, full, json)"),
    (["--namespace"], "argument -n/--namespace: expected one argument"),
    # the model's checks, naming the flag
    (["--drift-interval", "-5"], "--drift-interval: Input should be greater than 0 (got -5.0)"),
    (["--registry-concurrency", "0"], "--registry-concurrency: Input should be greater than or equal to 1 (got 0)"),
    (["--metrics-port", "70000"], "--metrics-port: Input should be less than or equal to 65535 (got 70000)"),
    (["--allow-owner-id", "bad"], "--allow-owner-id: 'bad': expected NAMESPACE=OWNER_ID[|OWNER_ID...]"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    got = usage_error(capsys, argv)
    # argparse quotes choices with repr() from Python 3.12.8/3.13.1 on; before, without quotes
    assert got.replace("'Delete', 'Orphan'", "Delete, Orphan").replace(
        "'plain', 'full', 'json'", "plain, full, json"
    ) == (message)


def test_a_bad_flag_is_named_even_when_the_variable_is_good(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("GOODMEM_REGISTRY_RPS", "10")
    assert usage_error(capsys, ["--registry-rps", "0"]) == "--registry-rps: Input should be greater than 0 (got 0.0)"


def test_every_problem_is_reported_at_once(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("GOODMEM_LOG_FORMAT", "xml")
    line = usage_error(capsys, ["--registry-timeout", "0"])
    assert line.split("; ") == [
        "--registry-timeout: Input should be greater than 0 (got 0.0)",
        "GOODMEM_LOG_FORMAT: Input should be 'plain', 'full' or 'json' (got 'xml')",
    ]


# -- the README's table ----------------------------------------------------------------------------


def _readme_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configure\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[1:]]


def test_every_flag_and_variable_in_the_readme_is_the_operators() -> None:
    flags = {opt for action in config._parser()._actions for opt in action.option_strings}
    documented_flags: set[str] = set()
    documented_env: set[str] = set()
    for flag_cell, env_cell, *_ in _readme_rows():
        documented_flags |= set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", flag_cell))
        documented_env |= set(re.findall(r"GOODMEM_[A-Z_]+", env_cell))
    assert documented_flags == flags - {"-h", "--help"}
    assert documented_env == env_names()


def test_the_readmes_defaults_are_the_operators() -> None:
    cfg = parse([])
    fields = {config.env_name(f): f for f in Config.model_fields}
    checked = 0
    for _, env_cell, default_cell, *_ in _readme_rows():
        env = re.findall(r"GOODMEM_[A-Z_]+", env_cell)[0]
        shown = re.fullmatch(r"`([^`]*)`.*", default_cell)
        if shown is None:
            continue
        value = getattr(cfg, fields[env])
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        assert str(value) == shown.group(1), env
        checked += 1
    assert checked == 14
