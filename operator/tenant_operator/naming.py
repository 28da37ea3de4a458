"""Every derived name, in one place.

Each function is deterministic in its inputs; names that would exceed a
system's limit are shortened by keeping a readable head and appending a hash
of the full name, so two long tenants never collide and the same tenant always
gets the same name.
"""

from __future__ import annotations

import hashlib
import re

LABEL_TENANT = "tenancy.dev/tenant"
LABEL_TIER = "tenancy.dev/tier"
LABEL_COMPONENT = "tenancy.dev/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_OPERATION = "tenancy.dev/operation"      # backup | restore | drill, on the Jobs the operator follows
LABEL_REQUEST = "tenancy.dev/request"          # the TenantBackup / TenantRestore a Job runs
LABEL_SERVICE = "tenancy.dev/backup-service"
MANAGED_BY = "tenant-operator"
ANNOTATION_HASH = "tenancy.dev/applied-hash"
ANNOTATION_ROTATE = "tenancy.dev/rotate-credentials"
ANNOTATION_PURGE_NOW = "tenancy.dev/purge-now"
FINALIZER = "tenancy.dev/finalizer"

# Limits of the systems the names reach.
K8S_NAME_MAX = 63           # DNS label (namespaces, most object names)
CRONJOB_NAME_MAX = 52       # CronJob names leave room for the Job suffix
JOB_NAME_MAX = 63            # a Job's name is its pods' job-name label value
MYSQL_DB_MAX = 64
MYSQL_USER_MAX = 32
BUCKET_MAX = 63

TENANT_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")   # at most 40 chars
# S3 reserves bucket names starting with these; tenant names start bucket names.
RESERVED_TENANT_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
# Service and bucket names carry no separator, so `<tenant>_<service>` and
# `<tenant>-<bucket>` can be split back unambiguously: tenant `a-b` + service `c`
# and tenant `a` + service `b-c` would otherwise both give `a_b_c_db`.
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9]{0,23}$")                # at most 24 chars
QUEUE_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,22}[a-z0-9])?$")      # queues are `<tenant>.<name>`: no ambiguity
SQL_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def shorten(name: str, limit: int, sep: str = "-", keep_suffix: str = "") -> str:
    """Return `name` if it fits in `limit`, else head + sep + hash (+ keep_suffix).

    `keep_suffix` (e.g. '_db') stays at the end so shortened names remain recognisable.

    Two shortened names of different inputs differ unless their hashes collide: the
    hash has a fixed width and sits at a fixed distance from the end, so equal outputs
    mean equal hashes (8 hex digits here: 32 bits, about 1 in 4e9 for a given pair).
    Whether a shortened name can equal some *unshortened* name is up to the caller's
    naming scheme; see `_mysql_hash` for the MySQL names.
    """
    return _shorten(name, limit, sep, keep_suffix, _digest(name))


def _shorten(name: str, limit: int, sep: str, keep_suffix: str, digest: str) -> str:
    if len(name) <= limit:
        return name
    base = name[: len(name) - len(keep_suffix)] if keep_suffix and name.endswith(keep_suffix) else name
    tail = sep + digest + keep_suffix
    head = base[: limit - len(tail)].rstrip("-_")
    return head + tail


def _mysql_hash(text: str) -> str:
    """A decimal digit then 8 hex digits (about 35 bits) of the SHA-256 of `text`.

    Why a leading digit: a shortened MySQL name is `<head>_<hash>_user` (or `_db`), which
    has the very shape of the unshortened `<tenant_id>_<service>_user`. With a plain hex
    hash, a head that is itself a tenant id plus a hash starting with a-f (a valid service
    name) gave exactly the name of another, real (tenant, service) pair: two tenants
    sharing one database or user. The segment before the suffix is the service in every
    unshortened name (services have no '_'), and a service starts with a letter; a hash
    segment that starts with a digit is therefore never a service, and a shortened name
    never equals an unshortened one, whatever the hash. Fixed width keeps shortened names
    apart from each other unless the hash itself collides.
    """
    hexdigest = hashlib.sha256(text.encode()).hexdigest()
    return str(int(hexdigest[8:10], 16) % 10) + hexdigest[:8]


def tenant_id(tenant: str) -> str:
    """The SQL-safe form of a tenant name (the platform convention: '-' -> '_')."""
    return tenant.replace("-", "_")


def namespace(tenant: str, prefix: str = "tenant-") -> str:
    return shorten(prefix + tenant, K8S_NAME_MAX)


# --- MySQL -----------------------------------------------------------------

def mysql_database(tenant: str, service: str) -> str:
    """Within 64 characters also once every '_' is escaped as '\\_' for GRANT
    (MariaDB checks the escaped form against the limit)."""
    return _mysql_schema(tenant, service, "_db")


def mysql_drill_database(tenant: str, service: str) -> str:
    """The scratch database a recovery drill restores `service`'s latest backup
    into: `<tenant_id>_<service>_drill`, within the same limits as the database."""
    return _mysql_schema(tenant, service, "_drill")


def _mysql_schema(tenant: str, service: str, suffix: str) -> str:
    full = f"{tenant_id(tenant)}_{service.replace('-', '_')}{suffix}"
    limit = MYSQL_DB_MAX
    digest = _mysql_hash(full)
    name = _shorten(full, limit, "_", suffix, digest)
    while len(name) + name.count("_") > MYSQL_DB_MAX:
        limit -= 1
        name = _shorten(full, limit, "_", suffix, digest)
    return name


