"""Credentials from Secrets on the real control plane: rotation, healing, isolation, and no leaks."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from tests.leakscan import assert_no_leaks, without_emulator_redactions

from .conftest import CREDENTIALS_LABELS, ROOT, SENTINEL, Kube, llm_manifest, scrape_metrics, secret_manifest

pytestmark = pytest.mark.e2e

REF = {
    "apiKey": {"secretKeyRef": {"name": "key", "key": "api-key"}, "headerName": "Authorization", "prefix": "Bearer "}
}


def _fp(emulator: EmulatorProcess, llm_id: str) -> str:
    return emulator.record(llm_id)["credentialsFingerprint"]


def _status_fp(kube: Kube, namespace: str, name: str) -> str:
    """The operator's own keyed fingerprint of the credentials it last applied (status.credentialsFingerprint)."""
    fp = kube.get(namespace, "llm", name)["status"]["credentialsFingerprint"]
    assert fp, f"{name} has no credentials fingerprint in its status"
    return fp


def test_rotation_reaches_only_the_users_of_the_secret(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "first-key-value"}))
    kube.apply(namespace, secret_manifest("other", {"api-key": "unrelated"}))
    for name in ("r1", "r2"):
        kube.apply(namespace, llm_manifest(name, credentials=REF))
    kube.apply(
        namespace, llm_manifest("r3", credentials={"apiKey": {"secretKeyRef": {"name": "other", "key": "api-key"}}})
    )
    ids = {}
    for name in ("r1", "r2", "r3"):
        kube.wait_condition(namespace, name)
        ids[name] = kube.get(namespace, "llm", name)["status"]["llmId"]
    before = {n: _fp(emulator, i) for n, i in ids.items()}
    status_fp = {n: _status_fp(kube, namespace, n) for n in ids}
    emulator.reset_stats()
    started = time.monotonic()
    kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL}))
    kube.wait_for(lambda: all(_fp(emulator, ids[n]) != before[n] for n in ("r1", "r2")), 20, "rotation")
    elapsed = time.monotonic() - started
    puts = [e for e in emulator.stats()["log"] if e["method"] == "PUT"]
    assert sorted(e["path"].rsplit("/", 1)[1] for e in puts) == sorted([ids["r1"], ids["r2"]]), "one PUT per user"
    assert all(set(e["body"]) == {"credentials"} for e in puts)
    assert _fp(emulator, ids["r3"]) == before["r3"]
    print(f"rotation reached 2 LLMs in {elapsed:.2f}s")
    # The status fingerprint follows for the users only, and a resync sends nothing more.
    kube.wait_for(
        lambda: all(_status_fp(kube, namespace, n) != status_fp[n] for n in ("r1", "r2")),
        10,
        "status fingerprints of the users",
    )
    assert _status_fp(kube, namespace, "r3") == status_fp["r3"]
    time.sleep(1.0)
    assert len([e for e in emulator.stats()["log"] if e["method"] == "PUT"]) == 2


def test_unrelated_secret_churn_makes_no_registry_call(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "v"}))
    kube.apply(namespace, llm_manifest("churn", credentials=REF))
    kube.wait_condition(namespace, "churn")
    time.sleep(0.5)
    emulator.reset_stats()
    log_start = len(operator.log_text())
    for i in range(20):  # half of them labelled as credentials (no LLM uses them), half not
        kube.apply(namespace, secret_manifest(f"noise-{i % 4}", {"x": str(i)}, labelled=i % 4 < 2))
    kube.run("-n", namespace, "label", "secret", "key", "touched=yes")  # a change that is not the key's value
    time.sleep(2.0)
    assert sum(emulator.stats()["requests"].values()) == 0
    # Secrets no LLM uses are filtered out before the handler runs: of the 21 Secret events above, only the
    # used Secret's label change reaches it (the operator logs at debug level: one line per invocation).
    invoked = operator.log_text()[log_start:].count("Handler 'secret-changed' is invoked.")
    assert invoked == 1, f"the Secret handler ran {invoked} times for 20 unrelated events and 1 related one"


