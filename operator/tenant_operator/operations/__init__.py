"""TenantBackup and TenantRestore: on-demand backups and restores of a
Tenant's databases, asked for with a resource in the tenant's namespace and
run as Jobs there with the tenant's own credentials (the backup image and
CLI, `tenant-operator backup` / `restore`). Recovery drills (drills.py)
restore the latest backups on a schedule into scratch databases.

Modules: `model` (PURE: a request parsed and checked against its Tenant),
`jobs` (PURE: the Jobs and drill CronJobs, derived from the backup CronJob),
`outcome` (PURE: status from the Jobs' status), `controller` (the side
effects: checks against the bucket, the new database, Jobs, status),
`drills` (the reconcile component of the drills)."""

from __future__ import annotations

from tenant_operator import GROUP, VERSION

BACKUP_KIND = "TenantBackup"
RESTORE_KIND = "TenantRestore"
BACKUP_PLURAL = "tenantbackups"
RESTORE_PLURAL = "tenantrestores"
API_VERSION = f"{GROUP}/{VERSION}"
TERMINAL = ("Complete", "Failed")
