"""render/backup.py (the CronJobs and their ServiceAccount) and the
BackupsReady condition the backup component derives from live CronJobs."""

from __future__ import annotations

import copy
from datetime import timedelta
from decimal import Decimal

import pytest
import yaml
from kubernetes.utils.quantity import parse_quantity
from tenant_operator import cli, config, naming, spec
from tenant_operator.backup.component import BackupComponent, cronjob_state, max_interval
from tenant_operator.render import backup as render_backup

from .samples import parse_with

CFG = config.from_dict({"backupImage": "registry.example/tenant-operator:1.2.3",
                        "objectStorage": {"endpoint": "http://minio:9000"}})

BASE = {
    "metadata": {"name": "client-abc", "generation": 2},
    "spec": {
        "tier": "premium",
        "databases": ["auth", "orders"],
        "backup": {"schedule": "30 3 * * *", "retention": {"daily": 30, "weekly": 12, "monthly": 6}},
    },
}


def tenant(cfg=CFG, **changes) -> spec.Tenant:
    return parse_with(BASE, cfg, **changes)


def cronjobs(t: spec.Tenant, cfg=CFG) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in render_backup.cronjobs(t, cfg) if o["kind"] == "CronJob"}


def pod_spec(cj: dict) -> dict:
    return cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# --- objects ---------------------------------------------------------------------------------

def test_one_cronjob_per_database_and_a_service_account():
    objs = render_backup.cronjobs(tenant(), CFG)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("ServiceAccount", naming.BACKUP_SERVICE_ACCOUNT), ("CronJob", "backup-auth-db"),
        ("CronJob", "backup-orders-db")]
    for o in objs:
        assert o["metadata"]["namespace"] == "tenant-client-abc"
        assert o["metadata"]["labels"].items() >= {
            "tenancy.dev/tenant": "client-abc", "tenancy.dev/component": "backup",
            "app.kubernetes.io/managed-by": "tenant-operator"}.items()
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert sa["apiVersion"] == "v1" and sa["automountServiceAccountToken"] is False


