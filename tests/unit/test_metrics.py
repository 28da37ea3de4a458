"""Per-tenant metrics the alerting rules use: set where the fact is known
(phase, backups, final backup, credentials), removed when a tenant is forgotten."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from tenant_operator import lifecycle, metrics, naming
from tenant_operator.backends.base import credentials_since

from .test_backup_render import live, live_cronjob
from .test_backup_render import sync as backup_sync
from .test_backup_render import tenant as backup_tenant
from .test_reconciler import body_with_status, make_world, tenant


def value(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def forget():
    """Tenants a test publishes metrics for; forgotten afterwards, whatever the outcome."""
    names: list[str] = []
    yield names.append
    for name in names:
        metrics.forget(name)


def test_phase_is_one_series_per_phase_and_forget_removes_every_tenant_series(forget):
    forget("m-phase")
    metrics.set_phase("m-phase", "Provisioning")
    assert value("tenant_operator_tenant_phase", tenant="m-phase", phase="Provisioning") == 1
    metrics.set_phase("m-phase", "Degraded")
    phases = {p: value("tenant_operator_tenant_phase", tenant="m-phase", phase=p) for p in metrics.PHASES}
    assert phases == {**dict.fromkeys(metrics.PHASES, 0.0), "Degraded": 1.0}
    before = value("tenant_operator_tenants", phase="Degraded")

    metrics.BACKUP_TIMESTAMP.labels("m-phase").set(1)
    metrics.CREDENTIALS_ROTATED.labels("m-phase", "mysql").set(1)
    metrics.CREDENTIALS_ROTATED.labels("m-phase-other", "mysql").set(1)
    metrics.forget("m-phase")
    assert value("tenant_operator_tenants", phase="Degraded") == before - 1
    for metric in metrics.PER_TENANT:
        index = metric._labelnames.index("tenant")
        assert not [k for k in metric._metrics if k[index] == "m-phase"], metric._name
    # Another tenant whose name starts alike keeps its series.
    assert value("tenant_operator_credentials_rotated_timestamp_seconds", tenant="m-phase-other", backend="mysql") == 1
    metrics.forget("m-phase-other")


def test_every_per_tenant_metric_is_forgotten():
    """A new per-tenant metric must be listed in PER_TENANT, or its series outlive the tenant."""
    labelled = [m for m in vars(metrics).values()
                if hasattr(m, "_labelnames") and "tenant" in m._labelnames]
    assert labelled and set(map(id, labelled)) == set(map(id, metrics.PER_TENANT))


def test_backup_timestamp_and_interval_follow_the_cronjobs(forget):
    forget("client-abc")
    backup_sync(backup_tenant(), live(
        live_cronjob("backup-auth-db", "2024-01-01T00:00:00Z", "2024-05-02T03:30:00Z", "2024-05-02T03:31:10Z"),
        live_cronjob("backup-orders-db", "2024-01-01T00:00:00Z", "2024-05-02T03:30:00Z", "2024-05-02T03:30:40Z")))
    assert value("tenant_operator_last_successful_backup_timestamp_seconds",
                 tenant="client-abc") == ts("2024-05-02T03:30:40Z")        # the oldest of the latest
    assert value("tenant_operator_backup_interval_seconds", tenant="client-abc") == 86400   # "30 3 * * *"

    # Suspended (so terminating too) or disabled: no backups are expected, nothing to alert on.
    backup_sync(backup_tenant(suspended=True), {})
    assert value("tenant_operator_backup_interval_seconds", tenant="client-abc") is None
    backup_sync(backup_tenant(backup={"schedule": "0 * * * *"}), {})
    assert value("tenant_operator_backup_interval_seconds", tenant="client-abc") == 3600
    backup_sync(backup_tenant(backup={"enabled": False}), {})
    assert value("tenant_operator_backup_interval_seconds", tenant="client-abc") is None


def test_credentials_since_is_the_oldest_secret_unless_rotated_later():
    def secret(created):
        return {"metadata": {"name": "s", "creationTimestamp": created}}
    secrets = [secret("2024-03-01T00:00:00Z"), secret("2024-01-01T00:00:00Z")]
    assert credentials_since(secrets, {}) == ts("2024-01-01T00:00:00Z")
    rotated = {"credentials": {"rotationToken": "r1", "rotatedAt": "2024-06-01T00:00:00Z"}}
    assert credentials_since(secrets, rotated) == ts("2024-06-01T00:00:00Z")
    # A Secret re-created after the rotation is newer; the others were rotated then.
    assert credentials_since([*secrets, secret("2024-07-01T00:00:00Z")], rotated) == ts("2024-06-01T00:00:00Z")
    assert credentials_since([], rotated) is None
    # The API client's objects carry datetimes rather than strings.
    assert credentials_since([secret(datetime(2024, 1, 1, tzinfo=UTC))], {}) == ts("2024-01-01T00:00:00Z")


def test_credentials_gauge_from_the_reconciler(forget):
    forget("acme")
    kube, rec, _ = make_world()
    rec.reconcile(tenant(), {})
    key = ("v1", "Secret", "tenant-acme", "auth-db-credentials")
    kube.objects[key]["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"   # as the API server sets it
    rec.reconcile(body_with_status(kube, tenant()), dict(kube.objects))
    assert value("tenant_operator_credentials_rotated_timestamp_seconds",
                 tenant="acme", backend="mysql") == ts("2024-01-01T00:00:00Z")

    body = tenant()
    body["metadata"]["annotations"] = {naming.ANNOTATION_ROTATE: "r1"}
    before = time.time()
    rec.reconcile(body_with_status(kube, body), dict(kube.objects))
    assert value("tenant_operator_credentials_rotated_timestamp_seconds", tenant="acme", backend="mysql") >= before
    # Read back from status.credentials.rotatedAt afterwards (whole seconds); the
    # rotated Secret was updated in place, so it keeps its creation time.
    kube.objects[key]["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    rec.reconcile(body_with_status(kube, body), dict(kube.objects))
    assert value("tenant_operator_credentials_rotated_timestamp_seconds",
                 tenant="acme", backend="mysql") == ts(kube.status["credentials"]["rotatedAt"])

    # A terminating tenant's credentials are revoked, not renewed.
    mysql = rec.backends[0]
    mysql.sync(rec_tenant(body), dict(kube.objects), kube.status, terminating=True)
    assert value("tenant_operator_credentials_rotated_timestamp_seconds", tenant="acme", backend="mysql") is None


def rec_tenant(body):
    from tenant_operator import spec

    from .test_reconciler import CFG
    return spec.parse(body, CFG)


class _DeletionState:
    """What lifecycle.advance uses: a Tenant past its deletion and a final backup that fails."""

    def __init__(self, outcomes):
        from .test_reconciler import CFG
        self.cfg = CFG
        self.outcomes = list(outcomes)
        self.backends = [self]
        self.kube = self
        self.reconciler = self
        self.status = {"deletion": {"requestedAt": "2026-01-01T00:00:00Z", "purgeAfter": "2026-01-31T00:00:00Z",
                                    "policy": "Delete", "completedSteps": []}}

    # kube
    def get(self, kind, name, namespace=""):
        return {"metadata": {"name": "m-final", "uid": "u1", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"tier": "standard"}, "status": self.status}

    # reconciler
    def begin_deletion(self, name):
        pass

    def tenant_lock(self, name):
        return threading.RLock()

    def reconcile_terminating(self, body, live, t, deletion):
        self.report_terminating(body, deletion)

    def report_terminating(self, body, deletion):
        self.status = {**self.status, "deletion": dict(deletion)}   # what the status write keeps

    # backend
    def final_backup(self, t):
        return self.outcomes.pop(0)

    data_step = ""

    def forget(self, name):
        pass


def test_final_backup_failures_are_published_while_terminating(forget):
    forget("m-final")
    state = _DeletionState([{"error": "mysql down"}, {"error": "mysql down"}, {"objects": ["s3://b/k"]}])
    now = datetime(2026, 1, 2, tzinfo=UTC)
    lifecycle.advance(state, {"metadata": {"name": "m-final"}}, {}, now)
    assert value("tenant_operator_tenant_phase", tenant="m-final", phase="Terminating") == 1
    assert value("tenant_operator_final_backup_failed_attempts", tenant="m-final") == 1
    later = now.replace(hour=1)
    lifecycle.advance(state, {"metadata": {"name": "m-final"}}, {}, later)
    assert value("tenant_operator_final_backup_failed_attempts", tenant="m-final") == 2
    # Not due yet: the record still says failing (as after an operator restart).
    lifecycle.advance(state, {"metadata": {"name": "m-final"}}, {}, later)
    assert value("tenant_operator_final_backup_failed_attempts", tenant="m-final") == 2
    lifecycle.advance(state, {"metadata": {"name": "m-final"}}, {}, later.replace(hour=3))
    assert value("tenant_operator_final_backup_failed_attempts", tenant="m-final") == 0