def test_switching_secrets_moves_the_rotation(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("old-key", {"api-key": "old-1"}))
    kube.apply(namespace, secret_manifest("new-key", {"api-key": "new-1"}))
    kube.apply(
        namespace,
        llm_manifest("mover", credentials={"apiKey": {"secretKeyRef": {"name": "old-key", "key": "api-key"}}}),
    )
    kube.wait_condition(namespace, "mover")
    llm_id = kube.get(namespace, "llm", "mover")["status"]["llmId"]
    first = _fp(emulator, llm_id)
    kube.apply(
        namespace,
        llm_manifest("mover", credentials={"apiKey": {"secretKeyRef": {"name": "new-key", "key": "api-key"}}}),
    )
    kube.wait_for(lambda: _fp(emulator, llm_id) != first, 20, "credentials from the new Secret")
    moved = _fp(emulator, llm_id)
    time.sleep(1.0)
    emulator.reset_stats()
    kube.apply(namespace, secret_manifest("old-key", {"api-key": "old-2"}))  # no longer used by anyone
    time.sleep(2.0)
    assert sum(emulator.stats()["requests"].values()) == 0, "a Secret the LLM stopped using no longer reaches it"
    kube.apply(namespace, secret_manifest("new-key", {"api-key": "new-2"}))
    kube.wait_for(lambda: _fp(emulator, llm_id) != moved, 20, "rotation of the Secret now in use")
    assert [e["method"] for e in emulator.stats()["log"]].count("PUT") == 1


def test_llm_before_its_secret_heals_by_itself(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, llm_manifest("early", credentials=REF))
    cond = kube.wait_condition(namespace, "early", "False", "SecretNotFound")
    assert "not found" in cond["message"]
    kube.apply(namespace, secret_manifest("key", {"wrong-key": "v"}))
    kube.wait_condition(namespace, "early", "False", "SecretKeyNotFound")
    kube.apply(namespace, secret_manifest("key", {"api-key": "now-there"}))
    kube.wait_condition(namespace, "early", "True", "Available", timeout=20)


def test_secret_deleted_after_registration_keeps_registry_credentials(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "kept"}))
    kube.apply(namespace, llm_manifest("keep", credentials=REF))
    kube.wait_condition(namespace, "keep")
    llm_id = kube.get(namespace, "llm", "keep")["status"]["llmId"]
    fp = _fp(emulator, llm_id)
    kube.run("-n", namespace, "delete", "secret", "key")
    cond = kube.wait_condition(namespace, "keep", "False", "SecretNotFound")
    assert "keeps the credentials" in cond["message"]
    assert emulator.record(llm_id) is not None and _fp(emulator, llm_id) == fp


def test_cross_namespace_reference_refused(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess, control_plane
) -> None:
    other = namespace + "-x"
    control_plane.kubectl("create", "namespace", other)
    kube.apply(other, secret_manifest("key", {"api-key": SENTINEL}))
    creds = {"apiKey": {"secretKeyRef": {"name": "key", "key": "api-key", "namespace": other}}}
    kube.apply(namespace, llm_manifest("borrow", credentials=creds))
    cond = kube.wait_condition(namespace, "borrow", "False", "SecretNotAllowed")
    assert "another namespace" in cond["message"]
    assert all(r["displayName"] != "LLM borrow" for r in emulator.records())


