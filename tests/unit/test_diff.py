"""kube.diff: desired vs live, so an unchanged tenant sends nothing to the API server."""

from __future__ import annotations

import copy

import pytest
from tenant_operator import config, render, spec
from tenant_operator.kube.diff import desired_hash, is_subset, needs_apply, with_hash
from tenant_operator.naming import ANNOTATION_HASH

QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "tenant-quota", "namespace": "tenant-acme",
                 "labels": {"tenancy.dev/tenant": "acme", "tenancy.dev/component": "quota"}},
    "spec": {"hard": {"requests.cpu": "0.5", "limits.memory": "1Gi", "pods": 8}},
}


def live_copy(desired: dict) -> dict:
    """What the API server returns: our fields plus the ones it adds, quantities canonicalised."""
    live = copy.deepcopy(desired)
    live["metadata"].update({
        "uid": "5f0c7e6a-0000-4000-8000-000000000001",
        "resourceVersion": "12345",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "managedFields": [{"manager": "tenant-operator", "operation": "Apply"}],
    })
    live["metadata"]["labels"]["kubernetes.io/metadata.name"] = "x"
    live["metadata"]["annotations"]["other.io/note"] = "added by someone else"
    live["status"] = {"hard": {"pods": "8"}, "used": {"pods": "3"}}
    hard = live["spec"]["hard"]
    hard["requests.cpu"] = "500m"
    hard["pods"] = "8"
    return live


def test_hash_is_stable_and_sensitive():
    assert desired_hash(QUOTA) == desired_hash(copy.deepcopy(QUOTA))
    reordered = {k: QUOTA[k] for k in reversed(list(QUOTA))}
    assert desired_hash(reordered) == desired_hash(QUOTA)
    changed = copy.deepcopy(QUOTA)
    changed["spec"]["hard"]["pods"] = 9
    assert desired_hash(changed) != desired_hash(QUOTA)
    assert len(desired_hash(QUOTA)) == 16


def test_with_hash_adds_the_annotation_without_mutating():
    original = copy.deepcopy(QUOTA)
    out = with_hash(QUOTA)
    assert out["metadata"]["annotations"] == {ANNOTATION_HASH: desired_hash(QUOTA)}
    assert QUOTA == original
    kept = with_hash({**QUOTA, "metadata": {**QUOTA["metadata"], "annotations": {"a": "b"}}})
    assert kept["metadata"]["annotations"]["a"] == "b"
    assert ANNOTATION_HASH in kept["metadata"]["annotations"]


def test_no_apply_when_live_only_has_server_added_fields():
    desired = with_hash(QUOTA)
    assert needs_apply(desired, live_copy(desired)) is False


def test_apply_when_live_is_missing():
    assert needs_apply(with_hash(QUOTA), None) is True


def test_apply_when_a_desired_field_differs():
    desired = with_hash(QUOTA)
    live = live_copy(desired)
    live["spec"]["hard"]["limits.memory"] = "2Gi"
    assert needs_apply(desired, live) is True


def test_apply_when_a_desired_label_is_missing():
    desired = with_hash(QUOTA)
    live = live_copy(desired)
    del live["metadata"]["labels"]["tenancy.dev/component"]
    assert needs_apply(desired, live) is True


def test_apply_when_the_hash_annotation_differs():
    desired = with_hash(QUOTA)
    live = live_copy(desired)
    live["metadata"]["annotations"][ANNOTATION_HASH] = "0000000000000000"
    assert needs_apply(desired, live) is True
    del live["metadata"]["annotations"][ANNOTATION_HASH]
    assert needs_apply(desired, live) is True


def test_removing_a_desired_field_is_seen_through_the_hash():
    old = with_hash(QUOTA)
    live = live_copy(old)
    smaller = copy.deepcopy(QUOTA)
    del smaller["spec"]["hard"]["pods"]
    new = with_hash(smaller)
    # A subset check alone cannot see the removal ...
    same_hash = {**live, "metadata": {**live["metadata"], "annotations": new["metadata"]["annotations"]}}
    assert is_subset(new, same_hash)
    # ... the hash annotation can.
    assert needs_apply(new, live) is True


@pytest.mark.parametrize(("want", "have"), [
    ("0.5", "500m"),
    (8, "8"),
    ("8", 8),
    ("1Gi", "1073741824"),
    ("1000m", "1"),
    ("2", "2000m"),
])
def test_quantities_compare_equal(want, have):
    assert is_subset({"q": want}, {"q": have})


@pytest.mark.parametrize(("want", "have"), [
    ("0.5", "501m"),
    ("1Gi", "1G"),
    ("8", 9),
    ("nginx", "traefik"),
    ("abc", 1),
    (True, "True"),
    ("x", None),
    ({"a": 1}, "a"),
    ([1], {"0": 1}),
])
def test_different_scalars_do_not_compare_equal(want, have):
    assert not is_subset({"q": want}, {"q": have})


def test_lists_must_match_in_length_and_order():
    assert is_subset({"l": [1, 2]}, {"l": [1, 2]})
    assert not is_subset({"l": [1, 2]}, {"l": [1, 2, 3]})
    assert not is_subset({"l": [1, 2, 3]}, {"l": [1, 2]})
    assert not is_subset({"l": [1, 2]}, {"l": [2, 1]})
    assert not is_subset({"l": []}, {"l": [1]})
    # Elements are compared as subsets: server-added fields inside list items are fine.
    assert is_subset({"l": [{"name": "a"}]}, {"l": [{"name": "a", "extra": True}]})


def test_empty_values_the_server_drops_are_ignored():
    assert is_subset({"data": {}, "items": [], "x": None, "k": "v"}, {"k": "v"})
    assert not is_subset({"data": {"a": "b"}}, {})


def test_rendered_objects_need_no_apply_against_themselves():
    cfg = config.from_dict({"sharedServices": [{"cidr": "10.0.0.0/8", "ports": [443]}]})
    t = spec.parse({"metadata": {"name": "acme"},
                    "spec": {"domains": ["acme.example.com"], "admins": [{"name": "bob"}]}}, cfg)
    for obj in render.render_tenant(t, cfg):
        desired = with_hash(obj)
        live = copy.deepcopy(desired)
        live["metadata"]["uid"] = "u"
        assert needs_apply(desired, live) is False, obj["metadata"]["name"]
