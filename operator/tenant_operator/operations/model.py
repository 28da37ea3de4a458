"""PURE: a TenantBackup or TenantRestore parsed, and checked against the
Tenant whose namespace it is in. Anything refused names the field."""

from __future__ import annotations

from dataclasses import dataclass

from tenant_operator import backup, naming
from tenant_operator.spec import Tenant

LATEST = "latest"


class Refused(Exception):
    """The request cannot run; nothing was touched. `field` is the spec field at fault."""

    def __init__(self, field: str, reason: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.reason, self.message = field, reason, message


@dataclass(frozen=True)
class BackupRequest:
    name: str
    namespace: str
    uid: str
    services: tuple[str, ...]


@dataclass(frozen=True)
class RestoreRequest:
    name: str
    namespace: str
    uid: str
    service: str
    key: str              # the full dump key; "" for the latest complete backup
    new_database: str     # "" restores into the service's own database


def _meta(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("name", ""), meta.get("namespace", ""), meta.get("uid", "")


def usable(t: Tenant) -> None:
    """The Tenant has backups to take or restore at all."""
    if not t.databases:
        raise Refused("metadata.namespace", "NoDatabases", f"Tenant {t.name} has no databases (spec.databases)")
    if not t.backup.enabled:
        raise Refused("metadata.namespace", "BackupsDisabled",
                      f"Tenant {t.name} has spec.backup.enabled false: it has no backups bucket")
    if t.suspended:
        raise Refused("metadata.namespace", "TenantSuspended",
                      f"Tenant {t.name} is suspended: its database users are locked")


def parse_backup(obj: dict, t: Tenant) -> BackupRequest:
    usable(t)
    spec = obj.get("spec") or {}
    services = spec.get("services") or []
    if not isinstance(services, list):
        raise Refused("spec.services", "InvalidSpec", "must be a list of service names")
    for i, service in enumerate(services):
        if service not in t.databases:
            raise Refused(f"spec.services[{i}]", "UnknownService",
                          f"{service!r} is not a database of Tenant {t.name} ({', '.join(t.databases)})")
    chosen = tuple(dict.fromkeys(services)) if services else tuple(t.databases)
    return BackupRequest(*_meta(obj), services=chosen)


def backup_key(service: str, text: str) -> str:
    """`text` as the full dump key of `service` ("" for latest); Refused when it is neither."""
    if text == LATEST:
        return ""
    key = f"{backup.prefix(service)}{text}{backup.DUMP_SUFFIX}" if backup.parse_timestamp(text) else text
    parsed = backup.parse_key(service, key)
    if parsed is None or parsed[1]:
        raise Refused("spec.backup", "InvalidBackupKey",
                      f"{text!r} is not a backup of {service}: expected \"latest\", a timestamp YYYYMMDDTHHMMSSZ "
                      f"or a key {backup.prefix(service)}YYYYMMDDTHHMMSSZ{backup.DUMP_SUFFIX}")
    return key


def reserved_databases(t: Tenant) -> set[str]:
    return {naming.mysql_database(t.name, s) for s in t.databases} | {
        naming.mysql_drill_database(t.name, s) for s in t.databases}


def check_new_database(name: str, t: Tenant) -> str:
    """A database a restore may create for `t`: the tenant's prefix, a plain
    identifier, none of the names the operator derives for its services."""
    field = "spec.target.newDatabase"
    prefix = naming.tenant_id(t.name) + "_"
    if not naming.SQL_IDENTIFIER.fullmatch(name) or len(name) + name.count("_") > naming.MYSQL_DB_MAX:
        raise Refused(field, "InvalidDatabaseName",
                      f"{name!r} is not a database name (letters, digits and '_'; at most 64 characters "
                      "with each '_' counted twice)")
    if not name.startswith(prefix) or len(name) == len(prefix):
        raise Refused(field, "InvalidDatabaseName", f"{name!r} must start with the tenant's prefix {prefix!r}")
    if name in reserved_databases(t) or name.endswith(("_db", "_drill")):
        raise Refused(field, "InvalidDatabaseName",
                      f"{name!r} is (or could be) a service's own or drill database; names ending in _db or "
                      "_drill are reserved")
    return name


def parse_restore(obj: dict, t: Tenant) -> RestoreRequest:
    usable(t)
    spec = obj.get("spec") or {}
    service = spec.get("service") or ""
    if not service:
        if len(t.databases) != 1:
            raise Refused("spec.service", "InvalidSpec",
                          f"Tenant {t.name} has {len(t.databases)} databases: name one ({', '.join(t.databases)})")
        service = t.databases[0]
    elif service not in t.databases:
        raise Refused("spec.service", "UnknownService",
                      f"{service!r} is not a database of Tenant {t.name} ({', '.join(t.databases)})")
    text = spec.get("backup")
    if not isinstance(text, str) or not text:
        raise Refused("spec.backup", "InvalidBackupKey", "a backup key, its timestamp, or \"latest\" is required")
    key = backup_key(service, text)
    target = spec.get("target") or {}
    new_db = target.get("newDatabase") or ""
    if new_db:
        check_new_database(new_db, t)
    return RestoreRequest(*_meta(obj), service=service, key=key, new_database=new_db)
