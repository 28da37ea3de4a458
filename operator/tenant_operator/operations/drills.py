"""Recovery drills, as a reconcile component: one drill CronJob per database
(operations/jobs.py), whose Jobs restore the latest backup into the
service's scratch database (created by the MySQL component, recorded for the
Tenant's UID, granted to the service's user) and empty it again.

The operator learns the outcome from the drill Jobs' status, which its watch
cache keeps (runner.drill_jobs: the CronJob's jobTemplate labels are copied
to each Job). The latest finished Job of each database decides:

- `status.backups.lastVerified`: `time` (the latest drill's end) and, per
  database, `outcome` Passed or Failed, `reason`, `job`, `completedAt`;
- condition `BackupsVerified`: True `Verified` when every database's latest
  drill passed; False naming the databases whose drill failed and why
  (IntegrityCheckFailed: a dump that does not match its manifest); Unknown
  while a database has no finished drill yet, or when drills are off;
- metrics `tenant_operator_backup_drill_passed{tenant,service}` and
  `..._timestamp_seconds`.

BackupsVerified is not part of Ready: a failed drill says the backups cannot
be trusted, not that the tenant's service is down."""

from __future__ import annotations

from datetime import datetime

from tenant_operator import metrics
from tenant_operator.backends.base import Component
from tenant_operator.components import ComponentResult
from tenant_operator.kube.diff import with_hash
from tenant_operator.operations import jobs, outcome
from tenant_operator.rendercache import RenderCache
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition

CONDITION = "BackupsVerified"
PASSED, FAILED = "Passed", "Failed"


def latest_per_service(views: list[dict]) -> dict[str, dict]:
    """service -> the view of its most recently finished drill Job."""
    out: dict[str, dict] = {}
    for v in views:
        if v["state"] == outcome.RUNNING or not v["ended"]:
            continue
        best = out.get(v["service"])
        if best is None or (v["ended"], v["created"]) > (best["ended"], best["created"]):
            out[v["service"]] = v
    return out


def verification(t: Tenant, views: list[dict]) -> tuple[Condition, dict | None]:
    """PURE: the BackupsVerified condition and status.backups from the drill Jobs' views."""
    if not t.backup.drilled:
        what = "spec.backup.enabled" if not t.backup.enabled else "spec.backup.drills.enabled"
        return Condition(CONDITION, None, "Disabled", f"no recovery drills: {what} is false"), None
    latest = latest_per_service([v for v in views if v["service"] in t.databases])
    databases = {}
    for service, v in sorted(latest.items()):
        entry = {"outcome": PASSED if v["state"] == outcome.COMPLETE else FAILED, "job": v["name"],
                 "completedAt": v["ended"], "reason": "Restored" if v["state"] == outcome.COMPLETE else v["reason"]}
        if v["state"] != outcome.COMPLETE and v["message"]:
            entry["message"] = v["message"]
        databases[service] = entry
    status = {"lastVerified": {"time": max(e["completedAt"] for e in databases.values()),
                               "databases": databases}} if databases else None
    failed = {s: e for s, e in databases.items() if e["outcome"] == FAILED}
    pending = [s for s in t.databases if s not in databases]
    if failed:
        first = next(iter(failed.values()))
        message = "; ".join(f"{s}: drill Job {e['job']} failed at {e['completedAt']}: {e['reason']}"
                            + (f" ({e['message']})" if e.get("message") else "") for s, e in failed.items())
        return Condition(CONDITION, False, first["reason"], message), status
    if pending:
        return Condition(CONDITION, None, "NotRunYet",
                         f"no finished drill yet for {', '.join(pending)} (schedule {t.backup.drills.schedule!r}, "
                         "UTC)"), status
    oldest = min(e["completedAt"] for e in databases.values())
    return Condition(CONDITION, True, "Verified",
                     f"the latest backup of each of {len(databases)} database(s) was restored into a scratch "
                     f"database and matched its manifest; oldest drill at {oldest}"), status


def _unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class DrillComponent(Component):
    """Holds no data (the scratch databases are the MySQL component's): nothing to purge."""

    component = "drill"
    condition_type = CONDITION

    def __init__(self, cfg, kube, backup_rendered: jobs.Render | None = None):
        self.cfg, self.kube = cfg, kube
        # The backup component's cached render: at a start, where every pass renders,
        # the drills' CronJobs come from it instead of a second render of the same objects.
        self._backup_rendered = backup_rendered
        self._rendered = RenderCache()
        # tenant -> the views of its drill Jobs, copied by the reconcile loop from the watch cache.
        self.observed: dict[str, tuple] = {}

    def sync(self, t: Tenant, live: dict, current_status: dict, *, terminating: bool = False,
             record_intent=None) -> ComponentResult | None:
        if not t.databases or not self.cfg.object_storage_servers or not self.cfg.mysql_servers:
            if not (current_status.get("backups") or any(
                    c.get("type") == CONDITION for c in current_status.get("conditions") or [])):
                return None
            self._forget_series(t.name)
            return ComponentResult(self.component, Condition(CONDITION, None, "NotRequested", "no backups to drill"),
                                   status={"backups": None})
        objects = list(self._rendered.get(t.name, repr(t), lambda: [
            with_hash(o) for o in jobs.drill_cronjobs(t, self.cfg, t.backup.drills.schedule,
                                                     self._backup_rendered)])) \
            if t.backup.drilled else []
        cond, status = verification(t, list(self.observed.get(t.name, ())))
        self._forget_series(t.name)
        for service, entry in ((status or {}).get("lastVerified") or {}).get("databases", {}).items():
            metrics.DRILL_PASSED.labels(t.name, service).set(1 if entry["outcome"] == PASSED else 0)
            metrics.DRILL_TIMESTAMP.labels(t.name, service).set(_unix(entry["completedAt"]))
        return ComponentResult(self.component, cond, objects=objects, status={"backups": status})

    @staticmethod
    def _forget_series(tenant: str) -> None:
        for metric in (metrics.DRILL_PASSED, metrics.DRILL_TIMESTAMP):
            metrics.remove_series(metric, tenant)

    def forget(self, tenant: str) -> None:
        self._rendered.forget(tenant)
        self.observed.pop(tenant, None)
        self._forget_series(tenant)
