"""MySQL / MariaDB backend: one database and one user per tenant service.

Targets MariaDB 10.11 and keeps to syntax MySQL 8 also accepts. Every
identifier goes through naming.quote_sql_identifier; every string value
(passwords, host parts, LIKE patterns) is a driver parameter, never formatted
into the SQL text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.connections
import pymysql.converters
import pymysql.cursors

from tenant_operator import config, naming, ownership
from tenant_operator.errors import BackendUnavailable
from tenant_operator.ownership import NameConflict

log = logging.getLogger(__name__)

# Client errors meaning the connection itself is gone (server restart, idle
# timeout, killed session): the call is retried once on a fresh connection.
_DISCONNECTED = {2006, 2013, 2055, 1927, 4031}
_NO_SUCH_THREAD = 1094
_SYNTAX_ERROR = 1064


class _SharedTlsConnection(pymysql.connections.Connection):
    """pymysql's default TLS mode (PREFERRED: TLS when the server offers it)
    with one client context per process. pymysql builds a new context for every
    connection, and loading the CA store costs tens of milliseconds of CPU
    under the GIL: it was the largest single cost of final backups."""

    _preferred: ssl.SSLContext | None = None
    _guard = threading.Lock()

    def _create_ssl_ctx(self, sslp):
        if sslp:          # explicit TLS settings: pymysql's own handling
            return super()._create_ssl_ctx(sslp)
        with _SharedTlsConnection._guard:
            if _SharedTlsConnection._preferred is None:
                _SharedTlsConnection._preferred = super()._create_ssl_ctx(sslp)
            return _SharedTlsConnection._preferred


def connect(**kwargs) -> pymysql.connections.Connection:
    """`pymysql.connect` with the shared TLS context."""
    return _SharedTlsConnection(**kwargs)


def native_password_hash(password: str) -> str:
    """The mysql_native_password hash: '*' + upper hex SHA1(SHA1(password))."""
    # mysql_native_password's own stored format, compared locally: not a hash we choose.
    inner = hashlib.sha1(password.encode("utf-8")).digest()  # nosec B324
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # nosec B324


def _grant_database(database: str) -> str:
    """The quoted database name for GRANT. '_' and '%' are wildcards in a GRANT's
    database part, so `a_b_db` would also cover `aXbXdb`; escaping them keeps a
    tenant's grant on its own database only."""
    return naming.quote_sql_identifier(database).replace("_", "\\_")


def _user_name(user: str) -> str:
    if len(user) > naming.MYSQL_USER_MAX:
        raise ValueError(f"MySQL user name {user!r} is longer than {naming.MYSQL_USER_MAX} characters")
    return naming.quote_sql_identifier(user)


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise ValueError("a MySQL password must be a non-empty string")


def _scrub(message: str, secrets: tuple[str, ...]) -> str:
    # A syntax error echoes the statement after "near", and the statement may
    # carry a password literal: drop that part, then mask anything left over.
    if " near '" in message:
        message = message.split(" near '", 1)[0]
    for secret in secrets:
        if secret:
            for form in (secret, pymysql.converters.escape_string(secret)):
                message = message.replace(form, "***")
    return message


# The operator's bookkeeping: which database and user it created for which
# Tenant UID. Tenant grants are on their own (escaped) database names only,
# so no tenant account can reach this schema.
# Statements on it are literals: nothing is interpolated into them.
OWNERSHIP_SCHEMA = "tenant_operator"
_OWNED_DDL = (
    "CREATE TABLE IF NOT EXISTS `tenant_operator`.`owned` ("
    "kind VARCHAR(16) NOT NULL, name VARCHAR(64) NOT NULL, tenant VARCHAR(64) NOT NULL, "
    "tenant_uid VARCHAR(64) NOT NULL, service VARCHAR(32) NOT NULL DEFAULT '', "
    "state VARCHAR(16) NOT NULL DEFAULT 'active', purge_after VARCHAR(32) NULL, "
    "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
    "PRIMARY KEY (kind, name), KEY by_uid (tenant_uid))"
)