def drill_cronjob(service: str) -> str:
    return shorten(f"drill-{service}-db", CRONJOB_NAME_MAX)


def operation_job(request: str, service: str = "") -> str:
    """The Job of a TenantBackup (one per service) or TenantRestore (`service` empty)."""
    return shorten(f"{request}-{service}" if service else request, JOB_NAME_MAX)


def mysql_user(tenant: str, service: str) -> str:
    full = f"{tenant_id(tenant)}_{service.replace('-', '_')}_user"
    return _shorten(full, MYSQL_USER_MAX, "_", "_user", _mysql_hash(full))


def mysql_user_alternate(user: str) -> str:
    """The second account of a MySQL user, used alternately with it so a rotation
    never cuts off a running client: `<user>_b`, shortened like `mysql_user`.
    It never equals a primary user (those end in `_user`, this in `_b`), and a
    shortened one never equals an unshortened one (the hash segment starts with
    a digit, a user's `user` segment with a letter)."""
    full = f"{user}_b"
    return _shorten(full, MYSQL_USER_MAX, "_", "_b", _mysql_hash(full))


def db_secret(service: str) -> str:
    return f"{service}-db-credentials"


def backup_cronjob(service: str) -> str:
    return shorten(f"backup-{service}-db", CRONJOB_NAME_MAX)


# --- object storage ----------------------------------------------------------

def bucket(tenant: str, name: str) -> str:
    # The plain hex hash is safe here, unlike for MySQL: a bucket is shortened only past
    # 63 chars, which leaves a 54-char head - longer than any tenant (40) - before the
    # hash, so `<head>-<hash>` can never read as `<tenant>-<bucket>`. Keeping the old
    # form also keeps existing buckets' names (a bucket cannot be renamed).
    return shorten(f"{tenant}-{name}", BUCKET_MAX)


def backups_bucket(tenant: str, uid: str = "") -> str:
    """`<tenant>-backups`; with `uid`, the name a re-created Tenant of the same name
    uses while its predecessor's archive still holds the plain one (the UID's
    first 8 hex digits appended, no '-', so it stays this tenant's bucket name)."""
    return bucket(tenant, "backups" + uid.replace("-", "")[:8])


def storage_user(tenant: str) -> str:
    """The tenant's object-storage access key / IAM user name."""
    return shorten(f"tenant-{tenant}", 64)


def storage_policy(tenant: str) -> str:
    return shorten(f"tenant-{tenant}", 64)


def backup_user(tenant: str) -> str:
    """The object-storage user of the tenant's backup Jobs: it writes backups,
    the application's user only reads them. `backup-` never starts a storage
    user's name (`tenant-`), so the two cannot meet."""
    return shorten(f"backup-{tenant}", 64)


def backup_policy(tenant: str) -> str:
    return shorten(f"backup-{tenant}", 64)


def storage_alternate(name: str) -> str:
    """The second storage user (or its policy) of `name`, used alternately with it
    for rotation: `<name>_b`. Tenant names have no '_', so it is never another
    tenant's user or policy."""
    return shorten(f"{name}_b", 64, "_", "_b")


# Where a bucket's contents are archived in the tenant's backups bucket: archive/<bucket>/<key>.
ARCHIVE_PREFIX = "archive/"

# Secret names, not passwords.
OBJECTSTORE_SECRET = "objectstorage-credentials"  # nosec B105
BACKUP_SECRET = "backup-credentials"  # nosec B105


def bucket_env_key(name: str) -> str:
    """S3_BUCKET_<NAME> key for a bucket entry ('sav-archive' -> S3_BUCKET_SAV_ARCHIVE)."""
    return "S3_BUCKET_" + name.upper().replace("-", "_")


# --- RabbitMQ ------------------------------------------------------------------

def vhost(tenant: str) -> str:
    return tenant


def rabbitmq_user(tenant: str) -> str:
    return tenant


def rabbitmq_user_alternate(tenant: str) -> str:
    """The second RabbitMQ user of the tenant, used alternately with the first for
    rotation: `<tenant>_b` (tenant names have no '_': never another tenant's user)."""
    return f"{rabbitmq_user(tenant)}_b"


def events_exchange(tenant: str) -> str:
    return f"{tenant}.events"


def queue(tenant: str, name: str) -> str:
    return f"{tenant}.{name}"


RABBITMQ_SECRET = "rabbitmq-credentials"  # nosec B105


# --- Kubernetes objects --------------------------------------------------------

def tls_secret(tenant: str) -> str:
    return shorten(f"{tenant}-tls", K8S_NAME_MAX)


INGRESS = "tenant-ingress"
ADMIN_ROLE = "tenant-admin"
RESOURCE_QUOTA = "tenant-quota"
LIMIT_RANGE = "tenant-limits"
BACKUP_SERVICE_ACCOUNT = "tenant-backup"


def tenant_labels(tenant: str, component: str) -> dict[str, str]:
    return {LABEL_TENANT: tenant, LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: component}


def quote_sql_identifier(name: str) -> str:
    """Backtick-quote a validated identifier. Raises ValueError for anything outside
    the strict pattern, so a crafted name can never reach SQL."""
    if not SQL_IDENTIFIER.fullmatch(name):
        raise ValueError(f"refusing unsafe SQL identifier {name!r}")
    return f"`{name}`"
