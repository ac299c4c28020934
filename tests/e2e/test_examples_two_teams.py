"""examples/two-teams/ accepted by the real API server with the CRDs of crds/ (schemas and CEL rules): a server-side
dry run of every object, its namespaces renamed to fresh ones (created for real, with the example's labels).

A dry run only: a real ClusterGoodMemConnection named `default` would become the fallback connection of every
namespace it selects in the session's cluster, which other tests share. That the example's LLMs reach Ready under
their connections is the connections e2e's to show (it needs the connection handlers and two registries)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from goodmem_devcluster import ControlPlane

from .conftest import ROOT

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "two-teams"


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_the_api_server_accepts_every_object_of_the_two_team_example(control_plane: ControlPlane, crds: None) -> None:
    cp = control_plane
    docs = _docs()
    suffix = uuid.uuid4().hex[:6]
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} | {"goodmem-system"}
    fresh = {name: f"{name}-{suffix}" for name in names}
    for doc in docs:
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = fresh[doc["metadata"]["name"]]
            cp.kubectl("apply", "-f", "-", input=json.dumps(doc))
        elif "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = fresh[doc["metadata"]["namespace"]]
    cp.kubectl("create", "namespace", fresh["goodmem-system"])  # the operator's namespace, in deploy/

    objects = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["kind"] for d in objects} == {"Secret", "GoodMemConnection", "ClusterGoodMemConnection", "LLM"}
    body = "\n---\n".join(json.dumps(d) for d in objects)
    res = cp.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=body, check=False)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr
    assert res.stdout.count("serverside-applied (server dry run)") == len(objects), res.stdout


def test_the_api_server_refuses_a_broken_connection_from_the_example(control_plane: ControlPlane, crds: None) -> None:
    """The dry run above can fail: the CRD's rules do apply (a selector requirement with In and no values)."""
    [cluster] = [d for d in _docs() if d["kind"] == "ClusterGoodMemConnection"]
    cluster["spec"]["namespaceSelector"]["matchExpressions"] = [{"key": "team", "operator": "In"}]
    res = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(cluster), check=False
    )
    assert res.returncode != 0 and "values must be non-empty" in res.stderr, res.stderr
