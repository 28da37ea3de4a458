"""PURE: the Jobs of TenantBackups and TenantRestores, and the drill
CronJobs. Each is derived from the service's rendered backup CronJob, so it
runs the same image and CLI with the same pod security, resources (fitted to
the tenant's LimitRange) and ServiceAccount; only the command, the
credentials and the labels differ.

Credentials: a backup Job writes with `backup-credentials` (the only key
that may write backups); a restore or drill only reads backups, so it gets
`objectstorage-credentials`, whose access to the backups bucket is
read-only. Both get `<service>-db-credentials`.

Exit codes 2 (bad settings) and 3 (integrity check failed) fail the Job at
once (podFailurePolicy): retrying cannot help, and the Job's condition then
says which it was."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

from tenant_operator import naming
from tenant_operator.config import OperatorConfig
from tenant_operator.operations import API_VERSION, BACKUP_KIND, RESTORE_KIND
from tenant_operator.operations.model import BackupRequest, RestoreRequest
from tenant_operator.render import backup as render_backup
from tenant_operator.spec import Tenant

CONTAINER = "backup"
FAIL_AT_ONCE = (2, 3)


# Renders a Tenant's backup objects (render_backup.cronjobs for one config); the
# backup component's cached one, so a pass renders them once for both (see drills).
Render = Callable[[Tenant], list[dict]]


def _templates(t: Tenant, cfg: OperatorConfig, services, rendered: Render | None = None) -> dict[str, dict]:
    """service -> the backup CronJob of that service as rendered for `t` (backups
    on, not suspended): one render for all of them. The result is shared with
    `rendered`'s cache: callers copy what they change."""
    enabled = dataclasses.replace(t, backup=dataclasses.replace(t.backup, enabled=True), suspended=False,
                                  databases=tuple(services))
    objs = rendered(enabled) if rendered is not None else render_backup.cronjobs(enabled, cfg)
    by_name = {o["metadata"]["name"]: o for o in objs if o["kind"] == "CronJob"}
    return {service: by_name[naming.backup_cronjob(service)] for service in services}


def _labels(t: Tenant, operation: str, service: str, request: str = "") -> dict[str, str]:
    out = {naming.LABEL_TENANT: t.name, naming.LABEL_COMPONENT: "backup",
           naming.LABEL_MANAGED_BY: naming.MANAGED_BY, naming.LABEL_OPERATION: operation,
           naming.LABEL_SERVICE: service}
    if request:
        out[naming.LABEL_REQUEST] = request
    return out


def _job_spec(template: dict, service: str, command: list[str], reads_only: bool,
              labels: dict[str, str], backoff_limit: int) -> dict:
    """The Job spec of the service's backup CronJob `template`, running `command`."""
    spec = copy.deepcopy(template["spec"]["jobTemplate"]["spec"])
    pod = spec["template"]
    pod["metadata"]["labels"] = dict(labels)
    container = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
    container["command"] = command
    if reads_only:
        container["envFrom"] = [{"secretRef": {"name": naming.db_secret(service)}},
                                {"secretRef": {"name": naming.OBJECTSTORE_SECRET}}]
    spec["backoffLimit"] = backoff_limit
    spec["podFailurePolicy"] = {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": CONTAINER, "operator": "In", "values": list(FAIL_AT_ONCE)}}]}
    return spec


def _owner(kind: str, name: str, uid: str) -> list[dict]:
    # The Job goes with its request (garbage collection); it never holds the request up.
    return [{"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True,
             "blockOwnerDeletion": False}]


def _job(name: str, namespace: str, labels: dict, owner: list[dict], spec: dict) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": owner},
            "spec": spec}


def backup_jobs(req: BackupRequest, t: Tenant, cfg: OperatorConfig) -> list[dict]:
    """One Job per service. The request's UID goes into each manifest, which is
    how the operator finds the keys written (several backups may run at once)."""
    out, templates = [], _templates(t, cfg, req.services)
    for service in req.services:
        labels = _labels(t, "backup", service, req.name)
        command = ["tenant-operator", "backup", "--secret-env", "--service", service, "--trigger", "manual",
                   "--no-retention", "--request-id", req.uid]
        spec = _job_spec(templates[service], service, command, reads_only=False, labels=labels, backoff_limit=1)
        out.append(_job(naming.operation_job(req.name, service), t.namespace, labels,
                        _owner(BACKUP_KIND, req.name, req.uid), spec))
    return out


def restore_command(service: str, key: str, into_database: str = "") -> list[str]:
    command = ["tenant-operator", "restore", "--secret-env", "--service", service, "--backup", key]
    return command + (["--into-database", into_database] if into_database else [])


def restore_job(req: RestoreRequest, key: str, t: Tenant, cfg: OperatorConfig) -> dict:
    """`key` is the resolved dump key (a request for the latest is pinned when accepted)."""
    labels = _labels(t, "restore", req.service, req.name)
    # No retry: a failed restore may have loaded part of the dump; a person decides.
    spec = _job_spec(_templates(t, cfg, [req.service])[req.service], req.service,
                     restore_command(req.service, key, req.new_database), reads_only=True, labels=labels,
                     backoff_limit=0)
    return _job(naming.operation_job(req.name), t.namespace, labels, _owner(RESTORE_KIND, req.name, req.uid), spec)


def drill_cronjobs(t: Tenant, cfg: OperatorConfig, schedule: str, rendered: Render | None = None) -> list[dict]:
    """One drill CronJob per database: `tenant-operator drill` restores the
    latest backup into the service's scratch database, then empties it."""
    out, templates = [], _templates(t, cfg, t.databases, rendered)
    for service in t.databases:
        cron = copy.deepcopy(templates[service])
        labels = _labels(t, "drill", service)
        command = ["tenant-operator", "drill", "--secret-env", "--service", service,
                   "--into-database", naming.mysql_drill_database(t.name, service)]
        job_spec = _job_spec(templates[service], service, command, reads_only=True, labels=labels, backoff_limit=0)
        meta_labels = {k: v for k, v in labels.items() if k != naming.LABEL_OPERATION}
        cron["metadata"] = {"name": naming.drill_cronjob(service), "namespace": t.namespace,
                            "labels": {**meta_labels, naming.LABEL_COMPONENT: "drill"}}
        cron["spec"]["schedule"] = schedule
        cron["spec"]["suspend"] = t.suspended
        cron["spec"]["successfulJobsHistoryLimit"] = 1
        cron["spec"]["failedJobsHistoryLimit"] = 1
        cron["spec"]["jobTemplate"] = {"metadata": {"labels": labels}, "spec": job_spec}
        out.append(cron)
    return out
