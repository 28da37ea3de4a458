"""Tenant deletion end to end with the real operator and services: the grace
period keeps data but locks the tenant out, the purge runs its steps in order
and releases the Tenant, a foreground cascade does not take the namespace
early, Retain keeps data for a new Tenant of the same name, purge-now cuts the
grace period short, and a purge survives an operator killed mid-way.

Tenant access is checked with the tenant's Secrets; what exists on a server
after the tenant is gone is checked with the admin clients of the devenv."""

from __future__ import annotations

import io
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pika
import pytest
from kubernetes.client.rest import ApiException

from .conftest import ARCHIVE_RETENTION_DAYS, BACKUPS_RETENTION_DAYS, unique, wait_for
from .test_tenant_backends import (
    ACCESS_DENIED,
    ACCOUNT_LOCKED,
    AMQP_REFUSALS,
    FULL,
    READY_TIMEOUT,
    REFUSAL_TIMEOUT,
    admin_cleanup,
    admin_rows,
    admin_s3,
    amqp_params,
    amqp_publish,
    amqp_refused,
    amqp_roundtrip,
    conditions,
    database_exists,
    db_error,
    db_query,
    full_credentials,
    minio_user_exists,
    mysql_user_exists,
    rabbit_user_exists,
    s3_client,
    s3_refused,
    secret_data,
    tenant_buckets,
    tenant_databases,
    tenant_events,
    vhost_exists,
)

pytestmark = pytest.mark.integration

PURGE_STEPS = ["revoke-credentials", "drop-databases", "delete-buckets", "delete-vhost", "delete-namespace"]



def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_terminating(tenants, name: str, timeout: float = 30) -> dict:
    def check():
        t = tenants.get(name)
        st = t.get("status") or {}
        return t if st.get("phase") == "Terminating" and (st.get("deletion") or {}).get("purgeAfter") else None
    return wait_for(check, timeout, what=f"tenant {name} Terminating with status.deletion")


def namespace_gone(core, name: str) -> bool:
    try:
        core.read_namespace(name)
        return False
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise


def purge_steps(core, name: str) -> list[str]:
    return [e.message.split(":", 1)[0] for e in tenant_events(core, name, "PurgeStep")]


def wait_purge_events(core, name: str, count: int = len(PURGE_STEPS)) -> list[str]:
    """The PurgeStep events in the order they were posted (posting may trail the release a little)."""
    wait_for(lambda: len(purge_steps(core, name)) >= count, 30, what=f"{count} PurgeStep events of {name}")
    return purge_steps(core, name)


