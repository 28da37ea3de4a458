"""Placement: the automatic choice, the rules that keep a Tenant's data where
it is (a recorded placement wins; a Tenant provisioned before placement existed
stays on the default server), and the reconciler recording it before any
backend is touched."""

from __future__ import annotations

import copy
import threading

import pytest
from tenant_operator import config, placement, spec
from tenant_operator.errors import SpecError
from tenant_operator.reconciler import CONFLICT_RETRY_SECONDS, Reconciler

from .test_reconciler import FakeKube

RABBIT = {"default": "a", "servers": {
    "a": {"managementUrl": "http://rabbit-a:15672", "amqpHost": "10.2.0.1"},
    "b": {"managementUrl": "http://rabbit-b:15672", "amqpHost": "10.2.0.2", "amqpPort": 5673},
}}
STORES = {"default": "one", "servers": {
    "one": {"endpoint": "http://10.3.0.1:9000"},
    "two": {"endpoint": "http://10.3.0.2:9000", "weight": 3},
}}
CFG = config.from_dict({"rabbitmq": RABBIT, "objectStorage": STORES,
                        "mysql": {"servers": {"main": {"host": "10.1.0.1"}, "eu": {"host": "10.1.0.2"}},
                                  "default": "main"}})


def body(status: dict | None = None, **spec_fields) -> dict:
    base = {"tier": "standard", "messaging": {"queues": ["jobs"]}}
    base.update(spec_fields)
    out = {"metadata": {"name": "acme", "generation": 1, "uid": "uid-acme", "resourceVersion": "1"}, "spec": base}
    if status is not None:
        out["status"] = status
    return out


# --- the choice --------------------------------------------------------------------------------

def test_fewest_tenants_per_weight_wins():
    assert placement.choose({"a": 1, "b": 1}, {"a": 3, "b": 2}) == "b"
    # b takes three times a's share: 5/3 < 2/1.
    assert placement.choose({"a": 1, "b": 3}, {"a": 2, "b": 5}) == "b"
    assert placement.choose({"a": 1, "b": 3}, {"a": 1, "b": 5}) == "a"


def test_ties_go_to_the_first_name_and_missing_counts_are_zero():
    assert placement.choose({"b": 1, "a": 1}, {}) == "a"
    assert placement.choose({"a": 2, "b": 1}, {"a": 2, "b": 1}) == "a"     # 1.0 each


def test_weight_zero_is_never_chosen():
    assert placement.choose({"a": 0, "b": 1}, {"b": 100}) == "b"
    assert placement.choose({"a": 0}, {}) is None
    assert placement.choose({}, {}) is None


def test_a_run_of_choices_follows_the_weights():
    counts = {"a": 0, "b": 0}
    for _ in range(8):
        counts[placement.choose({"a": 1, "b": 3}, counts)] += 1
    assert counts == {"a": 2, "b": 6}


# --- resolve -----------------------------------------------------------------------------------

def _never(backend):
    raise AssertionError(f"no automatic choice expected for {backend}")


def test_a_recorded_placement_wins_over_everything():
    got = placement.resolve(["rabbitmq"], {"rabbitmq": "a"}, {"rabbitmq": "b"}, {"rabbitmq"}, {"rabbitmq": "a"},
                            _never)
    assert got == {"rabbitmq": "b"}


def test_the_spec_is_used_when_nothing_is_recorded():
    assert placement.resolve(["rabbitmq"], {"rabbitmq": "b"}, {}, set(), {"rabbitmq": "a"}, _never) \
        == {"rabbitmq": "b"}


def test_a_tenant_provisioned_before_placement_stays_on_the_default():
    got = placement.resolve(["mysql", "rabbitmq"], {}, {}, {"mysql", "rabbitmq"},
                            {"mysql": "main", "rabbitmq": "a"}, _never)
    assert got == {"mysql": "main", "rabbitmq": "a"}


def test_a_new_backend_of_an_existing_tenant_is_chosen_automatically():
    got = placement.resolve(["mysql", "rabbitmq"], {}, {}, {"mysql"}, {"mysql": "main", "rabbitmq": "a"},
                            lambda backend: "b")
    assert got == {"mysql": "main", "rabbitmq": "b"}


def test_without_a_candidate_the_default_is_used():
    assert placement.resolve(["rabbitmq"], {}, {}, set(), {"rabbitmq": "a"}, lambda b: None) == {"rabbitmq": "a"}


def test_provisioned_reads_conditions_and_secrets():
    status = {"conditions": [{"type": "MessagingReady", "status": "False", "reason": "BackendUnavailable"}]}
    assert placement.provisioned(status, set()) == {"rabbitmq"}
    assert placement.provisioned({}, {"objectstorage", "network"}) == {"objectStorage"}
    assert placement.provisioned(None, set()) == set()
    assert placement.provisioned({"observedGeneration": 1, "conditions": [{"type": "Ready"}]}, set()) == set()


# --- Placer ------------------------------------------------------------------------------------

