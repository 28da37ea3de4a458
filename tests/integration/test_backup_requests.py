"""TenantBackup and TenantRestore against the real API server, MariaDB and MinIO.

With no node here, the Jobs' pods never run. What a Job would run is run as
exactly its container's command line, as a subprocess whose environment is
what the kubelet would give it (the Secrets of its envFrom, then its env),
against the real services; the Job's status is then set as the Job
controller would set it. tests/node runs the same requests for real in pods
(test_tenant_backup_and_restore_resources)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import kubernetes
import pymysql
import pytest
from minio import Minio

from .conftest import GROUP, VERSION, unique, wait_for
from .test_tenant_backends import admin_rows, database_exists

pytestmark = pytest.mark.integration

ENV = ("MYSQL_HOST", "MYSQL_PORT", "MYSQL_ADMIN_USER", "MYSQL_ADMIN_PASSWORD", "MINIO_ENDPOINT")
READY_TIMEOUT = 120
STEP_TIMEOUT = 30


@pytest.fixture(autouse=True)
def _require_env():
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        pytest.skip(f"devenv not configured: {missing}")


@pytest.fixture(scope="module")
def batch(kube_config):
    return kubernetes.client.BatchV1Api(kube_config)


def secret_data(core, namespace: str, name: str) -> dict[str, str]:
    obj = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}


def minio() -> Minio:
    from urllib.parse import urlsplit
    url = urlsplit(os.environ["MINIO_ENDPOINT"])
    return Minio(url.netloc, access_key=os.environ["MINIO_ACCESS_KEY"], secret_key=os.environ["MINIO_SECRET_KEY"],
                 secure=url.scheme == "https")


# --- requests ---------------------------------------------------------------------------

def create(custom, plural: str, kind: str, namespace: str, name: str, spec: dict) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec})


def get(custom, plural: str, namespace: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)


def wait_phase(custom, plural: str, namespace: str, name: str, phase: str, timeout: float = STEP_TIMEOUT) -> dict:
    seen: dict = {}

    def check():
        obj = seen["obj"] = get(custom, plural, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") == phase else None
    return wait_for(check, timeout,
                    what=lambda: f"{plural} {name} phase {phase} (last: {seen.get('obj', {}).get('status')})")


def condition(obj: dict, ctype: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def request_jobs(batch, namespace: str, request: str) -> list:
    return batch.list_namespaced_job(namespace, label_selector=f"tenancy.dev/request={request}").items


# --- running a Job's container here -------------------------------------------------------

def container_env(core, namespace: str, container) -> dict[str, str]:
    """What the kubelet would give the container: envFrom Secrets in order, then env."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    for source in container.env_from or []:
        env.update(secret_data(core, namespace, source.secret_ref.name))
    for item in container.env or []:
        env[item.name] = item.value
    return env


def run_job_container(core, job) -> subprocess.CompletedProcess:
    (c,) = job.spec.template.spec.containers
    argv = list(c.command) + list(c.args or [])
    exe = Path(sys.executable).parent / argv[0]
    argv[0] = str(exe) if exe.exists() else argv[0]
    env = container_env(core, job.metadata.namespace, c)
    env["TMPDIR"] = env["HOME"] = os.environ.get("TMPDIR", "/tmp")   # noqa: S108 - the pod's /tmp emptyDir
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def finish_job(batch, job, failed_exit_code: int | None = None) -> None:
    """Set the Job's status as the Job controller does when its pod ended."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    current = batch.read_namespaced_job_status(job.metadata.name, job.metadata.namespace)
    start = current.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if current.status.start_time else now

    def cond(ctype, reason="", message=""):
        return {"type": ctype, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": now, "lastProbeTime": now}
    if failed_exit_code is None:
        status = {"active": 0, "ready": 0, "succeeded": 1, "startTime": start, "completionTime": now,
                  "conditions": [cond("SuccessCriteriaMet"), cond("Complete")]}
    else:
        message = (f"Container backup for pod {job.metadata.namespace}/{job.metadata.name}-x failed with exit code "
                   f"{failed_exit_code} matching FailJob rule at index 0")
        status = {"active": 0, "ready": 0, "failed": 1, "startTime": start,
                  "conditions": [cond("FailureTarget", "PodFailurePolicy", message),
                                 cond("Failed", "PodFailurePolicy", message)]}
    batch.patch_namespaced_job_status(job.metadata.name, job.metadata.namespace, {"status": status})


def backup_now(core, namespace: str, service: str) -> str:
    """A backup with the backup CronJob's own command and Secrets; returns its key."""
    import json
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": "/tmp", "TMPDIR": "/tmp"}  # noqa: S108
    env.update(secret_data(core, namespace, f"{service}-db-credentials"))
    env.update(secret_data(core, namespace, "backup-credentials"))
    run = subprocess.run([str(Path(sys.executable).parent / "tenant-operator"), "backup", "--secret-env",
                          "--service", service, "--no-retention"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])["key"]


