"""The backup component of the reconcile, and the final backup of a deleted tenant.

`sync` renders the CronJobs (render/backup.py) and reports `BackupsReady` from
the live CronJobs' status, the only backup state the operator watches:

- no `lastScheduleTime` yet: True, `Scheduled` (no run so far);
- `lastSuccessfulTime >= lastScheduleTime`: True, `Succeeded` (the last
  scheduled run succeeded);
- otherwise the last run is still running, retrying or has failed. While
  `lastScheduleTime` is at most one schedule period past the last success
  (or past the CronJob's creation when it never succeeded) this is True,
  `LastRunPending`: one missed run is tolerated. Beyond that, False,
  `BackupFailing`, naming the services and the time of their last success.

The schedule period is an upper bound read off the cron fields (see
`max_interval`): `0 2 * * *` is a day, `*/15 * * * *` counts as an hour.
`status.backup.lastSuccessfulTime` is the oldest of the services' last
successes (all databases were backed up since), with per-service detail.

`final_backup` runs the same dump code in the operator process for every
database of a tenant being deleted, with the tenant's Secrets read through the
API. A tenant suspended before its deletion has its MySQL user locked and its
storage user disabled; the operator's admin credentials for the same server
and object store are used then.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

from kubernetes.client.rest import ApiException

from tenant_operator import metrics, naming
from tenant_operator.backends.base import Component
from tenant_operator.backup import BackupError, SettingsError
from tenant_operator.components import ComponentResult, live_secret_data
from tenant_operator.config import OperatorConfig
from tenant_operator.kube.client import Kube
from tenant_operator.kube.diff import needs_apply, with_hash
from tenant_operator.naming import ANNOTATION_HASH
from tenant_operator.render import backup as render_backup
from tenant_operator.render import object_key as render_object_key
from tenant_operator.rendercache import RenderCache
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition, now_iso

log = logging.getLogger(__name__)

DB_ANNOTATION_SERVER = "tenancy.dev/mysql-server"   # set on the db Secret by the MySQL component

_MACROS = {
    "@hourly": timedelta(hours=1), "@daily": timedelta(days=1), "@midnight": timedelta(days=1),
    "@weekly": timedelta(days=7), "@monthly": timedelta(days=31), "@yearly": timedelta(days=366),
    "@annually": timedelta(days=366),
}


def max_interval(schedule: str) -> timedelta:
    """An upper bound of the time between two runs of a cron schedule: the
    period of the coarsest restricted field (a field other than `*`)."""
    schedule = schedule.strip()
    if schedule in _MACROS:
        return _MACROS[schedule]
    fields = schedule.split()
    if len(fields) != 5:
        return timedelta(days=1)
    minute, hour, dom, month, dow = fields
    if month != "*":
        return timedelta(days=366)
    if dom != "*":
        return timedelta(days=31)
    if dow != "*":
        return timedelta(days=7)
    if hour != "*":
        return timedelta(days=1)
    if minute != "*":
        return timedelta(hours=1)
    return timedelta(minutes=1)


def _time(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def cronjob_state(cronjob: dict | None, schedule: str) -> tuple[str, str, datetime | None]:
    """(state, detail, last success) of one live CronJob; state is one of
    Scheduled, Succeeded, LastRunPending, BackupFailing."""
    if cronjob is None:
        return "Scheduled", "no run yet", None
    st = cronjob.get("status") or {}
    scheduled, succeeded = _time(st.get("lastScheduleTime")), _time(st.get("lastSuccessfulTime"))
    if scheduled is None:
        return "Scheduled", "no run yet", succeeded
    if succeeded is not None and succeeded >= scheduled:
        return "Succeeded", f"last backup succeeded at {_iso(succeeded)}", succeeded
    baseline = succeeded or _time((cronjob.get("metadata") or {}).get("creationTimestamp"))
    since = f"since {_iso(succeeded)}" if succeeded else "ever"
    if baseline is not None and scheduled - baseline > max_interval(schedule):
        return "BackupFailing", f"no successful backup {since}; last run scheduled at {_iso(scheduled)}", succeeded
    return "LastRunPending", f"run scheduled at {_iso(scheduled)} has not succeeded yet", succeeded


def secrets_env(kube: Kube, namespace: str, service: str) -> dict[str, str]:
    """The keys of `<service>-db-credentials` and `backup-credentials`, as the
    CronJob's environment has them (plus BACKUP_SERVICE)."""
    env: dict[str, str] = {}
    for name in (naming.db_secret(service), naming.BACKUP_SECRET):
        try:
            obj = kube.get("Secret", name, namespace)
        except ApiException as exc:
            raise BackupError(f"cannot read Secret {namespace}/{name}: {exc.status} {exc.reason}") from None
        if obj is None:
            raise BackupError(f"Secret {namespace}/{name} does not exist")
        env.update(live_secret_data(obj))
    env["BACKUP_SERVICE"] = service
    return env


