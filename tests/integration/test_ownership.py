"""The ownership fence, tried as a hostile or careless user would, against the
real operator and services: the operator changes or deletes only what carries
its marker for that Tenant's UID, and nothing holding data goes before its
grace period and a successful final backup.

Each test is a way the operator used to lose or take over data; the
platform's side is checked with the devenv's admin clients."""

from __future__ import annotations

import io
import json
import os
import uuid
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from minio import Minio
from minio.error import S3Error

from .conftest import GROUP, PLURAL, VERSION, remove_bucket, unique, wait_for
from .test_tenant_backends import (
    ACCOUNT_LOCKED,
    READY_TIMEOUT,
    admin_minio,
    admin_rows,
    admin_s3,
    database_exists,
    db_error,
    db_query,
    minio_user_exists,
    rabbit,
    rabbit_user_exists,
    s3_client,
    s3_error,
    secret_data,
    tenant_events,
    vhost_exists,
    wait_condition,
)
from .test_tenant_deletion import wait_terminating
from .test_zz_outages import outage

pytestmark = pytest.mark.integration


def _labels(tenant: str, component: str) -> dict:
    return {"tenancy.dev/tenant": tenant, "tenancy.dev/component": component,
            "app.kubernetes.io/managed-by": "tenant-operator"}


def _delete_namespace(core, name: str) -> None:
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_a_forged_secret_cannot_make_the_operator_drop_another_tenants_database(tenants, core):
    """A tenant user creates, in their own namespace, a Secret with the operator's
    labels and annotations naming another tenant's database."""
    victim = tenants.create(unique("own-vic"), databases=["auth"])
    attacker = tenants.create(unique("own-att"), databases=["auth"])
    tenants.wait_phase(victim, "Ready", READY_TIMEOUT)
    tenants.wait_phase(attacker, "Ready", READY_TIMEOUT)
    creds = secret_data(core, f"tenant-{victim}", "auth-db-credentials")
    db_query(creds, "CREATE TABLE orders (id INT)", "INSERT INTO orders VALUES (7)")

    forged = k8s.V1Secret(metadata=k8s.V1ObjectMeta(
        name="evil-db-credentials", namespace=f"tenant-{attacker}", labels=_labels(attacker, "mysql"),
        annotations={"tenancy.dev/mysql-database": creds["DB_DATABASE"],
                     "tenancy.dev/mysql-user": creds["DB_USERNAME"], "tenancy.dev/mysql-server": "main"}),
        string_data={"DB_PASSWORD": "x"})
    core.create_namespaced_secret(f"tenant-{attacker}", forged)
    # A spec change makes the attacker's tenant run a full backend pass.
    tenants.patch(attacker, {"spec": {"displayName": "after the forged Secret"}})
    tenants.wait_phase(attacker, "Ready")
    wait_for(lambda: tenants.get(attacker)["status"]["conditions"][0]["observedGeneration"] >= 2, 30,
             what="a pass at the new generation")

    assert database_exists(creds["DB_DATABASE"])
    assert admin_rows(f"SELECT id FROM `{creds['DB_DATABASE']}`.orders") == [(7,)]
    assert db_error(creds) is None, "the victim's own credentials must still work"
    assert not tenant_events(core, attacker, "DatabaseDropped")


