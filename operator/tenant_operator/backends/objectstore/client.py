"""Object storage backend: per-tenant buckets and one scoped user per tenant.

Two implementations share the `ObjectStore` interface:

* `MinioStore` talks to MinIO: the S3 API for buckets and objects, the admin
  API for users, canned policies and bucket quotas.
* `S3IamStore` talks to AWS-style platforms: S3 for buckets, IAM for users,
  inline user policies and access keys. Such platforms have no bucket quota.

Every call is idempotent and the `ensure_*` calls return the list of changes
they made (empty when nothing had to change), reading the current state first
so a repeat call makes no writes. Any failure to reach or operate the store
raises `BackendUnavailable("objectstorage", ...)` with a message naming the
endpoint and never a credential.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import boto3
import botocore.config
import botocore.exceptions
import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, ComposeSource, CopySource, Filter, Tags
from minio.credentials import StaticProvider
from minio.deleteobjects import DeleteObject
from minio.error import MinioAdminException, MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, NoncurrentVersionExpiration, Rule
from minio.versioningconfig import SUSPENDED, VersioningConfig

from tenant_operator import config, ownership
from tenant_operator.backends.objectstore.admin import Admin
from tenant_operator.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

BACKEND = "objectstorage"

BUCKET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$")
USER_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{3,64}$")
SECRET_BYTES = 30            # token_urlsafe(30): 40 characters, MinIO's maximum secret length
DELETE_BATCH = 1000          # S3 DeleteObjects limit
MAX_SINGLE_COPY = 5 * 2**30  # larger objects are copied in parts (S3 CopyObject limit)
BACKUPS_RULE_ID = "tenant-operator-backups"

# What a tenant's user may do, and only on its own buckets.
OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:GetObjectVersion",
    "s3:DeleteObjectVersion",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
# What the application may do in its own backups bucket: read what its backup Jobs wrote.
READ_OBJECT_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
BUCKET_ACTIONS = (
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:GetBucketLocation",
    "s3:ListBucketMultipartUploads",
)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)


class BucketNotEmpty(Exception):
    """delete_bucket(purge=False) found objects (or object versions) in the bucket."""

    def __init__(self, bucket: str):
        self.bucket = bucket
        super().__init__(f"bucket {bucket} is not empty")


class InvalidBucketName(ValueError):
    """A bucket name outside the S3 rules; raised before any call is made."""


class ObjectStore(Protocol):
    backend: str            # "minio" | "s3"
    supports_quota: bool

    def ensure_bucket(self, name: str, *, quota_bytes: int | None, versioning: bool) -> list[str]: ...
    def bucket_exists(self, name: str) -> bool: ...
    def bucket_is_empty(self, name: str) -> bool: ...
    def bucket_tags(self, name: str) -> dict[str, str] | None: ...
    def set_bucket_tags(self, name: str, tags: dict[str, str]) -> None: ...
    def delete_bucket(self, name: str, *, purge: bool) -> bool: ...
    def list_buckets(self, prefix: str) -> list[str]: ...
    def ensure_user(self, user: str, policy_name: str, buckets: list[str], *, enabled: bool,
                    current: Credentials | None, protected: tuple[str, ...] = (),
                    read_only: tuple[str, ...] = (), owner_uid: str = "",
                    adopt: bool = False) -> tuple[Credentials, list[str]]: ...
    def user_owner(self, user: str, policy_name: str) -> tuple[bool, str]: ...
    def rotate(self, user: str, current: Credentials | None) -> Credentials: ...
    def disable_user(self, user: str, policy_name: str, owner_uid: str) -> list[str]: ...
    def delete_user(self, user: str, policy_name: str) -> bool: ...
    def ensure_backups_lifecycle(self, bucket: str, days: int, *, purged: bool = False,
                                 archive_days: int | None = None) -> list[str]: ...
    def archive_bucket(self, source: str, target: str, prefix: str) -> tuple[int, int]: ...
    def ping(self) -> None: ...


class BucketListing:
    """Bucket names shared by every tenant's converge.

    ListBuckets returns every bucket of the account, so listing once per tenant
    costs O(tenants^2) when many tenants converge together (at a thousand
    tenants it was a quarter of the operator's CPU). One listing at most every
    `max_age` seconds serves them all; buckets this process creates or deletes
    are applied to it at once. Only the removed-from-spec check reads it, so a
    bucket someone else created in the last seconds waits for the next converge;
    purges list afresh."""

    def __init__(self, store: ObjectStore, max_age: float = 5.0, clock=time.monotonic):
        self._store, self._max_age, self._clock = store, max_age, clock
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._at: float | None = None

    def names(self, prefix: str) -> list[str]:
        with self._lock:    # one listing in flight; the other converges wait for it
            if self._at is None or self._clock() - self._at > self._max_age:
                self._names = set(self._store.list_buckets(""))
                self._at = self._clock()
            return sorted(n for n in self._names if n.startswith(prefix))

    def add(self, names) -> None:
        with self._lock:
            self._names.update(names)

    def discard(self, name: str) -> None:
        with self._lock:
            self._names.discard(name)


# --- shared helpers -------------------------------------------------------------

def validate_bucket_name(name: str) -> str:
    """Return `name` if it follows the S3 rules used here (3-63 chars of a-z, 0-9
    and '-', not starting or ending with '-'), else raise InvalidBucketName."""
    if not isinstance(name, str) or not BUCKET_NAME.fullmatch(name):
        raise InvalidBucketName(f"invalid bucket name {name!r} (3-63 characters of a-z, 0-9 and '-', "
                                "starting and ending with a letter or digit)")
    return name


def validate_user_name(name: str, what: str = "user name") -> str:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise ValueError(f"invalid object-storage {what} {name!r}")
    return name


def user_policy(user: str, policy_name: str, buckets: list[str], protected: tuple[str, ...],
                read_only: tuple[str, ...], owner_uid: str) -> dict:
    """The checked names and the policy document of a storage user, as both stores write it."""
    validate_user_name(user)
    validate_user_name(policy_name, "policy name")
    return tenant_policy(buckets, protected, read_only, owner_uid)


def claim_user(user: str, exists: bool, marker: str, owner_uid: str, adopt: bool) -> None:
    """NameConflict unless the storage user is free, marked for `owner_uid`, or unmarked and `adopt`."""
    decision = ownership.claim_decision(marker, "", "", uid=ownership.uid_hex(owner_uid), tenant="",
                                        exists=exists, adopt=adopt)
    if decision == "conflict":
        raise ownership.NameConflict("storage user", user, "another Tenant (another UID)" if marker else "")


def _tag_owner(iam_user: dict | None) -> str:
    tags = {t.get("Key"): t.get("Value") for t in (iam_user or {}).get("Tags") or []}
    return ownership.uid_hex(tags.get(ownership.TAG_UID, ""))


def generate_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def tenant_policy(buckets: list[str], protected: tuple[str, ...] = (), read_only: tuple[str, ...] = (),
                  owner_uid: str = "") -> dict:
    """The policy document of a tenant user: object and listing access to exactly
    `buckets`, nothing else (no bucket creation, no admin). With no buckets the
    document grants nothing.

    In the `protected` buckets (the versioned backups bucket) the user may write,
    read and delete keys, but not delete a version: a delete only adds a delete
    marker, an overwrite keeps the old version, and both stay recoverable for the
    bucket's retention.

    In the `read_only` buckets the user may list and read, nothing else: the
    application reads the backups its backup Jobs wrote with a key of their own,
    and can neither add, replace nor delete one.

    With `owner_uid`, a statement whose Sid carries the Tenant's UID marks the
    user as the operator's for that Tenant (it denies bucket creation, which
    nothing else grants either)."""
    names = sorted({validate_bucket_name(b) for b in buckets})
    marker = [{"Sid": ownership.POLICY_SID_PREFIX + ownership.uid_hex(owner_uid), "Effect": "Deny",
               "Action": ["s3:CreateBucket"], "Resource": ["arn:aws:s3:::*"]}] if owner_uid else []
    if not names:
        return {"Version": "2012-10-17", "Statement": [
            {"Sid": "NoBuckets", "Effect": "Deny", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]},
            *marker]}
    kept = sorted({validate_bucket_name(b) for b in protected} & set(names))
    readable = sorted({validate_bucket_name(b) for b in read_only} & set(names) - set(kept))
    plain = [b for b in names if b not in kept and b not in readable]
    statements = [{"Sid": "TenantBuckets", "Effect": "Allow", "Action": list(BUCKET_ACTIONS),
                   "Resource": [f"arn:aws:s3:::{b}" for b in names]}]
    if plain:
        statements.append({"Sid": "TenantObjects", "Effect": "Allow", "Action": list(OBJECT_ACTIONS),
                           "Resource": [f"arn:aws:s3:::{b}/*" for b in plain]})
    if readable:
        statements.append({"Sid": "ReadOnlyObjects", "Effect": "Allow", "Action": list(READ_OBJECT_ACTIONS),
                           "Resource": [f"arn:aws:s3:::{b}/*" for b in readable]})
    if kept:
        statements.append({"Sid": "ProtectedObjects", "Effect": "Allow",
                           "Action": [a for a in OBJECT_ACTIONS if a != "s3:DeleteObjectVersion"],
                           "Resource": [f"arn:aws:s3:::{b}/*" for b in kept]})
        # Explicitly: MinIO lets s3:DeleteObject alone remove a specific version
        # (measured); an explicit Deny is honoured by MinIO and AWS alike.
        statements.append({"Sid": "ProtectedVersions", "Effect": "Deny", "Action": ["s3:DeleteObjectVersion"],
                           "Resource": [f"arn:aws:s3:::{b}/*" for b in kept]})
    return {"Version": "2012-10-17", "Statement": statements + marker}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return sorted(value) if isinstance(value, list) else [value]


def normalize_policy(doc: Any) -> Any:
    """A comparable form of a policy document: servers reorder actions and
    resources and may turn one-element lists into strings."""
    if isinstance(doc, str | bytes):
        try:
            doc = json.loads(doc)
        except ValueError:
            return None
    if not isinstance(doc, dict):
        return None
    statements = doc.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    norm = []
    for st in statements:
        norm.append(json.dumps({
            "Sid": st.get("Sid") or "",
            "Effect": st.get("Effect"),
            "Action": _as_list(st.get("Action")),
            "NotAction": _as_list(st.get("NotAction")),
            "Resource": _as_list(st.get("Resource")),
            "NotResource": _as_list(st.get("NotResource")),
            "Condition": st.get("Condition") or {},
        }, sort_keys=True))
    return sorted(norm)


def backups_rule(days: int, *, purged: bool, archive_days: int | None = None) -> dict:
    """The lifecycle rule of a tenant's versioned backups bucket, in S3's JSON shape.

    While the tenant lives, retention deletes old backups; versioning keeps each
    deleted or overwritten one recoverable for `days`, then it goes, and delete
    markers left with no version behind them are cleaned up. Once the tenant is
    purged, the bucket is its archive: everything in it (backups, final backup,
    archived buckets) expires `archive_days` (default `days`) after it was
    written, so it empties itself on the platform's schedule."""
    for value in (days, archive_days if archive_days is not None else days):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"backups retention must be a positive number of days, got {value!r}")
    expire = archive_days if archive_days is not None else days
    return {"ID": BACKUPS_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
            "Expiration": {"Days": expire} if purged else {"ExpiredObjectDeleteMarker": True},
            "NoncurrentVersionExpiration": {"NoncurrentDays": days}}


