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
MANAGED_BY = "tenant-operator"
ANNOTATION_HASH = "tenancy.dev/applied-hash"
ANNOTATION_ROTATE = "tenancy.dev/rotate-credentials"
ANNOTATION_PURGE_NOW = "tenancy.dev/purge-now"
FINALIZER = "tenancy.dev/finalizer"

# Limits of the systems the names reach.
K8S_NAME_MAX = 63           # DNS label (namespaces, most object names)
CRONJOB_NAME_MAX = 52       # CronJob names leave room for the Job suffix
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
    """
    if len(name) <= limit:
        return name
    base = name[: len(name) - len(keep_suffix)] if keep_suffix and name.endswith(keep_suffix) else name
    tail = sep + _digest(name) + keep_suffix
    head = base[: limit - len(tail)].rstrip("-_")
    return head + tail


def tenant_id(tenant: str) -> str:
    """The SQL-safe form of a tenant name (the platform convention: '-' -> '_')."""
    return tenant.replace("-", "_")


def namespace(tenant: str, prefix: str = "tenant-") -> str:
    return shorten(prefix + tenant, K8S_NAME_MAX)


# --- MySQL -----------------------------------------------------------------

def mysql_database(tenant: str, service: str) -> str:
    """Within 64 characters also once every '_' is escaped as '\\_' for GRANT
    (MariaDB checks the escaped form against the limit)."""
    full = f"{tenant_id(tenant)}_{service.replace('-', '_')}_db"
    limit = MYSQL_DB_MAX
    name = shorten(full, limit, "_", "_db")
    while len(name) + name.count("_") > MYSQL_DB_MAX:
        limit -= 1
        name = shorten(full, limit, "_", "_db")
    return name


def mysql_user(tenant: str, service: str) -> str:
    return shorten(f"{tenant_id(tenant)}_{service.replace('-', '_')}_user", MYSQL_USER_MAX, "_", "_user")


def db_secret(service: str) -> str:
    return f"{service}-db-credentials"


def backup_cronjob(service: str) -> str:
    return shorten(f"backup-{service}-db", CRONJOB_NAME_MAX)


# --- object storage ----------------------------------------------------------

def bucket(tenant: str, name: str) -> str:
    return shorten(f"{tenant}-{name}", BUCKET_MAX)


def backups_bucket(tenant: str) -> str:
    return bucket(tenant, "backups")


def storage_user(tenant: str) -> str:
    """The tenant's object-storage access key / IAM user name."""
    return shorten(f"tenant-{tenant}", 64)


def storage_policy(tenant: str) -> str:
    return shorten(f"tenant-{tenant}", 64)


OBJECTSTORE_SECRET = "objectstorage-credentials"


def bucket_env_key(name: str) -> str:
    """S3_BUCKET_<NAME> key for a bucket entry ('sav-archive' -> S3_BUCKET_SAV_ARCHIVE)."""
    return "S3_BUCKET_" + name.upper().replace("-", "_")


# --- RabbitMQ ------------------------------------------------------------------

def vhost(tenant: str) -> str:
    return tenant


def rabbitmq_user(tenant: str) -> str:
    return tenant


def events_exchange(tenant: str) -> str:
    return f"{tenant}.events"


def queue(tenant: str, name: str) -> str:
    return f"{tenant}.{name}"


RABBITMQ_SECRET = "rabbitmq-credentials"


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