def test_grace_period_keeps_data_locked_then_purges_in_order(tenants, core):
    name = tenants.create(unique("del-grace"), **FULL, deletion={"gracePeriod": "12s"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    db, mq, s3 = full_credentials(core, ns)
    bucket = s3["S3_BUCKET_MEDIA"]
    db_query(db, "CREATE TABLE t (v INT)", "INSERT INTO t VALUES (1)")
    s3_client(s3).put_object(bucket, "kept.txt", io.BytesIO(b"kept"), 4)

    tenants.delete(name)
    t = wait_terminating(tenants, name)
    deletion = t["status"]["deletion"]
    purge_after = _time(deletion["purgeAfter"])
    assert purge_after - _time(deletion["requestedAt"]) == timedelta(seconds=12)
    assert deletion["policy"] == "Delete"
    ready = next(c for c in t["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Terminating", ready

    # During the grace period: everything is still there...
    namespace = core.read_namespace(ns)
    assert namespace.metadata.deletion_timestamp is None and namespace.status.phase == "Active"
    assert admin_rows(f"SELECT v FROM `{db['DB_DATABASE']}`.t") == [(1,)]
    assert admin_s3().get_object(bucket, "kept.txt").read() == b"kept"
    assert vhost_exists(name)
    # ...but the tenant's credentials are refused, as when suspended.
    wait_for(lambda: db_error(db) in ACCOUNT_LOCKED, REFUSAL_TIMEOUT, what="database account locked")
    wait_for(lambda: s3_refused(s3, bucket), REFUSAL_TIMEOUT, what="S3 keys refused")
    wait_for(lambda: isinstance(amqp_refused(mq), AMQP_REFUSALS), REFUSAL_TIMEOUT, what="AMQP login refused")
    assert datetime.now(UTC) < purge_after, "checks of the grace period ran past purgeAfter: raise gracePeriod"
    assert not tenants.gone(name)

    # After it: everything but the backups bucket is gone, then the Tenant itself.
    wait_for(lambda: tenants.gone(name), 90, what=f"tenant {name} purged and released")
    assert datetime.now(UTC) >= purge_after
    assert not database_exists(db["DB_DATABASE"])
    assert not mysql_user_exists(db["DB_USERNAME"])
    assert tenant_buckets(name) == [s3["S3_BACKUPS_BUCKET"]]
    # The media bucket's contents were archived into the kept backups bucket first...
    archived = f"archive/{bucket}/kept.txt"
    assert admin_s3().get_object(s3["S3_BACKUPS_BUCKET"], archived).read() == b"kept"
    # ...which is now the tenant's archive and empties itself on the archive's schedule.
    (rule,) = admin_s3().get_bucket_lifecycle(s3["S3_BACKUPS_BUCKET"]).rules
    assert rule.expiration.days == ARCHIVE_RETENTION_DAYS
    assert rule.noncurrent_version_expiration.noncurrent_days == BACKUPS_RETENTION_DAYS
    assert not minio_user_exists(s3["AWS_ACCESS_KEY_ID"])
    assert not minio_user_exists(f"backup-{name}")
    assert not vhost_exists(mq["RABBITMQ_VHOST"])
    assert not rabbit_user_exists(mq["RABBITMQ_USERNAME"])
    assert namespace_gone(core, ns)
    assert wait_purge_events(core, name) == PURGE_STEPS
    reasons = [e.reason for e in tenant_events(core, name)]
    assert "DeletionRequested" in reasons
    wait_for(lambda: "Purged" in [e.reason for e in tenant_events(core, name)], 30, what="Purged event")


def test_foreground_cascade_does_not_take_the_namespace_early(tenants, core):
    name = tenants.create(unique("del-fg"), databases=["auth"], deletion={"gracePeriod": "30s"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    db = secret_data(core, ns, "auth-db-credentials")

    started = time.monotonic()
    subprocess.run(["kubectl", "delete", "tenant", name, "--cascade=foreground", "--wait=false"],
                   check=True, capture_output=True, text=True, timeout=30)
    # (The garbage collector drops its foregroundDeletion finalizer at once: nothing is owned by the Tenant.)
    t = wait_terminating(tenants, name)
    until = _time(t["status"]["deletion"]["purgeAfter"]) - timedelta(seconds=5)

    # Measuring, not synchronising: the namespace must stay (and not start
    # terminating) through most of the grace period.
    def namespace_stays():
        try:
            namespace = core.read_namespace(ns)
        except ApiException as exc:
            pytest.fail(f"namespace {ns} vanished during the grace period: {exc.status}")
        assert namespace.metadata.deletion_timestamp is None, "namespace deletion started during grace"
        assert namespace.status.phase == "Active"
        assert tenants.get(name)["status"]["phase"] == "Terminating"
        return datetime.now(UTC) >= until
    wait_for(namespace_stays, 60, interval=0.5, what="the end of the measuring window")
    assert time.monotonic() - started >= 10
    assert database_exists(db["DB_DATABASE"])

    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
    wait_for(lambda: tenants.gone(name), 60, what=f"tenant {name} purged")
    assert namespace_gone(core, ns)
    assert not database_exists(db["DB_DATABASE"])


def leftover_resources(name: str) -> set[str]:
    """What of tenant `name` exists on the servers, except its backups bucket (kept by design)."""
    tid = name.replace("-", "_")
    found = {f"database {d}" for d in tenant_databases(name)}
    found |= {f"mysql user {u}" for (u,) in admin_rows("SELECT User FROM mysql.user")
              if u.startswith(f"{tid}_") and u.endswith("_user")}
    found |= {f"bucket {b}" for b in tenant_buckets(name) if b != f"{name}-backups"}
    if minio_user_exists(f"tenant-{name}"):
        found.add("storage user")
    if vhost_exists(name):
        found.add("vhost")
    if rabbit_user_exists(name):
        found.add("rabbitmq user")
    return found


def test_retain_policy_keeps_data_for_a_new_tenant_of_the_same_name(tenants, core):
    name = unique("del-ret")
    # A short grace period, not 0s: a purge that starts while a reconcile is still
    # running has its own test (test_purge_racing_a_running_reconcile_...).
    spec = {**FULL, "deletion": {"gracePeriod": "3s", "policy": "Retain"}}
    ns = f"tenant-{name}"
    try:
        tenants.create(name, **spec)
        tenants.wait_phase(name, "Ready", READY_TIMEOUT)
        db, mq, s3 = full_credentials(core, ns)
        bucket = s3["S3_BUCKET_MEDIA"]
        db_query(db, "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20))",
                 "INSERT INTO customers VALUES (1, 'kept')")
        s3_client(s3).put_object(bucket, "report.txt", io.BytesIO(b"report"), 6)
        amqp_publish(mq, f"{name}.events", "orders.kept", b"still queued")

        tenants.delete(name)
        wait_for(lambda: tenants.gone(name), 90, what=f"tenant {name} released")
        # Data retained; credentials and the namespace are not.
        assert database_exists(db["DB_DATABASE"])
        assert tenant_buckets(name) == sorted([bucket, s3["S3_BACKUPS_BUCKET"]])
        assert vhost_exists(mq["RABBITMQ_VHOST"])
        assert not mysql_user_exists(db["DB_USERNAME"]) and db_error(db) == ACCESS_DENIED
        assert not minio_user_exists(s3["AWS_ACCESS_KEY_ID"])
        assert not rabbit_user_exists(mq["RABBITMQ_USERNAME"])
        assert namespace_gone(core, ns)
        assert wait_purge_events(core, name, 2) == ["revoke-credentials", "delete-namespace"]
        wait_for(lambda: any(e.reason == "DataRetained" for e in tenant_events(core, name)), 30,
                 what="DataRetained event")

        # A new Tenant with the same name adopts the data with new credentials.
        tenants.create(name, **spec)
        tenants.wait_phase(name, "Ready", READY_TIMEOUT)
        new_db, new_mq, new_s3 = full_credentials(core, ns)
        assert new_db["DB_DATABASE"] == db["DB_DATABASE"] and new_db["DB_PASSWORD"] != db["DB_PASSWORD"]
        assert db_query(new_db, "SELECT id, name FROM customers") == [(1, "kept")]
        assert s3_client(new_s3).get_object(bucket, "report.txt").read() == b"report"
        conn = pika.BlockingConnection(amqp_params(new_mq))
        try:
            assert conn.channel().basic_get(f"{name}.orders", auto_ack=True)[2] == b"still queued"
        finally:
            conn.close()
        amqp_roundtrip(new_mq, f"{name}.events", "orders.created", f"{name}.orders")
    finally:
        if not tenants.gone(name):
            tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
            tenants.delete(name)
            wait_for(lambda: tenants.gone(name), 120, what=f"tenant {name} released")
        admin_cleanup(name)
    assert not database_exists(db["DB_DATABASE"]) and tenant_buckets(name) == [] and not vhost_exists(name)


def test_purge_now_cuts_a_long_grace_period_short(tenants, core):
    name = tenants.create(unique("del-now"), databases=["auth"], messaging={"queues": ["orders"]},
                          deletion={"gracePeriod": "1h"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    db = secret_data(core, f"tenant-{name}", "auth-db-credentials")
    tenants.delete(name)
    deletion = wait_terminating(tenants, name)["status"]["deletion"]
    assert _time(deletion["purgeAfter"]) - _time(deletion["requestedAt"]) == timedelta(hours=1)
    assert database_exists(db["DB_DATABASE"]) and vhost_exists(name)

    started = time.monotonic()
    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
    wait_for(lambda: tenants.gone(name), 60, what=f"tenant {name} purged after purge-now")
    assert time.monotonic() - started < 60
    assert not database_exists(db["DB_DATABASE"])
    assert not vhost_exists(name)
    assert namespace_gone(core, f"tenant-{name}")


def test_purge_completes_after_the_operator_is_killed_mid_grace(tenants, core, operator):
    name = tenants.create(unique("del-kill"), databases=["auth"], messaging={"queues": ["orders"]},
                          deletion={"gracePeriod": "10s"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    db = secret_data(core, f"tenant-{name}", "auth-db-credentials")
    tenants.delete(name)
    deletion = wait_terminating(tenants, name)["status"]["deletion"]
    purge_after = _time(deletion["purgeAfter"])

    operator.stop(kill=True)
    try:
        assert datetime.now(UTC) < purge_after, "operator killed after the grace period: raise gracePeriod"
        assert not tenants.gone(name)
    finally:
        # The session's Operator object owns the new process, so the session teardown stops it.
        operator.start()
    wait_for(lambda: tenants.gone(name), 90, what=f"tenant {name} purged by the restarted operator")
    assert datetime.now(UTC) >= purge_after     # the restart did not cut the grace period short...
    assert not database_exists(db["DB_DATABASE"])
    assert not mysql_user_exists(db["DB_USERNAME"])
    assert not vhost_exists(name)
    assert namespace_gone(core, f"tenant-{name}")
    assert wait_purge_events(core, name) == PURGE_STEPS   # ...and ran every step once


def test_purge_leaves_a_tenant_whose_name_extends_it_alone(tenants, core):
    """Tenant `x` must not take the databases of tenant `x-y` (`x_y_auth_db` starts with `x_`)."""
    base = tenants.create(unique("del-pfx"), databases=["auth"])
    longer = tenants.create(f"{base}-sub", databases=["auth"], objectStorage={"buckets": ["media"]})
    tenants.wait_phase(base, "Ready", READY_TIMEOUT)
    tenants.wait_phase(longer, "Ready", READY_TIMEOUT)
    ns = f"tenant-{longer}"
    db = secret_data(core, ns, "auth-db-credentials")
    s3 = secret_data(core, ns, "objectstorage-credentials")
    db_query(db, "CREATE TABLE t (v VARCHAR(10))", "INSERT INTO t VALUES ('mine')")
    s3_client(s3).put_object(s3["S3_BUCKET_MEDIA"], "mine.txt", io.BytesIO(b"mine"), 4)

    tenants.delete(base)
    wait_for(lambda: tenants.gone(base), 90, what=f"tenant {base} purged")
    assert database_exists(db["DB_DATABASE"]) and mysql_user_exists(db["DB_USERNAME"])
    assert db_query(db, "SELECT v FROM t") == [("mine",)]
    assert s3_client(s3).get_object(s3["S3_BUCKET_MEDIA"], "mine.txt").read() == b"mine"
    assert tenants.get(longer)["status"]["phase"] == "Ready"


def test_purge_racing_a_running_reconcile_leaves_nothing_behind(tenants, core):
    name = tenants.create(unique("del-race"), **FULL)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    tid = name.replace("-", "_")
    # A spec change whose reconcile takes a while: 19 more databases and buckets, one after the other.
    more = [f"svc{i}" for i in range(19)]
    tenants.patch(name, {"spec": {"databases": ["auth", *more],
                                  "objectStorage": {"buckets": ["media", *more]}}})
    wait_for(lambda: database_exists(f"{tid}_svc0_db"), 30, interval=0.02, what="the reconcile under way")
    tenants.delete(name)     # gracePeriod 0s: the purge starts at once
    seen: set[str] = set()
    try:
        wait_for(lambda: tenants.gone(name), 90, what=f"tenant {name} purged")
        # Measuring, not synchronising: whatever the purge removed must stay removed
        # while the interrupted reconcile (if any) finishes.
        until = time.monotonic() + 15

        def watch():
            seen.update(leftover_resources(name))
            return time.monotonic() >= until
        wait_for(watch, 60, interval=0.5, what="the end of the measuring window")
    finally:
        admin_cleanup(name)
    assert not seen, f"re-created after the purge: {sorted(seen)}"


def test_a_never_provisioned_tenant_is_released_at_once_and_creates_nothing(tenants, core):
    name = tenants.create(unique("del-inv"), databases=["auth"], placement={"mysql": "decommissioned"},
                          deletion={"gracePeriod": "720h"})
    t = tenants.wait_phase(name, "Invalid", READY_TIMEOUT)
    assert "spec.placement.mysql" in conditions(t)["SpecValid"]["message"]
    tenants.delete(name)
    wait_for(lambda: tenants.gone(name), 30, what="a never-provisioned tenant released without its grace period")
    (released,) = tenant_events(core, name, "Released")
    assert "nothing was ever provisioned" in released.message
    assert namespace_gone(core, f"tenant-{name}"), "its namespace was never created"
    assert not tenant_events(core, name, "DeletionRequested")