def test_an_invalid_spec_neither_shortens_the_grace_period_nor_downgrades(tenants, core):
    """A Tenant edited into a spec the operator refuses, then deleted: its data
    waits out the grace period untouched, and purge-now still works."""
    name = tenants.create(unique("own-inv"), tier="premium", databases=["auth"],
                          objectStorage={"buckets": ["media"]}, deletion={"gracePeriod": "1h"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    creds = secret_data(core, ns, "auth-db-credentials")
    db_query(creds, "CREATE TABLE t (id INT)", "INSERT INTO t VALUES (1)")
    admin_s3().put_object(f"{name}-media", "keep.txt", io.BytesIO(b"data"), 4)
    premium_pods = core.read_namespaced_resource_quota("tenant-quota", ns).spec.hard["pods"]

    # Only the operator can know this server does not exist: admitted, then Invalid.
    tenants.patch(name, {"spec": {"placement": {"mysql": "decommissioned"}}})
    tenants.wait_phase(name, "Invalid")
    tenants.delete(name)
    wait_terminating(tenants, name)
    # A few passes of the terminating tenant.
    wait_for(lambda: (tenants.get(name)["status"].get("deletion") or {}).get("finalBackup"), 60,
             what="final backup recorded")

    assert database_exists(creds["DB_DATABASE"])
    assert admin_rows(f"SELECT id FROM `{creds['DB_DATABASE']}`.t") == [(1,)]
    assert admin_s3().bucket_exists(f"{name}-media")
    assert core.read_namespaced_resource_quota("tenant-quota", ns).spec.hard["pods"] == premium_pods
    assert not tenant_events(core, name, "DatabaseDropped")

    # purge-now is honoured although the spec still does not parse.
    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
    wait_for(lambda: tenants.gone(name), 120, what="purge with an invalid spec")
    assert not database_exists(creds["DB_DATABASE"])
    assert not admin_s3().bucket_exists(f"{name}-media")


def test_an_existing_namespace_is_never_adopted_nor_deleted(tenants, core):
    name = unique("own-ns")
    ns = f"tenant-{name}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
    try:
        core.create_namespaced_config_map(ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="theirs"),
                                                              data={"k": "v"}))
        tenants.create(name, databases=["auth"])
        cond = wait_condition(tenants, name, "NamespaceReady", "False", "NameConflict")
        assert ns in cond["message"]
        assert tenant_events(core, name, "NameConflict")
        assert not k8s.NetworkingV1Api().list_namespaced_network_policy(ns).items
        assert not core.list_namespaced_resource_quota(ns).items
        assert not database_exists(f"{name.replace('-', '_')}_auth_db"), "no backend before the namespace"
        live = core.read_namespace(ns)
        assert "tenancy.dev/tenant" not in (live.metadata.labels or {})

        tenants.delete(name)
        wait_for(lambda: tenants.gone(name), 120, what="tenant released")
        assert core.read_namespace(ns).status.phase == "Active"
        assert core.read_namespaced_config_map("theirs", ns).data == {"k": "v"}
    finally:
        _delete_namespace(core, ns)


def test_a_tenant_cannot_take_the_operators_own_namespace(tenants, core):
    """`tenant-operator` is where the operator is installed: Tenant `operator` is Invalid."""
    ns = "tenant-operator"
    created = False
    try:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        created = True
    except ApiException as exc:
        if exc.status != 409:
            raise
    try:
        tenants.create("operator", databases=["auth"])
        t = tenants.wait_phase("operator", "Invalid")
        ready = t["status"]["conditions"][0]
        assert ready["message"].startswith("not ready") or "metadata.name" in ready["message"]
        assert "metadata.name" in str(t["status"]["conditions"])
        assert not k8s.NetworkingV1Api().list_namespaced_network_policy(ns).items
        assert not core.list_namespaced_resource_quota(ns).items
        assert not database_exists("operator_auth_db")
        tenants.delete("operator")
        wait_for(lambda: tenants.gone("operator"), 120, what="tenant released")
        assert core.read_namespace(ns).status.phase == "Active"
    finally:
        if created:
            _delete_namespace(core, ns)


def test_rabbitmq_user_and_vhost_of_another_system_are_not_taken_over(tenants, core):
    # A user of another system that happens to have a tenant's name.
    user_name = unique("own-mqu")
    rabbit("PUT", "users", user_name, json_body={"password": "their-password", "tags": "monitoring"})
    rabbit("PUT", "permissions", "/", user_name, json_body={"configure": "", "write": "", "read": ".*"})
    # And a vhost.
    vhost_name = unique("own-mqv")
    rabbit("PUT", "vhosts", vhost_name, json_body={"description": "someone else's"})
    try:
        before = rabbit("GET", "users", user_name)
        tenants.create(user_name, messaging={"queues": ["orders"]})
        tenants.create(vhost_name, messaging={"queues": ["orders"]})
        cond = wait_condition(tenants, user_name, "MessagingReady", "False", "NameConflict", timeout=60)
        assert user_name in cond["message"]
        wait_condition(tenants, vhost_name, "MessagingReady", "False", "NameConflict", timeout=60)

        after = rabbit("GET", "users", user_name)
        assert after["password_hash"] == before["password_hash"]
        assert after["tags"] == before["tags"]
        assert [p["vhost"] for p in rabbit("GET", "users", user_name, "permissions")] == ["/"]
        assert not rabbit_user_exists(vhost_name), "no user is created next to a foreign vhost"

        for name in (user_name, vhost_name):
            tenants.delete(name)
        for name in (user_name, vhost_name):
            wait_for(lambda n=name: tenants.gone(n), 120, what=f"{name} released")
        assert rabbit_user_exists(user_name) and vhost_exists(vhost_name)
        assert rabbit("GET", "users", user_name)["password_hash"] == before["password_hash"]
    finally:
        rabbit("DELETE", "users", user_name)
        rabbit("DELETE", "vhosts", vhost_name)


