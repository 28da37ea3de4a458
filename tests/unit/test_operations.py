"""TenantBackup, TenantRestore and recovery drills: the pure parts (the request
checked against its Tenant, the Jobs and drill CronJobs, status from Jobs)."""

from __future__ import annotations

import copy

import pytest
from tenant_operator import backup, config, defaults, naming, spec
from tenant_operator.backup import cli as backup_cli
from tenant_operator.errors import ConfigError, SpecError
from tenant_operator.operations import drills, jobs, model, outcome
from tenant_operator.render import backup as render_backup
from tenant_operator.status import Condition, desired_status

from .samples import parse_with

CFG = config.from_dict({"backupImage": "registry.example/tenant-operator:1.2.3",
                        "objectStorage": {"endpoint": "http://minio:9000"}})
BASE = {"metadata": {"name": "client-abc", "generation": 1, "uid": "uid-1"},
        "spec": {"tier": "premium", "databases": ["auth", "orders"]}}
KEY = "mysql/auth/20260101T020000Z.sql.gz"


def tenant(**changes) -> spec.Tenant:
    return parse_with(BASE, CFG, **changes)


def request(spec_: dict, name: str = "req") -> dict:
    return {"metadata": {"name": name, "namespace": "tenant-client-abc", "uid": f"uid-{name}"}, "spec": spec_}


def refused(fn, *args) -> model.Refused:
    with pytest.raises(model.Refused) as exc:
        fn(*args)
    return exc.value


# --- the request against its Tenant ---------------------------------------------------------

def test_backup_of_all_databases_by_default_or_the_ones_named():
    assert model.parse_backup(request({}), tenant()).services == ("auth", "orders")
    assert model.parse_backup(request({"services": ["orders", "orders"]}), tenant()).services == ("orders",)


def test_backup_of_an_unknown_service_names_its_index():
    exc = refused(model.parse_backup, request({"services": ["auth", "billing"]}), tenant())
    assert (exc.field, exc.reason) == ("spec.services[1]", "UnknownService")
    assert str(exc).startswith("spec.services[1]: 'billing' is not a database of Tenant client-abc")


@pytest.mark.parametrize("changes,reason", [({"backup": {"enabled": False}}, "BackupsDisabled"),
                                            ({"databases": []}, "NoDatabases"),
                                            ({"suspended": True}, "TenantSuspended")])
def test_requests_need_a_tenant_with_backups(changes, reason):
    t = tenant(**changes)
    for parse, spec_ in ((model.parse_backup, {}), (model.parse_restore, {"service": "auth", "backup": "latest"})):
        exc = refused(parse, request(spec_), t)
        assert (exc.field, exc.reason) == ("metadata.namespace", reason)


@pytest.mark.parametrize("text,key", [("latest", ""), ("20260101T020000Z", KEY), (KEY, KEY)])
def test_restore_key_forms(text, key):
    req = model.parse_restore(request({"service": "auth", "backup": text}), tenant())
    assert (req.service, req.key, req.new_database) == ("auth", key, "")


@pytest.mark.parametrize("text", ["mysql/orders/20260101T020000Z.sql.gz", KEY + ".manifest.json",
                                  "20261301T020000Z", "../auth/x", "Latest", ""])
def test_a_bad_key_is_refused_naming_spec_backup(text):
    exc = refused(model.parse_restore, request({"service": "auth", "backup": text}), tenant())
    assert exc.field == "spec.backup" and exc.reason == "InvalidBackupKey"


def test_the_service_may_be_left_out_only_with_one_database():
    assert model.parse_restore(request({"backup": "latest"}), tenant(databases=["auth"])).service == "auth"
    exc = refused(model.parse_restore, request({"backup": "latest"}), tenant())
    assert exc.field == "spec.service"
    assert refused(model.parse_restore, request({"service": "nope", "backup": "latest"}), tenant()).reason \
        == "UnknownService"


@pytest.mark.parametrize("name", ["client_abc_restored", "client_abc_x"])
def test_new_database_names_allowed(name):
    req = model.parse_restore(request({"service": "auth", "backup": "latest", "target": {"newDatabase": name}}),
                              tenant())
    assert req.new_database == name