def test_cronjob_fields():
    cj = cronjobs(tenant())["backup-auth-db"]
    assert cj["apiVersion"] == "batch/v1"
    assert cj["metadata"]["labels"]["tenancy.dev/backup-service"] == "auth"
    s = cj["spec"]
    assert s["schedule"] == "30 3 * * *" and s["timeZone"] == "Etc/UTC"
    assert s["concurrencyPolicy"] == "Forbid" and s["suspend"] is False
    assert s["successfulJobsHistoryLimit"] == 3 and s["failedJobsHistoryLimit"] == 3
    assert s["startingDeadlineSeconds"] == 3600
    job = s["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 4 * 3600
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == naming.BACKUP_SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/tenant-operator:1.2.3"
    assert c["command"] == ["tenant-operator", "backup", "--secret-env"] and "args" not in c
    assert c["envFrom"] == [{"secretRef": {"name": "auth-db-credentials"}},
                            {"secretRef": {"name": "backup-credentials"}}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"BACKUP_SERVICE": "auth", "BACKUP_KEEP_DAILY": "30", "BACKUP_KEEP_WEEKLY": "12",
                   "BACKUP_KEEP_MONTHLY": "6", "HOME": "/tmp", "TMPDIR": "/tmp"}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    labels = job["template"]["metadata"]["labels"]
    assert labels["tenancy.dev/tenant"] == "client-abc" and labels["tenancy.dev/backup-service"] == "auth"
    other = pod_spec(cronjobs(tenant())["backup-orders-db"])["containers"][0]
    assert other["envFrom"][0] == {"secretRef": {"name": "orders-db-credentials"}}


def test_default_schedule_and_retention():
    cj = cronjobs(tenant(backup=None))["backup-auth-db"]
    assert cj["spec"]["schedule"] == "0 2 * * *"
    env = {e["name"]: e["value"] for e in pod_spec(cj)["containers"][0]["env"]}
    assert (env["BACKUP_KEEP_DAILY"], env["BACKUP_KEEP_WEEKLY"], env["BACKUP_KEEP_MONTHLY"]) == ("30", "12", "12")


def test_long_service_names_fit_the_cronjob_name_limit():
    t = tenant(databases=["a" * 24])
    (name,) = cronjobs(t)
    assert len(name) <= naming.CRONJOB_NAME_MAX and name == naming.backup_cronjob("a" * 24)


# --- security -----------------------------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    """The checks of the `restricted` Pod Security Standard (v1.34) that apply to this pod."""
    out = []
    psc = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            out.append(host)
    for vol in pod.get("volumes") or []:
        if set(vol) - {"name"} - RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append("privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append("allowPrivilegeEscalation")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append("capabilities")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append("runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append("runAsUser")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append("seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append("hostPort")
    return out


def test_pod_passes_the_restricted_pod_security_standard():
    pod = pod_spec(cronjobs(tenant())["backup-auth-db"])
    assert restricted_violations(pod) == []
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The checker itself catches a violation.
    bad = copy.deepcopy(pod)
    bad["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    bad["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert restricted_violations(bad) == ["volume h", "allowPrivilegeEscalation"]


# --- resources vs. the LimitRange -----------------------------------------------------------------

def q(text: str) -> Decimal:
    return Decimal(parse_quantity(text))


def fits(resources: dict, limits: dict) -> bool:
    hi, lo = limits.get("max") or {}, limits.get("min") or {}
    for res, request in resources["requests"].items():
        limit = resources["limits"][res]
        if q(request) > q(limit):
            return False
        if res in hi and q(limit) > q(hi[res]):
            return False
        if res in lo and q(request) < q(lo[res]):
            return False
    return True


@pytest.mark.parametrize("tier", ["standard", "premium", "business"])
def test_resources_fit_each_tier(tier):
    t = tenant(tier=tier)
    res = pod_spec(cronjobs(t)["backup-auth-db"])["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
    assert fits(res, t.limits)


def test_resources_are_capped_at_the_limitrange_max_and_raised_to_its_min():
    # (A LimitRange needs min <= defaultRequest <= default <= max, so those follow.)
    t = tenant(tier="standard", limits={"max": {"cpu": "250m", "memory": "96Mi"},
                                        "default": {"cpu": "250m", "memory": "96Mi"},
                                        "defaultRequest": {"cpu": "150m", "memory": "32Mi"},
                                        "min": {"cpu": "150m", "memory": "32Mi"}})
    res = render_backup.resources(t)
    assert res == {"requests": {"cpu": "150m", "memory": "96Mi"}, "limits": {"cpu": "250m", "memory": "96Mi"}}
    assert fits(res, t.limits)
    small = {"max": {"cpu": "50m"}, "default": {"cpu": "50m"}, "defaultRequest": {"cpu": "50m"}}
    assert fits(render_backup.resources(tenant(limits=small)), tenant(limits=small).limits)


def test_ephemeral_storage_only_when_constrained():
    assert "ephemeral-storage" not in render_backup.resources(tenant())["requests"]
    t = tenant(quota={"requests.ephemeral-storage": "10Gi"})
    res = render_backup.resources(t)
    assert res["requests"]["ephemeral-storage"] == "64Mi" and res["limits"]["ephemeral-storage"] == "1Gi"
    t = tenant(limits={"max": {"ephemeral-storage": "512Mi"}})
    assert render_backup.resources(t)["limits"]["ephemeral-storage"] == "512Mi"


# --- suspension and absence -----------------------------------------------------------------------

def test_suspended_tenant_keeps_suspended_cronjobs():
    for cj in cronjobs(tenant(suspended=True)).values():
        assert cj["spec"]["suspend"] is True


def test_nothing_when_disabled_or_without_databases():
    assert render_backup.cronjobs(tenant(backup={"enabled": False}), CFG) == []
    assert render_backup.cronjobs(tenant(databases=None), CFG) == []


def test_render_command_includes_backups(tmp_path, capsys):
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", **BASE}))
    assert cli.main(["render", str(path), "--with-backups"]) == 0
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert ("CronJob", "backup-auth-db") in kinds and ("ServiceAccount", "tenant-backup") in kinds


# --- BackupsReady from live CronJobs -------------------------------------------------------------

def live_cronjob(name: str, created: str, scheduled: str | None = None, succeeded: str | None = None) -> dict:
    status = {}
    if scheduled:
        status["lastScheduleTime"] = scheduled
    if succeeded:
        status["lastSuccessfulTime"] = succeeded
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "tenant-client-abc", "creationTimestamp": created,
                         "labels": {"tenancy.dev/component": "backup"}},
            "status": status}


def live(*cjs: dict) -> dict:
    return {("batch/v1", "CronJob", c["metadata"]["namespace"], c["metadata"]["name"]): c for c in cjs}


def sync(t: spec.Tenant, objects: dict, current: dict | None = None, cfg=CFG):
    return BackupComponent(cfg, kube=None).sync(t, objects, current or {})


def test_max_interval():
    assert max_interval("0 2 * * *") == timedelta(days=1)
    assert max_interval("@daily") == max_interval("@midnight") == timedelta(days=1)
    assert max_interval("*/15 * * * *") == timedelta(hours=1)
    assert max_interval("0 3 * * 0") == timedelta(days=7)
    assert max_interval("0 3 1 * *") == timedelta(days=31)
    assert max_interval("0 3 1 1 *") == timedelta(days=366)
    assert max_interval("* * * * *") == timedelta(minutes=1)


def test_scheduled_before_any_run():
    res = sync(tenant(), {})
    assert res.component == "backup"
    assert (res.condition.type, res.condition.status, res.condition.reason) == ("BackupsReady", True, "Scheduled")
    assert [o["metadata"]["name"] for o in res.objects] == ["tenant-backup", "backup-auth-db", "backup-orders-db"]
    assert "lastSuccessfulTime" not in res.status["backup"]


def test_succeeded_reports_the_oldest_last_success():
    res = sync(tenant(), live(
        live_cronjob("backup-auth-db", "2024-01-01T00:00:00Z", "2024-05-02T03:30:00Z", "2024-05-02T03:31:10Z"),
        live_cronjob("backup-orders-db", "2024-01-01T00:00:00Z", "2024-05-02T03:30:00Z", "2024-05-02T03:30:40Z")))
    assert (res.condition.status, res.condition.reason) == (True, "Succeeded")
    assert res.status["backup"]["lastSuccessfulTime"] == "2024-05-02T03:30:40Z"
    assert res.status["backup"]["services"]["auth"] == {"state": "Succeeded",
                                                        "lastSuccessfulTime": "2024-05-02T03:31:10Z"}


def test_one_missed_run_is_pending_two_are_failing():
    created = "2024-01-01T00:00:00Z"
    ok = live_cronjob("backup-orders-db", created, "2024-05-03T03:30:00Z", "2024-05-03T03:31:00Z")
    pending = sync(tenant(), live(ok, live_cronjob("backup-auth-db", created, "2024-05-03T03:30:00Z",
                                                   "2024-05-02T03:31:00Z")))
    assert (pending.condition.status, pending.condition.reason) == (True, "LastRunPending")
    failing = sync(tenant(), live(ok, live_cronjob("backup-auth-db", created, "2024-05-04T03:30:00Z",
                                                   "2024-05-02T03:31:00Z")))
    assert (failing.condition.status, failing.condition.reason) == (False, "BackupFailing")
    assert "auth: no successful backup since 2024-05-02T03:31:00Z" in failing.condition.message
    assert failing.status["backup"]["lastSuccessfulTime"] == "2024-05-02T03:31:00Z"


def test_never_succeeded_fails_after_a_period_past_creation():
    state, detail, success = cronjob_state(
        live_cronjob("backup-auth-db", "2024-05-01T10:00:00Z", "2024-05-03T03:30:00Z"), "30 3 * * *")
    assert (state, success) == ("BackupFailing", None) and "no successful backup ever" in detail
    state, _, _ = cronjob_state(
        live_cronjob("backup-auth-db", "2024-05-01T10:00:00Z", "2024-05-02T03:30:00Z"), "30 3 * * *")
    assert state == "LastRunPending"


def test_suspended_disabled_absent_and_unconfigured():
    res = sync(tenant(suspended=True), {})
    assert (res.condition.status, res.condition.reason) == (True, "Suspended")
    assert all(o["spec"]["suspend"] for o in res.objects if o["kind"] == "CronJob")

    res = sync(tenant(backup={"enabled": False}), {}, {"backup": {"lastSuccessfulTime": "2024-01-01T00:00:00Z"}})
    assert (res.condition.status, res.condition.reason, res.objects) == (True, "Disabled", [])
    assert res.status == {"backup": None}        # cleared from status

    assert sync(tenant(databases=None), {}) is None
    leftover = live(live_cronjob("backup-auth-db", "2024-01-01T00:00:00Z"))
    res = sync(tenant(databases=None), leftover)
    assert (res.condition.reason, res.objects) == ("NotRequested", [])    # the reconciler prunes the leftover

    res = sync(tenant(), {}, cfg=config.from_dict({}))
    assert (res.condition.status, res.condition.reason, res.objects) == (False, "NotConfigured", [])


class FakeKube:
    def __init__(self, objects=None):
        self.objects = objects or {}
        self.gets = 0

    def get(self, kind, name, namespace=""):
        self.gets += 1
        return self.objects.get((kind, name, namespace))


def test_service_account_is_not_reapplied_on_every_drift_check():
    """ServiceAccounts are not watched, so the SA never shows up in `live`: it is
    handed to the reconciler only while the API server does not have it as wanted."""
    t = tenant()
    kube = FakeKube()
    comp = BackupComponent(CFG, kube)
    kinds = lambda res: [o["kind"] for o in res.objects]   # noqa: E731
    assert kinds(comp.sync(t, {}, {})) == ["ServiceAccount", "CronJob", "CronJob"]   # missing: apply it
    (sa,) = [o for o in comp.sync(t, {}, {}).objects if o["kind"] == "ServiceAccount"]
    kube.objects[("ServiceAccount", sa["metadata"]["name"], t.namespace)] = copy.deepcopy(sa)
    gets = kube.gets
    assert kinds(comp.sync(t, {}, {})) == ["CronJob", "CronJob"]                     # as wanted: left out
    assert kinds(comp.sync(t, {}, {})) == ["CronJob", "CronJob"] and kube.gets == gets + 1   # cached
    # A changed ServiceAccount (another hash) is looked up again, and applied.
    comp.forget(t.name)
    kube.objects[("ServiceAccount", sa["metadata"]["name"], t.namespace)]["metadata"]["annotations"] = {}
    assert kinds(comp.sync(t, {}, {}))[0] == "ServiceAccount"
    # Watched (in `live`): always included, so the reconciler compares and prunes it itself.
    watched = {("v1", "ServiceAccount", t.namespace, sa["metadata"]["name"]): sa}
    before = kube.gets
    assert kinds(comp.sync(t, watched, {}))[0] == "ServiceAccount" and kube.gets == before
