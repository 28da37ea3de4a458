"""The pure parts of the ownership fence: the claim decision, reserved names,
and what the reconciler and lifecycle do around a failing backend or a
failing final backup (fake API server, fake backends)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from tenant_operator import config, lifecycle, ownership, spec
from tenant_operator.backends.mysql.component import MySQLComponent
from tenant_operator.components import ComponentResult
from tenant_operator.reconciler import Reconciler
from tenant_operator.status import Condition

from .test_reconciler import CFG, FakeKube, FakeMySQL, body_with_status, tenant


@pytest.mark.parametrize(("marker", "tenant_name", "state", "exists", "adopt", "expected"), [
    ("u1", "acme", "active", True, False, "ours"),
    ("u1", "acme", "pending-removal", True, False, "ours"),
    ("u0", "acme", "retained", True, False, "adopt-retained"),       # kept by a purged Tenant of the same name
    ("u0", "other", "retained", True, False, "conflict"),            # retained, but for another name
    ("u0", "acme", "active", True, True, "conflict"),                # another live UID: never, even when adopting
    ("", "", "", False, False, "create"),
    ("", "", "", True, False, "conflict"),                           # unmarked: someone else's
    ("", "", "", True, True, "adopt-unmarked"),                      # explicit adoption
])
def test_claim_decision(marker, tenant_name, state, exists, adopt, expected):
    assert ownership.claim_decision(marker, tenant_name, state, uid="u1", tenant="acme", exists=exists,
                                    adopt=adopt) == expected


def test_reserved_namespaces_and_users_make_the_tenant_invalid():
    cfg = config.from_dict({"operatorNamespace": "tenant-ops", "reservedNamespaces": ["tenant-system*"],
                            "rabbitmq": {"managementUrl": "http://mq", "adminUser": "admin"}})
    for name in ("ops", "system", "system-x"):
        with pytest.raises(ValueError, match=r"^metadata\.name: its namespace"):
            spec.parse({"metadata": {"name": name}, "spec": {}}, cfg)
    for name in ("guest", "admin"):
        with pytest.raises(ValueError, match=r"^metadata\.name: its RabbitMQ user"):
            spec.parse({"metadata": {"name": name}, "spec": {"messaging": {"queues": []}}}, cfg)
    assert spec.parse({"metadata": {"name": "guest"}, "spec": {}}, cfg).name == "guest"   # no messaging, no user


def test_extended_resource_quota_keys_parse():
    t = spec.parse({"metadata": {"name": "acme"}, "spec": {"quota": {"requests.nvidia.com/gpu": "2",
                                                                     "count/jobs.batch": "5"}}}, CFG)
    assert t.quota["requests.nvidia.com/gpu"] == "2"


class ExplodingBackend:
    component, condition_type = "rabbitmq", "MessagingReady"

    def sync(self, t, live, current, *, terminating=False, record_intent=None):
        raise RuntimeError("unexpected bug")


def test_a_crashing_backend_stops_neither_isolation_nor_the_other_backends_secrets():
    kube = FakeKube()
    mysql = MySQLComponent(CFG, kube)
    mysql._clients["main"] = FakeMySQL()
    rec = Reconciler(CFG, kube, [mysql, ExplodingBackend()])
    result = rec.reconcile(tenant(), {})
    kinds = {(w[1], w[2]) for w in kube.writes if w[0] == "apply"}
    assert ("Secret", "auth-db-credentials") in kinds          # MySQL's credential reached its Secret
    assert any(k == "NetworkPolicy" for k, _ in kinds) and ("ResourceQuota", "tenant-quota") in kinds
    conds = {c["type"]: c for c in kube.status["conditions"]}
    assert conds["MessagingReady"]["status"] == "False" and conds["MessagingReady"]["reason"] == "InternalError"
    assert "unexpected bug" in conds["MessagingReady"]["message"]
    assert conds["DatabasesReady"]["status"] == "True"
    assert result.retry_after is not None


def test_isolation_objects_are_applied_before_any_backend_runs():
    kube = FakeKube()
    seen: list[tuple] = []

    class Recorder:
        component, condition_type = "mysql", "DatabasesReady"

        def sync(self, t, live, current, *, terminating=False, record_intent=None):
            seen.extend(w for w in kube.writes if w[0] == "apply")
            return ComponentResult("mysql", Condition("DatabasesReady", True, "Provisioned"))

    Reconciler(CFG, kube, [Recorder()]).reconcile(tenant(), {})
    kinds = {w[1] for w in seen}
    assert {"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "Role"} <= kinds


class _State:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0
        self.backends = [self]
        self.cfg = CFG

    def final_backup(self, t):
        self.calls += 1
        return self.outcomes.pop(0)


def test_a_failed_final_backup_is_retried_with_backoff_and_blocks_nothing_else():
    state = _State([{"at": "t1", "error": "mysql down"}, {"at": "t2", "objects": ["s3://b/k"]}])
    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    deletion: dict = {}
    events: list = []
    wait = lifecycle._ensure_final_backup(state, t, deletion, now, events)
    assert wait == CFG.final_backup_retry_interval and deletion["finalBackup"]["error"] == "mysql down"
    assert events[-1][1] == "FinalBackupFailed"
    # Not due yet: no new attempt.
    assert lifecycle._ensure_final_backup(state, t, deletion, now + timedelta(seconds=10), events) == 20
    assert state.calls == 1
    # Due: tried again, succeeds.
    assert lifecycle._ensure_final_backup(state, t, deletion, now + timedelta(seconds=31), events) is None
    assert deletion["finalBackup"]["objects"] == ["s3://b/k"] and deletion["finalBackup"]["attempts"] == 2
    assert lifecycle._ensure_final_backup(state, t, deletion, now + timedelta(seconds=32), events) is None
    assert state.calls == 2


def test_backoff_doubles_up_to_an_hour():
    state = _State([{"error": "down"}] * 10)
    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1")
    deletion: dict = {}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waits = []
    for _ in range(10):
        waits.append(lifecycle._ensure_final_backup(state, t, deletion, now, []))
        now += timedelta(seconds=waits[-1] + 1)
    assert waits[:3] == [30, 60, 120] and waits[-1] == lifecycle.FINAL_BACKUP_RETRY_MAX


def test_the_override_annotation_lets_the_purge_go_on_and_says_so():
    state = _State([{"error": "down"}])
    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1", skip_final_backup=True)
    deletion = {"finalBackup": {"error": "down", "attempts": 3, "nextAttemptAt": "2099-01-01T00:00:00Z"}}
    events: list = []
    assert lifecycle._ensure_final_backup(state, t, deletion, datetime.now(UTC), events) is None
    assert deletion["finalBackup"]["overridden"] == "down" and "error" not in deletion["finalBackup"]
    assert events[-1][1] == "FinalBackupSkipped" and state.calls == 0


def test_final_backup_records_an_unreachable_backend_and_a_tenant_without_databases():
    from tenant_operator.errors import BackendUnavailable

    class Down:
        def final_backup(self, t):
            raise BackendUnavailable("mysql", "127.0.0.1:3306 refused")

    class S:
        backends = [Down()]

    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1")
    record = lifecycle._final_backup(S(), t)
    assert record["error"] == "mysql: 127.0.0.1:3306 refused" and record["at"].endswith("Z")
    S.backends = []
    record = lifecycle._final_backup(S(), t)
    assert "error" not in record and record["skipped"] and record["at"].endswith("Z")


def test_the_final_backup_is_every_backends_part_and_fails_if_any_part_fails():
    from tenant_operator.backends.base import Component
    class Part:
        def __init__(self, out):
            self.out = out

        def final_backup(self, t):
            return self.out

    class S:
        backends = [Part({"objects": ["s3://b/mysql/auth/x.sql.gz"]}), Component(),
                    Part({"objects": ["s3://b/archive/acme-media/"]})]

    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1")
    record = lifecycle._final_backup(S(), t)
    assert record["objects"] == ["s3://b/mysql/auth/x.sql.gz", "s3://b/archive/acme-media/"]
    assert "error" not in record and "skipped" not in record
    S.backends = [Part({"objects": ["s3://b/mysql/auth/x.sql.gz"]}), Part({"objects": [], "error": "minio down"})]
    assert lifecycle._final_backup(S(), t)["error"] == "minio down"
    S.backends = [Part({"objects": [], "skipped": "no databases to back up"}), Part({"objects": []})]
    assert lifecycle._final_backup(S(), t)["skipped"] == "no databases to back up"


class TagStore:
    def __init__(self, tags):
        self.tags = tags

    def bucket_tags(self, name):
        return self.tags.get(name)


ARCHIVED_BY_U0 = {"tenancy.dev/tenant-uid": "u0", "tenancy.dev/state": "archived"}


@pytest.mark.parametrize(("uid", "existing", "expected"), [
    ("uuid-0001", {}, "acme-backups"),                                              # nothing there yet
    ("uuid-0001", {"acme-backups": {"tenancy.dev/tenant-uid": "uuid-0001"}}, "acme-backups"),   # ours
    ("uuid-0001", {"acme-backups": ARCHIVED_BY_U0}, "acme-backupsuuid0001"),        # a purged predecessor's archive
    ("uuid-0001", {"acme-backups": {"tenancy.dev/tenant-uid": "u0", "tenancy.dev/state": "retained"}},
     "acme-backups"),                                                               # Retain: adopted as documented
    ("uuid-0001", {"acme-backups": {}}, "acme-backups"),                            # unmarked: NameConflict later
    ("uuid-0001", {"acme-backupsuuid0001": {"tenancy.dev/tenant-uid": "uuid-0001"}},
     "acme-backupsuuid0001"),                                                       # once used, it sticks
])
def test_backups_bucket_of_a_recreated_tenant(uid, existing, expected):
    from tenant_operator.backends.objectstore.component import ObjectStorageComponent
    component = ObjectStorageComponent(config.from_dict({"objectStorage": {"endpoint": "http://minio:9000"}}), None)
    component._stores["default"] = TagStore(existing)
    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid=uid)
    assert component.backups_bucket(t) == expected


class CreatingStore(TagStore):
    """Buckets by name -> tags; records the order of record/create/tag calls."""

    def __init__(self, tags, calls):
        super().__init__(tags)
        self.calls = calls

    def ensure_bucket(self, name):
        self.calls.append(("create", name))
        self.tags.setdefault(name, {})
        return []

    def set_bucket_tags(self, name, tags):
        self.calls.append(("tag", name))
        self.tags[name] = tags


@pytest.mark.parametrize(("existing", "recorded", "outcome"), [
    ({}, [], ["record", "create", "tag"]),                    # new: recorded before it exists
    ({"acme-data": {}}, ["acme-data"], ["create", "tag"]),   # our pass was cut off before the tags
    ({"acme-data": {}}, [], "conflict"),                     # unmarked, never ours: untouched
    ({"acme-data": {}}, ["acme-other"], "conflict"),         # the record names another bucket
    ({"acme-data": {"tenancy.dev/tenant-uid": "u9"}}, ["acme-data"], "conflict"),   # another Tenant's marker wins
])
def test_a_bucket_is_recorded_before_it_is_created_and_the_record_proves_an_untagged_one_ours(
        existing, recorded, outcome):
    from tenant_operator.backends.objectstore.component import Intents, ObjectStorageComponent
    calls: list = []
    component = ObjectStorageComponent(config.from_dict({"objectStorage": {"endpoint": "http://minio:9000"}}), None)
    store = component._stores["default"] = CreatingStore(dict(existing), calls)
    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1")
    intents = Intents({"creating": {"buckets": recorded}},
                      lambda names: calls.append(("record", tuple(names))))
    if outcome == "conflict":
        with pytest.raises(ownership.NameConflict):
            component._claim(t, "acme-data", lambda: store.ensure_bucket("acme-data"), intents)
        assert calls == [] and store.tags["acme-data"] == existing["acme-data"]
        return
    component._claim(t, "acme-data", lambda: store.ensure_bucket("acme-data"), intents)
    assert [c[0] for c in calls] == outcome
    if "record" in outcome:
        assert calls[0] == ("record", ("acme-data",))
    assert store.tags["acme-data"]["tenancy.dev/tenant-uid"] == "u1"
    assert intents.any()   # the pass clears status.creating once it is through


def test_no_bucket_is_created_without_a_way_to_record_it():
    from tenant_operator.backends.objectstore.component import Intents
    with pytest.raises(RuntimeError):
        Intents({}, None).record("acme-data")


def test_a_domain_routed_first_by_another_tenant_is_not_routed_again():
    kube = FakeKube()
    rec = Reconciler(CFG, kube, [])
    body = tenant(databases=[], domains=["shop.example.com", "free.example.com"])
    claims = {"shop.example.com": [("other", "2020-01-01T00:00:00Z")], "free.example.com": []}
    rec.reconcile(body, {}, claims=claims)
    assert not [w for w in kube.writes if w[1] == "Ingress"]
    cond = {c["type"]: c for c in kube.status["conditions"]}["IngressReady"]
    assert cond["status"] == "False" and cond["reason"] == "DomainConflict"
    assert "shop.example.com (Tenant other)" in cond["message"] and "free.example.com" not in cond["message"]


def test_the_first_tenant_keeps_its_domain_when_a_later_one_claims_it():
    kube = FakeKube()
    rec = Reconciler(CFG, kube, [])
    body = tenant(databases=[], domains=["shop.example.com"])
    rec.reconcile(body, {})
    live = dict(kube.objects)
    ingress = next(k for k in live if k[1] == "Ingress")
    live[ingress]["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    # A later Tenant's Ingress for the same host (created after ours) changes nothing here.
    kube.writes.clear()
    rec.reconcile(body_with_status(kube, body), live,
                  claims={"shop.example.com": [("acme", "2020-01-01T00:00:00Z"), ("late", "2021-01-01T00:00:00Z")]})
    assert not [w for w in kube.writes if w[0] == "delete"]
    cond = {c["type"]: c for c in kube.status["conditions"]}["IngressReady"]
    assert cond["reason"] == "Routed"


def test_a_due_removal_bypasses_the_cached_backend_result():
    from tenant_operator.backends.base import removal_due
    now = datetime(2026, 1, 1, tzinfo=UTC)
    due = {"pendingRemovals": {"queues": [{"queue": "acme.mail", "purgeAfter": "2025-12-31T23:59:59Z"}]}}
    later = {"pendingRemovals": {"databases": [{"service": "billing", "purgeAfter": "2026-01-02T00:00:00Z"}]}}
    waiting = {"pendingRemovals": {"queues": [{"queue": "acme.audit", "purgeAfter": "2025-12-01T00:00:00Z",
                                               "waitingOn": "it holds messages; deleted once drained"}]}}
    assert removal_due(due, now)
    assert not removal_due(later, now) and not removal_due(waiting, now) and not removal_due({}, now)


def test_pending_queues_are_read_back_from_status_and_junk_restarts_the_wait():
    from tenant_operator.backends.rabbitmq.component import pending_queues
    status = {"pendingRemovals": {"queues": [
        {"queue": "acme.mail", "purgeAfter": "2026-01-01T00:00:00Z"},
        {"queue": "acme.audit", "purgeAfter": "not a time"}, {"purgeAfter": "2026-01-01T00:00:00Z"}]}}
    assert pending_queues(status) == {"acme.mail": datetime(2026, 1, 1, tzinfo=UTC)}
    assert pending_queues(None) == pending_queues({}) == {}


class _Inventory:
    def __init__(self, held):
        self.held = held

    def inventory(self, t):
        if isinstance(self.held, Exception):
            raise self.held
        return self.held


class _NsKube:
    def __init__(self, ns=None):
        self.ns = ns

    def get(self, kind, name, namespace=None):
        return self.ns


def test_the_inventory_is_what_carries_the_uid_and_none_when_unprovable():
    from tenant_operator.errors import BackendUnavailable

    class S:
        kube = _NsKube()
        backends = [_Inventory([]), _Inventory([])]

    t = spec.Tenant(name="acme", namespace="tenant-acme", tier="standard", uid="u1")
    assert lifecycle._inventory(S(), t) == []
    S.backends = [_Inventory(["MySQL database acme_auth"]), _Inventory([])]
    assert lifecycle._inventory(S(), t) == ["MySQL database acme_auth"]
    S.backends = [_Inventory([]), _Inventory(BackendUnavailable("rabbitmq", "down"))]
    assert lifecycle._inventory(S(), t) is None, "a backend that cannot answer may hold data"
    S.backends = []
    S.kube = _NsKube({"metadata": {"annotations": {"tenancy.dev/tenant-uid": "u1"}}})
    assert lifecycle._inventory(S(), t) == ["namespace tenant-acme"]
    S.kube = _NsKube({"metadata": {"annotations": {"tenancy.dev/tenant-uid": "other"}}})
    assert lifecycle._inventory(S(), t) == [], "someone else's namespace is not this Tenant's"
    assert lifecycle._inventory(S(), dataclasses.replace(t, uid="")) is None
