"""A thin layer over the `kubernetes` package's ApiClient for the handful of
kinds the operator owns: server-side apply, create, delete, get, list, and
status patch (permissions.py lists what each is used for).

A static kind table replaces API discovery: the operator only ever touches
these kinds, and discovery at start-up costs seconds on a busy cluster."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import kubernetes
from kubernetes.client.rest import ApiException

from tenant_operator.metrics import API_WRITES, FENCED_WRITES, LEASE_WRITES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool
    owned: bool = True   # created for a tenant: watched by label, applied and pruned

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str = "", name: str = "") -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{base}{ns}/{self.plural}" + (f"/{name}" if name else "")


# The one table of kinds: what the client addresses and what the operator watches.
KINDS = {k.kind: k for k in (
    Kind("v1", "Namespace", "namespaces", False),
    Kind("v1", "Secret", "secrets", True),
    Kind("v1", "ResourceQuota", "resourcequotas", True),
    Kind("v1", "LimitRange", "limitranges", True),
    Kind("v1", "ServiceAccount", "serviceaccounts", True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses", True),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Kind("batch/v1", "CronJob", "cronjobs", True),
    Kind("tenancy.dev/v1alpha1", "Tenant", "tenants", False, owned=False),
    # Jobs of TenantBackups, TenantRestores and drills: created once, never applied or pruned.
    Kind("batch/v1", "Job", "jobs", True, owned=False),
    Kind("tenancy.dev/v1alpha1", "TenantBackup", "tenantbackups", True, owned=False),
    Kind("tenancy.dev/v1alpha1", "TenantRestore", "tenantrestores", True, owned=False),
    Kind("coordination.k8s.io/v1", "Lease", "leases", True, owned=False),
)}
# (group, version, plural) of every kind the operator creates for a tenant.
OWNED = tuple((k.group, k.version, k.plural) for k in KINDS.values() if k.owned)


class NotOwner(RuntimeError):
    """A write for a tenant this replica no longer holds the shard of (shards.py)."""


class Kube:
    """Thread-safe: one urllib3 pool shared by the reconcile workers."""

    def __init__(self, api_client: kubernetes.client.ApiClient, field_manager: str):
        self.api = api_client
        self.field_manager = field_manager
        self._lock = threading.Lock()
        self._local = threading.local()
        self.writes = 0   # counted for the metrics and the benchmark

    @contextlib.contextmanager
    def guarded(self, still_owner: Callable[[], bool]):
        """Writes from this thread go out only while `still_owner()` holds: the
        fence that keeps a replica which lost a shard from writing for its tenants."""
        self._local.guard = still_owner
        try:
            yield
        finally:
            self._local.guard = None

    def check_owner(self) -> None:
        guard = getattr(self._local, "guard", None)
        if guard is not None and not guard():
            FENCED_WRITES.inc()
            raise NotOwner("this replica no longer holds the tenant's shard")

    @classmethod
    def from_environment(cls, field_manager: str, pool_size: int = 16) -> Kube:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        cfg = kubernetes.client.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = pool_size
        return cls(kubernetes.client.ApiClient(cfg), field_manager)

    def _call(self, method: str, path: str, body=None, query=None, content_type="application/json",
              lease: bool = False):
        if method != "GET" and lease:
            LEASE_WRITES.inc()   # the replicas' coordination, apart from tenant work
        elif method != "GET":
            self.check_owner()
            with self._lock:
                self.writes += 1
            API_WRITES.inc()
        return self.api.call_api(
            path, method, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"], _return_http_data_only=True, _request_timeout=30,
        )

    def apply(self, obj: dict) -> dict:
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace", ""), meta["name"])
        return self._call("PATCH", path, body=obj,
                          query={"fieldManager": self.field_manager, "force": "true"},
                          content_type="application/apply-patch+yaml")

    def create(self, obj: dict, lease: bool = False) -> dict:
        """POST: fails with 409 when the name is taken, so creating can never
        take over an object someone else made (server-side apply would)."""
        kind = KINDS[obj["kind"]]
        return self._call("POST", kind.path(obj["metadata"].get("namespace", "")), body=obj,
                          query={"fieldManager": self.field_manager}, lease=lease)

    def replace(self, obj: dict, lease: bool = False) -> dict:
        """PUT at the object's metadata.resourceVersion: 409 when it moved on."""
        meta = obj["metadata"]
        return self._call("PUT", KINDS[obj["kind"]].path(meta.get("namespace", ""), meta["name"]), body=obj,
                          query={"fieldManager": self.field_manager}, lease=lease)

    def get(self, kind: str, name: str, namespace: str = "") -> dict | None:
        try:
            return self._call("GET", KINDS[kind].path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str = "", label_selector: str = "") -> list[dict]:
        query = {"labelSelector": label_selector} if label_selector else None
        return self._call("GET", KINDS[kind].path(namespace), query=query).get("items", [])

    def list_page(self, kind: str, query: dict) -> dict:
        """One page of a cluster-wide list (`limit` / `continue` in `query`), with its metadata."""
        return self._call("GET", KINDS[kind].path(), query=query)

    def watch(self, kind: str, query: dict, read_timeout: float):
        """A cluster-wide watch: the streaming urllib3 response (one JSON event per line)."""
        return self.api.call_api(
            KINDS[kind].path(), "GET", query_params=[*query.items(), ("watch", "true")],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True, _request_timeout=(10, read_timeout))

    def delete(self, kind: str, name: str, namespace: str = "", propagation: str = "Background",
               lease: bool = False) -> bool:
        try:
            self._call("DELETE", KINDS[kind].path(namespace, name),
                       body={"propagationPolicy": propagation}, lease=lease)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, kind: str, name: str, status_patch: dict, namespace: str = "",
                     resource_version: str | None = None) -> dict:
        """Merge-patch the status. With `resource_version` the patch is
        conditional: the API server answers 409 if the object has moved on."""
        body: dict = {"status": status_patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        # Named, so the status's managedFields say who wrote it (not the client library's default).
        return self._call("PATCH", KINDS[kind].path(namespace, name) + "/status", body=body,
                          query={"fieldManager": self.field_manager}, content_type="application/merge-patch+json")
