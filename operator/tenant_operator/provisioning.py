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
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from kubernetes.client.rest import ApiException

from tenant_operator import naming, ownership, render
from tenant_operator.components import ComponentResult, live_secret_data
from tenant_operator.config import OperatorConfig
from tenant_operator.errors import BackendUnavailable, ConfigError
from tenant_operator.kube.client import Kube
from tenant_operator.metrics import BACKEND_ERRORS
from tenant_operator.ownership import NameConflict
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
        return (t.generation, t.suspended, rotate, t.rotate_token, versions, t.uid)

    def sync(self, t: Tenant, live: dict, current_status: dict, *, terminating: bool = False) -> ComponentResult | None:
        if not self.wanted(t) and not self._secrets(t, live):
            self._cache.pop(t.name, None)
            return None
        rotate = rotation_requested(t, current_status)
        key = (*self._key(t, live, rotate), terminating)
        cached = self._cache.get(t.name)
        if cached and cached[0] == key and time.monotonic() - cached[1] < self.cfg.backend_resync_interval \
                and not cached[2].failed and self._secrets_present(cached[2], live):
            # Same outcome as last time, but its events were already posted.
            return dataclasses.replace(cached[2], events=[])
        try:
            result = self.converge(t, live, rotate, terminating)
        except NameConflict as exc:
            result = ComponentResult(component=self.component,
                                     condition=Condition(self.condition_type, False, "NameConflict", str(exc)),
                                     objects=list(self._secrets(t, live).values()), failed=True)
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
        # (tenant, service) -> object key of a fresh dump; wired to the backup component.
        self.final_dump = None

    def client(self, server_name: str):
        from tenant_operator.backends.mysql import MySQLBackend
        server = self.cfg.mysql_server(server_name)
        with self._lock:
            if server.name not in self._clients:
                self._clients[server.name] = MySQLBackend(server, pool_size=max(2, self.cfg.workers))
            return self._clients[server.name]

    def wanted(self, t: Tenant) -> bool:
        return bool(t.databases)

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False) -> ComponentResult:
        from tenant_operator.backends.mysql import Owner
        if t.databases and not self.cfg.mysql_servers:
            raise ConfigError("mysql.servers", "the tenant asks for databases but no MySQL server is configured")
        server = self.cfg.mysql_server(t.mysql_server) if t.databases else None
        objects, changes, events, conflicts = [], [], [], []
        # One read of the bookkeeping per server serves both the names recorded
        # for the spec's services and the services removed from it.
        owned = {name: self.client(name).owned_by(t.uid) for name in sorted(self.cfg.mysql_servers)} \
            if t.uid else {}
        # Names recorded when they were created win over derived ones: a change
        # in how names are derived never orphans an existing database.
        recorded = {(r.service, r.kind): r.name for r in owned.get(server.name, [])} if server else {}
        for service in t.databases:
            db = recorded.get((service, "database")) or naming.mysql_database(t.name, service)
            user = recorded.get((service, "user")) or naming.mysql_user(t.name, service)
            name = naming.db_secret(service)
            data = self.read_secret(t, live, name)
            password = data.get("DB_PASSWORD", "")
            if rotate or not password:
                password = new_password()
            try:
                made = self.client(server.name).ensure_account(
                    db, user, password, max_user_connections=t.mysql_max_user_connections, locked=t.suspended,
                    owner=Owner(t.name, t.uid, service, t.adopt_existing))
            except NameConflict as exc:
                conflicts.append(str(exc))
                kept = self._secrets(t, live).get(name)
                if kept is not None:
                    objects.append(kept)
                continue
            changes.extend(f"{service}: {c}" for c in made)
            objects.append(self._db_secret(t, server, service, db, user, password))

        pending = self._removed_services(t, live, owned, terminating, objects, events)
        status = {"pendingRemovals": {"databases": pending}} if pending else {}
        if changes:
            events.append(("Normal", "DatabasesUpdated", "; ".join(changes)))
        if conflicts:
            cond = Condition(self.condition_type, False, "NameConflict", "; ".join(conflicts))
        elif not t.databases:
            cond = Condition(self.condition_type, True, "NotRequested", "no databases in spec")
        elif t.suspended:
            cond = Condition(self.condition_type, True, "Locked",
                             f"{len(t.databases)} database user(s) locked while suspended")
        else:
            cond = Condition(self.condition_type, True, "Provisioned",
                             f"{len(t.databases)} database(s) on server {server.name}")
        return ComponentResult(self.component, cond, objects=objects, events=events, status=status,
                               failed=bool(conflicts))

    def _db_secret(self, t: Tenant, server, service: str, db: str, user: str, password: str) -> dict:
        url = f"mysql://{quote(user, safe='')}:{quote(password, safe='')}@{server.tenant_host}:{server.port}/{db}"
        return self.secret(t, naming.db_secret(service), {
            "DB_HOST": server.tenant_host, "DB_PORT": str(server.port), "DB_DATABASE": db,
            "DB_USERNAME": user, "DB_PASSWORD": password, "DATABASE_URL": url,
        }, {DB_ANNOTATION_DATABASE: db, DB_ANNOTATION_USER: user, DB_ANNOTATION_SERVER: server.name})

    def _removed_services(self, t: Tenant, live: dict, owned: dict[str, list], terminating: bool, objects: list,
                          events: list) -> list[dict]:
        """Services gone from spec.databases, found in the server's bookkeeping
        for this Tenant's UID (never in anything a tenant can edit). Each waits
        out its own grace period, locked but intact, with its Secret kept; a
        final dump is taken before it is dropped (policy Delete) or it is kept
        (policy Retain). While the Tenant is terminating nothing changes here."""
        from tenant_operator.lifecycle import iso_time, parse_time
        pending = []
        now = datetime.now(UTC)
        for server_name, server_rows in owned.items():
            client = self.client(server_name)
            rows = [r for r in server_rows if r.service not in t.databases]
            by_service: dict[str, list] = {}
            for row in rows:
                by_service.setdefault(row.service, []).append(row)
            for service, svc_rows in sorted(by_service.items()):
                db = next((r.name for r in svc_rows if r.kind == "database"), "")
                user = next((r.name for r in svc_rows if r.kind == "user"), "")
                secret = self._secrets(t, live).get(naming.db_secret(service))
                if secret is not None:
                    objects.append(secret)   # kept until the database goes: re-adding restores it as it was
                if any(r.state == ownership.RETAINED for r in svc_rows) or terminating:
                    continue
                purge_after = next((r.purge_after for r in svc_rows if r.purge_after), "")
                if not purge_after:
                    purge_after = iso_time(now + timedelta(seconds=t.deletion.grace_period))
                    for row in svc_rows:
                        client.mark(row.kind, row.name, t.uid, ownership.PENDING, purge_after)
                    if user:
                        client.lock(user, True)
                    events.append(("Warning", "DatabasePendingRemoval",
                                   f"{service}: database {db} removed from spec.databases; its user is locked and "
                                   f"the data is kept until {purge_after} (re-add the service to keep it)"))
                if now < parse_time(purge_after):
                    pending.append({"service": service, "database": db, "server": server_name,
                                    "purgeAfter": purge_after})
                    continue
                # Grace over: a final dump first; no dump, no drop.
                try:
                    key = self.final_dump(t, service) if self.final_dump and db else ""
                except Exception as exc:  # noqa: BLE001 - recorded; the database stays
                    pending.append({"service": service, "database": db, "server": server_name,
                                    "purgeAfter": purge_after, "waitingOn": f"final dump failed: {exc}"[:300]})
                    events.append(("Warning", "FinalBackupFailed", f"{service}: {exc}"[:500]))
                    continue
                if user:
                    client.drop_owned("user", user, t.uid)
                if t.deletion.policy == "Delete":
                    if db:
                        client.drop_owned("database", db, t.uid)
                    events.append(("Normal", "DatabaseDropped", f"{service}: dropped {db} after its grace period "
                                   f"(final dump {key}; deletion policy Delete)"))
                else:
                    if db:
                        client.mark("database", db, t.uid, ownership.RETAINED)
                    events.append(("Normal", "DatabaseRetained", f"{service}: kept {db} (final dump {key}; "
                                   "deletion policy Retain); its user was dropped"))
                if secret is not None:
                    objects.remove(secret)
        return pending

    # --- deletion -------------------------------------------------------------------------
    def _owned(self, t: Tenant) -> list[tuple[object, object]]:
        """(client, row) for everything any configured server records for the UID."""
        out = []
        for server_name in sorted(self.cfg.mysql_servers):
            client = self.client(server_name)
            out.extend((client, row) for row in client.owned_by(t.uid))
        return out

    def owned_services(self, t: Tenant) -> list[str]:
        """Services with a database recorded for this Tenant's UID."""
        if not self.cfg.mysql_servers or not t.uid:
            return []
        return sorted({row.service for _c, row in self._owned(t) if row.kind == "database"})

    def purge_step(self, t: Tenant, step: str) -> str:
        if not self.cfg.mysql_servers or not t.uid:
            return ""
        kind = {"revoke-credentials": "user", "drop-databases": "database"}.get(step)
        if kind is None:
            return ""
        dropped = [row.name for client, row in self._owned(t)
                   if row.kind == kind and client.drop_owned(kind, row.name, t.uid)]
        return f"dropped MySQL {kind}s {', '.join(dropped)}" if dropped else ""

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark the databases kept for a later Tenant of the same name."""
        kept = []
        for client, row in self._owned(t):
            if row.kind == "database":
                client.mark("database", row.name, t.uid, ownership.RETAINED)
                kept.append(f"database {row.name}")
        return kept


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

    def wanted(self, t: Tenant) -> bool:
        return t.object_storage is not None or (bool(t.databases) and t.backup.enabled)

    def _tagged(self, t: Tenant, names: list[str]) -> dict[str, dict[str, str]]:
        """The buckets among `names` whose tags record this Tenant's UID, with their tags."""
        out = {}
        for name in names:
            tags = self.store.bucket_tags(name)
            if tags and tags.get(ownership.TAG_UID) == t.uid:
                out[name] = tags
        return out

    def owned_buckets(self, t: Tenant) -> dict[str, dict[str, str]]:
        """Buckets tagged with this Tenant's UID, listed afresh (purge, retained data).
        Every derived bucket name, shortened or not, starts with `<tenant>-`."""
        return self._tagged(t, self.store.list_buckets(f"{t.name}-")) if t.uid else {}

    def backups_bucket(self, t: Tenant) -> str:
        """`<tenant>-backups`, unless a purged predecessor of the same name left its
        archive there: then a name of this UID's own, so a re-created Tenant never
        sees (nor blocks on) the archives of the one before it. Once used, the
        UID's name stays, even after the old archive expires."""
        own, plain = naming.backups_bucket(t.name, t.uid), naming.backups_bucket(t.name)
        if not t.uid:
            return plain
        if (self.store.bucket_tags(own) or {}).get(ownership.TAG_UID) == t.uid:
            return own
        tags = self.store.bucket_tags(plain) or {}
        if tags.get(ownership.TAG_STATE) == ownership.ARCHIVED and tags.get(ownership.TAG_UID) != t.uid:
            return own
        return plain

    def _is_backups(self, t: Tenant, bucket: str) -> bool:
        return bucket in (naming.backups_bucket(t.name), naming.backups_bucket(t.name, t.uid))

    def _claim(self, t: Tenant, bucket: str, create) -> list[str]:
        """Make sure `bucket` is this Tenant's (tags), creating it if nobody has it."""
        tags = self.store.bucket_tags(bucket)
        decision = ownership.claim_decision(
            (tags or {}).get(ownership.TAG_UID, ""), (tags or {}).get(ownership.TAG_TENANT, ""),
            (tags or {}).get(ownership.TAG_STATE, ""), uid=t.uid, tenant=t.name, exists=tags is not None,
            adopt=t.adopt_existing)
        if decision == "conflict":
            holder = (tags or {}).get(ownership.TAG_TENANT, "")
            raise NameConflict("bucket", bucket, f"Tenant {holder} (another UID)" if holder else "")
        changes = create()
        wanted = {**(tags or {}), ownership.TAG_UID: t.uid, ownership.TAG_TENANT: t.name,
                  ownership.TAG_STATE: ownership.ACTIVE}
        wanted.pop(ownership.TAG_PURGE_AFTER, None)
        if wanted != tags:
            self.store.set_bucket_tags(bucket, wanted)
            if decision != "create":
                changes.append({"adopt-retained": "adopted retained bucket",
                                "adopt-unmarked": "adopted unmarked bucket",
                                "ours": "no longer pending removal"}[decision])
        return changes

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False) -> ComponentResult:
        from tenant_operator.lifecycle import iso_time, parse_time
        store = self.store
        spec_buckets = t.object_storage.buckets if t.object_storage else ()
        quota_gib = t.object_storage.quota_gib if t.object_storage else 0
        quota = quota_gib * 2**30 if (quota_gib and store.supports_quota) else None
        buckets = {name: naming.bucket(t.name, name) for name in spec_buckets}
        backups = self.backups_bucket(t)
        changes = []
        for name in buckets.values():
            changes.extend(f"{name}: {c}" for c in self._claim(
                t, name, lambda n=name: store.ensure_bucket(n, quota_bytes=quota, versioning=False)))
        changes.extend(f"{backups}: {c}" for c in self._claim(
            t, backups, lambda: store.ensure_bucket(backups, quota_bytes=None, versioning=True)))
        changes.extend(f"{backups}: {c}" for c in store.ensure_backups_lifecycle(
            backups, self.cfg.backups_bucket_retention_days))

        listing = self._listing
        listing.add([*buckets.values(), backups])
        events, kept, pending = [], [], []
        now = datetime.now(UTC)
        candidates = [b for b in listing.names(f"{t.name}-")
                      if b not in buckets.values() and not self._is_backups(t, b)]
        for bucket, tags in sorted(self._tagged(t, candidates).items()):
            state = tags.get(ownership.TAG_STATE, ownership.ACTIVE)
            if state == ownership.RETAINED:
                kept.append(bucket)
                continue
            if terminating:
                continue
            purge_after = tags.get(ownership.TAG_PURGE_AFTER, "")
            if state != ownership.PENDING or not purge_after:
                purge_after = iso_time(now + timedelta(seconds=t.deletion.grace_period))
                store.set_bucket_tags(bucket, {**tags, ownership.TAG_STATE: ownership.PENDING,
                                               ownership.TAG_PURGE_AFTER: purge_after})
                events.append(("Warning", "BucketPendingRemoval",
                               f"{bucket} removed from spec; the tenant's key no longer reaches it and its "
                               f"objects are kept until {purge_after} (re-add it to keep it)"))
            if now < parse_time(purge_after):
                pending.append({"bucket": bucket, "purgeAfter": purge_after})
            elif t.deletion.policy == "Delete" or store.bucket_is_empty(bucket):
                # Its contents go to the archive first, as a deleted tenant's do.
                copied, size = store.archive_bucket(bucket, backups, f"{naming.ARCHIVE_PREFIX}{bucket}/")
                store.delete_bucket(bucket, purge=True)
                listing.discard(bucket)
                events.append(("Normal", "BucketDeleted", f"deleted {bucket} after its grace period (removed from "
                                                          f"spec, deletion policy Delete); its objects were archived "
                                                          f"to s3://{backups}/{naming.ARCHIVE_PREFIX}{bucket}/ "
                                                          f"({copied} copied now, {size} bytes)"))
            else:
                store.set_bucket_tags(bucket, {**tags, ownership.TAG_STATE: ownership.RETAINED})
                kept.append(bucket)

        name = naming.OBJECTSTORE_SECRET
        all_buckets = [*buckets.values(), backups]
        cfg = self.cfg.object_storage
        location = {"S3_ENDPOINT": cfg.tenant_endpoint, "S3_REGION": cfg.region, "S3_BACKUPS_BUCKET": backups}
        # The application's key reads its backups but cannot write or delete one;
        # only the backup Jobs' key (a Secret of its own) writes them.
        creds = self._user(t, live, rotate, name, naming.storage_user(t.name), naming.storage_policy(t.name),
                           all_buckets, changes, read_only=(backups,))
        secret_data = {**location, "S3_BUCKETS": ",".join(buckets.values()),
                       "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key}
        for short, full in buckets.items():
            secret_data[naming.bucket_env_key(short)] = full
        backup_creds = self._user(t, live, rotate, naming.BACKUP_SECRET, naming.backup_user(t.name),
                                  naming.backup_policy(t.name), [backups], changes, protected=(backups,))
        backup_data = {**location, "AWS_ACCESS_KEY_ID": backup_creds.access_key,
                       "AWS_SECRET_ACCESS_KEY": backup_creds.secret_key}
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
        return ComponentResult(self.component, cond, objects=[self.secret(t, name, secret_data),
                                                             self.secret(t, naming.BACKUP_SECRET, backup_data)],
                               events=events, status={"pendingRemovals": {"buckets": pending}} if pending else {})

    def _user(self, t: Tenant, live: dict, rotate: bool, secret: str, user: str, policy: str, buckets: list[str],
              changes: list[str], **access) -> object:
        """The storage user whose keys the Secret `secret` carries, as wanted."""
        from tenant_operator.backends.objectstore import Credentials
        data = self.read_secret(t, live, secret)
        current = None
        if data.get("AWS_ACCESS_KEY_ID") and data.get("AWS_SECRET_ACCESS_KEY"):
            current = Credentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"])
        if rotate and current is not None:
            current = self.store.rotate(user, current)
        creds, user_changes = self.store.ensure_user(user, policy, buckets, enabled=not t.suspended,
                                                     current=current, **access)
        changes.extend(user_changes)
        return creds

    def final_backup(self, t: Tenant) -> dict:
        """Archive the contents of every bucket of `t` into its backups bucket,
        under archive/<bucket>/; never raises. Objects already archived by an
        earlier attempt are not copied again."""
        at = now_iso()
        if self.cfg.object_storage is None or not t.uid:
            return {"at": at, "objects": []}
        try:
            owned = self.owned_buckets(t)
            backups = next((b for b in owned if self._is_backups(t, b)), "")
            objects = []
            for bucket in sorted(b for b in owned if not self._is_backups(t, b)):
                if not backups:
                    return {"at": at, "objects": [], "error": f"no backups bucket to archive {bucket} into"}
                copied, size = self.store.archive_bucket(bucket, backups, f"{naming.ARCHIVE_PREFIX}{bucket}/")
                objects.append(f"s3://{backups}/{naming.ARCHIVE_PREFIX}{bucket}/ ({copied} object(s), {size} bytes "
                               "copied by this attempt)")
            return {"at": at, "objects": objects}
        except BackendUnavailable as exc:
            return {"at": at, "objects": [], "error": f"archiving buckets: {exc}"}

    def purge_step(self, t: Tenant, step: str) -> str:
        if self.cfg.object_storage is None:
            return ""
        store = self.store
        if step == "revoke-credentials":
            gone = [what for what, user, policy in (
                ("storage user", naming.storage_user(t.name), naming.storage_policy(t.name)),
                ("backup user", naming.backup_user(t.name), naming.backup_policy(t.name)))
                if store.delete_user(user, policy)]
            return f"deleted {' and '.join(gone)}" if gone else ""
        if step == "delete-buckets":
            # The backups bucket stays as the tenant's archive: from now on everything
            # in it expires archiveRetentionDays after it was written.
            owned = self.owned_buckets(t)
            gone = [b for b in owned if not self._is_backups(t, b) and store.delete_bucket(b, purge=True)]
            done = [f"deleted buckets {', '.join(gone)}"] if gone else []
            for backups, tags in owned.items():
                if not self._is_backups(t, backups):
                    continue
                done += [f"{backups}: {c}" for c in store.ensure_backups_lifecycle(
                    backups, self.cfg.backups_bucket_retention_days, purged=True,
                    archive_days=self.cfg.archive_retention_days)]
                if tags.get(ownership.TAG_STATE) != ownership.ARCHIVED:
                    # Marked as a purged Tenant's archive: a later Tenant of the same name uses another bucket.
                    store.set_bucket_tags(backups, {**tags, ownership.TAG_STATE: ownership.ARCHIVED})
            return "; ".join(done)
        return ""

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark the buckets kept for a later Tenant of the same name."""
        if self.cfg.object_storage is None:
            return []
        kept = []
        for bucket, tags in self.owned_buckets(t).items():
            self.store.set_bucket_tags(bucket, {**tags, ownership.TAG_STATE: ownership.RETAINED})
            kept.append(f"bucket {bucket}")
        return kept



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

    def _check(self, t: Tenant, what: str, name: str, marker: tuple[bool, str, bool]) -> None:
        exists, uid, retained = marker
        decision = ownership.claim_decision(uid, t.name if retained else "", ownership.RETAINED if retained else "",
                                            uid=t.uid, tenant=t.name, exists=exists, adopt=t.adopt_existing)
        if decision == "conflict":
            raise NameConflict(f"RabbitMQ {what}", name, f"Tenant UID {uid}" if uid else "")

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False) -> ComponentResult:
        from tenant_operator.backends.rabbitmq import amqp_url
        client, cfg = self.client, self.cfg.rabbitmq
        vhost, user = naming.vhost(t.name), naming.rabbitmq_user(t.name)
        # Both checked before either is touched: a user or vhost of another system is never taken over.
        self._check(t, "vhost", vhost, client.vhost_marker(vhost))
        self._check(t, "user", user, client.user_marker(user))
        changes = list(client.ensure_vhost(vhost, max_connections=t.rabbitmq_max_connections,
                                           max_queues=t.rabbitmq_max_queues, owner_uid=t.uid))
        name = naming.RABBITMQ_SECRET
        password = self.read_secret(t, live, name).get("RABBITMQ_PASSWORD", "")
        if rotate or not password:
            password = new_password()
        changes.extend(client.ensure_user(user, password, vhost, enabled=not t.suspended, owner_uid=t.uid))
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
        client, user, vhost = self.client, naming.rabbitmq_user(t.name), naming.vhost(t.name)
        if step == "revoke-credentials":
            _exists, uid, _retained = client.user_marker(user)
            if uid != t.uid or not t.uid:
                return f"RabbitMQ user {user} is not this Tenant's; left alone" if _exists else ""
            return "deleted RabbitMQ user" if client.delete_user(user) else ""
        if step == "delete-vhost":
            _exists, uid, _retained = client.vhost_marker(vhost)
            if uid != t.uid or not t.uid:
                return f"vhost {vhost} is not this Tenant's; left alone" if _exists else ""
            return "deleted vhost" if client.delete_vhost(vhost) else ""
        return ""

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark the vhost kept for a later Tenant of the same name."""
        if self.cfg.rabbitmq is None:
            return []
        vhost = naming.vhost(t.name)
        _exists, uid, _retained = self.client.vhost_marker(vhost)
        if uid != t.uid or not t.uid:
            return []
        self.client.mark_vhost(vhost, t.uid, retained=True)
        return [f"vhost {vhost}"]


def build_backends(cfg: OperatorConfig, kube: Kube) -> list[BackendComponent]:
    """All components; each reports NotConfigured when a tenant needs a backend the config lacks."""
    from tenant_operator.backup.component import BackupComponent
    mysql, backup = MySQLComponent(cfg, kube), BackupComponent(cfg, kube)
    mysql.final_dump = backup.dump_service
    backup.owned_services = mysql.owned_services
    return [mysql, ObjectStorageComponent(cfg, kube), RabbitMQComponent(cfg, kube), backup]
