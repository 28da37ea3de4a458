"""The compact in-memory view of owned objects (kube/view.py) against what the
real API server stores: everything a tenant renders, applied with the
operator's field manager and read back, compares as in sync; another
manager's edit of one of our fields, or a removed field, shows as drift."""

from __future__ import annotations

import json
import subprocess

import pytest
from tenant_operator import config as config_mod
from tenant_operator import render, spec
from tenant_operator.kube.client import Kube
from tenant_operator.kube.diff import needs_apply, with_hash
from tenant_operator.kube.view import compact
from tenant_operator.render import backup as render_backup

from .conftest import DEVENV, unique, wait_for

pytestmark = pytest.mark.usefixtures("crd")
MANAGER = "tenant-operator-view-test"


@pytest.fixture
def applied(core):
    """A rendered tenant's objects (plus a credentials Secret), applied with our
    field manager; the namespace is removed afterwards."""
    cfg = config_mod.load(str(DEVENV / "operator-config.yaml"))
    name = unique("view")
    body = {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name, "uid": "0f4d6c1e-0000-4000-8000-000000000001", "generation": 1},
            "spec": {"tier": "premium", "domains": [f"{name}.example.com"], "databases": ["app"]}}
    t = spec.parse(body, cfg)
    objs = [with_hash(o) for o in render.render_tenant(t, cfg) + render_backup.cronjobs(t, cfg)]
    objs.append(with_hash(render.secret(t, "app-db-credentials", "mysql", {"MYSQL_PASSWORD": "s3cret"})))
    kube = Kube.from_environment(MANAGER)
    for obj in objs:
        kube.apply(obj)
    yield kube, t, objs
    kube.delete("Namespace", t.namespace)


def _read(kube: Kube, obj: dict) -> dict:
    return kube.get(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", ""))


def test_every_rendered_kind_reads_back_in_sync(applied):
    kube, _t, objs = applied
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "Ingress", "Secret", "CronJob"} <= kinds
    for obj in objs:
        live = _read(kube, obj)
        view = compact(live, MANAGER)
        assert not needs_apply(obj, view), f"{obj['kind']} {obj['metadata']['name']}: {view}"
        # Smaller than what the watch delivers: no managedFields, no server defaults or status.
        assert "managedFields" not in view["metadata"]
        assert len(json.dumps(view)) < len(json.dumps(live))


def test_another_managers_edit_of_our_field_is_drift(applied):
    kube, t, objs = applied
    quota = next(o for o in objs if o["kind"] == "ResourceQuota")
    subprocess.run(["kubectl", "patch", "resourcequota", quota["metadata"]["name"],
                    "-n", t.namespace, "--type=merge", "-p", json.dumps({"spec": {"hard": {"pods": "999"}}})],
                   check=True, capture_output=True)
    live = wait_for(lambda: (lambda o: o if o["spec"]["hard"].get("pods") == "999" else None)(_read(kube, quota)),
                    10, what="patched quota")
    assert needs_apply(quota, compact(live, MANAGER))


def test_a_label_of_another_manager_is_not_drift(applied):
    kube, t, objs = applied
    policy = next(o for o in objs if o["kind"] == "NetworkPolicy")
    subprocess.run(["kubectl", "label", "networkpolicy", policy["metadata"]["name"], "-n", t.namespace,
                    "team=payments"], check=True, capture_output=True)
    live = wait_for(lambda: (lambda o: o if o["metadata"]["labels"].get("team") else None)(_read(kube, policy)),
                    10, what="labelled policy")
    assert not needs_apply(policy, compact(live, MANAGER))


def test_removed_field_of_ours_is_drift(applied):
    kube, t, objs = applied
    quota = next(o for o in objs if o["kind"] == "ResourceQuota")
    name = quota["metadata"]["name"]
    removed = sorted(quota["spec"]["hard"])[0]
    subprocess.run(["kubectl", "patch", "resourcequota", name, "-n", t.namespace, "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": f"/spec/hard/{removed.replace('/', '~1')}"}])],
                   check=True, capture_output=True)
    live = wait_for(lambda: (lambda o: o if removed not in o["spec"]["hard"] else None)(_read(kube, quota)),
                    10, what=f"quota without {removed}")
    assert needs_apply(quota, compact(live, MANAGER))
