"""Proof of ownership: what marks a resource as created by the operator for
one Tenant, and the one error raised when a name is held by someone else.

The operator modifies or deletes only what carries its marker for the
Tenant's UID. Each system stores the marker where a tenant cannot forge it:

- Kubernetes: the `tenancy.dev/tenant-uid` annotation on the Namespace (a
  cluster-scoped object tenant users cannot edit);
- MySQL: rows in the operator's own bookkeeping schema (`ownership_schema`);
- object storage: bucket tags (only the operator's admin key may set them);
  a storage user's policy carries a statement whose Sid holds the UID (MinIO
  users have no tags; only the admin writes policies); an IAM user is tagged;
- RabbitMQ: vhost metadata and a user tag (only the admin may set them).

A name that exists without our marker belongs to someone else: the component
reports `NameConflict` and touches nothing. Data the operator kept for a
purged Tenant under `policy: Retain` is marked "retained" for that tenant
name, and a later Tenant of the same name adopts it, as documented. A
platform engineer may also adopt unmarked resources of a Tenant's derived
names explicitly with the `tenancy.dev/adopt-existing` annotation (upgrades
from a version that wrote no markers)."""

from __future__ import annotations

import fnmatch
import json

ANNOTATION_UID = "tenancy.dev/tenant-uid"
ANNOTATION_ADOPT = "tenancy.dev/adopt-existing"
ANNOTATION_SKIP_FINAL_BACKUP = "tenancy.dev/skip-final-backup"

# Bucket tags.
TAG_UID = "tenancy.dev/tenant-uid"
TAG_TENANT = "tenancy.dev/tenant"
TAG_STATE = "tenancy.dev/state"          # active | retained | pending-removal
TAG_PURGE_AFTER = "tenancy.dev/purge-after"

# RabbitMQ: a user tag and the vhost's tags carry `tenant-operator-uid:<uid>`.
RABBIT_TAG_PREFIX = "tenant-operator-uid:"
RABBIT_RETAINED_TAG = "tenant-operator-retained"

# Storage users: the Sid of a statement in the user's policy (MinIO), or the IAM user's tag TAG_UID.
POLICY_SID_PREFIX = "TenantOperatorOwner"

ACTIVE, RETAINED, PENDING = "active", "retained", "pending-removal"
ARCHIVED = "archived"   # a purged Tenant's backups bucket, kept for the platform's retention


class NameConflict(Exception):
    """A resource of a derived name exists and is not provably this Tenant's."""

    def __init__(self, what: str, name: str, holder: str = ""):
        self.what, self.name, self.holder = what, name, holder
        held = f"it belongs to {holder}" if holder else "it was not created by tenant-operator for this Tenant"
        super().__init__(f"{what} {name} already exists and {held}; nothing was changed")


def claim_decision(marker_uid: str, marker_tenant: str, state: str, *, uid: str, tenant: str,
                   exists: bool, adopt: bool) -> str:
    """What to do with a resource of a derived name, from its marker:
    'ours' (marked for this uid), 'adopt-retained' (kept by a purged Tenant of the
    same name under Retain), 'adopt-unmarked' (explicitly asked for), 'create'
    (nothing there), or 'conflict'."""
    if marker_uid:
        if marker_uid == uid:
            return "ours"
        if state == RETAINED and marker_tenant == tenant:
            return "adopt-retained"
        return "conflict"
    if not exists:
        return "create"
    return "adopt-unmarked" if adopt else "conflict"


def uid_hex(uid: str) -> str:
    """The UID as a policy Sid may hold it (letters and digits only)."""
    return uid.replace("-", "").lower()


def policy_owner(document) -> str:
    """The UID (as `uid_hex`) a storage user's policy document (a dict, or its
    JSON as the server returns it) is marked with, or ''."""
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError:
            return ""
    if not isinstance(document, dict):
        return ""
    statements = document.get("Statement") or []
    for st in statements if isinstance(statements, list) else [statements]:
        sid = str((st or {}).get("Sid") or "") if isinstance(st, dict) else ""
        if sid.startswith(POLICY_SID_PREFIX):
            return sid[len(POLICY_SID_PREFIX):].lower()
    return ""


def reserved(name: str, patterns: tuple[str, ...]) -> str:
    """The first pattern (shell-style, e.g. `kube-*`) that `name` matches, or ''."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return pattern
    return ""
