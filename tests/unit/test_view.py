"""The compact view of owned objects: projection onto our managedFields."""

from __future__ import annotations

from tenant_operator.kube.diff import FIELDS_HASH, fields_hash, needs_apply, with_hash
from tenant_operator.kube.view import compact, managed_fields, project

ME = "tenant-operator"


CONTAINERS = {'k:{"name":"dump"}': {".": {}, "f:image": {}, "f:name": {}}}
OURS = {"f:metadata": {"f:annotations": {"f:tenancy.dev/applied-hash": {}}, "f:labels": {"f:tenancy.dev/tenant": {}}},
        "f:spec": {"f:schedule": {},
                   "f:jobTemplate": {"f:spec": {"f:template": {"f:spec": {"f:containers": CONTAINERS}}}}}}


def _cronjob(manager: str = ME) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup-app", "namespace": "tenant-a", "resourceVersion": "7", "uid": "u",
                     "labels": {"tenancy.dev/tenant": "a", "other": "x"},
                     "annotations": {"tenancy.dev/applied-hash": "h", "kubectl.kubernetes.io/last-applied": "{...}"},
                     "managedFields": [
                         {"manager": manager, "operation": "Apply", "fieldsV1": OURS},
                         {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                          "fieldsV1": {"f:status": {"f:lastScheduleTime": {}}}}]},
        "spec": {"schedule": "0 2 * * *", "suspend": False, "concurrencyPolicy": "Allow",
                 "jobTemplate": {"spec": {"template": {"spec": {
                     "restartPolicy": "Never",
                     "containers": [{"name": "dump", "image": "img:1", "terminationMessagePath": "/dev/t",
                                     "imagePullPolicy": "IfNotPresent"}]}}}}},
        "status": {"lastScheduleTime": "2026-11-30T02:00:00Z", "active": [{"name": "job"}]},
    }


OUR_SPEC = {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
    "containers": [{"name": "dump", "image": "img:1"}]}}}}}


def test_projection_keeps_only_our_fields_and_list_items_by_key():
    live = _cronjob()
    assert project({"spec": live["spec"]}, {"f:spec": OURS["f:spec"]}) == {"spec": OUR_SPEC}
    view = compact(live, ME)
    # Only the hash of our fields is kept (a Secret keeps its content: the backends read it).
    assert view[FIELDS_HASH] == fields_hash({"spec": OUR_SPEC}) and "spec" not in view
    assert view["status"] == {"lastScheduleTime": "2026-11-30T02:00:00Z"}   # read by the backup status
    assert view["metadata"]["labels"] == {"tenancy.dev/tenant": "a", "other": "x"}
    assert view["metadata"]["annotations"] == {"tenancy.dev/applied-hash": "h"}
    assert "managedFields" not in view["metadata"] and "uid" not in view["metadata"]


def test_an_object_without_our_fields_is_compared_whole():
    live = _cronjob(manager="someone-else")
    assert compact(live, ME)[FIELDS_HASH] == fields_hash({"spec": live["spec"]})


def test_a_secret_keeps_its_data():
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"K": "dg=="},
              "metadata": {"name": "s", "namespace": "n", "managedFields": [
                  {"manager": ME, "operation": "Apply", "fieldsV1": {"f:data": {"f:K": {}}, "f:type": {}}}]}}
    view = compact(secret, ME)
    assert view["data"] == {"K": "dg=="} and FIELDS_HASH not in view


def test_the_hash_reads_quantities_and_empty_fields_as_the_api_server_stores_them():
    assert fields_hash({"spec": {"hard": {"cpu": "0.5", "pods": 8}, "x": {}}}) == \
        fields_hash({"spec": {"hard": {"cpu": "500m", "pods": "8"}}})
    assert fields_hash({"spec": {"hard": {"cpu": "1"}}}) != fields_hash({"spec": {"hard": {"cpu": "2"}}})
    assert fields_hash({"spec": {"m": "1Gi", "n": "-1", "e": "1e3", "d": ".5"}}) == \
        fields_hash({"spec": {"m": "1073741824", "n": -1, "e": "1k", "d": "500m"}})
    # Only what may be a quantity is one: names, images and text stay as they are.
    for a, b in (("web-1", "web-01"), ("k", "1k"), ("2Gi-x", "2Gi"), ("Infinity", "inf")):
        assert fields_hash({"spec": {"v": a}}) != fields_hash({"spec": {"v": b}}), (a, b)


def test_set_members_and_indexes():
    assert project(["a", "b", "c"], {'v:"c"': {}, 'v:"a"': {}}) == ["a", "c"]
    assert project([{"x": 1, "y": 2}, {"x": 3}], {"i:1": {"f:x": {}}}) == [{"x": 3}]
    assert project({"a": 1}, {'f:missing': {}}) == {}