def tenant_sql(creds: dict, sql: str, database: str | None = None) -> list[tuple]:
    conn = pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(creds["DB_PORT"]), user=creds["DB_USERNAME"],
                           password=creds["DB_PASSWORD"], database=database or creds["DB_DATABASE"], autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def tenant(tenants):
    """A Ready tenant with two databases and backups; (name, namespace, uid)."""
    name = tenants.create(unique("br"), databases=["auth", "billing"])
    body = tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    return name, body["status"]["namespace"], body["metadata"]["uid"]


# --- TenantBackup -------------------------------------------------------------------------

def test_tenant_backup_runs_one_job_per_database_with_the_backup_credentials(tenant, custom, core, batch):
    name, ns, _uid = tenant
    req = create(custom, "tenantbackups", "TenantBackup", ns, "nightly-extra", {})
    running = wait_phase(custom, "tenantbackups", ns, "nightly-extra", "Running")
    assert running["status"]["tenant"] == name and running["status"]["services"] == ["auth", "billing"]
    assert condition(running, "Accepted")["status"] == "True"

    jobs = {j.metadata.labels["tenancy.dev/backup-service"]: j for j in request_jobs(batch, ns, "nightly-extra")}
    assert sorted(jobs) == ["auth", "billing"]
    cron = batch.read_namespaced_cron_job("backup-auth-db", ns)
    for service, job in jobs.items():
        (owner,) = job.metadata.owner_references
        assert (owner.kind, owner.uid, owner.controller) == ("TenantBackup", req["metadata"]["uid"], True)
        (c,) = job.spec.template.spec.containers
        (cron_c,) = cron.spec.job_template.spec.template.spec.containers
        assert c.command == ["tenant-operator", "backup", "--secret-env", "--service", service, "--trigger",
                             "manual", "--no-retention", "--request-id", req["metadata"]["uid"]]
        assert [s.secret_ref.name for s in c.env_from] == [f"{service}-db-credentials", "backup-credentials"]
        # The CronJob's image, pod security and resources.
        assert c.image == cron_c.image and c.security_context == cron_c.security_context
        assert c.resources == cron_c.resources
        assert job.spec.template.spec.service_account_name == "tenant-backup"
        assert job.spec.pod_failure_policy.rules[0].on_exit_codes.values == [2, 3]

    # The pods pass the namespace's admission (restricted Pod Security, LimitRange, quota).
    wait_for(lambda: len(core.list_namespaced_pod(ns, label_selector="tenancy.dev/request=nightly-extra").items)
             == 2, 60, what="the Jobs' pods admitted")

    for job in jobs.values():
        run = run_job_container(core, job)
        assert run.returncode == 0, run.stderr
        finish_job(batch, job)
    done = wait_phase(custom, "tenantbackups", ns, "nightly-extra", "Complete")
    assert condition(done, "Complete")["status"] == "True"
    written = {b["service"]: b for b in done["status"]["backups"]}
    assert sorted(written) == ["auth", "billing"]
    bucket = secret_data(core, ns, "backup-credentials")["S3_BACKUPS_BUCKET"]
    import json
    for service, entry in written.items():
        assert entry["key"].startswith(f"mysql/{service}/")
        manifest = json.loads(minio().get_object(bucket, entry["key"] + ".manifest.json").read())
        assert manifest["request"] == req["metadata"]["uid"] and manifest["sha256"] == entry["sha256"]
        assert manifest["trigger"] == "manual"
    assert done["status"]["completedAt"] >= done["status"]["startedAt"]


