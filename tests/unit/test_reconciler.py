"""Reconciler and backend components with a fake API server and fake backends:
the write discipline (nothing sent when nothing differs) and the credential
rules (generate once, read back, rotate, keep on outage)."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from kubernetes.client.rest import ApiException
from tenant_operator import config, naming, render
from tenant_operator.backends.mysql.component import MySQLComponent
from tenant_operator.components import live_secret_data
from tenant_operator.errors import BackendUnavailable
from tenant_operator.reconciler import Reconciler

CFG = config.from_dict({"mysql": {"servers": {"main": {"host": "db.shared", "port": 3306}}}})


class FakeKube:
    """Records writes; `objects` is what a watch would show."""

    owner = True   # whether this replica holds the tenant's shard

    def check_owner(self):
        from tenant_operator.kube.client import NotOwner
        if not self.owner:
            raise NotOwner("shard moved")

    def __init__(self):
        self.objects: dict = {}
        self.writes: list[tuple] = []
        self.status: dict = {}
        self.tenant_rv = "1"       # the Tenant's resourceVersion on the fake server
        self.tenant_generation = 1

    def apply(self, obj):
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))
        live = copy.deepcopy(obj)
        live["metadata"]["resourceVersion"] = str(len(self.writes))
        live["metadata"]["uid"] = "u"                       # server-added fields
        if obj["kind"] == "Namespace":
            live["status"] = {"phase": "Active"}
        self.objects[render.object_key(obj)] = live
        return live

    def create(self, obj):
        if render.object_key(obj) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        return self.apply(obj)

    def delete(self, kind, name, namespace=""):
        self.writes.append(("delete", kind, name))
        return self.objects.pop(next(k for k in self.objects if k[1] == kind and k[3] == name), None) is not None

    def get(self, kind, name, namespace=""):
        if kind == "Tenant":
            return self.tenant(self.tenant_generation)
        return self.objects.get(next((k for k in self.objects if k[1] == kind and k[3] == name), None))

    def patch_status(self, kind, name, patch, namespace="", resource_version=None):
        self.writes.append(("status", kind, name))
        if resource_version and resource_version != self.tenant_rv:
            raise ApiException(status=409, reason="Conflict")
        self.status.update(copy.deepcopy(patch))
        self.tenant_rv = str(int(self.tenant_rv) + 1)
        return {"metadata": {"resourceVersion": self.tenant_rv}, "status": copy.deepcopy(self.status)}

    def tenant(self, generation=1) -> dict:
        """The Tenant as a GET returns it now."""
        return {"metadata": {"name": "acme", "generation": generation, "resourceVersion": self.tenant_rv},
                "status": copy.deepcopy(self.status)}


class FakeMySQL:
    def __init__(self):
        self.passwords: dict[str, str] = {}
        self.locked: dict[str, bool] = {}
        self.down = False

    def owned_by(self, uid):
        return []

    def ensure_owned_database(self, database, owner, grant_to=""):
        self.owned_databases = {**getattr(self, "owned_databases", {}), database: owner}
        return []

    def ensure_account(self, database, user, password, *, max_user_connections, locked, owner=None,
                       extra_databases=()):
        if self.down:
            raise BackendUnavailable("mysql", "127.0.0.1:3306 unreachable")
        changes = []
        if self.passwords.get(user) != password:
            self.passwords[user] = password
            changes.append("set password")
        self.locked[user] = locked
        return changes

    def revoke_owned_account(self, user, uid):
        if user not in self.passwords or self.locked.get(user):
            return []
        self.locked[user] = True
        return [f"revoked previous account {user}"]


def tenant(**spec) -> dict:
    base = {"tier": "standard", "databases": ["auth"]}
    base.update(spec)
    return {"metadata": {"name": "acme", "generation": 1, "uid": "uid-acme"}, "spec": base}


def make_world():
    kube = FakeKube()
    mysql = MySQLComponent(CFG, kube)
    fake = FakeMySQL()
    mysql._clients["main"] = fake
    return kube, Reconciler(CFG, kube, [mysql]), fake


@pytest.fixture
def world():
    return make_world()


def body_with_status(kube, body):
    b = copy.deepcopy(body)
    b["status"] = copy.deepcopy(kube.status)
    return b


def secret_data(kube) -> dict:
    obj = kube.objects[("v1", "Secret", "tenant-acme", "auth-db-credentials")]
    return live_secret_data(obj)


def secret_password(kube) -> str:
    s = kube.objects[("v1", "Secret", "tenant-acme", "auth-db-credentials")]
    return base64.b64decode(s["data"]["DB_PASSWORD"]).decode()


def test_second_reconcile_writes_nothing(world):
    kube, rec, _ = world
    first = rec.reconcile(tenant(), {})
    assert first.writes > 5 and ("status", "Tenant", "acme") in kube.writes
    kube.writes.clear()
    second = rec.reconcile(body_with_status(kube, tenant()), dict(kube.objects))
    assert second.writes == 0 and kube.writes == []
    assert second.phase == "Ready"


def test_password_generated_once_then_read_back(world):
    kube, rec, fake = world
    rec.reconcile(tenant(), {})
    user = naming.mysql_user("acme", "auth")
    pw = secret_password(kube)
    assert len(pw) >= 24 and fake.passwords[user] == pw
    for b in rec.backends:
        b.forget("acme")                                  # force a backend pass
    rec.reconcile(body_with_status(kube, tenant()), dict(kube.objects))
    assert secret_password(kube) == pw == fake.passwords[user]


def test_deleted_secret_gets_new_password_set_on_backend(world):
    kube, rec, fake = world
    rec.reconcile(tenant(), {})
    old = secret_password(kube)
    del kube.objects[("v1", "Secret", "tenant-acme", "auth-db-credentials")]
    rec.reconcile(body_with_status(kube, tenant()), dict(kube.objects))
    new = secret_password(kube)
    assert new != old and fake.passwords[naming.mysql_user("acme", "auth")] == new


def test_rotation_annotation_rotates_once(world):
    kube, rec, fake = world
    rec.reconcile(tenant(), {})
    old = secret_password(kube)
    body = tenant()
    body["metadata"]["annotations"] = {naming.ANNOTATION_ROTATE: "r1"}
    rec.reconcile(body_with_status(kube, body), dict(kube.objects))
    rotated = secret_password(kube)
    assert rotated != old and kube.status["credentials"]["rotationToken"] == "r1"
    rec.reconcile(body_with_status(kube, body), dict(kube.objects))
    assert secret_password(kube) == rotated                 # same token: no second rotation


def test_rotation_moves_to_the_second_account_and_schedules_the_revocation(world):
    kube, rec, fake = world
    rec.reconcile(tenant(), {})
    first = secret_data(kube)
    body = tenant(credentials={"rotationOverlap": "90s"})
    body["metadata"]["annotations"] = {naming.ANNOTATION_ROTATE: "r1"}
    result = rec.reconcile(body_with_status(kube, body), dict(kube.objects))
    second = secret_data(kube)
    assert second["DB_USERNAME"] == naming.mysql_user_alternate(first["DB_USERNAME"])
    assert fake.passwords[first["DB_USERNAME"]] == first["DB_PASSWORD"], "the previous account still works"
    record = kube.status["credentials"]["mysql"]
    assert record["rotationToken"] == "r1" and record["previousRevokeAt"]
    assert result.retry_after is not None and 80 <= result.retry_after <= 90, "a pass when the revocation is due"
    assert not fake.locked.get(first["DB_USERNAME"])


def test_backend_outage_keeps_secret_and_reports(world):
    kube, rec, fake = world
    rec.reconcile(tenant(), {})
    pw = secret_password(kube)
    fake.down = True
    for b in rec.backends:
        b.forget("acme")
    result = rec.reconcile(body_with_status(kube, tenant(databases=["auth", "orders"])), dict(kube.objects))
    cond = next(c for c in kube.status["conditions"] if c["type"] == "DatabasesReady")
    assert cond["status"] == "False" and cond["reason"] == "BackendUnavailable"
    assert "unreachable" in cond["message"] and pw not in cond["message"]
    assert ("v1", "Secret", "tenant-acme", "auth-db-credentials") in kube.objects   # not pruned
    assert secret_password(kube) == pw
    assert result.retry_after == 5.0
    assert kube.status["phase"] == "Degraded"


def test_suspension_locks_and_removes_ingress(world):
    kube, rec, fake = world
    rec.reconcile(tenant(domains=["a.example.com"]), {})
    assert any(k[1] == "Ingress" for k in kube.objects)
    for b in rec.backends:
        b.forget("acme")
    suspended = tenant(domains=["a.example.com"], suspended=True)
    suspended["metadata"]["generation"] = 2   # a spec change
    rec.reconcile(body_with_status(kube, suspended), dict(kube.objects))
    assert not any(k[1] == "Ingress" for k in kube.objects)
    assert fake.locked[naming.mysql_user("acme", "auth")] is True
    assert kube.status["phase"] == "Suspended"


def test_a_pass_with_a_stale_view_recomputes_status_against_the_newer_tenant(world):
    kube, rec, _ = world
    stale = tenant()
    stale["metadata"]["resourceVersion"] = kube.tenant_rv
    rec.reconcile(copy.deepcopy(stale), {})
    ready = copy.deepcopy(kube.status)
    # Two writes: status.placement (before any backend is touched), then the report.
    assert ready["phase"] == "Ready" and ready["placement"] == {"mysql": "main"} and kube.tenant_rv == "3"
    kube.writes.clear()
    # A lagging watch hands the next pass the Tenant as it was before its status was written.
    again = rec.reconcile(copy.deepcopy(stale), dict(kube.objects))
    assert kube.writes == [("status", "Tenant", "acme")]     # the refused conditional write, nothing after
    assert kube.status == ready and kube.tenant_rv == "3"
    assert again.writes == 0 and again.phase == "Ready"
    assert not [e for e in again.events if e[1] == "Ready"]   # no second "became Ready" event


def test_a_status_conflict_with_a_newer_spec_is_left_to_the_next_pass(world):
    from tenant_operator.reconciler import CONFLICT_RETRY_SECONDS
    kube, rec, _ = world
    old = tenant()
    old["metadata"]["resourceVersion"] = "1"
    kube.tenant_rv, kube.tenant_generation = "7", 2
    result = rec.reconcile(old, {})
    assert kube.status == {}                      # nothing reported for the superseded spec
    assert result.retry_after == CONFLICT_RETRY_SECONDS


def test_status_writes_of_one_pass_are_conditional_on_the_previous_one(world):
    kube, rec, _ = world
    body = tenant()
    body["metadata"]["resourceVersion"] = kube.tenant_rv
    deletion = {"requestedAt": "2026-01-01T00:00:00Z", "purgeAfter": "2026-01-01T00:00:00Z", "policy": "Delete"}
    assert rec.report_terminating(body, deletion) == 1
    deletion["waitingOn"] = "final backup"
    assert rec.report_terminating(body, deletion) == 1
    assert body["metadata"]["resourceVersion"] == kube.tenant_rv == "3"
    assert kube.status["deletion"]["waitingOn"] == "final backup"


def test_an_object_the_api_server_refuses_makes_the_tenant_invalid_with_its_message():
    kube, rec, _fake = make_world()
    body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": 'ResourceQuota "tenant-quota" is invalid: spec.hard[foo]: Invalid value: "foo": '
                                  "must be a standard resource for quota"})
    plain_apply = kube.apply

    def apply(obj):
        if obj["kind"] == "ResourceQuota":
            exc = ApiException(status=422, reason="Unprocessable Entity")
            exc.body = body
            raise exc
        return plain_apply(obj)
    kube.apply = apply
    result = rec.reconcile(tenant(), {})
    assert result.phase == "Invalid"
    conds = {c["type"]: c for c in kube.status["conditions"]}
    assert conds["QuotaReady"]["reason"] == "Invalid"
    assert "spec.hard[foo]" in conds["QuotaReady"]["message"] and "422" in conds["QuotaReady"]["message"]
    (event,) = [e for e in result.events if e[1] == "RefusedByAPIServer"]
    assert "spec.hard[foo]" in event[2]
    # A server that is merely unavailable is not the spec's fault.
    kube2, rec2, _ = make_world()
    kube2.apply = lambda obj: (_ for _ in ()).throw(ApiException(status=503, reason="Service Unavailable")) \
        if obj["kind"] == "ResourceQuota" else FakeKube.apply(kube2, obj)
    assert rec2.reconcile(tenant(), {}).phase == "Provisioning"
    assert {c["type"]: c for c in kube2.status["conditions"]}["QuotaReady"]["reason"] == "ApplyFailed"


def _restarted(kube):
    """A new operator process on the same cluster: empty caches, a MySQL that is down."""
    mysql = MySQLComponent(CFG, kube)
    fake = FakeMySQL()
    fake.down = True
    mysql._clients["main"] = fake
    return Reconciler(CFG, kube, [mysql]), mysql


def test_a_restarted_operator_confirms_a_tenant_from_its_status_without_backend_calls(world):
    kube, rec, _ = world
    rec.reconcile(tenant(), {})
    assert kube.status["phase"] == "Ready"
    kube.writes.clear()
    rec2, mysql = _restarted(kube)
    again = rec2.reconcile(body_with_status(kube, tenant()), dict(kube.objects))
    # MySQL is down, yet nothing failed: no call was made, and nothing was written.
    assert again.phase == "Ready" and again.writes == 0 and kube.writes == []
    # The backend check is only deferred: the cached result ages out within one resync interval.
    (_key, at, _result), = mysql._cache.values()
    import time
    assert time.monotonic() - CFG.backend_resync_interval <= at <= time.monotonic()


@pytest.mark.parametrize("change", ["secret_gone", "new_generation", "rotation", "condition_false"])
def test_the_status_does_not_vouch_when_something_moved(world, change):
    kube, rec, _ = world
    rec.reconcile(tenant(), {})
    body = body_with_status(kube, tenant())
    live = dict(kube.objects)
    if change == "secret_gone":
        live.pop(("v1", "Secret", "tenant-acme", "auth-db-credentials"))
    elif change == "new_generation":
        body["metadata"]["generation"] = 2
    elif change == "rotation":
        body["metadata"]["annotations"] = {naming.ANNOTATION_ROTATE: "now"}
    else:
        for c in body["status"]["conditions"]:
            if c["type"] == "DatabasesReady":
                c["status"] = "False"
    rec2, _ = _restarted(kube)
    again = rec2.reconcile(body, live)
    # The backend is asked (and found down), so the tenant is not confirmed Ready.
    assert again.waiting_on == {"mysql"}
