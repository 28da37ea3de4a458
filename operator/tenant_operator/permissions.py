"""Every Kubernetes API permission the operator uses, and why.

The ClusterRole (charts/tenant-operator/templates/clusterrole.yaml and
manifests/clusterrole.yaml) grants exactly `CODE` and `KOPF`, plus what the
tenant-admin Role (render/templates/rbac.yaml.j2) grants: RBAC lets the
operator create a Role, or a RoleBinding to it, only if it holds every
permission in it (it has neither `escalate` nor `bind`). `LEASES` is granted
by a Role in the operator's own namespace only (charts/.../role.yaml and
manifests/role.yaml): the replicas' shard Leases (shards.py). tests/unit/test_packaging.py checks `CODE` against
the calls the code makes and the objects it renders, and the ClusterRoles
against all of these.

Keys are (apiGroup, resource); values map each verb to the reason for it.
Server-side apply is a PATCH that creates a missing object, which the API
server authorizes as `create` too: applied kinds need both.
"""

from __future__ import annotations

_APPLIED = "server-side apply (reconciler._apply): patch, and create when the object is missing"
_PRUNED = "pruned when no longer wanted (reconciler._prune)"
_REQUEST_READ = "each step reads the TenantBackup/TenantRestore afresh (operations.controller)"
_REQUEST_STATUS = "progress, as a conditional merge patch of the status (operations.controller)"
_WATCHED = "the watch cache lists and watches every owned kind (runtime.watched_kinds)"


def _owned(*extra: tuple[str, str]) -> dict[str, str]:
    verbs = {"list": _WATCHED, "watch": _WATCHED, "patch": _APPLIED, "create": _APPLIED, "delete": _PRUNED}
    verbs.update(dict(extra))
    return verbs


# What the operator's own code calls (kube/client.py, through the call sites named).
CODE: dict[tuple[str, str], dict[str, str]] = {
    ("tenancy.dev", "tenants"): {
        "get": "a Tenant is read again after a status conflict (reconciler, lifecycle); verify",
        "list": "the watch cache lists Tenants for their placement (runtime.watched_kinds); verify",
        "watch": "the watch cache follows Tenants' status.placement (runtime.watched_kinds)",
    },
    ("tenancy.dev", "tenants/status"): {
        "patch": "status is written as a conditional merge patch (Kube.patch_status)",
    },
    ("", "namespaces"): _owned(
        ("get", "a namespace the watch does not show is read before it is created (reconciler, lifecycle)"),
        ("create", "a tenant namespace is created with POST, which never takes over a foreign one"),
        ("delete", "the purge deletes the tenant namespace (lifecycle)"),
    ),
    ("", "secrets"): _owned(
        ("get", "credentials Secrets are read back (backends.base, backup, verify)"),
        ("list", "the final backup lists the db Secrets (backup.component); verify"),
    ),
    ("", "serviceaccounts"): _owned(
        ("get", "the backup ServiceAccount is checked before it is applied (backup.component)"),
    ),
    ("", "resourcequotas"): _owned(),
    ("", "limitranges"): _owned(),
    ("networking.k8s.io", "networkpolicies"): _owned(("list", "the watch cache; verify lists a tenant's policies")),
    ("networking.k8s.io", "ingresses"): _owned(),
    ("rbac.authorization.k8s.io", "roles"): _owned(),
    ("rbac.authorization.k8s.io", "rolebindings"): _owned(),
    ("batch", "cronjobs"): _owned(),
    ("batch", "jobs"): {
        "create": "the Jobs of TenantBackups and TenantRestores (operations.controller), POST only",
        "get": "a request's Job the watch cache has not shown yet, or one of the same name (operations.controller)",
        "list": "the watch cache follows the request and drill Jobs' outcome (runtime.watched_kinds)",
        "watch": "the watch cache follows the request and drill Jobs' outcome (runtime.watched_kinds)",
    },
    ("tenancy.dev", "tenantbackups"): {"get": _REQUEST_READ},
    ("tenancy.dev", "tenantbackups/status"): {"patch": _REQUEST_STATUS},
    ("tenancy.dev", "tenantrestores"): {"get": _REQUEST_READ},
    ("tenancy.dev", "tenantrestores/status"): {"patch": _REQUEST_STATUS},
}

# What kopf itself does (kopf 1.45: kopf/_cogs/clients, kopf/_core).
KOPF: dict[tuple[str, str], dict[str, str]] = {
    ("tenancy.dev", "tenants"): {
        "list": "kopf lists and watches the served resource",
        "watch": "kopf lists and watches the served resource",
        "patch": "kopf's finalizer and its progress and last-handled annotations (merge and JSON patches)",
    },
    ("tenancy.dev", "tenantbackups"): {
        "list": "kopf lists and watches the requests (handlers: on.event, no finalizer, no patch)",
        "watch": "kopf lists and watches the requests (handlers: on.event, no finalizer, no patch)",
    },
    ("tenancy.dev", "tenantrestores"): {
        "list": "kopf lists and watches the requests (handlers: on.event, no finalizer, no patch)",
        "watch": "kopf lists and watches the requests (handlers: on.event, no finalizer, no patch)",
    },
    ("", "events"): {
        "create": "kopf.event / kopf.warn post core v1 Events (kopf never patches or reads them)",
    },
    ("apiextensions.k8s.io", "customresourcedefinitions"): {
        "list": "kopf watches CRDs to rescan the served resources when one changes",
        "watch": "kopf watches CRDs to rescan the served resources when one changes",
    },
}

# In the operator's namespace only (a Role): how the replicas share the tenants.
LEASES: dict[tuple[str, str], dict[str, str]] = {
    ("coordination.k8s.io", "leases"): {
        "list": "each tick reads every shard and member Lease in one call (shards.ShardManager.tick)",
        "create": "a shard or member Lease that does not exist yet",
        "update": "renew, take or give back a Lease at the resourceVersion read (PUT, so two never both win)",
        "delete": "a stopping replica's member Lease, and long-dead replicas' member Leases",
    },
}


def merged(*tables: dict[tuple[str, str], dict[str, str]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs over several tables."""
    out: dict[tuple[str, str], set[str]] = {}
    for table in tables:
        for key, verbs in table.items():
            out.setdefault(key, set()).update(verbs)
    return out