def test_shortened_bucket_names_are_purged_with_their_tenant(tenants, core):
    name = tenants.create(unique("own-long-" + "x" * 22), objectStorage={"buckets": ["a" * 24]})
    t = tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    buckets = secret_data(core, t["status"]["namespace"], "objectstorage-credentials")["S3_BUCKETS"].split(",")
    assert len(buckets) == 1 and len(buckets[0]) == 63 and buckets[0] != f"{name}-{'a' * 24}"
    assert admin_s3().bucket_exists(buckets[0])
    tenants.delete(name)
    wait_for(lambda: tenants.gone(name), 120, what="purge")
    assert not admin_s3().bucket_exists(buckets[0])


def test_removed_database_and_bucket_wait_out_their_grace_period(tenants, core):
    name = tenants.create(unique("own-rm"), databases=["auth", "billing"],
                          objectStorage={"buckets": ["media", "archive"]}, deletion={"gracePeriod": "1h"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    billing = secret_data(core, ns, "billing-db-credentials")
    db_query(billing, "CREATE TABLE invoices (id INT)", "INSERT INTO invoices VALUES (42)")
    admin_s3().put_object(f"{name}-archive", "2024.tar", io.BytesIO(b"old"), 3)

    # A GitOps revert or a typo removes them from the spec.
    tenants.patch(name, {"spec": {"databases": ["auth"], "objectStorage": {"buckets": ["media"]}}})

    def pending():
        st = tenants.get(name).get("status") or {}
        pr = st.get("pendingRemovals") or {}
        return pr if pr.get("databases") and pr.get("buckets") else None
    removals = wait_for(pending, 90, what="status.pendingRemovals")
    assert [d["service"] for d in removals["databases"]] == ["billing"]
    assert [b["bucket"] for b in removals["buckets"]] == [f"{name}-archive"]
    assert all(r["purgeAfter"] for r in removals["databases"] + removals["buckets"])
    assert db_error(billing) in ACCOUNT_LOCKED, "the removed service's user is locked meanwhile"
    assert admin_rows(f"SELECT id FROM `{billing['DB_DATABASE']}`.invoices") == [(42,)]
    assert admin_s3().get_object(f"{name}-archive", "2024.tar").read() == b"old"
    assert tenant_events(core, name, "DatabasePendingRemoval")

    # Re-added within the grace period: back as it was.
    tenants.patch(name, {"spec": {"databases": ["auth", "billing"],
                                  "objectStorage": {"buckets": ["media", "archive"]}}})
    wait_for(lambda: not (tenants.get(name).get("status") or {}).get("pendingRemovals"), 90,
             what="pendingRemovals cleared")
    tenants.wait_phase(name, "Ready")
    again = secret_data(core, ns, "billing-db-credentials")
    wait_for(lambda: db_error(again) is None, 60, what="billing usable again")
    assert db_query(again, "SELECT id FROM invoices") == [(42,)]
    media_creds = secret_data(core, ns, "objectstorage-credentials")
    assert s3_client(media_creds).get_object(f"{name}-archive", "2024.tar").read() == b"old"


def test_a_removed_bucket_is_archived_before_it_is_deleted(tenants, core):
    name = tenants.create(unique("own-ar"), objectStorage={"buckets": ["media", "old"]},
                          deletion={"gracePeriod": "2s"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    admin_s3().put_object(f"{name}-old", "2024/report.txt", io.BytesIO(b"report"), 6)
    tenants.patch(name, {"spec": {"objectStorage": {"buckets": ["media"]}}})
    wait_for(lambda: not admin_s3().bucket_exists(f"{name}-old"), 120, what="the removed bucket deleted")
    creds = secret_data(core, f"tenant-{name}", "objectstorage-credentials")
    archived = f"archive/{name}-old/2024/report.txt"
    assert admin_s3().get_object(creds["S3_BACKUPS_BUCKET"], archived).read() == b"report"
    # The application reads its archive like its backups, and cannot change it.
    assert s3_client(creds).get_object(creds["S3_BACKUPS_BUCKET"], archived).read() == b"report"
    (event,) = wait_for(lambda: tenant_events(core, name, "BucketDeleted"), 30, what="the BucketDeleted event")
    assert f"archive/{name}-old/" in event.message


def test_the_purge_waits_for_a_successful_final_backup(tenants, core):
    """MySQL is down when the grace period ends: nothing is dropped until a
    final backup has succeeded."""
    name = tenants.create(unique("own-fb"), databases=["auth"], deletion={"gracePeriod": "1h"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    creds = secret_data(core, f"tenant-{name}", "auth-db-credentials")
    db_query(creds, "CREATE TABLE t (id INT)", "INSERT INTO t VALUES (5)")
    with outage("mariadb"):
        tenants.delete(name)
        fb = wait_for(lambda: ((tenants.get(name).get("status") or {}).get("deletion") or {}).get("finalBackup"),
                      90, what="a failed final backup recorded")
        assert fb.get("error") and fb.get("nextAttemptAt"), fb
        tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
        deletion = wait_for(lambda: (tenants.get(name)["status"].get("deletion") or {})
                            if "final backup" in (tenants.get(name)["status"].get("deletion") or {})
                            .get("waitingOn", "") else None, 60, what="purge waiting on the final backup")
        assert not deletion.get("completedSteps")
    # MySQL is back: the retry takes the backup, and only then is the data dropped.
    wait_for(lambda: tenants.gone(name), 240, what="purge after the final backup")
    keys = [o.object_name for o in admin_s3().list_objects(f"{name}-backups", prefix="mysql/auth/",
                                                           recursive=True)]
    assert any(k.endswith(".sql.gz") for k in keys), keys
    assert not database_exists(creds["DB_DATABASE"])


def test_the_applications_key_cannot_destroy_its_backups(tenants, core):
    """A compromised application holds the tenant's storage key: it reads its
    backups but can neither add, replace nor delete one. The backup Jobs' own
    key (a Secret the application's pods do not mount) writes them, and even it
    cannot delete a version."""
    name = tenants.create(unique("own-bk"), databases=["auth"])
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    creds = secret_data(core, f"tenant-{name}", "objectstorage-credentials")
    writer = secret_data(core, f"tenant-{name}", "backup-credentials")
    bucket = creds["S3_BACKUPS_BUCKET"]
    assert writer["S3_BACKUPS_BUCKET"] == bucket and writer["AWS_ACCESS_KEY_ID"] != creds["AWS_ACCESS_KEY_ID"]
    backup_key = s3_client(writer)
    written = backup_key.put_object(bucket, "mysql/auth/x.sql.gz", io.BytesIO(b"dump"), 4)

    app = s3_client(creds)
    assert app.get_object(bucket, "mysql/auth/x.sql.gz").read() == b"dump"
    for action in (lambda: app.put_object(bucket, "mysql/auth/x.sql.gz", io.BytesIO(b"evil"), 4),
                   lambda: app.remove_object(bucket, "mysql/auth/x.sql.gz"),
                   lambda: app.remove_object(bucket, "mysql/auth/x.sql.gz", version_id=written.version_id)):
        with pytest.raises(S3Error) as refused:
            action()
        assert refused.value.code == "AccessDenied"

    with pytest.raises(S3Error) as refused:
        backup_key.remove_object(bucket, "mysql/auth/x.sql.gz", version_id=written.version_id)
    assert refused.value.code == "AccessDenied"
    backup_key.remove_object(bucket, "mysql/auth/x.sql.gz")          # retention: a delete marker, allowed
    versions = [o.version_id for o in admin_s3().list_objects(bucket, prefix="mysql/auth/", include_version=True)
                if not o.is_delete_marker]
    assert written.version_id in versions
    # Neither key reaches the other's bucket of data.
    with pytest.raises(S3Error) as refused:
        list(backup_key.list_objects(f"{name}-media"))
    assert refused.value.code in ("AccessDenied", "NoSuchBucket")


def test_a_recreated_tenant_never_sees_its_predecessors_backups(tenants, core):
    name = tenants.create(unique("own-re"), databases=["auth"])
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    first = secret_data(core, f"tenant-{name}", "objectstorage-credentials")
    old_bucket = first["S3_BACKUPS_BUCKET"]
    writer = secret_data(core, f"tenant-{name}", "backup-credentials")
    s3_client(writer).put_object(old_bucket, "mysql/auth/secret.sql.gz", io.BytesIO(b"old"), 3)
    tenants.delete(name)
    wait_for(lambda: tenants.gone(name), 120, what="purge of the first tenant")
    assert admin_s3().get_object(old_bucket, "mysql/auth/secret.sql.gz").read() == b"old", "archive kept"

    tenants.create(name, databases=["auth"])
    new_bucket = None
    try:
        tenants.wait_phase(name, "Ready", READY_TIMEOUT)
        second = wait_for(lambda: secret_data(core, f"tenant-{name}", "objectstorage-credentials"), 60,
                          what="the new tenant's storage Secret")
        new_bucket = second["S3_BACKUPS_BUCKET"]
        assert new_bucket != old_bucket and new_bucket.startswith(f"{name}-backups")
        app = s3_client(second)
        assert not list(app.list_objects(new_bucket, recursive=True))
        with pytest.raises(S3Error) as refused:
            app.get_object(old_bucket, "mysql/auth/secret.sql.gz")
        assert refused.value.code == "AccessDenied"
    finally:
        if new_bucket:
            tenants.delete(name)
            wait_for(lambda: tenants.gone(name), 120, what="purge of the second tenant")
            remove_bucket(new_bucket)


def test_a_domain_routed_by_one_tenant_is_not_taken_by_another(tenants, core):
    host = f"{unique('shop')}.example.com"
    first = tenants.create(unique("own-d1"), domains=[host])
    tenants.wait_phase(first, "Ready", READY_TIMEOUT)
    second = tenants.create(unique("own-d2"), domains=[host])
    cond = wait_condition(tenants, second, "IngressReady", "False", "DomainConflict")
    assert host in cond["message"] and first in cond["message"]
    assert tenant_events(core, second, "DomainConflict")
    networking = k8s.NetworkingV1Api()
    assert not networking.list_namespaced_ingress(f"tenant-{second}").items
    (ingress,) = networking.list_namespaced_ingress(f"tenant-{first}").items
    assert [r.host for r in ingress.spec.rules] == [host]
    assert tenants.condition(first, "IngressReady")["reason"] == "Routed"
    # Once the first tenant lets the domain go, the second routes it.
    tenants.patch(first, {"spec": {"domains": []}})
    wait_condition(tenants, second, "IngressReady", "True", "Routed", timeout=90)


def test_a_storage_user_of_another_system_is_not_taken_over(tenants, core):
    """A MinIO user named like a tenant's storage user exists already (another
    system's): it is neither reset, nor given the tenant's buckets, nor deleted."""
    name = unique("own-su")
    minio = admin_minio()
    minio.user_add(f"tenant-{name}", "their-secret-key")
    probe = Minio(urlsplit(os.environ["MINIO_ENDPOINT"]).netloc, access_key=f"tenant-{name}",
                  secret_key="their-secret-key", secure=False)
    try:
        tenants.create(name, databases=["auth"])
        cond = wait_condition(tenants, name, "ObjectStorageReady", "False", "NameConflict", timeout=90)
        assert f"tenant-{name}" in cond["message"]
        assert "policyName" not in json.loads(minio.user_info(f"tenant-{name}")), "no policy given to it"
        # Its own key still signs (a reset key would give InvalidAccessKeyId or SignatureDoesNotMatch).
        wait_for(lambda: s3_error(lambda: probe.list_buckets()) in (None, "AccessDenied"), 20,
                 what="the foreign user still signs with its own key")
        tenants.delete(name)
        tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true",
                                                          "tenancy.dev/skip-final-backup": "true"}}})
        wait_for(lambda: tenants.gone(name), 120, what=f"{name} released")
        assert minio_user_exists(f"tenant-{name}")
        assert not minio_user_exists(f"backup-{name}"), "nothing of the tenant's was created next to it"
    finally:
        minio.user_remove(f"tenant-{name}")


def test_a_bucket_its_own_cut_off_pass_created_is_recognised_by_the_record_written_before_it(tenants, custom):
    """Object storage cannot create a bucket and its ownership tags at once: a
    pass cut off between the two (a killed replica) leaves an untagged bucket.
    The operator records the buckets it is about to create in status.creating
    first; with that record the untagged bucket is this Tenant's, without it
    the same bucket is someone else's and is not touched."""
    name = unique("own-cut")
    bucket = f"{name}-data"
    s3 = admin_s3()
    s3.make_bucket(bucket)   # exactly what a cut-off pass leaves: the bucket, no tags
    try:
        tenants.create(name, objectStorage={"buckets": ["data"]})
        cond = wait_condition(tenants, name, "ObjectStorageReady", "False", "NameConflict", timeout=90)
        assert bucket in cond["message"]
        assert s3.get_bucket_tags(bucket) is None, "an unrecorded, untagged bucket is left alone"
        assert not (tenants.get(name).get("status") or {}).get("creating"), "nothing was recorded for it"
        # The record the cut-off pass wrote before it created the bucket.
        custom.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name,
                                                  {"status": {"creating": {"buckets": [bucket]}}})
        wait_condition(tenants, name, "ObjectStorageReady", "True", "Provisioned", timeout=90)
        tags = dict(s3.get_bucket_tags(bucket) or {})
        assert tags.get("tenancy.dev/tenant-uid") == tenants.get(name)["metadata"]["uid"]
        wait_for(lambda: not (tenants.get(name).get("status") or {}).get("creating"), 30,
                 what="status.creating cleared once the bucket is tagged")
    finally:
        tenants.delete(name)
        tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true",
                                                          "tenancy.dev/skip-final-backup": "true"}}})
        wait_for(lambda: tenants.gone(name), 120, what=f"{name} purged")
        remove_bucket(bucket)