def test_tenant_backup_of_an_unknown_service_fails_naming_the_field(tenant, custom, batch):
    _name, ns, _uid = tenant
    create(custom, "tenantbackups", "TenantBackup", ns, "wrong", {"services": ["auth", "orders"]})
    failed = wait_phase(custom, "tenantbackups", ns, "wrong", "Failed")
    cond = condition(failed, "Failed")
    assert cond["reason"] == "UnknownService" and cond["message"].startswith("spec.services[1]:")
    assert condition(failed, "Accepted")["status"] == "False"
    assert request_jobs(batch, ns, "wrong") == []


def test_tenant_backup_outside_a_tenant_namespace_fails(custom, core, batch, operator, crd):
    ns = unique("plain")
    core.create_namespace({"metadata": {"name": ns}})
    try:
        create(custom, "tenantbackups", "TenantBackup", ns, "stray", {})
        failed = wait_phase(custom, "tenantbackups", ns, "stray", "Failed")
        assert condition(failed, "Failed")["reason"] == "NotATenantNamespace"
        assert condition(failed, "Failed")["message"].startswith("metadata.namespace:")
        assert request_jobs(batch, ns, "stray") == []
    finally:
        core.delete_namespace(ns)


# --- TenantRestore ------------------------------------------------------------------------

def owned_rows(database: str) -> list[tuple]:
    return admin_rows("SELECT tenant_uid, service, kind FROM tenant_operator.owned WHERE name = %s", (database,))


@pytest.mark.parametrize("key,reason", [("20200101T000000Z", "BackupNotFound"),
                                        ("mysql/billing/20200101T000000Z.sql.gz", "InvalidBackupKey"),
                                        ("yesterday", "InvalidBackupKey")])
def test_a_bad_backup_key_fails_naming_spec_backup_and_touches_nothing(tenant, custom, batch, key, reason):
    name, ns, _uid = tenant
    target = f"{name.replace('-', '_')}_copy"
    create(custom, "tenantrestores", "TenantRestore", ns, "bad",
           {"service": "auth", "backup": key, "target": {"newDatabase": target}})
    failed = wait_phase(custom, "tenantrestores", ns, "bad", "Failed")
    cond = condition(failed, "Failed")
    assert cond["reason"] == reason and cond["message"].startswith("spec.backup:"), cond
    assert condition(failed, "Accepted")["status"] == "False"
    # Nothing touched: no Job, no database, no bookkeeping row.
    assert request_jobs(batch, ns, "bad") == []
    assert not database_exists(target) and owned_rows(target) == []


