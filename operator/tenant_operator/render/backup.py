"""PURE rendering of the backup CronJobs (one per database) and their
ServiceAccount. No CronJob when backups are disabled or there is no database;
a suspended tenant keeps its CronJobs with `suspend: true`.

Resources are chosen to pass the tenant's LimitRange: the wanted requests and
limits below, capped at its `max` and raised to its `min`, with requests never
above limits. ephemeral-storage is set only when the LimitRange or the quota
constrains it (a quota on it rejects pods that do not declare it)."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

from tenant_operator import naming
from tenant_operator.config import OperatorConfig
from tenant_operator.render import _render
from tenant_operator.spec import Tenant

COMMAND = ("tenant-operator", "backup", "--secret-env")
WANTED = {
    "cpu": ("100m", "500m"),
    "memory": ("128Mi", "512Mi"),
    "ephemeral-storage": ("64Mi", "1Gi"),
}
TMP_SIZE = "64Mi"                    # /tmp holds only the client option file
STARTING_DEADLINE_SECONDS = 3600     # a run missed by up to an hour (controller down) still happens
ACTIVE_DEADLINE_SECONDS = 4 * 3600   # a hung dump is killed


def _q(text: str) -> Decimal:
    return Decimal(parse_quantity(text))


def _smaller(a: str, b: str | None) -> str:
    return b if b is not None and _q(b) < _q(a) else a


def _larger(a: str, b: str | None) -> str:
    return b if b is not None and _q(b) > _q(a) else a


def resources(t: Tenant) -> dict[str, dict[str, str]]:
    """Requests and limits of the backup container that fit `t.limits`."""
    limits_max = t.limits.get("max") or {}
    limits_min = t.limits.get("min") or {}
    constrained = {r for section in t.limits.values() for r in section} | {
        key.split(".", 1)[1] for key in t.quota if key.startswith(("requests.", "limits."))}
    out: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for res, (want_request, want_limit) in WANTED.items():
        if res == "ephemeral-storage" and res not in constrained:
            continue
        limit = _larger(_smaller(want_limit, limits_max.get(res)), limits_min.get(res))
        request = _smaller(_larger(_smaller(want_request, limits_max.get(res)), limits_min.get(res)), limit)
        out["requests"][res] = request
        out["limits"][res] = limit
    return out


def cronjobs(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    """The ServiceAccount and one CronJob per database ([] when there is nothing to back up)."""
    if not t.backup.enabled or not t.databases:
        return []
    jobs = [{"service": s, "name": naming.backup_cronjob(s), "db_secret": naming.db_secret(s)}
            for s in t.databases]
    return _render("backup.yaml.j2", t=t, cfg=cfg, jobs=jobs, command=list(COMMAND), resources=resources(t),
                   tmp_size=TMP_SIZE, starting_deadline=STARTING_DEADLINE_SECONDS,
                   active_deadline=ACTIVE_DEADLINE_SECONDS)