@pytest.mark.parametrize("name", ["other_restored", "client_abc_", "client_abc_auth_db", "client_abc_auth_drill",
                                  "client_abc_future_db", "client_abc_x-y", "client_abc_" + "a" * 60,
                                  "tenant_operator"])
def test_new_database_names_refused_name_the_field(name):
    exc = refused(model.parse_restore,
                  request({"service": "auth", "backup": "latest", "target": {"newDatabase": name}}), tenant())
    assert exc.field == "spec.target.newDatabase" and exc.reason == "InvalidDatabaseName"


# --- Jobs and drill CronJobs ----------------------------------------------------------------

def backup_cronjob(t: spec.Tenant, service: str) -> dict:
    return next(o for o in render_backup.cronjobs(t, CFG) if o["metadata"]["name"] == naming.backup_cronjob(service))


def container(pod_template: dict) -> dict:
    (c,) = pod_template["spec"]["containers"]
    return c


def test_backup_jobs_run_the_cronjob_pod_with_a_manual_command_and_the_backup_key():
    t = tenant()
    built = jobs.backup_jobs(model.parse_backup(request({}), t), t, CFG)
    assert [j["metadata"]["name"] for j in built] == ["req-auth", "req-orders"]
    for job, service in zip(built, ("auth", "orders"), strict=True):
        cron_pod = backup_cronjob(t, service)["spec"]["jobTemplate"]["spec"]["template"]
        pod = job["spec"]["template"]
        c, cron_c = container(pod), container(cron_pod)
        assert c["command"] == ["tenant-operator", "backup", "--secret-env", "--service", service, "--trigger",
                                "manual", "--no-retention", "--request-id", "uid-req"]
        # Everything but the command is the CronJob's: image, env, credentials, security, resources.
        assert {k: v for k, v in c.items() if k != "command"} == {k: v for k, v in cron_c.items() if k != "command"}
        assert {k: v for k, v in pod["spec"].items() if k != "containers"} == \
            {k: v for k, v in cron_pod["spec"].items() if k != "containers"}
        labels = job["metadata"]["labels"]
        assert labels[naming.LABEL_OPERATION] == "backup" and labels[naming.LABEL_REQUEST] == "req"
        assert pod["metadata"]["labels"] == labels
        assert job["metadata"]["ownerReferences"] == [{
            "apiVersion": "tenancy.dev/v1alpha1", "kind": "TenantBackup", "name": "req", "uid": "uid-req",
            "controller": True, "blockOwnerDeletion": False}]
        assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]


def test_restore_job_reads_backups_with_the_read_only_key():
    t = tenant()
    req = model.parse_restore(request({"service": "orders", "backup": "latest",
                                       "target": {"newDatabase": "client_abc_copy"}}), t)
    job = jobs.restore_job(req, "mysql/orders/20260101T020000Z.sql.gz", t, CFG)
    c = container(job["spec"]["template"])
    assert c["command"] == ["tenant-operator", "restore", "--secret-env", "--service", "orders", "--backup",
                            "mysql/orders/20260101T020000Z.sql.gz", "--into-database", "client_abc_copy"]
    assert c["envFrom"] == [{"secretRef": {"name": "orders-db-credentials"}},
                            {"secretRef": {"name": naming.OBJECTSTORE_SECRET}}]
    assert job["spec"]["backoffLimit"] == 0 and job["metadata"]["ownerReferences"][0]["kind"] == "TenantRestore"


def test_a_long_request_name_still_gives_a_valid_job_name():
    t = tenant()
    name = "r" * 63
    built = jobs.backup_jobs(model.parse_backup(request({}, name), t), t, CFG)
    names = [j["metadata"]["name"] for j in built]
    assert all(len(n) <= 63 for n in names) and len(set(names)) == 2


