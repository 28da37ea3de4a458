"""A tenant's buckets, its storage users and the Secrets that carry their keys."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tenant_operator import naming, ownership, rotation
from tenant_operator.backends.base import BackendComponent
from tenant_operator.components import ComponentResult
from tenant_operator.errors import BackendUnavailable, ConfigError
from tenant_operator.lifecycle import iso_time, parse_time
from tenant_operator.ownership import NameConflict
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition, now_iso

log = logging.getLogger(__name__)

# On the credentials Secrets: which storage user of the pair their keys belong to.
STORAGE_USER_ANNOTATION = "tenancy.dev/storage-user"


class Intents:
    """The buckets a pass is about to create, recorded in the Tenant's status
    (status.creating.buckets) before it creates them. Object storage cannot
    create a bucket and its ownership tags at once; a pass cut off between the
    two leaves an untagged bucket that only this record shows to be ours."""

    def __init__(self, current_status: dict | None, record_intent):
        creating = (current_status or {}).get("creating") or {}
        self._recorded = set(creating.get("buckets") or []) if isinstance(creating, dict) else set()
        self._record = record_intent
        self._had = bool(self._recorded)

    def recorded(self, bucket: str) -> bool:
        return bucket in self._recorded

    def record(self, bucket: str) -> None:
        if bucket in self._recorded:
            return
        if self._record is None:
            raise RuntimeError("no way to record the buckets this pass creates")
        self._record(sorted(self._recorded | {bucket}))
        self._recorded.add(bucket)

    def any(self) -> bool:
        return self._had or bool(self._recorded)


class ObjectStorageComponent(BackendComponent):
    component = "objectstorage"
    condition_type = "ObjectStorageReady"
    backend_name = "objectstorage"
    data_step = "delete-buckets"

    def __init__(self, cfg, kube):
        super().__init__(cfg, kube)
        self._stores: dict[str, object] = {}       # server name -> store
        self._listings: dict[str, object] = {}

    def store_on(self, server: str):
        """The client of the object store named `server` ("": the default one)."""
        from tenant_operator.backends.objectstore.client import BucketListing, make_objectstore
        if not self.cfg.object_storage_servers:
            raise ConfigError("objectStorage", "the tenant asks for buckets but no object storage is configured")
        cfg = self.cfg.object_storage_server(server)
        with self._lock:
            if cfg.name not in self._stores:
                self._stores[cfg.name] = make_objectstore(cfg)
            if cfg.name not in self._listings:
                self._listings[cfg.name] = BucketListing(self._stores[cfg.name])
            return self._stores[cfg.name]

    def store(self, t: Tenant):
        """The tenant's object store: the one it is placed on."""
        return self.store_on(t.object_storage_server)

    def probe(self) -> None:
        for name in sorted(self.cfg.object_storage_servers):
            self.store_on(name).ping()

    def expected_secrets(self, t: Tenant) -> list[str]:
        return [naming.OBJECTSTORE_SECRET, naming.BACKUP_SECRET]

    def wanted(self, t: Tenant) -> bool:
        return t.uses_object_storage

    def _tagged(self, t: Tenant, names: list[str]) -> dict[str, dict[str, str]]:
        """The buckets among `names` whose tags record this Tenant's UID, with their tags."""
        out = {}
        for name in names:
            tags = self.store(t).bucket_tags(name)
            if tags and tags.get(ownership.TAG_UID) == t.uid:
                out[name] = tags
        return out

    def owned_buckets(self, t: Tenant) -> dict[str, dict[str, str]]:
        """Buckets tagged with this Tenant's UID, listed afresh (purge, retained data).
        Every derived bucket name, shortened or not, starts with `<tenant>-`."""
        return self._tagged(t, self.store(t).list_buckets(f"{t.name}-")) if t.uid else {}

    def backups_bucket(self, t: Tenant) -> str:
        """`<tenant>-backups`, unless a purged predecessor of the same name left its
        archive there: then a name of this UID's own, so a re-created Tenant never
        sees (nor blocks on) the archives of the one before it. Once used, the
        UID's name stays, even after the old archive expires."""
        own, plain = naming.backups_bucket(t.name, t.uid), naming.backups_bucket(t.name)
        if not t.uid:
            return plain
        if (self.store(t).bucket_tags(own) or {}).get(ownership.TAG_UID) == t.uid:
            return own
        tags = self.store(t).bucket_tags(plain) or {}
        if tags.get(ownership.TAG_STATE) == ownership.ARCHIVED and tags.get(ownership.TAG_UID) != t.uid:
            return own
        return plain

    def _is_backups(self, t: Tenant, bucket: str) -> bool:
        return bucket in (naming.backups_bucket(t.name), naming.backups_bucket(t.name, t.uid))

    def _claim(self, t: Tenant, bucket: str, create, intents: Intents) -> list[str]:
        """Make sure `bucket` is this Tenant's (tags), creating it if nobody has it."""
        tags = self.store(t).bucket_tags(bucket)
        decision = ownership.claim_decision(
            (tags or {}).get(ownership.TAG_UID, ""), (tags or {}).get(ownership.TAG_TENANT, ""),
            (tags or {}).get(ownership.TAG_STATE, ""), uid=t.uid, tenant=t.name, exists=tags is not None,
            adopt=t.adopt_existing)
        if decision == "conflict" and tags == {} and intents.recorded(bucket):
            # Created by an earlier pass of this Tenant that was cut off before its tags.
            decision = "create"
        if decision == "conflict":
            holder = (tags or {}).get(ownership.TAG_TENANT, "")
            raise NameConflict("bucket", bucket, f"Tenant {holder} (another UID)" if holder else "")
        if decision == "create":
            intents.record(bucket)   # before the bucket exists: a pass cut off after it still knows it
        changes = create()
        wanted = {**(tags or {}), ownership.TAG_UID: t.uid, ownership.TAG_TENANT: t.name,
                  ownership.TAG_STATE: ownership.ACTIVE}
        wanted.pop(ownership.TAG_PURGE_AFTER, None)
        if wanted != tags:
            self.store(t).set_bucket_tags(bucket, wanted)
            if decision != "create":
                changes.append({"adopt-retained": "adopted retained bucket",
                                "adopt-unmarked": "adopted unmarked bucket",
                                "ours": "no longer pending removal"}[decision])
        return changes

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False,
                 current_status: dict | None = None, record_intent=None) -> ComponentResult:
        store = self.store(t)
        intents = Intents(current_status, record_intent)
        spec_buckets = t.object_storage.buckets if t.object_storage else ()
        quota_gib = t.object_storage.quota_gib if t.object_storage else 0
        quota = quota_gib * 2**30 if (quota_gib and store.supports_quota) else None
        buckets = {name: naming.bucket(t.name, name) for name in spec_buckets}
        backups = self.backups_bucket(t)
        changes = []
        for name in buckets.values():
            changes.extend(f"{name}: {c}" for c in self._claim(
                t, name, lambda n=name: store.ensure_bucket(n, quota_bytes=quota, versioning=False), intents))
        changes.extend(f"{backups}: {c}" for c in self._claim(
            t, backups, lambda: store.ensure_bucket(backups, quota_bytes=None, versioning=True), intents))
        changes.extend(f"{backups}: {c}" for c in store.ensure_backups_lifecycle(
            backups, self.cfg.backups_bucket_retention_days))

        listing = self._listings[self.cfg.object_storage_server(t.object_storage_server).name]
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
        cfg = self.cfg.object_storage_server(t.object_storage_server)
        location = {"S3_ENDPOINT": cfg.tenant_endpoint, "S3_REGION": cfg.region, "S3_BACKUPS_BUCKET": backups}
        # The application's key reads its backups but cannot write or delete one;
        # only the backup Jobs' key (a Secret of its own) writes them.
        idle_policy = self.idle_policy(t, current_status, rotate)
        creds_user, creds = self._user(t, live, rotate, idle_policy, name, naming.storage_user(t.name),
                                       naming.storage_policy(t.name), all_buckets, changes, read_only=(backups,))
        secret_data = {**location, "S3_BUCKETS": ",".join(buckets.values()),
                       "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key}
        for short, full in buckets.items():
            secret_data[naming.bucket_env_key(short)] = full
        backup_user, backup_creds = self._user(t, live, rotate, idle_policy, naming.BACKUP_SECRET,
                                               naming.backup_user(t.name), naming.backup_policy(t.name), [backups],
                                               changes, protected=(backups,))
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
        return ComponentResult(self.component, cond, objects=[self.secret(t, name, secret_data, {
                                   STORAGE_USER_ANNOTATION: creds_user}), self.secret(
                                   t, naming.BACKUP_SECRET, backup_data, {STORAGE_USER_ANNOTATION: backup_user})],
                               events=events, status={**({"pendingRemovals": {"buckets": pending}} if pending else {}),
                                                      # Every bucket is tagged now: the record has done its job.
                                                      **({"creating": None} if intents.any() else {})})

    def _user(self, t: Tenant, live: dict, rotate: bool, idle_policy: str, secret: str, user: str, policy: str,
              buckets: list[str], changes: list[str], **access) -> tuple[str, object]:
        """The storage user whose keys the Secret `secret` carries, as wanted: the
        one of the pair (`user`, `<user>_b`) the Secret names, or the other one
        after a rotation. Returns (user, its credentials)."""
        from tenant_operator.backends.objectstore.client import Credentials
        data = self.read_secret(t, live, secret)
        secret_obj = self._secrets(t, live).get(secret) or {}
        # The access key is the user name on MinIO, not on IAM: the Secret's annotation says which user it is.
        named = ((secret_obj.get("metadata") or {}).get("annotations") or {}).get(STORAGE_USER_ANNOTATION) \
            or data.get("AWS_ACCESS_KEY_ID", "")
        pairs = {user: policy, naming.storage_alternate(user): naming.storage_alternate(policy)}
        active, idle = rotation.pick(user, naming.storage_alternate(user), named)
        current = None
        if data.get("AWS_ACCESS_KEY_ID") and data.get("AWS_SECRET_ACCESS_KEY"):
            current = Credentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"])
        if rotate:
            # The idle user gets a new secret (no current one) and the same rights.
            active, idle, current = idle, active, None
        creds, user_changes = self.store(t).ensure_user(active, pairs[active], buckets, enabled=not t.suspended,
                                                     current=current, owner_uid=t.uid, adopt=t.adopt_existing,
                                                     **access)
        changes.extend(user_changes)
        if t.suspended or idle_policy == rotation.REVOKE:
            changes.extend(self.store(t).disable_user(idle, pairs[idle], t.uid))
        return active, creds

    def final_backup(self, t: Tenant) -> dict:
        """Archive the contents of every bucket of `t` into its backups bucket,
        under archive/<bucket>/; never raises. Objects already archived by an
        earlier attempt are not copied again."""
        at = now_iso()
        if not self.cfg.object_storage_servers or not t.uid:
            return {"at": at, "objects": []}
        try:
            owned = self.owned_buckets(t)
            backups = next((b for b in owned if self._is_backups(t, b)), "")
            objects = []
            for bucket in sorted(b for b in owned if not self._is_backups(t, b)):
                if not backups:
                    return {"at": at, "objects": [], "error": f"no backups bucket to archive {bucket} into"}
                copied, size = self.store(t).archive_bucket(bucket, backups, f"{naming.ARCHIVE_PREFIX}{bucket}/")
                objects.append(f"s3://{backups}/{naming.ARCHIVE_PREFIX}{bucket}/ ({copied} object(s), {size} bytes "
                               "copied by this attempt)")
            return {"at": at, "objects": objects}
        except BackendUnavailable as exc:
            return {"at": at, "objects": [], "error": f"archiving buckets: {exc}"}

    def _users(self, t: Tenant) -> tuple[tuple[str, str, str], ...]:
        """Both users of each pair, with their policies."""
        out = []
        for what, user, policy in (("storage user", naming.storage_user(t.name), naming.storage_policy(t.name)),
                                   ("backup user", naming.backup_user(t.name), naming.backup_policy(t.name))):
            out += [(what, user, policy), (what, naming.storage_alternate(user), naming.storage_alternate(policy))]
        return tuple(out)

    def inventory(self, t: Tenant) -> list[str]:
        if not self.cfg.object_storage_servers or not t.uid:
            return []
        found = [f"bucket {b}" for b in self.owned_buckets(t)]
        for what, user, policy in self._users(t):
            exists, marker = self.store(t).user_owner(user, policy)
            if exists and marker == ownership.uid_hex(t.uid):
                found.append(f"{what} {user}")
        return found

    def revoke(self, t: Tenant) -> str:
        if not self.cfg.object_storage_servers:
            return ""
        done = []
        for what, user, policy in self._users(t):
            exists, marker = self.store(t).user_owner(user, policy)
            if not exists:
                continue
            if not t.uid or marker != ownership.uid_hex(t.uid):
                done.append(f"{what} {user} is not this Tenant's; left alone")
            elif self.store(t).delete_user(user, policy):
                done.append(f"deleted {what} {user}")
        return "; ".join(done)

    def purge(self, t: Tenant) -> str:
        """Every bucket tagged with the UID goes, but the backups bucket: it stays as
        the tenant's archive, everything in it expiring archiveRetentionDays after it was written."""
        if not self.cfg.object_storage_servers:
            return ""
        store = self.store(t)
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

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark the buckets kept for a later Tenant of the same name."""
        if not self.cfg.object_storage_servers:
            return []
        kept = []
        for bucket, tags in self.owned_buckets(t).items():
            self.store(t).set_bucket_tags(bucket, {**tags, ownership.TAG_STATE: ownership.RETAINED})
            kept.append(f"bucket {bucket}")
        return kept
