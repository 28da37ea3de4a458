"""Recovery drills against the real API server, MariaDB and MinIO.

The drill CronJob's container command runs here as a subprocess with the
environment its pod would get; its Jobs are created from the CronJob as the
CronJob controller (or `kubectl create job --from`) does, and their status is
set as the Job controller would set it, since no pod runs without a node.
tests/node runs drills for real (test_recovery_drill_passes_then_fails_on_a_corrupted_backup)."""

from __future__ import annotations

import io
import subprocess

import pytest

from .conftest import unique, wait_for
from .test_backup_requests import (
    READY_TIMEOUT,
    admin_rows,
    backup_now,
    batch,  # noqa: F401 - fixture
    database_exists,
    finish_job,
    minio,
    owned_rows,
    run_job_container,
    secret_data,
    tenant_sql,
)

pytestmark = pytest.mark.integration
_ = batch


def tables(database: str) -> int:
    return admin_rows("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))[0][0]


def job_from_cronjob(batch, namespace: str, cronjob: str, name: str):  # noqa: F811
    subprocess.run(["kubectl", "-n", namespace, "create", "job", f"--from=cronjob/{cronjob}", name],
                   check=True, capture_output=True)
    return batch.read_namespaced_job(name, namespace)


def verified(tenants, name: str) -> tuple[dict | None, dict]:
    body = tenants.get(name)
    cond = next((c for c in body["status"].get("conditions") or [] if c["type"] == "BackupsVerified"), None)
    return cond, (body["status"].get("backups") or {}).get("lastVerified") or {}


def test_drill_restores_the_latest_backup_and_reports_it_then_fails_on_a_corrupted_one(tenants, core, batch,
                                                                                       operator):
    name = tenants.create(unique("dr"), databases=["auth"])
    body = tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns, uid = body["status"]["namespace"], body["metadata"]["uid"]
    scratch = f"{name.replace('-', '_')}_auth_drill"

    # The scratch database: the operator's, for this Tenant, granted to the service's user.
    assert database_exists(scratch) and owned_rows(scratch) == [(uid, "auth:drill", "database")]
    creds = secret_data(core, ns, "auth-db-credentials")
    assert tenant_sql(creds, "SELECT DATABASE()", database=scratch) == [(scratch,)]
    cond, _ = verified(tenants, name)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NotRunYet")
    assert tenants.condition(name, "Ready")["status"] == "True"

    cron = batch.read_namespaced_cron_job("drill-auth-db", ns)
    assert cron.spec.schedule == "30 4 * * 0"
    (c,) = cron.spec.job_template.spec.template.spec.containers
    assert c.command == ["tenant-operator", "drill", "--secret-env", "--service", "auth", "--into-database", scratch]
    assert [s.secret_ref.name for s in c.env_from] == ["auth-db-credentials", "objectstorage-credentials"]

    tenant_sql(creds, "CREATE TABLE items (id INT PRIMARY KEY)")
    tenant_sql(creds, "INSERT INTO items VALUES (1), (2), (3)")
    key = backup_now(core, ns, "auth")

    # A drill that passes: the dump restored into the scratch database, which is left empty.
    job = job_from_cronjob(batch, ns, "drill-auth-db", "drill-one")
    run = run_job_container(core, job)
    assert run.returncode == 0, run.stderr
    assert f'"key": "{key}"' in run.stdout and '"tables": 1' in run.stdout
    assert database_exists(scratch) and tables(scratch) == 0
    finish_job(batch, job)

    def passed():
        cond, last = verified(tenants, name)
        return (cond, last) if cond and cond["status"] == "True" else None
    cond, last = wait_for(passed, 30, what="BackupsVerified True")
    assert cond["reason"] == "Verified"
    assert last["databases"]["auth"]["outcome"] == "Passed" and last["databases"]["auth"]["job"] == "drill-one"
    assert last["time"] == last["databases"]["auth"]["completedAt"]
    wait_for(lambda: operator.metric("tenant_operator_backup_drill_passed",
                                     f'{{service="auth",tenant="{name}"}}') == 1.0, 30, what="the drill metric")

    # Corrupt the latest dump (same size, other bytes): the drill refuses it before executing anything.
    bucket = secret_data(core, ns, "backup-credentials")["S3_BACKUPS_BUCKET"]
    s3 = minio()
    size = s3.stat_object(bucket, key).size
    s3.put_object(bucket, key, io.BytesIO(b"\0" * size), size)
    job = job_from_cronjob(batch, ns, "drill-auth-db", "drill-two")
    run = run_job_container(core, job)
    assert run.returncode == 3, (run.returncode, run.stderr)
    assert "does not match its manifest" in run.stderr
    assert tables(scratch) == 0
    finish_job(batch, job, failed_exit_code=3)

    def failed():
        cond, last = verified(tenants, name)
        return (cond, last) if cond and cond["status"] == "False" else None
    cond, last = wait_for(failed, 30, what="BackupsVerified False")
    assert cond["reason"] == "IntegrityCheckFailed" and cond["message"].startswith("auth: drill Job drill-two failed")
    assert last["databases"]["auth"]["outcome"] == "Failed"
    assert last["databases"]["auth"]["reason"] == "IntegrityCheckFailed"
    # The tenant itself is still Ready: the drill's verdict is on the backups.
    assert tenants.condition(name, "Ready")["status"] == "True"
    wait_for(lambda: operator.metric("tenant_operator_backup_drill_passed",
                                     f'{{service="auth",tenant="{name}"}}') == 0.0, 30, what="the drill metric")


def test_drills_opt_out_removes_the_cronjobs_and_scratch_databases(tenants, batch):
    name = tenants.create(unique("dr"), databases=["auth"])
    body = tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = body["status"]["namespace"]
    scratch = f"{name.replace('-', '_')}_auth_drill"
    assert database_exists(scratch)
    assert batch.read_namespaced_cron_job("drill-auth-db", ns)

    tenants.patch(name, {"spec": {"backup": {"drills": {"enabled": False}}}})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)

    def cronjob_gone():
        return not any(cj.metadata.name == "drill-auth-db" for cj in batch.list_namespaced_cron_job(ns).items)
    wait_for(cronjob_gone, 30, what="the drill CronJob pruned")
    wait_for(lambda: not database_exists(scratch), 30, what="the scratch database dropped")
    assert owned_rows(scratch) == []
    cond = tenants.condition(name, "BackupsVerified")
    assert (cond["status"], cond["reason"]) == ("Unknown", "Disabled")
