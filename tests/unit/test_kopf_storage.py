"""kopf storages: the diff base as a digest in the status (driven the way kopf's processing drives it), and
handler progress, also in the status, whose retry delay ends when the resource changes."""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import diffs  # kopf's own diff, as processing.py computes it

from goodmem_operator.handlers import ANNOTATION_PREFIX, ChangeAwareProgressStorage, DigestDiffBaseStorage

pytestmark = pytest.mark.unit

KEY = f"{ANNOTATION_PREFIX}/last-handled-configuration"


def _storages() -> tuple[DigestDiffBaseStorage, ChangeAwareProgressStorage]:
    diffbase = DigestDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    return diffbase, ChangeAwareProgressStorage(diffbase=diffbase)


def _apply(raw: dict, patch: Any) -> dict:
    """A JSON merge patch (RFC 7386, what kopf sends) applied to a copy of `raw`."""

    def merge(target: Any, change: Any) -> Any:
        if not isinstance(change, dict):
            return copy.deepcopy(change)
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in change.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value)
        return out

    return merge(copy.deepcopy(raw), json.loads(json.dumps(dict(patch))))


def _body(
    spec: dict[str, Any], annotations: dict[str, str] | None = None, status: dict[str, Any] | None = None
) -> dict:
    return {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {
            "name": "x",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "1",
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
        "status": status or {},
    }


def _cause(raw: dict) -> tuple[Any, Any, Any]:
    """old, new, diff exactly as kopf's processing computes them."""
    diffbase, progress = _storages()
    body = kopf.Body(raw)
    old = diffbase.fetch(body=body)
    new = diffbase.build(body=body)
    old = progress.clear(essence=old) if old is not None else None
    new = progress.clear(essence=new) if new is not None else None
    return old, new, diffs.diff(old, new)


def _handled(raw: dict) -> dict:
    """The object after kopf stored the diff base for it (store() into a patch, patch applied)."""
    diffbase, _progress = _storages()
    _old, new, _diff = _cause(raw)
    patch = kopf.Patch()
    diffbase.store(body=kopf.Body(raw), patch=patch, essence=new)
    return _apply(raw, patch)


def test_stores_a_short_digest_in_the_status_whatever_the_spec_size() -> None:
    huge = {"displayName": "x", "clientConfig": {f"k{i}": "v" * 10_000 for i in range(40)}}
    diffbase, _ = _storages()
    patch = kopf.Patch()
    diffbase.store(body=kopf.Body(_body(huge)), patch=patch, essence=diffbase.build(body=kopf.Body(_body(huge))))
    # Only the status: kopf sends it with our conditions in one /status patch, and never touches metadata.
    assert set(patch) == {"status"} and len(json.dumps(dict(patch))) < 150
    value = _apply(_body(huge), patch)["status"]["kopf"]["lastHandled"]
    assert value.startswith("sha256:") and len(value) < 80


def test_an_annotation_from_an_older_operator_is_read_then_moved_to_the_status() -> None:
    raw = _body({"displayName": "x"})
    diffbase, _ = _storages()
    raw["metadata"]["annotations"][KEY] = diffbase.digest_of(kopf.Body(raw))  # what the previous release stored
    old, new, diff = _cause(raw)
    assert old == new and not diff, "no spurious update after upgrading the operator"
    patch = kopf.Patch()
    diffbase.store(body=kopf.Body(raw), patch=patch, essence=new)
    moved = _apply(raw, patch)
    assert (
        KEY not in moved["metadata"]["annotations"]
        and moved["status"]["kopf"]["lastHandled"] == raw["metadata"]["annotations"][KEY]
    )
    assert not _cause(moved)[2]


def test_new_object_has_no_diff_base() -> None:
    old, _new, _diff = _cause(_body({"displayName": "x"}))
    assert old is None  # kopf: a creation


def test_unchanged_object_has_an_empty_diff_despite_status_and_progress_annotations() -> None:
    handled = _handled(_body({"displayName": "x"}, annotations={"team": "a"}))
    handled["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    handled["status"]["kopf"]["progress"] = {"reconcile": {"retries": 1}}
    handled["metadata"]["annotations"][f"{ANNOTATION_PREFIX}/reconcile"] = json.dumps(
        {"retries": 1}
    )  # an older release's
    handled["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    old, new, diff = _cause(handled)
    assert old == new and not diff


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["spec"].update(displayName="y"),
        lambda o: o["spec"].update(clientConfig={"a": 1}),
        lambda o: o["metadata"]["annotations"].update({"goodmem.ai/paused": "true"}),
        lambda o: o["metadata"].update(labels={"env": "prod"}),
    ],
)
def test_a_change_of_spec_labels_or_annotations_is_a_diff(change: Any) -> None:
    handled = _handled(_body({"displayName": "x", "clientConfig": {"a": 0}}))
    change(handled)
    old, _new, diff = _cause(handled)
    assert old is not None and diff  # kopf: an update


def test_reads_a_diff_base_written_by_kopfs_own_annotation_storage() -> None:
    raw = _body({"displayName": "x"})
    legacy = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    patch = kopf.Patch()
    legacy.store(body=kopf.Body(raw), patch=patch, essence=legacy.build(body=kopf.Body(raw)))
    raw["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    assert raw["metadata"]["annotations"][KEY].startswith("{")
    _old, _new, diff = _cause(raw)
    assert not diff  # no spurious update after upgrading the operator
    raw["spec"]["displayName"] = "y"
    assert _cause(raw)[2]


class _Handler:
    id = "reconcile"


def _progress() -> ChangeAwareProgressStorage:
    return _storages()[1]


def _with_record(raw: dict, record: dict) -> dict:
    patch = kopf.Patch()
    _progress().store(key="reconcile", record=record, body=kopf.Body(raw), patch=patch)
    assert set(patch) == {"status"}
    return _apply(raw, patch)


DELAYED = {
    "started": "2026-01-01T00:00:00.000000+00:00",
    "delayed": "2999-01-01T00:00:00.000000+00:00",
    "purpose": "create",
    "retries": 3,
    "success": False,
    "failure": False,
    "message": "RateLimited: ...",
}


def test_a_retry_delay_holds_while_the_resource_is_unchanged() -> None:
    raw = _with_record(_body({"displayName": "x"}), DELAYED)
    raw["status"]["conditions"] = [{"type": "Ready", "status": "False"}]  # status is not a change
    record = _progress().fetch(key="reconcile", body=kopf.Body(raw))
    assert record == DELAYED  # exactly kopf's own record: anything else would be re-stored on every event


async def test_kopf_does_not_restore_an_unchanged_delayed_record() -> None:
    """kopf re-patches a record that differs from what it would store; a patch that changes nothing brings no
    watch event, and kopf, which skipped its sleep because it patched, would never wake up for the retry."""
    from kopf._core.actions import progression  # kopf's own state machine, as processing.py uses it

    raw = _with_record(_body({"displayName": "x"}), DELAYED)
    state = progression.State.from_storage(body=kopf.Body(raw), storage=_progress(), handlers=[_Handler()])
    patch = kopf.Patch()
    state.store(body=kopf.Body(raw), patch=patch, storage=_progress())
    assert not patch


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["spec"].update(displayName="fixed"),
        lambda o: o["metadata"]["annotations"].update({"goodmem.ai/paused": "true"}),
    ],
)
def test_a_changed_resource_ends_the_retry_delay(change: Any) -> None:
    raw = _with_record(_body({"displayName": "x"}), DELAYED)
    change(raw)
    record = _progress().fetch(key="reconcile", body=kopf.Body(raw))
    assert record["delayed"] is None and record["retries"] == 3 and record["purpose"] == "create"


def test_a_record_written_by_kopfs_own_storage_keeps_its_delay() -> None:
    raw = _body({"displayName": "x"})
    patch = kopf.Patch()
    kopf.StatusProgressStorage(name="kopf").store(key="reconcile", record=DELAYED, body=kopf.Body(raw), patch=patch)
    raw = _apply(raw, patch)
    raw["spec"]["displayName"] = "y"
    assert _progress().fetch(key="reconcile", body=kopf.Body(raw))["delayed"] == DELAYED["delayed"]
