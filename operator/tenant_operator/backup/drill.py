"""A recovery drill: restore the latest backup of a service into its scratch
database, proving the dump matches its manifest and loads, then empty the
scratch database again. The scratch database is created by the operator and
granted to the service's user, whose database-level rights cover dropping
and creating it again: that is how it is emptied, before and after."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenant_operator import naming
from tenant_operator.backup import BackupError, SettingsError
from tenant_operator.backup.dump import DbSettings
from tenant_operator.backup.restore import complete_backups, restore
from tenant_operator.backup.store import BackupStore

log = logging.getLogger(__name__)


class NoBackupError(BackupError):
    """Nothing to drill: the service has no complete backup yet."""

    exit_code = 4


def _session(db: DbSettings):
    import pymysql

    from tenant_operator.backends.mysql.client import connect
    try:
        return connect(host=db.host, port=db.port, user=db.user, password=db.password, connect_timeout=10,
                       read_timeout=300, program_name="tenant-operator-drill")
    except pymysql.err.MySQLError as exc:
        text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
        raise BackupError(f"cannot connect to {db.where} as {db.user}: {text.replace(db.password, '***')}") from None


def reset(db: DbSettings, database: str) -> int:
    """Drop and create `database` again (empty); returns how many tables it had."""
    import pymysql
    quoted = naming.quote_sql_identifier(database)
    conn = _session(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))
            tables = int(cur.fetchone()[0])
            cur.execute(f"DROP DATABASE IF EXISTS {quoted}")
            cur.execute(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")
        return tables
    except pymysql.err.MySQLError as exc:
        raise BackupError(f"cannot empty the scratch database {database}: {exc.args[-1]}") from None
    finally:
        conn.close()


def run_drill(db: DbSettings, store: BackupStore, service: str, scratch: str, *, tool: str = "",
              restore_fn: Callable[..., dict] = restore) -> dict:
    """Restore the latest backup of `service` into `scratch`, then empty it. Raises
    NoBackupError, IntegrityError (the dump does not match its manifest) or BackupError."""
    if not naming.SQL_IDENTIFIER.fullmatch(scratch) or scratch == db.database:
        raise SettingsError(f"{scratch!r} cannot be a drill's scratch database")
    found = complete_backups(store, service)
    if not found:
        raise NoBackupError(f"no complete backup of {service} under {store.where} to drill")
    key = found[0]
    reset(db, scratch)
    try:
        summary = restore_fn(db, store, key, into_database=scratch, tool=tool)
        summary["tables"] = reset(db, scratch)
    except BaseException:
        try:
            reset(db, scratch)
        except BackupError as exc:   # the drill's own failure is the one to report
            log.warning("drill %s: %s", service, exc)
        raise
    if summary["tables"] == 0:
        raise BackupError(f"{key} restored into {scratch} without creating a single table")
    log.info("drill %s: %s verified and restored (%d tables), scratch database emptied", service, key,
             summary["tables"])
    return {**summary, "drill": "passed"}