def test_drill_cronjobs_one_per_database_on_the_drill_schedule():
    t = tenant(backup={"drills": {"schedule": "0 5 * * 6"}})
    crons = {o["metadata"]["name"]: o for o in jobs.drill_cronjobs(t, CFG, t.backup.drills.schedule)}
    assert sorted(crons) == ["drill-auth-db", "drill-orders-db"]
    cron = crons["drill-auth-db"]
    assert cron["spec"]["schedule"] == "0 5 * * 6" and cron["spec"]["suspend"] is False
    assert cron["metadata"]["labels"][naming.LABEL_COMPONENT] == "drill"
    template = cron["spec"]["jobTemplate"]
    assert template["metadata"]["labels"][naming.LABEL_OPERATION] == "drill"
    assert template["metadata"]["labels"][naming.LABEL_TENANT] == "client-abc"
    c = container(template["spec"]["template"])
    assert c["command"] == ["tenant-operator", "drill", "--secret-env", "--service", "auth", "--into-database",
                            "client_abc_auth_drill"]
    assert c["image"] == "registry.example/tenant-operator:1.2.3"
    suspended = tenant(suspended=True)
    assert all(o["spec"]["suspend"] for o in jobs.drill_cronjobs(suspended, CFG, "@weekly"))


def test_one_render_serves_every_service_as_its_own_would():
    """The Jobs and drills take each service's CronJob from one render of all of
    them: it must be what rendering that service alone gives."""
    import dataclasses
    t = tenant(databases=["auth", "orders", "billing"])
    together = jobs._templates(t, CFG, t.databases)  # noqa: SLF001
    for service in t.databases:
        alone = dataclasses.replace(t, backup=dataclasses.replace(t.backup, enabled=True), databases=(service,))
        [cron] = [o for o in render_backup.cronjobs(alone, CFG) if o["kind"] == "CronJob"]
        assert together[service] == cron


def test_drills_take_their_cronjobs_from_the_backup_components_render(monkeypatch):
    """A pass renders the backup CronJobs once: the drills reuse the backup
    component's cached result, and build exactly what their own render gives."""
    from tenant_operator.backup.component import BackupComponent
    t = tenant(databases=["auth", "orders", "billing"])
    component = BackupComponent(CFG, kube=None)
    calls = []
    real = render_backup.cronjobs

    def counted(model, cfg):
        calls.append(model.name)
        return real(model, cfg)

    monkeypatch.setattr(render_backup, "cronjobs", counted)
    first = copy.deepcopy(component.rendered(t))
    shared = jobs.drill_cronjobs(t, CFG, t.backup.drills.schedule, component.rendered)
    assert calls == ["client-abc"]   # the drills rendered nothing of their own
    assert component.rendered(t) == first   # and changed nothing of what they shared
    monkeypatch.undo()
    assert shared == jobs.drill_cronjobs(t, CFG, t.backup.drills.schedule)
    suspended = tenant(suspended=True)   # rendered for the drills as if running, not as the backups are
    assert jobs.drill_cronjobs(suspended, CFG, "@weekly", component.rendered) == \
        jobs.drill_cronjobs(suspended, CFG, "@weekly")


def test_drill_database_name_fits_mysql_for_the_longest_names():
    name = naming.mysql_drill_database("t" * 40, "s" * 24)
    assert len(name) + name.count("_") <= naming.MYSQL_DB_MAX and name.endswith("_drill")
    assert name != naming.mysql_database("t" * 40, "s" * 24)


# --- status from Jobs -----------------------------------------------------------------------

def job(name="j", *, service="auth", complete=None, failed=None, ended="2026-01-01T03:00:00Z",
        created="2026-01-01T02:59:00Z", operation="drill") -> dict:
    conds = []
    status: dict = {"startTime": created}
    if complete:
        conds.append({"type": "Complete", "status": "True", "lastTransitionTime": ended})
        status["completionTime"] = ended
    if failed:
        reason, message = failed
        conds.append({"type": "Failed", "status": "True", "reason": reason, "message": message,
                      "lastTransitionTime": ended})
    status["conditions"] = conds
    return {"metadata": {"name": name, "namespace": "ns", "uid": "u", "creationTimestamp": created,
                         "labels": {naming.LABEL_OPERATION: operation, naming.LABEL_SERVICE: service,
                                    naming.LABEL_TENANT: "client-abc"}},
            "status": status}


EXIT3 = ("PodFailurePolicy", "Container backup for pod ns/j-x failed with exit code 3 matching FailJob rule at index 0")


