"""Issue #8 part 4: invalid and hostile specs against the real API server and the running operator.

The table is in bad_inputs.py. Every case must be either rejected at `kubectl apply` with a clear
message, or stored and then refused by the operator with Ready=False, a precise reason and at most one
write attempt per generation (checked over two generations). Values at the bounds must become Ready.
Then: the operator is the same process, logged no traceback, still reconciles a fresh LLM, and every
one of these objects can be deleted (no finalizer left stuck).

Large clientConfigs, around the 256 KiB limit that all annotations of an object share (kopf keeps its
diff base in an annotation: nolar/kopf#1087): client-side `kubectl apply` keeps its own copy of the object
in an annotation, so past the limit it is refused at apply time with the API server's message; `kubectl
create` and server-side apply store it, and the operator must handle it (Ready) and release it on
deletion. Past the registry's request size limit (1 MiB in the emulator) the answer is a 413, which is
permanent: InvalidSpec, one attempt per generation.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_operator.reconcile import derived_llm_id
from tests.conftest import SENTINEL, Kube, llm_manifest

from .bad_inputs import DROP, REFUSED, REJECTED, VALID_AT_BOUNDS
from .support import CREDENTIALS, SECRET_KEY, SECRET_NAME, Api, leak_scan, ready, write_summary

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

KIB = 1024


def _name(case: str) -> str:
    return "b-" + re.sub(r"[^a-z0-9-]", "-", case.lower()).strip("-")[:60]


def _manifest(name: str, changes: dict[str, Any], namespace: str) -> str:
    spec = json.loads(llm_manifest(name))["spec"]
    spec["endpointUrl"] = f"https://{name}.{namespace}.models.example.test/v1"  # distinct identities
    for key, value in changes.items():
        if value is DROP:
            spec.pop(key, None)
        else:
            spec[key] = value
    return json.dumps({"apiVersion": "goodmem.ai/v1alpha1", "kind": "LLM", "metadata": {"name": name}, "spec": spec})


def _big_config(size: int) -> dict[str, str]:
    """About `size` bytes in 32 keys (the CRD allows 64)."""
    return {f"blob{i:02d}": "x" * (size // 32) for i in range(32)}


def _writes_and_reads(log: list[dict[str, Any]], llm_id: str) -> tuple[int, int]:
    writes = reads = 0
    for e in log:
        named = llm_id in e["path"] or (isinstance(e.get("body"), dict) and e["body"].get("llmId") == llm_id)
        if not named:
            continue
        if e["method"] == "GET":
            reads += 1
        else:
            writes += 1
    return writes, reads


def _unsettled(
    api: Api, namespace: str, refused: dict[str, tuple[str, str, str, int]], valid: list[str], generation: int
) -> list[str]:
    """The LLMs not yet settled at `generation`: a refused one not refused with its reasons, a valid one not Ready."""
    objs = {o["metadata"]["name"]: o for o in api.llms(namespace)}
    pending = []
    for name, (ready_reason, synced_reason, text, _writes) in refused.items():
        cond = ready(objs.get(name, {}))
        synced = next(
            (c for c in (objs.get(name, {}).get("status") or {}).get("conditions") or [] if c["type"] == "Synced"),
            None,
        )
        if not (
            cond
            and cond["status"] == "False"
            and cond["reason"] == ready_reason
            and cond.get("observedGeneration") == generation
            and synced
            and synced["reason"] == synced_reason
            and text in synced["message"]
        ):
            pending.append(f"{name}: {cond} / {synced}")
    for name in valid:
        cond = ready(objs.get(name, {}))
        if not (cond and cond["status"] == "True" and cond["reason"] == "Available"):
            pending.append(f"{name}: {cond}")
    return pending


def _merge_patch_each(kube: Kube, namespace: str, names: list[str], patch: dict[str, Any]) -> None:
    for name in names:
        kube.run("-n", namespace, "patch", "llm", name, "--type", "merge", "-p", json.dumps(patch))


def test_invalid_and_hostile_specs(
    api: Api,
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    emulator: EmulatorProcess,
    control_plane: ControlPlane,
) -> None:
    pid = operator.pid
    log_start = len(operator.log_text())
    api.put_secret(namespace, SECRET_NAME, {SECRET_KEY: f"{SENTINEL}-bad-input"})
    emulator.reset_stats()
    figures: dict[str, Any] = {}

    # -- 1. rejected at apply, each with its message ----------------------------------------------------
    def apply_rejected(case: tuple[str, dict[str, Any], str]) -> tuple[str, int, str, str]:
        cid, changes, expected = case
        res = kube.apply(namespace, _manifest(_name(cid), changes, namespace), check=False)
        return cid, res.returncode, expected, res.stderr

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(apply_rejected, REJECTED))
    wrong = [
        (cid, rc, expected, err.strip()[:300]) for cid, rc, expected, err in results if rc == 0 or expected not in err
    ]
    assert not wrong, "not rejected with the expected message:\n" + "\n".join(map(str, wrong))
    stored = {o["metadata"]["name"] for o in api.llms(namespace)}
    assert not stored & {_name(c) for c, *_ in REJECTED}, "a rejected spec was stored"

    # -- 2. large clientConfigs ------------------------------------------------------------------------
    huge_apply = _manifest("huge-client-side-apply", {"clientConfig": _big_config(300 * KIB)}, namespace)
    res = kube.apply(namespace, huge_apply, check=False)
    assert res.returncode != 0 and "metadata.annotations: Too long: may not be more than 262144 bytes" in res.stderr, (
        res.stderr[:500]
    )
    big_ok = {  # name -> (kubectl verb and flags, size); each must become Ready
        "big-apply-150k": (["apply", "-f", "-"], 150 * KIB),  # kubectl's copy fits; kubectl's + kopf's would not
        "big-create-300k": (["create", "-f", "-"], 300 * KIB),
        "big-server-side-apply-600k": (["apply", "--server-side", "-f", "-"], 600 * KIB),
    }
    for name, (verb, size) in big_ok.items():
        kube.run("-n", namespace, *verb, input=_manifest(name, {"clientConfig": _big_config(size)}, namespace))
    too_big = "huge-create-1200k"  # the registry's request limit: 413
    kube.run(
        "-n",
        namespace,
        "create",
        "-f",
        "-",
        input=_manifest(too_big, {"clientConfig": _big_config(1200 * KIB)}, namespace),
    )

    # -- 3. refused by the operator, and valid at the bounds -------------------------------------------
    for cid, changes, _expect in REFUSED:
        kube.apply(namespace, _manifest(_name(cid), changes, namespace))
    for cid, changes in VALID_AT_BOUNDS:
        kube.apply(namespace, _manifest(_name(cid), changes, namespace))

    refused = {_name(cid): expect for cid, _changes, expect in REFUSED}
    refused[too_big] = ("InvalidSpec", "InvalidSpec", "registry answered 413", 1)
    valid = [_name(cid) for cid, _ in VALID_AT_BOUNDS] + list(big_ok)

    def wait_settled(generation: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while (pending := _unsettled(api, namespace, refused, valid, generation)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not pending, f"not settled at generation {generation}:\n" + "\n".join(pending)

    wait_settled(1)
    # Generation 2 of each refused case: still invalid, so again at most one attempt.
    _merge_patch_each(kube, namespace, list(refused), {"spec": {"description": "generation 2, still refused"}})
    wait_settled(2)
    time.sleep(3)  # would a retry come? (a permanent failure must not be retried)

    objs = {o["metadata"]["name"]: o for o in api.llms(namespace)}
    log = emulator.stats()["log"]
    calls: dict[str, dict[str, int]] = {}
    for name, (_r, _s, _t, allowed) in refused.items():
        obj = objs[name]
        llm_id = obj["spec"].get("llmId") or derived_llm_id(obj["metadata"]["uid"])
        writes, reads = _writes_and_reads(log, llm_id)
        if name == too_big:  # a 413 body is never parsed: count the 413 answers
            writes = sum(1 for e in log if e["method"] == "POST" and e["status"] == 413)
        calls[name] = {"writes": writes, "reads": reads}
        assert writes <= allowed * 2, f"{name}: {writes} write attempts over 2 generations (at most {allowed} each)"
        assert reads <= 2, f"{name}: {reads} reads over 2 generations"
        message = ready(obj)["message"]
        assert message.endswith("(not retried until the spec or a referenced Secret changes)") or re.search(
            r"\(retrying in [0-9.]+s\)$", message
        ), message
    for line in [f"{n}: {c}" for n, c in calls.items()]:
        print(f"[bad-input] registry calls over 2 generations: {line}")

    # -- 4. the operator is unharmed ----------------------------------------------------------------
    assert operator.pid == pid and operator.proc.poll() is None, "the operator process died"
    assert "Traceback" not in operator.log_text()[log_start:], "the operator logged a traceback"
    kube.apply(namespace, _manifest("fresh-after-all-that", {"credentials": CREDENTIALS}, namespace))
    kube.wait_condition(namespace, "fresh-after-all-that", timeout=60)

    # -- 5. every one of them can be deleted -----------------------------------------------------------
    names = [o["metadata"]["name"] for o in api.llms(namespace)]
    kube.run("-n", namespace, "delete", "llm", "--all", "--wait=false")
    kube.wait_for(lambda: not api.llms(namespace), 90, "every LLM deleted (no finalizer stuck)")

    figures.update(
        {
            "rejected_at_apply": len(REJECTED) + 1,  # the table plus the 300 KiB client-side apply
            "rejected_cases": [cid for cid, *_ in REJECTED] + ["300 KiB clientConfig by client-side apply"],
            "valid_cases": [cid for cid, _ in VALID_AT_BOUNDS] + list(big_ok),
            "refused_by_the_operator": len(refused),
            "refused_reasons": dict(Counter(f"{r[1]}" for r in refused.values())),
            "valid_at_bounds_ready": len(valid),
            "invalid_or_hostile_inputs_tried": len(REJECTED) + 1 + len(refused),
            "max_writes_per_generation": max(c["writes"] for c in calls.values()) / 2 if calls else 0,
            "registry_calls_over_2_generations": calls,
            "objects_deleted": len(names),
            "operator_restarts": 0,
        }
    )
    figures.update(
        leak_scan(operator=operator, emulator=emulator, api=api, control_plane=control_plane, namespaces=[namespace])
    )
    write_summary("bad-input", figures)