def test_sentinel_never_leaks(kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    """Plant the sentinel, drive create, rotation and registry errors that echo the request; scan everything.

    Only the PUT fails (errorMethods), so the rotation's credentials really go out and come back in the error
    text the operator reads; tests/integration/test_leak_scan.py shows this scan fails when redaction is off.
    """
    kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-v1"}))
    kube.apply(namespace, llm_manifest("leak", credentials=REF, labels={"team": "sec"}))
    kube.wait_condition(namespace, "leak")
    emulator.set_faults(errorRate=1.0, errorStatus=400, errorMethods=["PUT"], echoRequest=True)
    try:
        kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-v2"}))
        cond = kube.wait_condition(namespace, "leak", "False", "InvalidSpec", ctype="Synced", timeout=20)
        assert "registry answered 400" in cond["message"]
        assert "request body as received" in cond["message"] and "<redacted>" in cond["message"], (
            "the echoed credentials reached the operator (and were redacted)"
        )
    finally:
        emulator.clear_faults()
    emulator.set_faults(errorRate=1.0, errorStatus=503, errorMethods=["PUT"], echoRequest=True)
    try:
        kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-v3"}))
        kube.wait_condition(namespace, "leak", "False", "RegistryUnavailable", ctype="Synced", timeout=20)
    finally:
        emulator.clear_faults()
    kube.wait_condition(namespace, "leak", "True", "Available", timeout=60)

    llm = kube.get(namespace, "llm", "leak")
    events = kube.events(namespace)
    record = emulator.record(llm["status"]["llmId"])
    metrics = scrape_metrics(operator)
    places = {
        "operator log (debug)": operator.log_text(),
        "LLM object and status": json.dumps(llm),
        "events": json.dumps(events),
        # The record view without the credentials the emulator redacts itself (labels included).
        "emulator record view": json.dumps(without_emulator_redactions(record)),
        "metrics": metrics,
    }
    assert "[DEBUG   ]" in places["operator log (debug)"], "the scan must cover debug-level logs"
    assert 'verb="update"' in metrics, "the scan must cover the metrics of the failed and retried updates"
    assert_no_leaks(places, SENTINEL)


def test_status_fingerprint_changes_on_rotation_and_only_then(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """status.credentialsFingerprint is what says whether the credentials must be resent: it must move when the
    used key's value changes, and stay when anything else changes (else every edit would resend the key)."""
    kube.apply(namespace, secret_manifest("key", {"api-key": "value-one", "other": "x"}))
    kube.apply(namespace, llm_manifest("fp", credentials=REF, description="d1"))
    kube.wait_condition(namespace, "fp")
    llm_id = kube.get(namespace, "llm", "fp")["status"]["llmId"]
    first = _status_fp(kube, namespace, "fp")

    def observed_again(what: str) -> None:
        """Wait until the operator has reconciled (a registry GET or PUT of the entry) since the last reset."""
        kube.wait_for(lambda: any(e["path"].endswith(llm_id) for e in emulator.stats()["log"]), 20, what)

    emulator.reset_stats()
    kube.apply(namespace, llm_manifest("fp", credentials=REF, description="d2"))
    kube.wait_for(lambda: emulator.record(llm_id)["description"] == "d2", 20, "the description change")
    kube.wait_condition(namespace, "fp")
    assert _status_fp(kube, namespace, "fp") == first, "a description change moved the fingerprint"
    assert all("credentials" not in e["body"] for e in emulator.stats()["log"] if e["method"] == "PUT")
    for what, change in [
        ("a label on the LLM", ("label", "llm", "fp", "touched=yes")),
        ("another key of the Secret", ("patch", "secret", "key", "-p", '{"stringData": {"other": "y"}}')),
        ("a label on the Secret", ("label", "secret", "key", "touched=yes")),
    ]:
        emulator.reset_stats()
        log_start = len(operator.log_text())
        kube.run("-n", namespace, *change)
        if what != "a label on the Secret":
            observed_again(what)
        else:  # not a data change: the Secret handler runs and reconciles nobody
            kube.wait_for(lambda: "Handler 'secret-changed' succeeded." in operator.log_text()[log_start:], 20, what)  # noqa: B023 - wait_for calls it within this iteration, so this iteration's log_start is the one meant
        assert _status_fp(kube, namespace, "fp") == first, f"{what} moved the fingerprint"
        assert not [e for e in emulator.stats()["log"] if e["method"] == "PUT"], f"{what} resent the credentials"

    kube.apply(namespace, secret_manifest("key", {"api-key": "value-two", "other": "y"}))
    second = kube.wait_for(lambda: (fp := _status_fp(kube, namespace, "fp")) != first and fp, 20, "rotation")
    kube.apply(namespace, secret_manifest("key", {"api-key": "value-one", "other": "y"}))
    kube.wait_for(lambda: _status_fp(kube, namespace, "fp") == first, 20, "rotation back")
    assert second != first


def test_unlabelled_secret_is_refused_until_labelled(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """(a) An unlabelled Secret: Ready=False SecretNotLabelled with the exact command, nothing sent to the
    registry; (b) running that command heals the LLM through the Secret's event, the LLM untouched;
    (c) the Secret's value shows nowhere, and its changes before the label never reach the operator."""
    kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-not-yet"}, labelled=False))
    emulator.reset_stats()
    kube.apply(namespace, llm_manifest("optin", credentials=REF))
    cond = kube.wait_condition(namespace, "optin", "False", "SecretNotLabelled")
    command = f"kubectl label secret -n {namespace} key goodmem.ai/credentials=true"
    assert command in cond["message"], cond["message"]
    assert sum(emulator.stats()["requests"].values()) == 0, "nothing is sent to the registry"
    before = kube.get(namespace, "llm", "optin")

    log_start = len(operator.log_text())
    for i in range(3):  # the watch selects by label: these never reach the operator
        kube.apply(namespace, secret_manifest("key", {"api-key": f"{SENTINEL}-not-yet-{i}"}, labelled=False))
    kube.run(*shlex.split(command)[1:])
    # Far under the 300 s safety-net retry: only the label's own watch event can heal it this soon.
    kube.wait_condition(namespace, "optin", "True", "Available", timeout=30)
    invoked = operator.log_text()[log_start:].count("Handler 'secret-changed' is invoked.")
    assert invoked == 1, f"the Secret handler ran {invoked} times; expected once, for the label (not the 3 updates)"
    after = kube.get(namespace, "llm", "optin")
    for field in ("generation", "labels", "annotations"):
        assert after["metadata"].get(field) == before["metadata"].get(field), f"the LLM's {field} was touched"
    assert after["spec"] == before["spec"]
    posts = [e for e in emulator.stats()["log"] if e["method"] == "POST"]
    assert len(posts) == 1 and emulator.record(after["status"]["llmId"]) is not None

    places = {
        "operator log (debug)": operator.log_text(),
        "LLM object and status": json.dumps(after),
        "events": json.dumps(kube.events(namespace)),
        "metrics": scrape_metrics(operator),
    }
    assert_no_leaks(places, SENTINEL)


def test_label_removed_later_refuses_but_deletes_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "consented"}))
    kube.apply(namespace, llm_manifest("revoked", credentials=REF))
    kube.wait_condition(namespace, "revoked")
    llm_id = kube.get(namespace, "llm", "revoked")["status"]["llmId"]
    fp = _fp(emulator, llm_id)
    emulator.reset_stats()
    kube.run("-n", namespace, "label", "secret", "key", "goodmem.ai/credentials-")
    cond = kube.wait_condition(namespace, "revoked", "False", "SecretNotLabelled")
    assert "keeps the credentials it already has" in cond["message"]
    kube.apply(namespace, secret_manifest("key", {"api-key": "not-consented"}, labelled=False))
    assert sum(emulator.stats()["requests"].values()) == 0, "no registry call: nothing written, nothing deleted"
    assert _fp(emulator, llm_id) == fp
    kube.run("-n", namespace, "label", "secret", "key", "goodmem.ai/credentials=true")
    kube.wait_condition(namespace, "revoked", "True", "Available", timeout=30)
    kube.wait_for(lambda: _fp(emulator, llm_id) != fp, 20, "the value set while unlabelled, taken up once labelled")
    puts = [e for e in emulator.stats()["log"] if e["method"] == "PUT"]
    assert len(puts) == 1 and set(puts[0]["body"]) == {"credentials"}