@pytest.mark.parametrize("cond,reason", [
    ({"reason": "PodFailurePolicy", "message": EXIT3[1]}, "IntegrityCheckFailed"),
    ({"reason": "PodFailurePolicy", "message": EXIT3[1].replace("code 3", "code 4")}, "NoBackup"),
    ({"reason": "PodFailurePolicy", "message": EXIT3[1].replace("code 3", "code 2")}, "InvalidSettings"),
    ({"reason": "BackoffLimitExceeded"}, "JobFailed"),
    ({"reason": "DeadlineExceeded"}, "DeadlineExceeded"),
    ({}, "JobFailed")])
def test_failure_reason(cond, reason):
    assert outcome.failure_reason(cond) == reason


def test_overall_state_of_a_requests_jobs():
    running, done = outcome.job_view(job("a")), outcome.job_view(job("b", complete=True))
    bad = outcome.job_view(job("c", failed=EXIT3))
    assert outcome.overall([running, done])[0] == "Running"
    assert outcome.overall([done, done])[0] == "Complete"
    state, reason, message = outcome.overall([done, bad, running])
    assert (state, reason) == ("Failed", "IntegrityCheckFailed") and message.startswith("Job c (auth) failed")


def test_refused_status_names_the_field_and_ends_the_request():
    exc = model.Refused("spec.backup", "BackupNotFound", "no backup x")
    st = outcome.refused_status({}, exc, "client-abc", 1, "2026-01-01T00:00:00Z")
    assert st["phase"] == "Failed" and st["completedAt"] == "2026-01-01T00:00:00Z"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Accepted"]["status"] == "False" and conds["Failed"]["status"] == "True"
    assert conds["Failed"]["message"] == "spec.backup: no backup x" and conds["Failed"]["reason"] == "BackupNotFound"


def test_ended_status_keeps_accepted_and_adds_the_end():
    accepted = outcome.accepted_status({}, "client-abc", 1, "2026-01-01T00:00:00Z", "restoring x", backup=KEY)
    ended = outcome.ended_status(accepted, "Complete", "Completed", "restored", "2026-01-01T00:05:00Z", 1,
                                 "2026-01-01T00:06:00Z", verified=True)
    assert [c["type"] for c in ended["conditions"]] == ["Accepted", "Complete"]
    assert ended["completedAt"] == "2026-01-01T00:05:00Z" and ended["verified"] is True


# --- drills: what their Jobs say ------------------------------------------------------------

def views(*objs) -> list[dict]:
    return [outcome.job_view(o) for o in objs]


def test_no_drill_yet_is_unknown():
    cond, status = drills.verification(tenant(), [])
    assert (cond.status, cond.reason, status) == (None, "NotRunYet", None)


def test_all_latest_drills_passed_is_verified():
    cond, status = drills.verification(tenant(), views(
        job("a1", service="auth", complete=True, ended="2026-01-04T04:31:00Z"),
        job("o1", service="orders", complete=True, ended="2026-01-04T04:32:00Z"),
        job("a0", service="auth", failed=EXIT3, ended="2025-12-28T04:31:00Z"),   # older: superseded
        job("a2", service="auth")))                                              # running: not an outcome yet
    assert (cond.status, cond.reason) == (True, "Verified")
    assert status["lastVerified"]["time"] == "2026-01-04T04:32:00Z"
    assert status["lastVerified"]["databases"]["auth"] == {"outcome": "Passed", "job": "a1", "reason": "Restored",
                                                           "completedAt": "2026-01-04T04:31:00Z"}


def test_a_latest_drill_that_failed_names_the_database_and_the_reason():
    cond, status = drills.verification(tenant(), views(
        job("a0", service="auth", complete=True, ended="2025-12-28T04:31:00Z"),
        job("a1", service="auth", failed=EXIT3, ended="2026-01-04T04:31:00Z"),
        job("o1", service="orders", complete=True, ended="2026-01-04T04:32:00Z")))
    assert (cond.status, cond.reason) == (False, "IntegrityCheckFailed")
    assert cond.message.startswith("auth: drill Job a1 failed at 2026-01-04T04:31:00Z: IntegrityCheckFailed")
    assert status["lastVerified"]["databases"]["auth"]["outcome"] == "Failed"
    assert status["lastVerified"]["databases"]["orders"]["outcome"] == "Passed"