def _rule_key(rule: dict) -> tuple:
    expiration = rule.get("Expiration") or {}
    return (rule.get("Status"), (rule.get("Filter") or {}).get("Prefix") or "", expiration.get("Days"),
            bool(expiration.get("ExpiredObjectDeleteMarker")),
            (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays"))


def rule_is_current(rules: list[dict], wanted: dict) -> bool:
    """Whether `rules` (S3 shape) already hold exactly `wanted` under its ID."""
    mine = [r for r in rules if r.get("ID") == wanted["ID"]]
    return len(mine) == 1 and _rule_key(mine[0]) == _rule_key(wanted)


def describe_backups_rule(rule: dict) -> str:
    days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
    if rule["Expiration"].get("Days"):
        return f"lifecycle: archive expires {rule['Expiration']['Days']} days after it was written"
    return f"lifecycle: deleted or replaced backups stay recoverable for {days} days"


def _endpoint_parts(endpoint: str) -> tuple[str, bool]:
    """'http://host:port' -> ('host:port', secure=False). Without a scheme, https."""
    url = endpoint if "://" in endpoint else "https://" + endpoint
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.username or parts.password:
        raise ConfigError("objectStorage.endpoint",
                          f"must be http(s)://host[:port] with no path, got {endpoint!r}")
    return parts.netloc, parts.scheme == "https"


# --- MinIO -------------------------------------------------------------------------

def _admin_code(exc: MinioAdminException) -> str:
    try:
        return str(json.loads(exc._body).get("Code", ""))
    except (ValueError, AttributeError, TypeError):
        return ""


def _admin_reason(exc: MinioAdminException) -> str:
    try:
        body = json.loads(exc._body)
        return f"{body.get('Code', 'error')}: {body.get('Message', '')}".strip()
    except (ValueError, AttributeError, TypeError):
        return f"HTTP {getattr(exc, '_code', '?')}"


def _minio_rule_dict(rule: Rule) -> dict:
    exp, nce = rule.expiration, rule.noncurrent_version_expiration
    return {"ID": rule.rule_id, "Status": rule.status,
            "Filter": {"Prefix": rule.rule_filter.prefix if rule.rule_filter else None},
            "Expiration": {"Days": exp.days, "ExpiredObjectDeleteMarker": exp.expired_object_delete_marker}
            if exp else {},
            "NoncurrentVersionExpiration": {"NoncurrentDays": nce.noncurrent_days} if nce else {}}


def _minio_rule(rule: dict) -> Rule:
    exp = rule["Expiration"]
    return Rule(ENABLED, rule_filter=Filter(prefix=rule["Filter"]["Prefix"]), rule_id=rule["ID"],
                expiration=Expiration(days=exp.get("Days"),
                                      expired_object_delete_marker=exp.get("ExpiredObjectDeleteMarker")),
                noncurrent_version_expiration=NoncurrentVersionExpiration(
                    noncurrent_days=rule["NoncurrentVersionExpiration"]["NoncurrentDays"]))


class MinioStore:
    backend = "minio"
    supports_quota = True

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1", *,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, retries: int = 2):
        host, secure = _endpoint_parts(endpoint)
        self.endpoint = endpoint
        self._host, self._secure, self._region = host, secure, region
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._s3 = Minio(host, access_key=access_key, secret_key=secret_key, secure=secure,
                         region=region, http_client=self._http)
        self._admin = Admin(endpoint=host, credentials=StaticProvider(access_key, secret_key),
                            region=region, secure=secure, http_client=self._http)

    def __repr__(self) -> str:
        return f"MinioStore({self.endpoint!r})"

    # -- error translation --

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            raise BackendUnavailable(
                BACKEND, f"{action} failed at {self.endpoint}: {exc.code}: {exc.message}") from exc
        except MinioAdminException as exc:
            raise BackendUnavailable(
                BACKEND, f"{action} failed at {self.endpoint}: {_admin_reason(exc)}") from exc
        except urllib3.exceptions.MaxRetryError as exc:
            reason = exc.reason.__class__.__name__ if exc.reason else "too many retries"
            raise BackendUnavailable(
                BACKEND, f"{action} failed: no usable answer from {self.endpoint} ({reason})") from exc
        except (urllib3.exceptions.HTTPError, OSError, MinioException) as exc:
            raise BackendUnavailable(
                BACKEND, f"{action} failed: cannot reach {self.endpoint} ({exc.__class__.__name__})") from exc

    # -- buckets --

    def bucket_exists(self, name: str) -> bool:
        validate_bucket_name(name)
        with self._guard(f"checking bucket {name}"):
            return self._s3.bucket_exists(name)

    def bucket_tags(self, name: str) -> dict[str, str] | None:
        """The bucket's tags ({} when it has none), None when it does not exist."""
        validate_bucket_name(name)
        with self._guard(f"reading tags of bucket {name}"):
            # MinIO answers "no tags" for a bucket that does not exist, too.
            if not self._s3.bucket_exists(name):
                return None
            try:
                tags = self._s3.get_bucket_tags(name)
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    return None
                raise
            return dict(tags or {})

    def set_bucket_tags(self, name: str, tags: dict[str, str]) -> None:
        validate_bucket_name(name)
        bucket_tags = Tags.new_bucket_tags()
        bucket_tags.update(tags)
        with self._guard(f"tagging bucket {name}"):
            self._s3.set_bucket_tags(name, bucket_tags)

    def _quota(self, name: str) -> int:
        try:
            raw = self._admin.bucket_quota_get(name)
        except MinioAdminException as exc:
            if _admin_code(exc) == "XMinioAdminNoSuchQuotaConfiguration":
                return 0
            raise
        try:
            data = json.loads(raw or "null") or {}
        except ValueError:
            raise BackendUnavailable(
                BACKEND, f"unreadable quota of bucket {name} at {self.endpoint}") from None
        return int(data.get("size") or data.get("quota") or 0)

    def ensure_bucket(self, name: str, *, quota_bytes: int | None, versioning: bool) -> list[str]:
        validate_bucket_name(name)
        if quota_bytes is not None and (isinstance(quota_bytes, bool) or quota_bytes < 0):
            raise ValueError(f"quota_bytes must be a non-negative integer, got {quota_bytes!r}")
        changes: list[str] = []
        with self._guard(f"ensuring bucket {name}"):
            if not self._s3.bucket_exists(name):
                try:
                    self._s3.make_bucket(name)
                    changes.append(f"bucket {name} created")
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou":
                        raise
            status = self._s3.get_bucket_versioning(name).status
            if versioning and status != ENABLED:
                self._s3.set_bucket_versioning(name, VersioningConfig(ENABLED))
                changes.append(f"bucket {name} versioning enabled")
            elif not versioning and status == ENABLED:
                self._s3.set_bucket_versioning(name, VersioningConfig(SUSPENDED))
                changes.append(f"bucket {name} versioning suspended")
            want = quota_bytes or 0
            have = self._quota(name)
            if want != have:
                if want:
                    self._admin.bucket_quota_set(name, want)
                    changes.append(f"bucket {name} quota set to {want} bytes")
                else:
                    self._admin.bucket_quota_clear(name)
                    changes.append(f"bucket {name} quota removed")
        for change in changes:
            log.info("objectstorage: %s", change)
        return changes

    def bucket_quota(self, name: str) -> int:
        """The bucket's hard quota in bytes (0: none)."""
        validate_bucket_name(name)
        with self._guard(f"reading quota of bucket {name}"):
            return self._quota(name)

    def bucket_is_empty(self, name: str) -> bool:
        validate_bucket_name(name)
        with self._guard(f"listing bucket {name}"):
            for _ in self._s3.list_objects(name, recursive=True, include_version=True):
                return False
            return True

    def delete_bucket(self, name: str, *, purge: bool) -> bool:
        validate_bucket_name(name)
        with self._guard(f"deleting bucket {name}"):
            if not self._s3.bucket_exists(name):
                return False
            if purge:
                self._purge(name)
            else:
                for _ in self._s3.list_objects(name, recursive=True, include_version=True):
                    raise BucketNotEmpty(name)
            try:
                self._s3.remove_bucket(name)
            except S3Error as exc:
                if exc.code == "BucketNotEmpty":
                    raise BucketNotEmpty(name) from None
                if exc.code == "NoSuchBucket":
                    return False
                raise
        log.info("objectstorage: bucket %s deleted%s", name, " with its objects" if purge else "")
        return True

    def _purge(self, name: str) -> None:
        batch: list[DeleteObject] = []

        def flush() -> None:
            # remove_objects is lazy: iterating it performs the deletes.
            for err in self._s3.remove_objects(name, batch):
                raise BackendUnavailable(
                    BACKEND, f"deleting {err.name} from bucket {name} failed at {self.endpoint}: {err.code}")
            batch.clear()

        for obj in self._s3.list_objects(name, recursive=True, include_version=True):
            batch.append(DeleteObject(obj.object_name, obj.version_id))
            if len(batch) >= DELETE_BATCH:
                flush()
        if batch:
            flush()

    def list_buckets(self, prefix: str) -> list[str]:
        with self._guard("listing buckets"):
            return sorted(b.name for b in self._s3.list_buckets() if b.name.startswith(prefix))

    def archive_bucket(self, source: str, target: str, prefix: str) -> tuple[int, int]:
        """Copy the current version of every object of `source` to `target` under
        `prefix`, server-side; (objects, bytes) copied. Objects already there
        with the same ETag are skipped, so a retried archive costs only listings."""
        validate_bucket_name(source)
        validate_bucket_name(target)
        copied = size = 0
        with self._guard(f"archiving bucket {source} into {target}"):
            there = {o.object_name: o.etag for o in self._s3.list_objects(target, prefix=prefix, recursive=True)}
            for obj in self._s3.list_objects(source, recursive=True):
                key = prefix + obj.object_name
                if obj.is_dir or there.get(key) == obj.etag:
                    continue
                src = CopySource(source, obj.object_name)
                if (obj.size or 0) > MAX_SINGLE_COPY:
                    self._s3.compose_object(target, key, [ComposeSource(source, obj.object_name)])
                else:
                    self._s3.copy_object(target, key, src)
                copied += 1
                size += obj.size or 0
        log.info("objectstorage: archived %d object(s), %d bytes of bucket %s into %s/%s",
                 copied, size, source, target, prefix)
        return copied, size

    def ensure_backups_lifecycle(self, bucket: str, days: int, *, purged: bool = False,
                                 archive_days: int | None = None) -> list[str]:
        validate_bucket_name(bucket)
        wanted = backups_rule(days, purged=purged, archive_days=archive_days)
        with self._guard(f"setting lifecycle of bucket {bucket}"):
            current = self._s3.get_bucket_lifecycle(bucket)
            rules = list(current.rules) if current is not None else []
            if rule_is_current([_minio_rule_dict(r) for r in rules], wanted):
                return []
            # Rules the platform added under other IDs are kept as they are.
            others = [r for r in rules if r.rule_id != BACKUPS_RULE_ID]
            self._s3.set_bucket_lifecycle(bucket, LifecycleConfig([*others, _minio_rule(wanted)]))
        change = describe_backups_rule(wanted)
        log.info("objectstorage: bucket %s %s", bucket, change)
        return [change]

    # -- users --

    def _user_info(self, user: str) -> dict | None:
        try:
            return json.loads(self._admin.user_info(user))
        except MinioAdminException as exc:
            if _admin_code(exc) == "XMinioAdminNoSuchUser":
                return None
            raise

    def _policy_doc(self, policy_name: str) -> Any:
        try:
            return self._admin.policy_info(policy_name)
        except MinioAdminException as exc:
            if _admin_code(exc) == "XMinioAdminNoSuchPolicy":
                return None
            raise

    def _secret_works(self, creds: Credentials) -> bool:
        """Sign one request with `creds`: the server tells a wrong secret or an
        unknown key apart from a valid key lacking a permission."""
        probe = Minio(self._host, access_key=creds.access_key, secret_key=creds.secret_key,
                      secure=self._secure, region=self._region, http_client=self._http)
        try:
            probe.list_buckets()
        except S3Error as exc:
            if exc.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId"):
                return False
            if exc.code != "AccessDenied":
                raise
        return True

    def ensure_user(self, user: str, policy_name: str, buckets: list[str], *, enabled: bool,
                    current: Credentials | None, protected: tuple[str, ...] = (),
                    read_only: tuple[str, ...] = (), owner_uid: str = "",
                    adopt: bool = False) -> tuple[Credentials, list[str]]:
        """The user with exactly `buckets`, enabled or not, and its working keys.
        With `owner_uid`, a user of this name that is not marked for that UID
        raises NameConflict before anything changes (unless `adopt` and it is
        unmarked); the user is marked as it is created or updated."""
        document = user_policy(user, policy_name, buckets, protected, read_only, owner_uid)
        changes: list[str] = []
        with self._guard(f"ensuring user {user}"):
            existing = self._policy_doc(policy_name)
            info = self._user_info(user)
            if owner_uid:
                claim_user(user, info is not None or existing is not None, ownership.policy_owner(existing),
                           owner_uid, adopt)
            if existing is None or normalize_policy(existing) != normalize_policy(document):
                self._admin.policy_add(policy_name, policy=document)
                changes.append(f"policy {policy_name} {'created' if existing is None else 'updated'}")

            creds = current if current is not None and current.access_key == user else None
            if info is None:
                creds = Credentials(user, generate_secret())
                self._admin.user_add(user, creds.secret_key)
                changes.append(f"user {user} created")
                info = {"status": "enabled"}
            else:
                is_enabled = info.get("status") == "enabled"
                if enabled and not is_enabled:
                    self._admin.user_enable(user)
                    changes.append(f"user {user} enabled")
                    info["status"] = "enabled"
                # A disabled user cannot sign requests, so its secret cannot be
                # checked; it is checked again once the user is enabled.
                if creds is not None and info.get("status") == "enabled" and not self._secret_works(creds):
                    creds = None
                if creds is None:
                    creds = Credentials(user, generate_secret())
                    self._admin.user_add(user, creds.secret_key)   # sets the secret, enables the user
                    changes.append(f"user {user} credentials replaced")
                    info["status"] = "enabled"

            attached = {p for p in (info.get("policyName") or "").split(",") if p}
            if attached != {policy_name}:
                self._admin.policy_set(policy_name, user=user)
                changes.append(f"policy {policy_name} attached to user {user}")

            if not enabled and info.get("status") == "enabled":
                self._admin.user_disable(user)
                changes.append(f"user {user} disabled")
        for change in changes:
            log.info("objectstorage: %s", change)
        return creds, changes

    def user_owner(self, user: str, policy_name: str) -> tuple[bool, str]:
        """(whether the user or its policy exists, the UID its policy is marked with)."""
        validate_user_name(user)
        validate_user_name(policy_name, "policy name")
        with self._guard(f"reading user {user}"):
            doc = self._policy_doc(policy_name)
            return (doc is not None or self._user_info(user) is not None), ownership.policy_owner(doc)

    def disable_user(self, user: str, policy_name: str, owner_uid: str) -> list[str]:
        """Disable the idle user of a rotated pair if its policy is marked for
        `owner_uid` (an absent user stays absent). Kept, policy and all, for the
        next rotation, which sets a new secret and enables it."""
        validate_user_name(user)
        validate_user_name(policy_name, "policy name")
        with self._guard(f"disabling user {user}"):
            info = self._user_info(user)
            if info is None or ownership.policy_owner(self._policy_doc(policy_name)) != ownership.uid_hex(owner_uid):
                return []
            if info.get("status") != "enabled":
                return []
            self._admin.user_disable(user)
        log.info("objectstorage: user %s disabled", user)
        return [f"user {user} disabled"]

    def rotate(self, user: str, current: Credentials | None) -> Credentials:
        validate_user_name(user)
        with self._guard(f"rotating credentials of user {user}"):
            info = self._user_info(user)
            if info is None:
                raise BackendUnavailable(BACKEND, f"cannot rotate credentials of user {user} at "
                                                  f"{self.endpoint}: no such user")
            creds = Credentials(user, generate_secret())
            self._admin.user_add(user, creds.secret_key)
            if info.get("status") != "enabled":
                self._admin.user_disable(user)
        log.info("objectstorage: user %s credentials rotated", user)
        return creds

    def delete_user(self, user: str, policy_name: str) -> bool:
        validate_user_name(user)
        validate_user_name(policy_name, "policy name")
        deleted = False
        with self._guard(f"deleting user {user}"):
            if self._user_info(user) is not None:
                self._admin.user_remove(user)
                deleted = True
            if self._policy_doc(policy_name) is not None:
                self._admin.policy_remove(policy_name)
                deleted = True
        if deleted:
            log.info("objectstorage: user %s and policy %s deleted", user, policy_name)
        return deleted

    def ping(self) -> None:
        with self._guard("ping"):
            self._s3.list_buckets()


# --- S3 + IAM -------------------------------------------------------------------------

_NOT_FOUND = ("404", "NoSuchBucket", "NotFound")


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _policy_dict(value: Any) -> Any:
    """IAM returns policy documents URL-encoded; botocore usually decodes them."""
    if isinstance(value, str):
        return json.loads(unquote(value))
    return value


class S3IamStore:
    backend = "s3"
    supports_quota = False

    def __init__(self, *, region: str = "us-east-1", endpoint: str = "", access_key: str = "",
                 secret_key: str = "", iam_endpoint: str = "", s3_client: Any = None, iam_client: Any = None,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0):
        self.region = region or "us-east-1"
        self.endpoint = endpoint or f"s3.{self.region}.amazonaws.com"
        if s3_client is None or iam_client is None:
            session = boto3.session.Session(
                aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
                region_name=self.region)
            cfg = botocore.config.Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                         retries={"max_attempts": 3, "mode": "standard"})
            if s3_client is None:
                s3_client = session.client("s3", endpoint_url=endpoint or None, config=cfg)
            if iam_client is None:
                iam_client = session.client("iam", endpoint_url=iam_endpoint or None, config=cfg)
        self._s3 = s3_client
        self._iam = iam_client

    def __repr__(self) -> str:
        return f"S3IamStore({self.endpoint!r})"

    @property
    def iam_endpoint(self) -> str:
        return str(getattr(self._iam.meta, "endpoint_url", "") or "IAM")

    @contextmanager
    def _guard(self, action: str, iam: bool = False) -> Iterator[None]:
        where = self.iam_endpoint if iam else self.endpoint
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            raise BackendUnavailable(
                BACKEND, f"{action} failed at {where}: {err.get('Code', '?')}: "
                         f"{err.get('Message', '')}".rstrip()) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise BackendUnavailable(BACKEND, f"{action} failed at {where}: no credentials") from exc
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError, OSError) as exc:
            raise BackendUnavailable(
                BACKEND, f"{action} failed: cannot reach {where} ({exc.__class__.__name__})") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise BackendUnavailable(
                BACKEND, f"{action} failed at {where} ({exc.__class__.__name__})") from exc

    # -- buckets --

    def _exists(self, name: str) -> bool:
        try:
            self._s3.head_bucket(Bucket=name)
            return True
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise

    def bucket_exists(self, name: str) -> bool:
        validate_bucket_name(name)
        with self._guard(f"checking bucket {name}"):
            return self._exists(name)

    def bucket_tags(self, name: str) -> dict[str, str] | None:
        validate_bucket_name(name)
        with self._guard(f"reading tags of bucket {name}"):
            try:
                resp = self._s3.get_bucket_tagging(Bucket=name)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return None
                if _code(exc) == "NoSuchTagSet":
                    return {}
                raise
            return {t["Key"]: t["Value"] for t in resp.get("TagSet", [])}

    def set_bucket_tags(self, name: str, tags: dict[str, str]) -> None:
        validate_bucket_name(name)
        with self._guard(f"tagging bucket {name}"):
            self._s3.put_bucket_tagging(Bucket=name, Tagging={
                "TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})

    def ensure_bucket(self, name: str, *, quota_bytes: int | None, versioning: bool) -> list[str]:
        validate_bucket_name(name)
        changes: list[str] = []
        with self._guard(f"ensuring bucket {name}"):
            if not self._exists(name):
                kwargs: dict = {"Bucket": name}
                if self.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
                try:
                    self._s3.create_bucket(**kwargs)
                    changes.append(f"bucket {name} created")
                except botocore.exceptions.ClientError as exc:
                    if _code(exc) != "BucketAlreadyOwnedByYou":
                        raise
            status = self._s3.get_bucket_versioning(Bucket=name).get("Status")
            if versioning and status != "Enabled":
                self._s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
                changes.append(f"bucket {name} versioning enabled")
            elif not versioning and status == "Enabled":
                self._s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
                changes.append(f"bucket {name} versioning suspended")
        if quota_bytes:
            log.debug("objectstorage: %s has no bucket quotas; %s gets none", self.endpoint, name)
        for change in changes:
            log.info("objectstorage: %s", change)
        return changes

    def _versions(self, name: str, max_keys: int = 1000) -> Iterator[dict]:
        paginator = self._s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=name, PaginationConfig={"PageSize": max_keys}):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                yield {"Key": item["Key"], "VersionId": item.get("VersionId", "null")}

    def bucket_is_empty(self, name: str) -> bool:
        validate_bucket_name(name)
        with self._guard(f"listing bucket {name}"):
            page = self._s3.list_object_versions(Bucket=name, MaxKeys=1)
            return not (page.get("Versions") or page.get("DeleteMarkers"))

    def delete_bucket(self, name: str, *, purge: bool) -> bool:
        validate_bucket_name(name)
        with self._guard(f"deleting bucket {name}"):
            if not self._exists(name):
                return False
            if purge:
                batch: list[dict] = []
                for item in self._versions(name):
                    batch.append(item)
                    if len(batch) >= DELETE_BATCH:
                        self._delete_batch(name, batch)
                if batch:
                    self._delete_batch(name, batch)
            else:
                page = self._s3.list_object_versions(Bucket=name, MaxKeys=1)
                if page.get("Versions") or page.get("DeleteMarkers"):
                    raise BucketNotEmpty(name)
            try:
                self._s3.delete_bucket(Bucket=name)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) == "BucketNotEmpty":
                    raise BucketNotEmpty(name) from None
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
        log.info("objectstorage: bucket %s deleted%s", name, " with its objects" if purge else "")
        return True

    def _delete_batch(self, name: str, batch: list[dict]) -> None:
        resp = self._s3.delete_objects(Bucket=name, Delete={"Objects": list(batch), "Quiet": True})
        batch.clear()
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise BackendUnavailable(BACKEND, f"deleting {first.get('Key')} from bucket {name} failed at "
                                              f"{self.endpoint}: {first.get('Code')}")

    def list_buckets(self, prefix: str) -> list[str]:
        with self._guard("listing buckets"):
            names = [b["Name"] for b in self._s3.list_buckets().get("Buckets", [])]
        return sorted(n for n in names if n.startswith(prefix))

    def archive_bucket(self, source: str, target: str, prefix: str) -> tuple[int, int]:
        """As MinioStore.archive_bucket; boto3's managed copy goes multipart for large objects."""
        validate_bucket_name(source)
        validate_bucket_name(target)
        copied = size = 0
        with self._guard(f"archiving bucket {source} into {target}"):
            there = {}
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=target, Prefix=prefix):
                there.update({o["Key"]: o.get("ETag") for o in page.get("Contents", [])})
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=source):
                for obj in page.get("Contents", []):
                    key = prefix + obj["Key"]
                    if there.get(key) == obj.get("ETag"):
                        continue
                    self._s3.copy({"Bucket": source, "Key": obj["Key"]}, target, key)
                    copied += 1
                    size += int(obj.get("Size") or 0)
        log.info("objectstorage: archived %d object(s), %d bytes of bucket %s into %s/%s",
                 copied, size, source, target, prefix)
        return copied, size

    def ensure_backups_lifecycle(self, bucket: str, days: int, *, purged: bool = False,
                                 archive_days: int | None = None) -> list[str]:
        validate_bucket_name(bucket)
        wanted = backups_rule(days, purged=purged, archive_days=archive_days)
        with self._guard(f"setting lifecycle of bucket {bucket}"):
            try:
                rules = self._s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
            except botocore.exceptions.ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
            if rule_is_current(rules, wanted):
                return []
            others = [r for r in rules if r.get("ID") != BACKUPS_RULE_ID]
            self._s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                        LifecycleConfiguration={"Rules": [*others, wanted]})
        change = describe_backups_rule(wanted)
        log.info("objectstorage: bucket %s %s", bucket, change)
        return [change]

    # -- users --

    def _user(self, user: str) -> dict | None:
        try:
            return self._iam.get_user(UserName=user)["User"]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise

    def _user_exists(self, user: str) -> bool:
        return self._user(user) is not None

    def user_owner(self, user: str, policy_name: str) -> tuple[bool, str]:
        """(whether the IAM user exists, the UID its tag records)."""
        validate_user_name(user)
        with self._guard(f"reading user {user}", iam=True):
            found = self._user(user)
        return found is not None, _tag_owner(found)

    def _keys(self, user: str) -> list[dict]:
        keys: list[dict] = []
        for page in self._iam.get_paginator("list_access_keys").paginate(UserName=user):
            keys.extend(page.get("AccessKeyMetadata", []))
        return keys

    def ensure_user(self, user: str, policy_name: str, buckets: list[str], *, enabled: bool,
                    current: Credentials | None, protected: tuple[str, ...] = (),
                    read_only: tuple[str, ...] = (), owner_uid: str = "",
                    adopt: bool = False) -> tuple[Credentials, list[str]]:
        """The user with exactly `buckets`, enabled or not, and its working keys.
        With `owner_uid`, a user of this name that is not marked for that UID
        raises NameConflict before anything changes (unless `adopt` and it is
        unmarked); the user is marked as it is created or updated."""
        document = user_policy(user, policy_name, buckets, protected, read_only, owner_uid)
        changes: list[str] = []
        with self._guard(f"ensuring user {user}", iam=True):
            found = self._user(user)
            if owner_uid:
                claim_user(user, found is not None, _tag_owner(found), owner_uid, adopt)
            if found is None:
                # Tagged as it is created: no window in which it exists unmarked.
                tags = [{"Key": ownership.TAG_UID, "Value": owner_uid}] if owner_uid else []
                self._iam.create_user(UserName=user, **({"Tags": tags} if tags else {}))
                changes.append(f"user {user} created")
                existing = None
            else:
                try:
                    existing = _policy_dict(self._iam.get_user_policy(
                        UserName=user, PolicyName=policy_name)["PolicyDocument"])
                except botocore.exceptions.ClientError as exc:
                    if _code(exc) != "NoSuchEntity":
                        raise
                    existing = None
            if existing is None or normalize_policy(existing) != normalize_policy(document):
                self._iam.put_user_policy(UserName=user, PolicyName=policy_name,
                                          PolicyDocument=json.dumps(document))
                changes.append(f"policy {policy_name} {'attached to' if existing is None else 'updated for'} "
                               f"user {user}")

            keys = self._keys(user)
            want_status = "Active" if enabled else "Inactive"
            creds = None
            if current is not None and any(k["AccessKeyId"] == current.access_key for k in keys):
                creds = current
            for key in keys:
                if creds is None or key["AccessKeyId"] != creds.access_key:
                    self._iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
                    changes.append(f"access key {key['AccessKeyId']} of user {user} deleted")
                elif key.get("Status") != want_status:
                    self._iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"],
                                                Status=want_status)
                    changes.append(f"access key {key['AccessKeyId']} of user {user} set {want_status}")
            if creds is None:
                creds = self._create_key(user, want_status)
                changes.append(f"access key {creds.access_key} of user {user} created")
        for change in changes:
            log.info("objectstorage: %s", change)
        return creds, changes

    def _create_key(self, user: str, status: str) -> Credentials:
        key = self._iam.create_access_key(UserName=user)["AccessKey"]
        creds = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        if status != "Active":
            self._iam.update_access_key(UserName=user, AccessKeyId=creds.access_key, Status=status)
        return creds

    def disable_user(self, user: str, policy_name: str, owner_uid: str) -> list[str]:
        """Deactivate the access keys of the idle user of a rotated pair, if it is
        tagged for `owner_uid`."""
        validate_user_name(user)
        validate_user_name(policy_name, "policy name")
        changes = []
        with self._guard(f"disabling user {user}", iam=True):
            found = self._user(user)
            if found is None or _tag_owner(found) != ownership.uid_hex(owner_uid):
                return []
            for key in self._keys(user):
                if key.get("Status") != "Inactive":
                    self._iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
                    changes.append(f"access key {key['AccessKeyId']} of user {user} set Inactive")
        for change in changes:
            log.info("objectstorage: %s", change)
        return changes

    def rotate(self, user: str, current: Credentials | None) -> Credentials:
        validate_user_name(user)
        with self._guard(f"rotating credentials of user {user}", iam=True):
            keys = self._keys(user)
            status = "Active"
            if keys and all(k.get("Status") == "Inactive" for k in keys):
                status = "Inactive"
            # IAM allows two keys per user: drop all but the current one first,
            # then the current one once its replacement exists.
            keep = current.access_key if current is not None else None
            for key in keys:
                if key["AccessKeyId"] != keep:
                    self._iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            creds = self._create_key(user, status)
            if keep and any(k["AccessKeyId"] == keep for k in keys):
                self._iam.delete_access_key(UserName=user, AccessKeyId=keep)
        log.info("objectstorage: user %s credentials rotated", user)
        return creds

    def delete_user(self, user: str, policy_name: str) -> bool:
        validate_user_name(user)
        validate_user_name(policy_name, "policy name")
        with self._guard(f"deleting user {user}", iam=True):
            if not self._user_exists(user):
                return False
            for key in self._keys(user):
                self._iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            for page in self._iam.get_paginator("list_user_policies").paginate(UserName=user):
                for name in page.get("PolicyNames", []):
                    self._iam.delete_user_policy(UserName=user, PolicyName=name)
            for page in self._iam.get_paginator("list_attached_user_policies").paginate(UserName=user):
                for pol in page.get("AttachedPolicies", []):
                    self._iam.detach_user_policy(UserName=user, PolicyArn=pol["PolicyArn"])
            self._iam.delete_user(UserName=user)
        log.info("objectstorage: user %s deleted", user)
        return True

    def ping(self) -> None:
        with self._guard("ping"):
            self._s3.list_buckets()


def make_objectstore(cfg: config.ObjectStorageConfig) -> ObjectStore:
    if cfg.backend == "minio":
        if not cfg.endpoint:
            raise ConfigError("objectStorage.endpoint", "is required for the minio backend")
        return MinioStore(cfg.endpoint, cfg.access_key, cfg.secret_key, cfg.region)
    if cfg.backend == "s3":
        return S3IamStore(region=cfg.region, endpoint=cfg.endpoint, access_key=cfg.access_key,
                          secret_key=cfg.secret_key)
    raise ConfigError("objectStorage.backend", f"must be minio or s3, got {cfg.backend!r}")


__all__ = [
    "BACKEND", "BucketNotEmpty", "Credentials", "InvalidBucketName", "MinioStore", "ObjectStore",
    "S3IamStore", "make_objectstore", "normalize_policy", "tenant_policy", "validate_bucket_name",
]