def test_readme_upgrade_command_labels_every_secret_in_use(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess, control_plane, tmp_path
) -> None:
    """The upgrade note's one-liner, run as README.md prints it: it labels the Secrets LLMs use, no other."""
    readme = (ROOT / "README.md").read_text()
    [line] = [
        x for x in readme.splitlines() if x.startswith("kubectl get llms -A -o jsonpath=") and "label secret" in x
    ]
    for name in ("a", "b", "unused"):
        kube.apply(namespace, secret_manifest(name, {"api-key": f"value-{name}"}, labelled=False))
    users = {"u1": "a", "u2": "a", "u3": "b"}
    for llm, secret in users.items():
        kube.apply(
            namespace, llm_manifest(llm, credentials={"apiKey": {"secretKeyRef": {"name": secret, "key": "api-key"}}})
        )
    kube.apply(namespace, llm_manifest("u4"))  # no credentials: nothing to label
    # A reference to a Secret that does not exist (as other namespaces of a real cluster may hold): skipped.
    kube.apply(namespace, llm_manifest("u5", credentials={"apiKey": {"secretKeyRef": {"name": "gone", "key": "k"}}}))
    for llm in users:
        kube.wait_condition(namespace, llm, "False", "SecretNotLabelled")

    env = {
        **os.environ,
        "PATH": f"{control_plane.kubectl_path.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(control_plane.kubeconfig_path),
        "KUBECACHEDIR": str(tmp_path / "kubectl-cache"),
    }
    done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"skipped {namespace}/gone" in done.stdout, done.stdout
    for llm in [*users, "u4"]:
        kube.wait_condition(namespace, llm, "True", "Available", timeout=30)

    def labels(name: str) -> dict[str, str]:
        return kube.get(namespace, "secret", name)["metadata"].get("labels") or {}

    assert labels("a") == labels("b") == CREDENTIALS_LABELS
    assert labels("unused") == {}, "a Secret no LLM uses is left alone"