def test_restore_into_a_new_database_creates_it_for_the_tenant_and_follows_the_job(tenant, tenants, custom, core,
                                                                                  batch):
    name, ns, uid = tenant
    creds = secret_data(core, ns, "auth-db-credentials")
    tenant_sql(creds, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))")
    tenant_sql(creds, "INSERT INTO items VALUES (1, 'kept'), (2, 'also kept')")
    key = backup_now(core, ns, "auth")
    tenant_sql(creds, "DELETE FROM items")
    target = f"{name.replace('-', '_')}_copy"

    create(custom, "tenantrestores", "TenantRestore", ns, "undo", {"service": "auth", "backup": "latest",
                                                                    "target": {"newDatabase": target}})
    running = wait_phase(custom, "tenantrestores", ns, "undo", "Running")
    bucket = secret_data(core, ns, "backup-credentials")["S3_BACKUPS_BUCKET"]
    import json
    manifest = json.loads(minio().get_object(bucket, key + ".manifest.json").read())
    st = running["status"]
    assert (st["backup"], st["sha256"], st["database"], st["service"]) == (key, manifest["sha256"], target, "auth")

    # The new database: created, recorded for this Tenant's UID, granted to the service's user.
    assert database_exists(target)
    assert owned_rows(target) == [(uid, "auth:restore", "database")]
    assert tenant_sql(creds, "SELECT DATABASE()", database=target) == [(target,)]

    (job,) = request_jobs(batch, ns, "undo")
    (c,) = job.spec.template.spec.containers
    assert c.command == ["tenant-operator", "restore", "--secret-env", "--service", "auth", "--backup", key,
                         "--into-database", target]
    # Read-only access to the backups bucket: the application's key, not the backup writer's.
    assert [s.secret_ref.name for s in c.env_from] == ["auth-db-credentials", "objectstorage-credentials"]
    assert job.spec.backoff_limit == 0

    run = run_job_container(core, job)
    assert run.returncode == 0, run.stderr
    assert tenant_sql(creds, "SELECT name FROM items ORDER BY id", database=target) == [("kept",), ("also kept",)]
    assert tenant_sql(creds, "SELECT COUNT(*) FROM items") == [(0,)]   # the service's own database untouched
    finish_job(batch, job)
    done = wait_phase(custom, "tenantrestores", ns, "undo", "Complete")
    assert done["status"]["verified"] is True
    assert condition(done, "Complete")["message"].startswith(f"restored {key} into {target}")

    # The next passes keep the grant (the database is the user's as much as its own).
    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/rotate-credentials": "1"}}})
    wait_for(lambda: secret_data(core, ns, "auth-db-credentials")["DB_USERNAME"] != creds["DB_USERNAME"], 60,
             what="the rotation")
    rotated = secret_data(core, ns, "auth-db-credentials")
    assert tenant_sql(rotated, "SELECT COUNT(*) FROM items", database=target) == [(2,)]

    # Purged with the Tenant.
    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
    tenants.delete(name)
    wait_for(lambda: tenants.gone(name), 120, what="the tenant purged")
    assert not database_exists(target) and owned_rows(target) == []


def test_a_restore_job_failing_the_integrity_check_fails_the_request(tenant, custom, core, batch):
    _name, ns, _uid = tenant
    key = backup_now(core, ns, "billing")
    stamp = key.rsplit("/", 1)[1].split(".")[0]
    create(custom, "tenantrestores", "TenantRestore", ns, "corrupt", {"service": "billing", "backup": stamp})
    running = wait_phase(custom, "tenantrestores", ns, "corrupt", "Running")
    assert running["status"]["backup"] == key and running["status"]["database"].endswith("_billing_db")
    (job,) = request_jobs(batch, ns, "corrupt")
    finish_job(batch, job, failed_exit_code=3)
    failed = wait_phase(custom, "tenantrestores", ns, "corrupt", "Failed")
    assert condition(failed, "Failed")["reason"] == "IntegrityCheckFailed"
    assert "verified" not in failed["status"]


def test_a_restore_into_a_database_of_someone_else_is_refused(tenant, custom, core, batch):
    name, ns, _uid = tenant
    backup_now(core, ns, "auth")
    foreign = f"{name.replace('-', '_')}_theirs"
    admin_rows(f"CREATE DATABASE `{foreign}`")
    admin_rows(f"CREATE TABLE `{foreign}`.t (id INT)")
    try:
        create(custom, "tenantrestores", "TenantRestore", ns, "grab", {"service": "auth", "backup": "latest",
                                                                        "target": {"newDatabase": foreign}})
        failed = wait_phase(custom, "tenantrestores", ns, "grab", "Failed")
        cond = condition(failed, "Failed")
        assert cond["reason"] == "NameConflict" and cond["message"].startswith("spec.target.newDatabase:"), cond
        assert request_jobs(batch, ns, "grab") == []
        # Not claimed, not granted, not emptied.
        assert owned_rows(foreign) == []
        assert admin_rows("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (foreign,)) \
            == [(1,)]
        creds = secret_data(core, ns, "auth-db-credentials")
        with pytest.raises(pymysql.err.OperationalError):
            tenant_sql(creds, "SELECT 1", database=foreign)
    finally:
        admin_rows(f"DROP DATABASE IF EXISTS `{foreign}`")