@pytest.fixture
def reconciler_with_crashing_broker(tmp_path_factory, monkeypatch):
    """The operator's reconcile core in this process, against the real services,
    with one fault injected: the RabbitMQ topology call raises an error no
    backend code expects. No Tenant object exists, so the operator under test
    never sees this tenant; the final status write fails with 404."""
    from tenant_operator import config
    from tenant_operator.backends import build_backends
    from tenant_operator.kube.client import Kube
    from tenant_operator.reconciler import Reconciler

    from .conftest import operator_config
    cfg = config.load(operator_config(tmp_path_factory))
    kube = Kube.from_environment(cfg.field_manager)
    backends = build_backends(cfg, kube)
    broker = next(b for b in backends if b.component == "rabbitmq").client_on(cfg.rabbitmq_default)

    def crash(*_args, **_kwargs):
        raise RuntimeError("unexpected reply from the broker")
    monkeypatch.setattr(broker, "ensure_topology", crash)
    return cfg, kube, Reconciler(cfg, kube, backends)


def _reconcile_without_tenant(rec, body: dict) -> None:
    try:
        rec.reconcile(body, {})
    except ApiException as exc:
        assert exc.status == 404, exc   # only the status write of the absent Tenant may fail


def test_a_crashing_backend_leaves_the_namespace_isolated_and_every_secret_true(reconciler_with_crashing_broker,
                                                                                core):
    cfg, kube, rec = reconciler_with_crashing_broker
    from tenant_operator import spec as spec_mod

    from .conftest import tenant_body
    name = unique("own-crash")
    ns = f"tenant-{name}"
    body = tenant_body(name, databases=["auth"], messaging={"queues": ["orders"]})
    body["metadata"].update(uid=str(uuid.uuid4()), generation=1)
    # Placed already: with no Tenant object, recording a placement would fail before any backend is reached.
    body["status"] = {"placement": {"mysql": cfg.mysql_default, "rabbitmq": cfg.rabbitmq_default,
                                    "objectStorage": cfg.object_storage_default}}
    try:
        _reconcile_without_tenant(rec, body)
        # Isolation is in place although a backend crashed in the same pass.
        net = k8s.NetworkingV1Api()
        assert net.list_namespaced_network_policy(ns).items
        assert core.list_namespaced_resource_quota(ns).items and core.list_namespaced_limit_range(ns).items
        db = secret_data(core, ns, "auth-db-credentials")
        assert db_query(db, "SELECT 1") == [(1,)]

        # A rotation across services: the crash in the broker does not keep MySQL's
        # new password from its Secret.
        body["metadata"].update(generation=2, annotations={"tenancy.dev/rotate-credentials": "r1"})
        _reconcile_without_tenant(rec, body)
        rotated = secret_data(core, ns, "auth-db-credentials")
        assert rotated["DB_PASSWORD"] != db["DB_PASSWORD"]
        assert db_query(rotated, "SELECT 1") == [(1,)], "the Secret holds the password the server has"
        assert rotated["DB_USERNAME"] != db["DB_USERNAME"], "the Secret moved to the second account"
        assert db_error(db) is None, "the previous account works for the overlap"
    finally:
        t = spec_mod.parse(body, cfg)
        for backend in rec.backends:
            backend.revoke(t)
        for backend in rec.backends:
            backend.purge(t)
        _delete_namespace(core, ns)