@dataclass(frozen=True)
class Owner:
    """Who a database and user are created for."""
    tenant: str
    uid: str
    service: str = ""
    adopt_existing: bool = False


@dataclass(frozen=True)
class OwnedRow:
    kind: str          # database | user
    name: str
    tenant: str
    uid: str
    service: str
    state: str
    purge_after: str


@dataclass
class _UserState:
    auth: str
    plugin: str
    max_user_connections: int
    locked: bool
    global_privileges: bool


class _Session:
    """A cursor that counts completed statements (to know whether a retry is safe)."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.completed = 0

    def rows(self, sql: str, args: tuple | None = None) -> list[dict]:
        self.cursor.execute(sql, args)
        self.completed += 1
        return list(self.cursor.fetchall() or ())

    def one(self, sql: str, args: tuple | None = None) -> dict | None:
        rows = self.rows(sql, args)
        return rows[0] if rows else None


class MySQLBackend:
    """Admin client for one MySQL/MariaDB server, with a small connection pool."""

    def __init__(self, server: config.MySQLServer, *, connect_timeout: float = 5.0, pool_size: int = 4,
                 read_timeout: float = 300.0):
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.server = server
        self._connect_timeout = connect_timeout
        # Bounds a hung server; generous because DROP DATABASE of a big schema is slow.
        self._read_timeout = read_timeout
        self._slots = threading.BoundedSemaphore(pool_size)
        self._acquire_timeout = max(30.0, connect_timeout * 2)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self._mariadb: bool | None = None

    @property
    def _where(self) -> str:
        host = self.server.host
        return f"[{host}]:{self.server.port}" if ":" in host else f"{host}:{self.server.port}"

    # --- pool ------------------------------------------------------------------------

    def _unavailable(self, what: str, exc: Exception, secrets: tuple[str, ...] = ()) -> BackendUnavailable:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc) or type(exc).__name__
        text = _scrub(text, secrets + (self.server.admin_password,))
        prefix = f"({code}) " if code else ""
        return BackendUnavailable("mysql", f"{self._where}: {what}: {prefix}{text}")

    def _new_connection(self):
        try:
            conn = connect(
                host=self.server.host, port=self.server.port,
                user=self.server.admin_user, password=self.server.admin_password,
                connect_timeout=self._connect_timeout, read_timeout=self._read_timeout,
                write_timeout=self._read_timeout, autocommit=True, charset="utf8mb4",
                cursorclass=pymysql.cursors.DictCursor, program_name="tenant-operator",
            )
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._unavailable("cannot connect", exc) from None
        if self._mariadb is None:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT VERSION() AS v")
                    version = str(cur.fetchone()["v"])
            except pymysql.err.MySQLError as exc:
                conn.close()
                raise self._unavailable("cannot read the server version", exc) from None
            self._mariadb = "mariadb" in version.lower()
        return conn

    def _acquire(self) -> tuple[Any, bool]:
        if self._closed:
            raise BackendUnavailable("mysql", f"{self._where}: client is closed")
        if not self._slots.acquire(timeout=self._acquire_timeout):
            raise BackendUnavailable("mysql", f"{self._where}: no free connection in the pool")
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            return self._new_connection(), False
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn) -> None:
        with self._lock:
            keep = not self._closed
            if keep:
                self._idle.append(conn)
        if not keep:
            self._close_quietly(conn)
        self._slots.release()

    def _discard(self, conn) -> None:
        self._close_quietly(conn)
        self._slots.release()

    @staticmethod
    def _close_quietly(conn) -> None:
        try:
            conn.close()
        # Already broken or closed; nothing to do.
        except Exception:  # noqa: BLE001 # nosec B110
            pass

    def _run(self, what: str, fn: Callable[[_Session], Any], secrets: tuple[str, ...] = ()) -> Any:
        for attempt in (1, 2):
            conn, reused = self._acquire()
            session = None
            try:
                with conn.cursor() as cursor:
                    session = _Session(cursor)
                    result = fn(session)
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else None
                dead = isinstance(exc, pymysql.err.InterfaceError) or code in _DISCONNECTED
                if not dead:
                    # The server refused a statement; the connection is still usable.
                    self._release(conn)
                    raise self._unavailable(what, exc, secrets) from None
                self._discard(conn)
                # Retry only a pooled connection that died before anything ran on it.
                if reused and attempt == 1 and session is not None and session.completed == 0:
                    log.debug("mysql %s: pooled connection was dead, retrying", self._where)
                    continue
                raise self._unavailable(f"{what}: lost the connection", exc, secrets) from None
            except BaseException:
                self._discard(conn)
                raise
            self._release(conn)
            return result
        raise AssertionError("unreachable")

    # --- reads -------------------------------------------------------------------------

    def _user_state(self, s: _Session, user: str) -> _UserState | None:
        host = self.server.user_host
        if self._mariadb:
            row = s.one("SELECT Priv FROM mysql.global_priv WHERE User = %s AND Host = %s", (user, host))
            if row is None:
                return None
            priv = json.loads(row["Priv"] or "{}")
            return _UserState(
                auth=str(priv.get("authentication_string", "")), plugin=str(priv.get("plugin", "")),
                max_user_connections=int(priv.get("max_user_connections", 0)),
                locked=bool(priv.get("account_locked", False)),
                # `access` is the global privilege bitmask (grant option included).
                global_privileges=int(priv.get("access", 0)) != 0,
            )
        # caching_sha2 hashes are binary: read them as hex so decoding cannot fail.
        row = s.one("SELECT plugin, HEX(authentication_string) AS auth_hex, max_user_connections, "
                    "account_locked FROM mysql.user WHERE User = %s AND Host = %s", (user, host))
        if row is None:
            return None
        grantee = "'{}'@'{}'".format(user, host.replace("'", "''"))
        extra = s.one("SELECT COUNT(*) AS n FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s "
                      "AND (PRIVILEGE_TYPE <> 'USAGE' OR IS_GRANTABLE = 'YES')", (grantee,))
        return _UserState(
            auth=bytes.fromhex(row["auth_hex"] or "").decode("latin-1"), plugin=str(row["plugin"] or ""),
            max_user_connections=int(row["max_user_connections"] or 0),
            locked=str(row["account_locked"]).upper() == "Y",
            global_privileges=bool(extra and extra["n"]),
        )

    @staticmethod
    def _hash_matches(state: _UserState, password: str) -> bool:
        # Only the native hash can be recomputed here; anything else (e.g. MySQL 8's
        # caching_sha2_password) counts as different, so the password is simply set.
        if state.plugin not in ("mysql_native_password", "") or not state.auth.startswith("*"):
            return False
        return hmac.compare_digest(state.auth.upper(), native_password_hash(password))

    def _roles(self, s: _Session, user: str) -> list[tuple[str, str | None]]:
        host = self.server.user_host
        if self._mariadb:
            rows = s.rows("SELECT Role FROM mysql.roles_mapping WHERE User = %s AND Host = %s", (user, host))
            return [(r["Role"], None) for r in rows]
        rows = s.rows("SELECT FROM_USER, FROM_HOST FROM mysql.role_edges WHERE TO_USER = %s AND TO_HOST = %s",
                      (user, host))
        return [(r["FROM_USER"], r["FROM_HOST"]) for r in rows]

    def _kill_sessions(self, s: _Session, user: str) -> int:
        rows = s.rows("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        killed = 0
        for row in rows:
            try:
                s.rows(f"KILL CONNECTION {int(row['ID'])}")
                killed += 1
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != _NO_SUCH_THREAD:   # the session ended on its own
                    raise
        return killed

    # --- public API --------------------------------------------------------------------

    def ensure_account(self, database: str, user: str, password: str, *, max_user_connections: int,
                       locked: bool, owner: Owner | None = None, extra_databases: tuple[str, ...] = ()) -> list[str]:
        """Converge database, user, password, privileges, connection limit and lock state.
        `extra_databases` (a restore's new database, a drill's scratch database) are
        the user's too: granted, never revoked as privileges outside its database.

        Reads first and writes only what differs; returns the changes made ([] when none)."""
        db_q = naming.quote_sql_identifier(database)
        grant_db = _grant_database(database)
        extra_grants = tuple(_grant_database(d) for d in extra_databases)
        user_q = _user_name(user)
        _check_password(password)
        if isinstance(max_user_connections, bool) or not isinstance(max_user_connections, int) \
                or not 0 <= max_user_connections <= 2**31 - 1:
            raise ValueError(f"max_user_connections must be a non-negative integer, "
                             f"got {max_user_connections!r}")
        limit = int(max_user_connections)
        host = self.server.user_host
        lock_clause = "ACCOUNT LOCK" if locked else "ACCOUNT UNLOCK"

        def op(s: _Session) -> list[str]:
            changes: list[str] = []
            db_exists = s.one("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                              (database,)) is not None
            if owner is not None:
                # Both names are claimed before anything is created or changed.
                user_exists = self._user_state(s, user) is not None
                changes += self._claim(s, "database", database, owner, db_exists)
                changes += self._claim(s, "user", user, owner, user_exists)
            if not db_exists:
                s.rows(f"CREATE DATABASE IF NOT EXISTS {db_q} CHARACTER SET utf8mb4")
                changes.append("created database")

            state = self._user_state(s, user)
            if state is None:
                s.rows(f"CREATE USER {user_q}@%s IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS {limit} "
                       f"{lock_clause}", (host, password))
                changes.append("created user")
                state = _UserState("", "", limit, locked, False)
            else:
                if not self._hash_matches(state, password):
                    s.rows(f"ALTER USER {user_q}@%s IDENTIFIED BY %s", (host, password))
                    changes.append("set password")
                if state.max_user_connections != limit:
                    s.rows(f"ALTER USER {user_q}@%s WITH MAX_USER_CONNECTIONS {limit}", (host,))
                    changes.append(f"set max_user_connections to {limit}")
                if state.locked != locked:
                    s.rows(f"ALTER USER {user_q}@%s {lock_clause}", (host,))
                    changes.append("locked account" if locked else "unlocked account")
                    if locked:
                        self._kill_sessions(s, user)

            changes.extend(self._converge_privileges(s, user, user_q, grant_db, database, state,
                                                     extra_dbs={g[1:-1] for g in extra_grants}))
            for extra, name in zip(extra_grants, extra_databases, strict=True):
                changes.extend(self._grant_all(s, user, user_q, extra, name))
            return changes

        changes = self._run(f"ensure account {user} on {database}", op, (password,))
        if changes:
            log.info("mysql %s: %s@%s/%s: %s", self.server.name, user, host, database, ", ".join(changes))
        return changes

    def _converge_privileges(self, s: _Session, user: str, user_q: str, grant_db: str, database: str,
                             state: _UserState, extra_dbs: set[str] | frozenset = frozenset()) -> list[str]:
        """All privileges on `grant_db`; nothing anywhere else but on `extra_dbs`
        (grant forms of the user's other databases, converged by `_grant_all`)."""
        host = self.server.user_host
        changes: list[str] = []
        for role, role_host in self._roles(s, user):
            if role_host is None:
                s.rows(f"REVOKE %s FROM {user_q}@%s", (role, host))
            else:
                s.rows(f"REVOKE %s@%s FROM {user_q}@%s", (role, role_host, host))
            changes.append(f"revoked role {role}")
        for row in s.rows("SELECT Proxied_user, Proxied_host FROM mysql.proxies_priv "
                          "WHERE User = %s AND Host = %s", (user, host)):
            s.rows(f"REVOKE PROXY ON %s@%s FROM {user_q}@%s",
                   (row["Proxied_user"], row["Proxied_host"], host))
            changes.append("revoked proxy privilege")

        own_db = grant_db[1:-1]   # as mysql.db stores it: unquoted, wildcards escaped
        db_rows = s.rows("SELECT * FROM mysql.db WHERE User = %s AND Host = %s", (user, host))
        own = [r for r in db_rows if r["Db"] == own_db]
        extra = [r for r in db_rows if r["Db"] in extra_dbs]
        other_grants = state.global_privileges or len(own) + len(extra) != len(db_rows)
        if any(r.get("Grant_priv") == "Y" for r in extra):
            other_grants = True
        if own and own[0].get("Grant_priv") == "Y":
            other_grants = True
        for table in ("tables_priv", "columns_priv", "procs_priv"):
            # `table` comes from the fixed tuple above, never from input.
            row = s.one(f"SELECT COUNT(*) AS n FROM mysql.{table} WHERE User = %s AND Host = %s",  # nosec B608
                        (user, host))
            other_grants = other_grants or bool(row and row["n"])
        if other_grants:
            s.rows(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {user_q}@%s", (host,))
            changes.append("revoked privileges outside its database")
            own = []
        complete = bool(own) and all(v == "Y" for k, v in own[0].items()
                                     if k.endswith("_priv") and k != "Grant_priv")
        if not complete:
            s.rows(f"GRANT ALL PRIVILEGES ON {grant_db}.* TO {user_q}@%s", (host,))
            changes.append(f"granted all privileges on {database}")
        return changes

    def _grant_all(self, s: _Session, user: str, user_q: str, grant_db: str, database: str) -> list[str]:
        """ALL PRIVILEGES on one more database of the user, unless it has them already."""
        host = self.server.user_host
        rows = s.rows("SELECT * FROM mysql.db WHERE User = %s AND Host = %s AND Db = %s", (user, host, grant_db[1:-1]))
        if rows and all(v == "Y" for k, v in rows[0].items() if k.endswith("_priv") and k != "Grant_priv"):
            return []
        s.rows(f"GRANT ALL PRIVILEGES ON {grant_db}.* TO {user_q}@%s", (host,))
        return [f"granted all privileges on {database}"]

    # --- ownership bookkeeping ---------------------------------------------------------

    def _ownership_table(self, s: _Session) -> None:
        if not getattr(self, "_owned_ready", False):
            s.rows("CREATE DATABASE IF NOT EXISTS `tenant_operator` CHARACTER SET utf8mb4")
            s.rows(_OWNED_DDL)
            self._owned_ready = True

    def _owned_row(self, s: _Session, kind: str, name: str) -> OwnedRow | None:
        self._ownership_table(s)
        row = s.one("SELECT * FROM `tenant_operator`.`owned` WHERE kind = %s AND name = %s", (kind, name))
        return self._as_row(row) if row else None

    @staticmethod
    def _as_row(row: dict) -> OwnedRow:
        return OwnedRow(row["kind"], row["name"], row["tenant"], row["tenant_uid"], row["service"], row["state"],
                        row["purge_after"] or "")

    def _claim(self, s: _Session, kind: str, name: str, owner: Owner, exists: bool) -> list[str]:
        """Record `name` as `owner`'s, or raise NameConflict when it is someone else's."""
        row = self._owned_row(s, kind, name)
        decision = ownership.claim_decision(
            row.uid if row else "", row.tenant if row else "", row.state if row else "",
            uid=owner.uid, tenant=owner.tenant, exists=exists, adopt=owner.adopt_existing)
        if decision == "conflict":
            raise NameConflict(f"MySQL {kind}", name,
                               f"Tenant {row.tenant} (UID {row.uid})" if row else "")
        if decision in ("create", "adopt-unmarked"):
            s.rows("INSERT INTO `tenant_operator`.`owned` (kind, name, tenant, tenant_uid, service) "
                   "VALUES (%s, %s, %s, %s, %s)",
                   (kind, name, owner.tenant, owner.uid, owner.service))
            return ["adopted unmarked " + kind] if decision == "adopt-unmarked" else []
        if decision == "adopt-retained" or row.state != ownership.ACTIVE:
            s.rows("UPDATE `tenant_operator`.`owned` SET tenant_uid = %s, tenant = %s, service = %s, state = %s, "
                   "purge_after = NULL WHERE kind = %s AND name = %s",
                   (owner.uid, owner.tenant, owner.service, ownership.ACTIVE, kind, name))
            return [f"adopted retained {kind}" if decision == "adopt-retained" else f"{kind} no longer pending removal"]
        return []

    def ensure_owned_database(self, database: str, owner: Owner, grant_to: str = "") -> list[str]:
        """Create `database` recorded for `owner` (NameConflict when it is someone
        else's), and grant all on it to `grant_to` when given. Returns the changes."""
        db_q = naming.quote_sql_identifier(database)
        grant_db = _grant_database(database)
        user_q = _user_name(grant_to) if grant_to else ""

        def op(s: _Session) -> list[str]:
            exists = s.one("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                           (database,)) is not None
            changes = self._claim(s, "database", database, owner, exists)
            if not exists:
                s.rows(f"CREATE DATABASE IF NOT EXISTS {db_q} CHARACTER SET utf8mb4")
                changes.append(f"created database {database}")
            if grant_to:
                changes += self._grant_all(s, grant_to, user_q, grant_db, database)
            return changes

        changes = self._run(f"ensure database {database}", op)
        if changes:
            log.info("mysql %s: %s (UID %s)", self.server.name, ", ".join(changes), owner.uid)
        return changes

    def owned_by(self, uid: str) -> list[OwnedRow]:
        """Every database and user recorded for this Tenant UID."""
        def op(s: _Session) -> list[OwnedRow]:
            self._ownership_table(s)
            return [self._as_row(r) for r in s.rows("SELECT * FROM `tenant_operator`.`owned` WHERE tenant_uid = %s "
                                                     "ORDER BY kind, name", (uid,))]
        return self._run(f"list what UID {uid} owns", op)

    def mark(self, kind: str, name: str, uid: str, state: str, purge_after: str = "") -> None:
        """Change the state of a row of ours (pending-removal, retained, active)."""
        def op(s: _Session) -> None:
            self._ownership_table(s)
            s.rows("UPDATE `tenant_operator`.`owned` SET state = %s, purge_after = %s WHERE kind = %s AND name = %s "
                   "AND tenant_uid = %s", (state, purge_after or None, kind, name, uid))
        self._run(f"mark {kind} {name} {state}", op)

    def drop_owned(self, kind: str, name: str, uid: str) -> bool:
        """Drop a database or user only if the bookkeeping says it is `uid`'s;
        the row goes with it. Returns whether anything was dropped."""
        def op(s: _Session) -> bool:
            row = self._owned_row(s, kind, name)
            if row is None or row.uid != uid:
                log.warning("mysql %s: not dropping %s %s: not recorded for UID %s", self.server.name, kind, name, uid)
                return False
            existed = False
            if kind == "database":
                existed = s.one("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                                (name,)) is not None
                s.rows(f"DROP DATABASE IF EXISTS {naming.quote_sql_identifier(name)}")
            else:
                host = self.server.user_host
                existed = s.one("SELECT User FROM mysql.user WHERE User = %s AND Host = %s", (name, host)) is not None
                s.rows(f"DROP USER IF EXISTS {_user_name(name)}@%s", (host,))
                self._kill_sessions(s, name)
            s.rows("DELETE FROM `tenant_operator`.`owned` WHERE kind = %s AND name = %s AND tenant_uid = %s",
                   (kind, name, uid))
            return existed
        dropped = self._run(f"drop {kind} {name}", op)
        if dropped:
            log.info("mysql %s: dropped %s %s (recorded for UID %s)", self.server.name, kind, name, uid)
        return dropped

    def revoke_owned_account(self, user: str, uid: str) -> list[str]:
        """Lock the idle account of a rotated pair and end its open sessions, if the
        bookkeeping records it for `uid` (an account never created stays absent).
        Locked, not dropped: its grants and its bookkeeping row stay for the next
        rotation, which sets a new password before it unlocks it. Returns the changes."""
        user_q = _user_name(user)
        host = self.server.user_host

        def op(s: _Session) -> list[str]:
            row = self._owned_row(s, "user", user)
            state = self._user_state(s, user)
            if row is None or row.uid != uid or state is None:
                return []
            changes = []
            if not state.locked:
                s.rows(f"ALTER USER {user_q}@%s ACCOUNT LOCK", (host,))
                changes.append(f"revoked previous account {user}")
            # A lock refuses new logins only: sessions opened before it are ended too.
            killed = self._kill_sessions(s, user)
            if killed:
                changes.append(f"ended {killed} session(s) of previous account {user}")
            return changes

        changes = self._run(f"revoke account {user}", op)
        if changes:
            log.info("mysql %s: %s", self.server.name, ", ".join(changes))
        return changes

    def set_password(self, user: str, password: str) -> None:
        """Set the user's password (always writes)."""
        user_q = _user_name(user)
        _check_password(password)
        sql = f"ALTER USER {user_q}@%s IDENTIFIED BY %s"
        self._run(f"set password of {user}", lambda s: s.rows(sql, (self.server.user_host, password)),
                  (password,))

    def password_matches(self, user: str, password: str) -> bool:
        """Whether the user exists with this password (native hash compared locally)."""
        _user_name(user)

        def op(s: _Session) -> bool:
            state = self._user_state(s, user)
            return state is not None and self._hash_matches(state, password)

        return self._run(f"read account {user}", op, (password,))

    def drop_user(self, user: str) -> bool:
        """Drop the user and end its sessions; returns whether it existed."""
        user_q = _user_name(user)
        host = self.server.user_host

        def op(s: _Session) -> bool:
            row = s.one("SELECT User FROM mysql.user WHERE User = %s AND Host = %s", (user, host))
            s.rows(f"DROP USER IF EXISTS {user_q}@%s", (host,))
            # Dropping a user does not end its open sessions.
            self._kill_sessions(s, user)
            return row is not None

        existed = self._run(f"drop user {user}", op)
        if existed:
            log.info("mysql %s: dropped user %s@%s", self.server.name, user, host)
        return existed

    def drop_database(self, database: str) -> bool:
        """Drop the database; returns whether it existed."""
        db_q = naming.quote_sql_identifier(database)

        def op(s: _Session) -> bool:
            existed = s.one("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                            (database,)) is not None
            s.rows(f"DROP DATABASE IF EXISTS {db_q}")
            return existed

        existed = self._run(f"drop database {database}", op)
        if existed:
            log.info("mysql %s: dropped database %s", self.server.name, database)
        return existed

    def lock(self, user: str, locked: bool) -> None:
        """Lock (and disconnect) or unlock the user."""
        user_q = _user_name(user)
        clause = "ACCOUNT LOCK" if locked else "ACCOUNT UNLOCK"

        def op(s: _Session) -> None:
            s.rows(f"ALTER USER {user_q}@%s {clause}", (self.server.user_host,))
            if locked:
                # A lock only refuses new logins; open sessions must be ended explicitly.
                self._kill_sessions(s, user)

        self._run(f"{'lock' if locked else 'unlock'} {user}", op)

    def ping(self) -> None:
        """Check that the server answers with the admin credentials."""
        self._run("ping", lambda s: s.rows("SELECT 1"))

    def close(self) -> None:
        """Close idle connections; connections in use are closed when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close_quietly(conn)
