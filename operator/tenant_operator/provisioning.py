"""Backend components: MySQL databases, object storage, RabbitMQ.

Each component turns the Tenant model into backend state (through the
`backends/` clients) plus the credentials Secret that describes it. Shared
rules live in `BackendComponent`:

- a credential is generated once (`secrets`), then read back from its Secret;
  a deleted Secret yields a new credential that is set on the backend BEFORE
  the Secret is written, so the Secret never disagrees with the backend;
- the rotate annotation (`tenancy.dev/rotate-credentials`) rotates when its
  value differs from `status.credentials.rotationToken`;
- backend calls are skipped while nothing relevant changed (same generation,
  rotation token, Secret versions) and the last full check is younger than
  `backendResyncInterval`: drift checks of a quiet tenant stay cheap;
- an unreachable backend gives a False condition with the error and a retry
  with backoff; the Secrets already there are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from urllib.parse import quote

from kubernetes.client.rest import ApiException

from tenant_operator import naming, render
from tenant_operator.components import ComponentResult, live_secret_data
from tenant_operator.config import OperatorConfig
from tenant_operator.errors import BackendUnavailable, ConfigError
from tenant_operator.kube.client import Kube
from tenant_operator.metrics import BACKEND_ERRORS
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition, now_iso

log = logging.getLogger(__name__)


def new_password() -> str:
    """32 URL-safe ASCII characters (192 bits)."""
    return secrets.token_urlsafe(24)


def rotation_requested(t: Tenant, current_status: dict) -> bool:
    done = (current_status.get("credentials") or {}).get("rotationToken", "")
    return bool(t.rotate_token) and t.rotate_token != done


class BackendComponent:
    component = ""        # tenancy.dev/component label of its Secrets
    condition_type = ""
    backend_name = ""     # for errors and metrics

    def __init__(self, cfg: OperatorConfig, kube: Kube):
        self.cfg = cfg
        self.kube = kube
        self._cache: dict[str, tuple[tuple, float, ComponentResult]] = {}
        self._lock = threading.Lock()

    # --- to implement -------------------------------------------------------------------
    def wanted(self, t: Tenant) -> bool:
        raise NotImplementedError

    def converge(self, t: Tenant, live: dict, rotate: bool) -> ComponentResult:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------
    def _secrets(self, t: Tenant, live: dict) -> dict[str, dict]:
        return {key[3]: obj for key, obj in live.items()
                if key[1] == "Secret" and key[2] == t.namespace
                and obj["metadata"].get("labels", {}).get(naming.LABEL_COMPONENT) == self.component}

    def read_secret(self, t: Tenant, live: dict, name: str) -> dict[str, str]:
        """Decoded data of the tenant's Secret `name`. The watch cache can lag just
        behind our own write, so a miss is confirmed with one GET."""
        obj = live.get(("v1", "Secret", t.namespace, name))
        if obj is None:
            try:
                obj = self.kube.get("Secret", name, t.namespace)
            except ApiException as exc:
                raise BackendUnavailable("kubernetes", f"cannot read Secret {name}: {exc.status}") from None
        return live_secret_data(obj)

    def secret(self, t: Tenant, name: str, data: dict[str, str], annotations: dict | None = None) -> dict:
        obj = render.secret(t, name, self.component, data)
        if annotations:
            obj["metadata"]["annotations"] = annotations
        return obj

    def _key(self, t: Tenant, live: dict, rotate: bool) -> tuple:
        versions = tuple(sorted((n, o["metadata"].get("resourceVersion", ""))
                                for n, o in self._secrets(t, live).items()))
        return (t.generation, t.suspended, rotate, t.rotate_token, versions)

    def sync(self, t: Tenant, live: dict, current_status: dict) -> ComponentResult | None:
        if not self.wanted(t) and not self._secrets(t, live):
            self._cache.pop(t.name, None)
            return None
        rotate = rotation_requested(t, current_status)
        key = self._key(t, live, rotate)
        cached = self._cache.get(t.name)
        if cached and cached[0] == key and time.monotonic() - cached[1] < self.cfg.backend_resync_interval \
                and not cached[2].failed and self._secrets_present(cached[2], live):
            # Same outcome as last time, but its events were already posted.
            return dataclasses.replace(cached[2], events=[])
        try:
            result = self.converge(t, live, rotate)
        except BackendUnavailable as exc:
            BACKEND_ERRORS.labels(self.backend_name).inc()
            log.warning("tenant %s: %s", t.name, exc)
            result = ComponentResult(
                component=self.component,
                condition=Condition(self.condition_type, False, "BackendUnavailable", str(exc)),
                objects=list(self._secrets(t, live).values()),   # keep what exists
                failed=True)
        except ConfigError as exc:
            result = ComponentResult(component=self.component,
                                     condition=Condition(self.condition_type, False, "NotConfigured", str(exc)),
                                     objects=list(self._secrets(t, live).values()), failed=False)
        if rotate and not result.failed:
            result.status["credentials"] = {"rotationToken": t.rotate_token, "rotatedAt": now_iso()}
            result.events.append(("Normal", "CredentialsRotated", f"{self.backend_name} credentials rotated"))
        self._cache[t.name] = (key, time.monotonic(), result)
        return result

    @staticmethod
    def _secrets_present(result: ComponentResult, live: dict) -> bool:
        """A Secret the last pass produced that is gone now means the credential
        must be re-established, whatever else is unchanged."""
        return all(render.object_key(o) in live for o in result.objects if o["kind"] == "Secret")

    def forget(self, tenant: str) -> None:
        self._cache.pop(tenant, None)


# --- MySQL ------------------------------------------------------------------------------------

DB_ANNOTATION_DATABASE = "tenancy.dev/mysql-database"
DB_ANNOTATION_USER = "tenancy.dev/mysql-user"
DB_ANNOTATION_SERVER = "tenancy.dev/mysql-server"


class MySQLComponent(BackendComponent):
    component = "mysql"
    condition_type = "DatabasesReady"
    backend_name = "mysql"

    def __init__(self, cfg, kube):
        super().__init__(cfg, kube)
        self._clients: dict = {}

    def client(self, server_name: str):
        from tenant_operator.backends.mysql import MySQLBackend
        server = self.cfg.mysql_server(server_name)
        with self._lock:
            if server.name not in self._clients:
                self._clients[server.name] = MySQLBackend(server, pool_size=max(2, self.cfg.workers))
            return self._clients[server.name]

    def wanted(self, t: Tenant) -> bool:
        return bool(t.databases)

    def converge(self, t: Tenant, live: dict, rotate: bool) -> ComponentResult:
        if t.databases and not self.cfg.mysql_servers:
            raise ConfigError("mysql.servers", "the tenant asks for databases but no MySQL server is configured")
        server = self.cfg.mysql_server(t.mysql_server) if t.databases else None
        objects, changes, events = [], [], []
        for service in t.databases:
            db, user = naming.mysql_database(t.name, service), naming.mysql_user(t.name, service)
            name = naming.db_secret(service)
            data = self.read_secret(t, live, name)
            password = data.get("DB_PASSWORD", "")
            if rotate or not password:
                password = new_password()
            made = self.client(server.name).ensure_account(
                db, user, password, max_user_connections=t.mysql_max_user_connections, locked=t.suspended)
            changes.extend(f"{service}: {c}" for c in made)
            url = f"mysql://{quote(user, safe='')}:{quote(password, safe='')}@{server.tenant_host}:{server.port}/{db}"
            objects.append(self.secret(t, name, {
                "DB_HOST": server.tenant_host, "DB_PORT": str(server.port), "DB_DATABASE": db,
                "DB_USERNAME": user, "DB_PASSWORD": password, "DATABASE_URL": url,
            }, {DB_ANNOTATION_DATABASE: db, DB_ANNOTATION_USER: user, DB_ANNOTATION_SERVER: server.name}))

        # Services removed from the spec: their Secret remembers what to clean up.
        wanted_names = {naming.db_secret(s) for s in t.databases}
        for name, obj in self._secrets(t, live).items():
            if name in wanted_names:
                continue
            ann = obj["metadata"].get("annotations") or {}
            client = self.client(ann.get(DB_ANNOTATION_SERVER) or self.cfg.mysql_default)
            if ann.get(DB_ANNOTATION_USER):
                client.drop_user(ann[DB_ANNOTATION_USER])
            if ann.get(DB_ANNOTATION_DATABASE):
                if t.deletion.policy == "Delete":
                    client.drop_database(ann[DB_ANNOTATION_DATABASE])
                    events.append(("Normal", "DatabaseDropped", f"dropped {ann[DB_ANNOTATION_DATABASE]} "
                                   "(removed from spec.databases, deletion policy Delete)"))
                else:
                    events.append(("Normal", "DatabaseRetained", f"kept {ann[DB_ANNOTATION_DATABASE]} "
                                   "(removed from spec.databases, deletion policy Retain); its user was dropped"))
        if changes:
            events.append(("Normal", "DatabasesUpdated", "; ".join(changes)))
        if not t.databases:
            cond = Condition(self.condition_type, True, "NotRequested", "no databases in spec")
        elif t.suspended:
            cond = Condition(self.condition_type, True, "Locked",
                             f"{len(t.databases)} database user(s) locked while suspended")
        else:
            cond = Condition(self.condition_type, True, "Provisioned",
                             f"{len(t.databases)} database(s) on server {server.name}")
        return ComponentResult(self.component, cond, objects=objects, events=events)

    # --- deletion -------------------------------------------------------------------------
    def _accounts(self, t: Tenant) -> tuple[object, list[str], list[str]] | None:
        if not self.cfg.mysql_servers:
            return None
        client = self.client(t.mysql_server or self.cfg.mysql_default)
        dbs, users = client.list_tenant_accounts(naming.tenant_id(t.name))
        dbs = sorted(set(dbs) | {naming.mysql_database(t.name, s) for s in t.databases})
        users = sorted(set(users) | {naming.mysql_user(t.name, s) for s in t.databases})
        return client, dbs, users

    def purge_step(self, t: Tenant, step: str) -> str:
        found = self._accounts(t)
        if not found:
            return ""
        client, dbs, users = found
        if step == "revoke-credentials":
            dropped = [u for u in users if client.drop_user(u)]
            return f"dropped MySQL users {', '.join(dropped)}" if dropped else ""
        if step == "drop-databases":
            dropped = [d for d in dbs if client.drop_database(d)]
            return f"dropped databases {', '.join(dropped)}" if dropped else ""
        return ""

    def retained(self, t: Tenant) -> list[str]:
        found = self._accounts(t)
        return [f"database {d}" for d in found[1]] if found else []


# --- object storage ---------------------------------------------------------------------------

class ObjectStorageComponent(BackendComponent):
    component = "objectstorage"
    condition_type = "ObjectStorageReady"
    backend_name = "objectstorage"

    def __init__(self, cfg, kube):
        super().__init__(cfg, kube)
        self._store = None
        self._listing = None

    @property
    def store(self):
        from tenant_operator.backends.objectstore import BucketListing, make_objectstore
        with self._lock:
            if self._store is None:
                if self.cfg.object_storage is None:
                    raise ConfigError("objectStorage", "the tenant asks for buckets but no object storage "
                                                       "is configured")
                self._store = make_objectstore(self.cfg.object_storage)
                self._listing = BucketListing(self._store)
            return self._store

    @staticmethod
    def _owned(t: Tenant, names: list[str]) -> list[str]:
        """Buckets of this tenant among `names`. Bucket names carry no '-', so
        `<tenant>-x-y` belongs to tenant `<tenant>-x`, never to `<tenant>`."""
        prefix = f"{t.name}-"
        return [b for b in names if b.startswith(prefix) and "-" not in b[len(prefix):]]

    def wanted(self, t: Tenant) -> bool:
        return t.object_storage is not None or (bool(t.databases) and t.backup.enabled)

    def owned_buckets(self, t: Tenant) -> list[str]:
        """Buckets of this tenant that exist, listed afresh (purge, retained data)."""
        return self._owned(t, self.store.list_buckets(f"{t.name}-"))

    def converge(self, t: Tenant, live: dict, rotate: bool) -> ComponentResult:
        store = self.store
        spec_buckets = t.object_storage.buckets if t.object_storage else ()
        quota_gib = t.object_storage.quota_gib if t.object_storage else 0
        quota = quota_gib * 2**30 if (quota_gib and store.supports_quota) else None
        buckets = {name: naming.bucket(t.name, name) for name in spec_buckets}
        backups = naming.backups_bucket(t.name)
        changes = []
        for name in buckets.values():
            changes.extend(f"{name}: {c}" for c in store.ensure_bucket(name, quota_bytes=quota, versioning=False))
        changes.extend(f"{backups}: {c}" for c in store.ensure_bucket(backups, quota_bytes=None, versioning=True))
        changes.extend(f"{backups}: {c}" for c in store.ensure_backups_lifecycle(
            backups, self.cfg.backups_bucket_retention_days))

        listing = self._listing
        listing.add([*buckets.values(), backups])
        events, kept = [], []
        for bucket in self._owned(t, listing.names(f"{t.name}-")):
            if bucket in buckets.values() or bucket == backups:
                continue
            if store.bucket_is_empty(bucket) or t.deletion.policy == "Delete":
                store.delete_bucket(bucket, purge=t.deletion.policy == "Delete")
                listing.discard(bucket)
                events.append(("Normal", "BucketDeleted", f"deleted {bucket} (removed from spec)"))
            else:
                kept.append(bucket)

        from tenant_operator.backends.objectstore import Credentials
        name = naming.OBJECTSTORE_SECRET
        data = self.read_secret(t, live, name)
        current = None
        if data.get("AWS_ACCESS_KEY_ID") and data.get("AWS_SECRET_ACCESS_KEY"):
            current = Credentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"])
        user = naming.storage_user(t.name)
        all_buckets = [*buckets.values(), backups]
        if rotate and current is not None:
            current = store.rotate(user, current)
        creds, user_changes = store.ensure_user(user, naming.storage_policy(t.name), all_buckets,
                                                enabled=not t.suspended, current=current)
        changes.extend(user_changes)
        cfg = self.cfg.object_storage
        secret_data = {
            "S3_ENDPOINT": cfg.tenant_endpoint, "S3_REGION": cfg.region,
            "S3_BUCKETS": ",".join(buckets.values()), "S3_BACKUPS_BUCKET": backups,
            "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        }
        for short, full in buckets.items():
            secret_data[naming.bucket_env_key(short)] = full
        if changes:
            events.append(("Normal", "ObjectStorageUpdated", "; ".join(changes)))
        if kept:
            cond = Condition(self.condition_type, True, "BucketsRetained",
                             f"removed from spec but not empty, kept (deletion policy Retain): {', '.join(kept)}")
        elif t.suspended:
            cond = Condition(self.condition_type, True, "Disabled", "storage user disabled while suspended")
        else:
            cond = Condition(self.condition_type, True, "Provisioned",
                             f"{len(all_buckets)} bucket(s) on {store.backend}" +
                             (f", quota {quota_gib} GiB each" if quota else ""))
        return ComponentResult(self.component, cond, objects=[self.secret(t, name, secret_data)], events=events)

    def purge_step(self, t: Tenant, step: str) -> str:
        if self.cfg.object_storage is None:
            return ""
        store = self.store
        if step == "revoke-credentials":
            return "deleted storage user" if store.delete_user(naming.storage_user(t.name),
                                                               naming.storage_policy(t.name)) else ""
        if step == "delete-buckets":
            # The backups bucket stays and follows the platform's retention: from
            # now on each backup expires backupsBucketRetentionDays after it was taken.
            backups, owned = naming.backups_bucket(t.name), self.owned_buckets(t)
            gone = [b for b in owned if b != backups and store.delete_bucket(b, purge=True)]
            done = [f"deleted buckets {', '.join(gone)}"] if gone else []
            if backups in owned:
                done += [f"{backups}: {c}" for c in store.ensure_backups_lifecycle(
                    backups, self.cfg.backups_bucket_retention_days, purged=True)]
            return "; ".join(done)
        return ""

    def retained(self, t: Tenant) -> list[str]:
        return [f"bucket {b}" for b in self.owned_buckets(t)] if self.cfg.object_storage else []


# --- RabbitMQ ---------------------------------------------------------------------------------

class RabbitMQComponent(BackendComponent):
    component = "rabbitmq"
    condition_type = "MessagingReady"
    backend_name = "rabbitmq"

    def __init__(self, cfg, kube):
        super().__init__(cfg, kube)
        self._client = None

    @property
    def client(self):
        from tenant_operator.backends.rabbitmq import RabbitMQBackend
        with self._lock:
            if self._client is None:
                if self.cfg.rabbitmq is None:
                    raise ConfigError("rabbitmq", "the tenant asks for messaging but no RabbitMQ is configured")
                # Creating a vhost starts its message stores; on a broker holding
                # hundreds of vhosts that takes longer than a short HTTP timeout.
                self._client = RabbitMQBackend(self.cfg.rabbitmq, timeout=30.0)
            return self._client

    def wanted(self, t: Tenant) -> bool:
        return t.messaging is not None

    def converge(self, t: Tenant, live: dict, rotate: bool) -> ComponentResult:
        from tenant_operator.backends.rabbitmq import amqp_url
        client, cfg = self.client, self.cfg.rabbitmq
        vhost, user = naming.vhost(t.name), naming.rabbitmq_user(t.name)
        changes = list(client.ensure_vhost(vhost, max_connections=t.rabbitmq_max_connections,
                                           max_queues=t.rabbitmq_max_queues))
        name = naming.RABBITMQ_SECRET
        password = self.read_secret(t, live, name).get("RABBITMQ_PASSWORD", "")
        if rotate or not password:
            password = new_password()
        changes.extend(client.ensure_user(user, password, vhost, enabled=not t.suspended))
        queues = {naming.queue(t.name, q): f"{q}.#" for q in (t.messaging.queues if t.messaging else ())}
        topo, kept = client.ensure_topology(vhost, naming.events_exchange(t.name), queues)
        changes.extend(topo)
        secret_data = {
            "RABBITMQ_HOST": cfg.tenant_host, "RABBITMQ_PORT": str(cfg.amqp_port), "RABBITMQ_VHOST": vhost,
            "RABBITMQ_USERNAME": user, "RABBITMQ_PASSWORD": password,
            "AMQP_URL": amqp_url(cfg.tenant_host, cfg.amqp_port, user, password, vhost),
        }
        events = [("Normal", "MessagingUpdated", "; ".join(changes))] if changes else []
        if kept:
            cond = Condition(self.condition_type, True, "QueuesRetained",
                             f"removed from spec but not empty, kept until drained: {', '.join(kept)}")
        elif t.suspended:
            cond = Condition(self.condition_type, True, "Revoked",
                             "permissions revoked and connections closed while suspended")
        else:
            cond = Condition(self.condition_type, True, "Provisioned",
                             f"vhost {vhost} with {len(queues)} queue(s) bound to {naming.events_exchange(t.name)}")
        return ComponentResult(self.component, cond, objects=[self.secret(t, name, secret_data)], events=events)

    def purge_step(self, t: Tenant, step: str) -> str:
        if self.cfg.rabbitmq is None:
            return ""
        if step == "revoke-credentials":
            return "deleted RabbitMQ user" if self.client.delete_user(naming.rabbitmq_user(t.name)) else ""
        if step == "delete-vhost":
            return "deleted vhost" if self.client.delete_vhost(naming.vhost(t.name)) else ""
        return ""

    def retained(self, t: Tenant) -> list[str]:
        return [f"vhost {naming.vhost(t.name)}"] if self.cfg.rabbitmq else []


def build_backends(cfg: OperatorConfig, kube: Kube) -> list[BackendComponent]:
    """All components; each reports NotConfigured when a tenant needs a backend the config lacks."""
    from tenant_operator.backup.component import BackupComponent
    return [MySQLComponent(cfg, kube), ObjectStorageComponent(cfg, kube), RabbitMQComponent(cfg, kube),
            BackupComponent(cfg, kube)]