def test_union_of_apply_and_update_entries_of_our_manager():
    meta = {"managedFields": [
        {"manager": ME, "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}},
        {"manager": ME, "operation": "Apply", "fieldsV1": {"f:metadata": {"f:annotations": {"f:b": {}}}}}]}
    assert managed_fields(meta, ME) == {"f:metadata": {"f:labels": {"f:a": {}}, "f:annotations": {"f:b": {}}}}


def test_drift_against_the_view():
    desired = with_hash({"apiVersion": "batch/v1", "kind": "CronJob",
                         "metadata": {"name": "backup-app", "namespace": "tenant-a",
                                      "labels": {"tenancy.dev/tenant": "a"}},
                         "spec": OUR_SPEC})
    live = _cronjob()
    key = "tenancy.dev/applied-hash"
    live["metadata"]["annotations"][key] = desired["metadata"]["annotations"][key]
    assert not needs_apply(desired, compact(live, ME))
    live["spec"]["schedule"] = "0 3 * * *"
    assert needs_apply(desired, compact(live, ME))
    live["spec"]["schedule"] = "0 2 * * *"
    del live["metadata"]["labels"]["tenancy.dev/tenant"]   # a label of ours removed
    assert needs_apply(desired, compact(live, ME))


def test_quiet_and_fingerprint():
    from tenant_operator import runtime
    from tenant_operator.reconciler import ReconcileResult
    assert runtime.quiet(ReconcileResult())
    assert not runtime.quiet(ReconcileResult(writes=1))
    assert not runtime.quiet(ReconcileResult(retry_after=5.0))
    assert not runtime.quiet(ReconcileResult(waiting_on={"mysql"}))
    assert not runtime.quiet(ReconcileResult(pending_removals=True))
    body = {"metadata": {"resourceVersion": "1"}}
    live = {("v1", "Secret", "ns", "a"): {"metadata": {"resourceVersion": "5"}}}
    same = runtime.fingerprint(body, live, {"a.example.com": [("t", "2026")]})
    assert same == runtime.fingerprint(dict(body), dict(live), {"a.example.com": [("t", "2026")]})
    assert same != runtime.fingerprint(body, {("v1", "Secret", "ns", "a"): {"metadata": {"resourceVersion": "6"}}},
                                       {"a.example.com": [("t", "2026")]})
    assert same != runtime.fingerprint({"metadata": {"resourceVersion": "2"}}, live, {"a.example.com": [("t", "2026")]})
    assert same != runtime.fingerprint(body, live, {})


def test_the_view_hash_ignores_what_a_reconcile_does_not_read():
    from tenant_operator.kube.view import VIEW_HASH
    live = _cronjob()
    first = compact(live, ME)[VIEW_HASH]
    live["metadata"]["resourceVersion"] = "8"
    live["status"]["active"] = []                      # status a reconcile does not read
    live["spec"]["concurrencyPolicy"] = "Forbid"       # a field that is not ours
    assert compact(live, ME)[VIEW_HASH] == first
    live["status"]["lastScheduleTime"] = "2026-12-01T02:00:00Z"   # read by the backup status
    assert compact(live, ME)[VIEW_HASH] != first


def test_annotations_of_others_stay_out_when_we_manage_none():
    from tenant_operator.kube.view import VIEW_HASH
    live = _cronjob()
    ours = live["metadata"]["managedFields"][0]
    ours["fieldsV1"] = {**ours["fieldsV1"], "f:metadata": {
        k: v for k, v in ours["fieldsV1"].get("f:metadata", {}).items() if k != "f:annotations"}}
    first = compact(live, ME)
    live["metadata"]["annotations"]["example.com/note"] = "x"
    second = compact(live, ME)
    assert "example.com/note" not in second["metadata"].get("annotations", {})
    assert second[VIEW_HASH] == first[VIEW_HASH]


def test_a_kept_secret_view_applies_again_without_its_view_keys():
    from tenant_operator.kube.view import VIEW_HASH, appliable
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"K": "dg=="},
              "metadata": {"name": "s", "namespace": "n", "resourceVersion": "9", "labels": {"a": "b"},
                           "annotations": {"tenancy.dev/applied-hash": "h"}, "creationTimestamp": "t",
                           "managedFields": [{"manager": ME, "operation": "Apply",
                                              "fieldsV1": {"f:data": {"f:K": {}}, "f:type": {}}}]}}
    obj = appliable(compact(secret, ME))
    assert VIEW_HASH not in obj and "resourceVersion" not in obj["metadata"]
    assert obj == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"K": "dg=="},
                   "metadata": {"name": "s", "namespace": "n", "labels": {"a": "b"},
                                "annotations": {"tenancy.dev/applied-hash": "h"}}}


def test_views_of_different_objects_share_their_repeated_strings():
    """Parsed separately (each watch event is), two objects' equal strings are two
    copies; their views keep one (the memory of 17,000 views at 1000 tenants)."""
    import json
    first, second = (json.loads(json.dumps(_cronjob())) for _ in range(2))
    second["metadata"]["name"] = "backup-other"
    assert first["metadata"]["namespace"] is not second["metadata"]["namespace"]
    a, b = compact(first, ME), compact(second, ME)
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]
    assert a["metadata"]["labels"]["tenancy.dev/tenant"] is b["metadata"]["labels"]["tenancy.dev/tenant"]
    assert next(iter(a["metadata"]["labels"])) is next(iter(b["metadata"]["labels"]))
    assert a["apiVersion"] is b["apiVersion"] and a["kind"] is b["kind"]
    secret = {"apiVersion": "v1", "kind": "Secret", "data": {"DB_PASSWORD": "cA=="},
              "metadata": {"name": "s", "namespace": "n", "managedFields": [
                  {"manager": ME, "operation": "Apply", "fieldsV1": {"f:data": {"f:DB_PASSWORD": {}}}}]}}
    s1, s2 = (compact(json.loads(json.dumps(secret)), ME) for _ in range(2))
    assert next(iter(s1["data"])) is next(iter(s2["data"])) == "DB_PASSWORD"