def test_choices_in_flight_are_counted():
    placer = placement.Placer()
    members = {("rabbitmq", "a"): [], ("rabbitmq", "b"): []}

    def look(backend, server):
        return members[(backend, server)]

    first = placer.choose("rabbitmq", "t1", {"a": 1, "b": 1}, look)
    second = placer.choose("rabbitmq", "t2", {"a": 1, "b": 1}, look)
    assert {first, second} == {"a", "b"}
    assert placer.choose("rabbitmq", "t1", {"a": 1, "b": 1}, look) == first     # stable until recorded
    # The index catches up: t1 is counted once, not twice.
    members[("rabbitmq", first)].append("t1")
    assert placer.choose("rabbitmq", "t3", {"a": 1, "b": 1}, look) == "a"
    placer.forget("t1")
    assert ("rabbitmq", "t1") not in placer._pending


def test_concurrent_choices_spread():
    placer = placement.Placer()
    chosen, barrier = {}, threading.Barrier(4)

    def run(name):
        barrier.wait()
        chosen[name] = placer.choose("rabbitmq", name, {"a": 1, "b": 1}, None)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(chosen.values()) == ["a", "a", "b", "b"]


# --- the model -----------------------------------------------------------------------------------

def test_the_model_takes_spec_then_status_then_default():
    assert spec.parse(body(), CFG).rabbitmq_server == "a"
    assert spec.parse(body(placement={"rabbitmq": "b"}), CFG).rabbitmq_server == "b"
    t = spec.parse(body({"placement": {"rabbitmq": "b", "objectStorage": "two"}}, databases=["auth"]), CFG)
    assert (t.rabbitmq_server, t.object_storage_server, t.mysql_server) == ("b", "two", "main")


@pytest.mark.parametrize(("field", "obj"), [
    ("spec.placement.rabbitmq", body(placement={"rabbitmq": "nowhere"})),
    ("spec.placement.objectStorage", body(placement={"objectStorage": "nowhere"}, objectStorage={})),
    ("status.placement.rabbitmq", body({"placement": {"rabbitmq": "gone"}})),
    ("spec.placement.rabbitmq", body({"placement": {"rabbitmq": "a"}}, placement={"rabbitmq": "b"})),
    ("spec.placement.rabbitmq", body(placement={"rabbitmq": 3})),
])
def test_bad_placement_names_the_field(field, obj):
    with pytest.raises(SpecError) as info:
        spec.parse(obj, CFG)
    assert str(info.value).startswith(f"{field}:")


def test_moving_is_refused_with_both_servers_named():
    with pytest.raises(SpecError, match=r"names 'b', but the tenant is placed on 'a'"):
        spec.parse(body({"placement": {"rabbitmq": "a"}}, placement={"rabbitmq": "b"}), CFG)


def test_placement_of_an_unused_backend_is_not_checked():
    t = spec.parse(body(messaging=None, placement={"rabbitmq": "nowhere"}), CFG)
    assert t.messaging is None


# --- the reconciler: record first --------------------------------------------------------------

def members_of(table: dict):
    return lambda backend, server: table.get((backend, server), [])


def test_a_new_tenant_is_placed_on_the_emptiest_server_and_it_is_recorded():
    kube = FakeKube()
    rec = Reconciler(CFG, kube, [])
    busy = {("rabbitmq", "a"): ["x"], ("objectStorage", "one"): ["x"], ("objectStorage", "two"): ["y", "z"]}
    rec.reconcile(body(objectStorage={"buckets": ["media"]}), {}, placed=members_of(busy))
    # rabbitmq: a has 1, b 0. objectStorage: one 1/1, two 2/3.
    assert kube.status["placement"] == {"rabbitmq": "b", "objectStorage": "two"}
    assert kube.writes[0] == ("status", "Tenant", "acme")          # before anything else


def test_a_tenant_provisioned_before_placement_stays_on_the_default_server():
    """Upgrade: its status has the backends' conditions but no placement; the
    counts would send it elsewhere, its data is on the default server."""
    kube = FakeKube()
    rec = Reconciler(CFG, kube, [])
    legacy = {"observedGeneration": 1, "phase": "Ready", "namespace": "tenant-acme", "conditions": [
        {"type": "MessagingReady", "status": "True", "reason": "Provisioned"},
        {"type": "ObjectStorageReady", "status": "True", "reason": "Provisioned"}]}
    kube.status = copy.deepcopy(legacy)
    busy = {("rabbitmq", "a"): ["x", "y"], ("objectStorage", "one"): ["x", "y"]}
    rec.reconcile(body(copy.deepcopy(legacy), objectStorage={}), {}, placed=members_of(busy))
    assert kube.status["placement"] == {"rabbitmq": "a", "objectStorage": "one"}