class BackupComponent(Component):
    """Holds no data of its own: its part of the deletion is the final dump."""

    component = "backup"
    condition_type = "BackupsReady"

    def __init__(self, cfg: OperatorConfig, kube: Kube):
        self.cfg = cfg
        self.kube = kube
        self._rendered = RenderCache()
        self._sa_checked: dict[str, tuple[str, float]] = {}   # tenant -> (applied hash, when confirmed)

    def rendered(self, t: Tenant) -> list[dict]:
        """The CronJobs and ServiceAccount; rendering is pure, so a drift check of
        an unchanged tenant reuses the last result (hashed once, as applied). The
        drills take their CronJobs from the same result: callers must not change it."""
        return list(self._rendered.get(t.name, repr(t),
                                       lambda: [with_hash(o) for o in render_backup.cronjobs(t, self.cfg)]))

    # --- reconcile -----------------------------------------------------------------------

    def _service_account_needed(self, t: Tenant, live: dict, sa: dict) -> bool:
        """Whether to hand the ServiceAccount to the reconciler. ServiceAccounts are
        not among the watched kinds, so it is never in `live` and the reconciler
        would apply it on every drift check. When it is not in `live`, one GET
        (repeated at most every backendResyncInterval while unchanged) tells
        whether it already is as wanted; if so it is left out of this pass. When
        it is in `live` (watched), it is always included, so pruning stays right."""
        key = render_object_key(sa)
        if key in live or self.kube is None:
            return True
        want = sa["metadata"]["annotations"][ANNOTATION_HASH]
        seen = self._sa_checked.get(t.name)
        if seen and seen[0] == want and time.monotonic() - seen[1] < self.cfg.backend_resync_interval:
            return False
        try:
            current = self.kube.get("ServiceAccount", sa["metadata"]["name"], t.namespace)
        except ApiException:
            return True
        if current is not None and not needs_apply(sa, current):
            self._sa_checked[t.name] = (want, time.monotonic())
            return False
        self._sa_checked.pop(t.name, None)
        return True

    def _live(self, t: Tenant, live: dict) -> dict:
        return {key: obj for key, obj in live.items()
                if key[2] == t.namespace
                and (obj.get("metadata") or {}).get("labels", {}).get(naming.LABEL_COMPONENT) == self.component}

    def _result(self, cond: Condition, objects: list[dict] | None = None, status: dict | None = None):
        return ComponentResult(self.component, cond, objects=objects or [],
                               status={"backup": status} if status else {"backup": None})

    def sync(self, t: Tenant, live: dict, current_status: dict, *, terminating: bool = False,
             record_intent=None) -> ComponentResult | None:
        result = self._sync(t, live, current_status)
        if not (t.databases and t.backup.enabled and self.cfg.object_storage_servers) or t.suspended:
            # No scheduled backups are expected (a terminating tenant counts as suspended):
            # nothing for the backup-age alert to compare.
            metrics.remove_series(metrics.BACKUP_INTERVAL, t.name)
        return result

    def _sync(self, t: Tenant, live: dict, current_status: dict) -> ComponentResult | None:
        ctype = self.condition_type
        if not t.databases:
            if not self._live(t, live) and not current_status.get("backup"):
                return None
            return self._result(Condition(ctype, True, "NotRequested", "no databases in spec"))
        if not t.backup.enabled:
            return self._result(Condition(ctype, True, "Disabled", "spec.backup.enabled is false"))
        if not self.cfg.object_storage_servers:
            return self._result(Condition(ctype, False, "NotConfigured",
                                          "backups need object storage, which the operator config lacks"))

        objects = [o for o in self.rendered(t)
                   if o["kind"] != "ServiceAccount" or self._service_account_needed(t, live, o)]
        states = {}
        for service in t.databases:
            key = ("batch/v1", "CronJob", t.namespace, naming.backup_cronjob(service))
            states[service] = cronjob_state(live.get(key), t.backup.schedule)

        services = {}
        for service, (state, _detail, success) in states.items():
            entry = {"state": state}
            if success:
                entry["lastSuccessfulTime"] = _iso(success)
            services[service] = entry
        successes = [s for _, _, s in states.values() if s]
        status: dict = {"services": services}
        if not t.suspended:
            metrics.BACKUP_INTERVAL.labels(t.name).set(max_interval(t.backup.schedule).total_seconds())
        if successes and len(successes) == len(states):
            oldest = min(successes)
            status["lastSuccessfulTime"] = _iso(oldest)
            metrics.BACKUP_AGE.labels(t.name).set(max(0.0, (datetime.now(UTC) - oldest).total_seconds()))
            metrics.BACKUP_TIMESTAMP.labels(t.name).set(oldest.timestamp())

        failing = {s: d for s, (state, d, _) in states.items() if state == "BackupFailing"}
        if failing:
            cond = Condition(ctype, False, "BackupFailing", "; ".join(f"{s}: {d}" for s, d in failing.items()))
        elif t.suspended:
            cond = Condition(ctype, True, "Suspended", f"{len(t.databases)} backup CronJob(s) suspended")
        elif all(state == "Succeeded" for state, _, _ in states.values()):
            cond = Condition(ctype, True, "Succeeded",
                             f"last scheduled backup of {len(states)} database(s) succeeded; oldest of the "
                             f"latest at {status['lastSuccessfulTime']}")
        else:
            waiting = [f"{s}: {d}" for s, (state, d, _) in states.items() if state != "Succeeded"]
            reason = "LastRunPending" if any(states[s][0] == "LastRunPending" for s in states) else "Scheduled"
            cond = Condition(ctype, True, reason,
                             f"schedule {t.backup.schedule!r} (UTC); " + "; ".join(waiting))
        return self._result(cond, objects, status)

    def forget(self, tenant: str) -> None:
        self._rendered.forget(tenant)
        self._sa_checked.pop(tenant, None)
        for metric in (metrics.BACKUP_AGE, metrics.BACKUP_TIMESTAMP, metrics.BACKUP_INTERVAL):
            metrics.remove_series(metric, tenant)

    # --- deletion ---------------------------------------------------------------------------

    def _services(self, t: Tenant) -> list[str]:
        """The tenant's databases: the spec's, plus any whose credentials Secret is
        still there (a spec that no longer parses lists none)."""
        # Databases recorded for this Tenant's UID, plus any whose Secret is there;
        # never the spec's list (a never-provisioned Tenant has nothing to back up).
        found = set(self.owned_services(t)) if self.owned_services else set()
        try:
            selector = f"{naming.LABEL_TENANT}={t.name},{naming.LABEL_COMPONENT}=mysql"
            for obj in self.kube.list("Secret", t.namespace, label_selector=selector):
                name = obj["metadata"]["name"]
                m = re.fullmatch(r"(.+)-db-credentials", name)
                if m and naming.SERVICE_NAME.fullmatch(m.group(1)):
                    found.add(m.group(1))
        except ApiException as exc:
            if exc.status != 404:
                raise BackupError(f"cannot list Secrets of {t.namespace}: {exc.status} {exc.reason}") from None
        return sorted(found)

    def _db(self, t: Tenant, service: str, env: dict[str, str]):
        """Connection settings reachable from the operator, and a working login:
        the tenant's, else (locked account) the admin's of the same server."""
        from tenant_operator.backup.dump import DbSettings, server_version
        db = DbSettings.from_env(env)
        server = None
        secret = self.kube.get("Secret", naming.db_secret(service), t.namespace) or {}
        name = ((secret.get("metadata") or {}).get("annotations") or {}).get(DB_ANNOTATION_SERVER) or t.mysql_server
        if name and name in self.cfg.mysql_servers:
            server = self.cfg.mysql_servers[name]
            db = DbSettings(server.host, server.port, db.database, db.user, db.password)
        try:
            return db, server_version(db)
        except BackupError as exc:
            if server is None or not server.admin_user:
                raise
            admin = DbSettings(server.host, server.port, db.database, server.admin_user, server.admin_password)
            log.warning("final backup %s/%s: tenant login failed (%s); trying the admin account",
                        t.name, service, exc)
            try:
                return admin, server_version(admin)
            except BackupError:
                raise exc from None

    def _store(self, t: Tenant, env: dict[str, str]):
        """The backups bucket with the backup Jobs' keys, else (disabled user) the admin's.
        The backups bucket is on the object store the tenant is placed on."""
        from tenant_operator import backup
        from tenant_operator.backup.store import BackupStore, S3Settings
        s3 = S3Settings.from_env(env)
        cfg = self.cfg.object_storage_servers.get(t.object_storage_server or self.cfg.object_storage_default)
        if cfg is not None and cfg.endpoint:
            s3 = S3Settings(cfg.endpoint, cfg.region or s3.region, s3.bucket, s3.access_key, s3.secret_key)
        store = BackupStore(s3)
        try:
            store.list(backup.KEY_ROOT + "/")
            return store
        except BackupError as exc:
            if cfg is None or not cfg.access_key:
                raise
            log.warning("final backup %s: tenant storage keys refused (%s); trying the admin keys", t.name, exc)
            admin = BackupStore(S3Settings(cfg.endpoint, cfg.region or s3.region, s3.bucket, cfg.access_key,
                                           cfg.secret_key))
            try:
                admin.list(backup.KEY_ROOT + "/")
            except BackupError:
                raise exc from None
            return admin

    def store_for(self, t: Tenant):
        """The tenant's backups bucket as the operator reaches it (the backup key,
        else the admin key): TenantBackup/TenantRestore check keys with it."""
        obj = self.kube.get("Secret", naming.BACKUP_SECRET, t.namespace)
        if obj is None:
            raise BackupError(f"Secret {t.namespace}/{naming.BACKUP_SECRET} does not exist (yet)")
        return self._store(t, live_secret_data(obj))

    owned_services = None   # (tenant) -> services the MySQL bookkeeping records; wired by build_backends

    def dump_service(self, t: Tenant, service: str) -> str:
        """A final dump of one service's database now; its s3:// address.
        Raises on any failure (nothing is deleted on the strength of it)."""
        from tenant_operator.backup.dump import run_backup
        env = secrets_env(self.kube, t.namespace, service)
        db, version = self._db(t, service, env)
        store = self._store(t, env)
        manifest = run_backup(db, store, service, trigger="final", version=version,
                              timeout=render_backup.ACTIVE_DEADLINE_SECONDS)
        return f"s3://{store.bucket}/{manifest['key']}"

    def final_backup(self, t: Tenant) -> dict:
        """Back up every database of `t` now; never raises. Retention is not
        applied: a final backup deletes nothing."""
        at = now_iso()
        objects: list[str] = []
        errors: list[str] = []
        try:
            services = self._services(t)
        except BackupError as exc:
            return {"at": at, "objects": [], "error": str(exc)}
        if not services:
            return {"at": at, "objects": [], "skipped": "no databases to back up"}
        for service in services:
            try:
                objects.append(self.dump_service(t, service))
            except (BackupError, SettingsError) as exc:
                errors.append(f"{service}: {exc}")
            except Exception as exc:  # noqa: BLE001 - recorded in status.deletion.finalBackup
                log.exception("final backup of %s/%s failed", t.name, service)
                errors.append(f"{service}: {type(exc).__name__}: {exc}")
        out: dict = {"at": at, "objects": objects}
        if errors:
            out["error"] = "final backup failed for " + "; ".join(errors)
        return out