def test_drills_off_is_reported_not_verified():
    for changes, field in (({"backup": {"drills": {"enabled": False}}}, "spec.backup.drills.enabled"),
                           ({"backup": {"enabled": False}}, "spec.backup.enabled")):
        cond, status = drills.verification(tenant(**changes), [])
        assert (cond.status, cond.reason, status) == (None, "Disabled", None) and field in cond.message


def test_a_failed_drill_does_not_make_the_tenant_unready():
    ok = [Condition("DatabasesReady", True, "Provisioned"), Condition("BackupsVerified", False, "IntegrityCheckFailed")]
    st = desired_status({}, generation=1, namespace="ns", conditions=ok, suspended=False)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and st["phase"] == "Ready"
    assert [c["type"] for c in st["conditions"]] == ["Ready", "DatabasesReady", "BackupsVerified"]


# --- spec and config defaults ---------------------------------------------------------------

def test_drills_are_on_weekly_by_default_and_follow_the_config_defaults():
    t = tenant()
    assert (t.backup.drills.enabled, t.backup.drills.schedule) == (True, "30 4 * * 0") and t.backup.drilled
    cfg = config.from_dict({"defaults": {"backup": {"drills": {"enabled": False, "schedule": "@monthly"}}}})
    t2 = spec.parse(copy.deepcopy(BASE), cfg)
    assert (t2.backup.drills.enabled, t2.backup.drills.schedule) == (False, "@monthly")
    t3 = spec.parse({**copy.deepcopy(BASE), "spec": {**BASE["spec"], "backup": {"drills": {"enabled": True}}}}, cfg)
    assert t3.backup.drilled and t3.backup.drills.schedule == "@monthly"


def test_drill_settings_are_checked_naming_the_field():
    with pytest.raises(SpecError, match=r"^spec.backup.drills.schedule"):
        tenant(backup={"drills": {"schedule": "every sunday"}})
    with pytest.raises(SpecError, match=r"^spec.backup.drills.enabled"):
        tenant(backup={"drills": {"enabled": "yes"}})
    with pytest.raises(ConfigError, match="defaults.backup.drills.enabled"):
        defaults.from_dict({"backup": {"drills": {"enabled": "no"}}})
    with pytest.raises(ConfigError, match="defaults.backup.drills.schedule"):
        defaults.from_dict({"backup": {"drills": {"schedule": "weekly"}}})


def test_drill_command_line():
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    backup_cli.add_command(sub)
    args = parser.parse_args(["drill", "--secret-env", "--service", "auth", "--into-database", "x_auth_drill"])
    assert args.into_database == "x_auth_drill" and args.func is not None
    with pytest.raises(SystemExit):
        parser.parse_args(["drill", "--secret-env"])   # the scratch database is required
    assert backup.parse_key("auth", KEY) is not None


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
                                         / "backup").glob("*.yaml")), ids=lambda p: p.name)
def test_backup_examples_are_accepted_for_the_premium_example(path):
    import yaml
    root = path.parents[1]
    t = spec.parse(yaml.safe_load((root / "tenant-premium.yaml").read_text()), config.from_dict({}))
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert doc["metadata"]["namespace"] == t.namespace
    parse = {"TenantBackup": model.parse_backup, "TenantRestore": model.parse_restore}[doc["kind"]]
    assert parse(doc, t)


@pytest.mark.parametrize("name", ["tenantbackup.yaml", "tenantrestore.yaml"])
def test_every_field_of_the_request_crds_is_described(name):
    """`kubectl explain` has something to say about every field."""
    import pathlib

    import yaml
    crd = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "crds" / name).read_text())
    (version,) = crd["spec"]["versions"]
    missing = []

    def walk(schema: dict, path: str) -> None:
        if not schema.get("description"):
            missing.append(path)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in ("metadata", "apiVersion", "kind"):
                walk(sub, f"{path}.{key}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")
    walk(version["schema"]["openAPIV3Schema"], crd["spec"]["names"]["kind"])
    assert missing == []
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Tenant", "Phase", "Age"} <= columns