def test_a_legacy_tenant_is_recognised_by_its_secrets_too():
    kube = FakeKube()
    rec = Reconciler(CFG, kube, [])
    secret = {"kind": "Secret", "metadata": {"name": "rabbitmq-credentials", "namespace": "tenant-acme",
                                             "labels": {"tenancy.dev/component": "rabbitmq"}}}
    live = {("v1", "Secret", "tenant-acme", "rabbitmq-credentials"): secret}
    rec.reconcile(body(), live, placed=members_of({("rabbitmq", "a"): ["x"]}))
    assert kube.status["placement"] == {"rabbitmq": "a"}


class Recording(FakeKube):
    def __init__(self):
        super().__init__()
        self.patches: list[dict] = []

    def patch_status(self, kind, name, patch, namespace="", resource_version=None):
        self.patches.append(copy.deepcopy(patch))
        return super().patch_status(kind, name, patch, namespace, resource_version)


def test_a_recorded_placement_is_never_rechosen():
    kube = Recording()
    kube.status = {"placement": {"rabbitmq": "a"}}
    rec = Reconciler(CFG, kube, [])
    rec.reconcile(body({"placement": {"rabbitmq": "a"}}), {}, placed=members_of({("rabbitmq", "a"): ["x"] * 9}))
    assert kube.status["placement"] == {"rabbitmq": "a"}
    assert kube.patches and not [p for p in kube.patches if "placement" in p]


class Refusing(FakeKube):
    """A Tenant that moved on: every conditional status write conflicts."""

    def patch_status(self, kind, name, patch, namespace="", resource_version=None):
        self.writes.append(("status", kind, name))
        from kubernetes.client.rest import ApiException
        raise ApiException(status=409, reason="Conflict")

    def get(self, kind, name, namespace=""):
        return None if kind == "Tenant" else super().get(kind, name, namespace)


def test_no_backend_is_touched_while_the_placement_is_not_recorded():
    class Tripwire:
        component = "rabbitmq"

        def sync(self, *a, **k):
            raise AssertionError("a backend was touched before its placement was recorded")

    kube = Refusing()
    rec = Reconciler(CFG, kube, [Tripwire()])
    result = rec.reconcile(body(), {})
    assert result.retry_after == CONFLICT_RETRY_SECONDS
    assert [w for w in kube.writes if w[0] != "status"] == []


# --- the CRD ------------------------------------------------------------------------------------

def test_the_crd_has_an_immutable_placement_for_every_backend():
    from pathlib import Path

    import yaml
    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "tenant.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    spec_placement = schema["spec"]["properties"]["placement"]
    assert set(spec_placement["properties"]) == set(placement.BACKENDS)
    for backend in placement.BACKENDS:
        field = spec_placement["properties"][backend]
        assert field["type"] == "string" and field["maxLength"] == 63
        (rule,) = [r for r in spec_placement["x-kubernetes-validations"]
                   if r["message"].startswith(f"spec.placement.{backend} is immutable")]
        assert rule["rule"] == (f"!has(oldSelf.{backend}) || (has(self.{backend}) && "
                                f"self.{backend} == oldSelf.{backend})")
    assert set(schema["status"]["properties"]["placement"]["properties"]) == set(placement.BACKENDS)


def test_an_invalid_tenant_being_deleted_is_purged_where_status_placement_says():
    from tenant_operator import lifecycle
    obj = body({"placement": {"rabbitmq": "b", "objectStorage": "two", "mysql": "gone"}}, tier="nope")
    t, parsed = lifecycle.tenant_for_deletion(obj, CFG)
    assert not parsed
    # A recorded server the config still has; else (gone) the default.
    assert (t.rabbitmq_server, t.object_storage_server, t.mysql_server) == ("b", "two", "main")


# --- the counts the runtime hands over ------------------------------------------------------------

@pytest.mark.parametrize(("obj", "expected"), [
    (body(), True),                                                        # messaging, nothing recorded
    (body({"placement": {"rabbitmq": "a"}}), False),                        # recorded: a drift check counts nothing
    (body({"placement": {"rabbitmq": "a"}}, databases=["auth"]), True),     # databases (and backups) added
    (body(messaging=None), False),                                          # no backend at all
    (body({"placement": {"rabbitmq": "a", "mysql": "main", "objectStorage": "one"}}, databases=["auth"]), False),
])
def test_may_choose_only_when_a_used_backend_is_not_recorded(obj, expected):
    assert placement.may_choose(obj) is expected


def test_the_runtime_hands_a_copy_of_the_index_only_when_a_choice_may_be_needed():
    from tenant_operator import runtime
    index = {("rabbitmq", "a"): ["x", "y"], ("rabbitmq", "b"): ["z"]}
    members = runtime.placement_members(body(), {runtime.PLACEMENT_INDEX: index})
    index[("rabbitmq", "b")].append("late")            # the loop updates the index; the copy stays
    assert members("rabbitmq", "a") == {"x", "y"} and members("rabbitmq", "b") == {"z"}
    assert members("rabbitmq", "c") == frozenset()
    assert runtime.placement_members(body({"placement": {"rabbitmq": "a"}}), {runtime.PLACEMENT_INDEX: index}) \
        is None
