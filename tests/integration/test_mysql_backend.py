"""MySQLBackend against the devenv MariaDB (`bash devenv/up.sh mariadb; source .devenv/env`).

Every test works on its own randomly named tenants and removes what it created.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field

import pymysql
import pytest
from tenant_operator import config, naming
from tenant_operator.backends.mysql.client import MySQLBackend
from tenant_operator.errors import BackendUnavailable

from .conftest import wait_for as _wait_for

pytestmark = pytest.mark.integration

ACCESS_DENIED = 1045
DB_ACCESS_DENIED = 1044
TABLE_ACCESS_DENIED = 1142
ACCOUNT_LOCKED = (4151, 3118)          # MariaDB, MySQL
TOO_MANY_CONNECTIONS = (1203, 1226)


def _env_server() -> config.MySQLServer:
    host = os.environ.get("MYSQL_HOST")
    if not host:
        pytest.skip("MYSQL_HOST is not set: run `bash devenv/up.sh mariadb && source .devenv/env`")
    return config.MySQLServer(
        name="devenv", host=host, port=int(os.environ.get("MYSQL_PORT", "3306")),
        admin_user=os.environ.get("MYSQL_ADMIN_USER", "root"),
        admin_password=os.environ.get("MYSQL_ADMIN_PASSWORD", ""), user_host="%",
    )


def _password() -> str:
    # Quotes, backslash, '%' and ';' prove passwords only ever travel as parameters.
    return f"p'{secrets.token_urlsafe(12)}\"%s\\;--é"


def _poll(condition, timeout: float = 10.0, interval: float = 0.05):
    return _wait_for(condition, timeout, interval, "condition")

@dataclass
class Account:
    tenant: str
    service: str
    database: str
    user: str
    password: str
    changes: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server() -> config.MySQLServer:
    return _env_server()


@pytest.fixture(scope="module")
def backend(server):
    b = MySQLBackend(server)
    yield b
    b.close()


@pytest.fixture
def admin(server):
    conn = pymysql.connect(host=server.host, port=server.port, user=server.admin_user,
                           password=server.admin_password, autocommit=True, connect_timeout=5)
    yield conn
    conn.close()


def _query(conn, sql: str, args=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


@pytest.fixture
def cleanup(admin):
    """Registers users/databases to drop after the test, whatever happened."""
    users: list[str] = []
    databases: list[str] = []
    roles: list[str] = []
    yield users, databases, roles
    for user in users:
        _query(admin, f"DROP USER IF EXISTS {naming.quote_sql_identifier(user)}@'%'")
    for db in databases:
        _query(admin, f"DROP DATABASE IF EXISTS {naming.quote_sql_identifier(db)}")
    for role in roles:
        _query(admin, f"DROP ROLE IF EXISTS {naming.quote_sql_identifier(role)}")


@pytest.fixture
def make_account(backend, cleanup):
    users, databases, _ = cleanup

    def make(tenant: str | None = None, service: str = "products", *, max_user_connections: int = 5,
             locked: bool = False) -> Account:
        tenant = tenant or f"it-{secrets.token_hex(4)}"
        acc = Account(tenant, service, naming.mysql_database(tenant, service),
                      naming.mysql_user(tenant, service), _password())
        users.append(acc.user)
        databases.append(acc.database)
        acc.changes = backend.ensure_account(acc.database, acc.user, acc.password,
                                             max_user_connections=max_user_connections, locked=locked)
        return acc

    return make


def connect_as(server, user: str, password: str, database: str | None = None):
    # pymysql encodes a str password as latin-1; tenants' clients send UTF-8, as the server hashed it.
    return pymysql.connect(host=server.host, port=server.port, user=user, password=password.encode(),
                           database=database, autocommit=True, connect_timeout=5)


def _error_code(excinfo) -> int:
    return excinfo.value.args[0]


def _sessions(admin, user: str) -> int:
    return _query(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))[0][0]


def _grants(admin, user: str) -> list[str]:
    return [row[0] for row in _query(admin, f"SHOW GRANTS FOR {naming.quote_sql_identifier(user)}@'%'")]


# --- creation and isolation --------------------------------------------------------------

def test_new_account_reports_what_it_created(make_account):
    a = make_account()
    assert a.changes == ["created database", "created user", f"granted all privileges on {a.database}"]


def test_tenant_can_use_its_own_database(server, make_account):
    a = make_account()
    conn = connect_as(server, a.user, a.password, a.database)
    try:
        _query(conn, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40))")
        _query(conn, "INSERT INTO items VALUES (1, %s), (2, %s)", ("one", "deux é"))
        assert _query(conn, "SELECT id, name FROM items ORDER BY id") == [(1, "one"), (2, "deux é")]
        assert _query(conn, "SELECT @@character_set_database")[0][0] == "utf8mb4"
    finally:
        conn.close()


def test_tenant_is_refused_other_tenants_and_system_tables(server, make_account, admin, cleanup):
    a = make_account()
    b = make_account()
    new_db = naming.quote_sql_identifier(naming.tenant_id(a.tenant) + "_x_db")
    cleanup[1].append(new_db.strip("`"))
    _query(admin, f"CREATE TABLE {naming.quote_sql_identifier(b.database)}.secrets (v TEXT)")

    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect_as(server, a.user, a.password, b.database)
    assert _error_code(exc) == DB_ACCESS_DENIED

    conn = connect_as(server, a.user, a.password, a.database)
    try:
        with pytest.raises(pymysql.err.MySQLError) as exc:
            _query(conn, f"SELECT * FROM {naming.quote_sql_identifier(b.database)}.secrets")
        assert _error_code(exc) in (DB_ACCESS_DENIED, TABLE_ACCESS_DENIED)
        with pytest.raises(pymysql.err.MySQLError) as exc:
            _query(conn, "SELECT User FROM mysql.user")
        assert _error_code(exc) in (DB_ACCESS_DENIED, TABLE_ACCESS_DENIED)
        with pytest.raises(pymysql.err.MySQLError) as exc:
            _query(conn, f"CREATE DATABASE {new_db}")
        assert _error_code(exc) == DB_ACCESS_DENIED
        visible = {row[0] for row in _query(conn, "SHOW DATABASES")}
        assert visible == {a.database, "information_schema"}
    finally:
        conn.close()


def test_grant_does_not_act_as_a_wildcard(server, make_account, admin, cleanup):
    """`_` in a GRANT's database name is a wildcard unless escaped: a tenant must not
    reach a database whose name only differs where its own name has underscores."""
    a = make_account()
    lure = a.database.replace("_", "x")
    cleanup[1].append(lure)
    _query(admin, f"CREATE DATABASE {naming.quote_sql_identifier(lure)}")
    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect_as(server, a.user, a.password, lure)
    assert _error_code(exc) == DB_ACCESS_DENIED


def test_show_grants_lists_only_the_own_database(make_account, admin):
    a = make_account()
    grants = _grants(admin, a.user)
    assert len(grants) == 2, grants
    usage, own = sorted(grants, key=lambda g: "ALL PRIVILEGES" in g)
    assert usage.startswith("GRANT USAGE ON *.* TO ")
    escaped = a.database.replace("_", "\\_")
    assert own == f"GRANT ALL PRIVILEGES ON `{escaped}`.* TO `{a.user}`@`%`"
    assert not any("GRANT OPTION" in g for g in grants)


def test_max_user_connections_is_applied(server, make_account, admin):
    a = make_account(max_user_connections=2)
    create = _query(admin, f"SHOW CREATE USER {naming.quote_sql_identifier(a.user)}@'%'")[0][0]
    assert "MAX_USER_CONNECTIONS 2" in create

    conns = [connect_as(server, a.user, a.password, a.database) for _ in range(2)]
    try:
        with pytest.raises(pymysql.err.OperationalError) as exc:
            connect_as(server, a.user, a.password, a.database).close()
        assert _error_code(exc) in TOO_MANY_CONNECTIONS
    finally:
        for conn in conns:
            conn.close()


# --- idempotence and drift -----------------------------------------------------------------

def test_second_call_with_same_inputs_changes_nothing(backend, make_account, admin):
    a = make_account(max_user_connections=7)
    before = _query(admin, "SELECT Priv FROM mysql.global_priv WHERE User = %s AND Host = '%%'", (a.user,))
    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=7, locked=False) == []
    after = _query(admin, "SELECT Priv FROM mysql.global_priv WHERE User = %s AND Host = '%%'", (a.user,))
    assert after == before


def test_changed_inputs_change_only_what_differs(backend, make_account, admin):
    a = make_account(max_user_connections=7)
    changes = backend.ensure_account(a.database, a.user, a.password, max_user_connections=9, locked=False)
    assert changes == ["set max_user_connections to 9"]
    assert "MAX_USER_CONNECTIONS 9" in _query(admin, f"SHOW CREATE USER `{a.user}`@'%'")[0][0]
    new = _password()
    assert backend.ensure_account(a.database, a.user, new, max_user_connections=9, locked=False) \
        == ["set password"]
    assert backend.password_matches(a.user, new)


def test_recreates_a_dropped_database(backend, make_account, admin):
    a = make_account()
    _query(admin, f"DROP DATABASE {naming.quote_sql_identifier(a.database)}")
    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=False) \
        == ["created database"]


def test_foreign_privileges_are_revoked(server, backend, make_account, admin, cleanup):
    a = make_account()
    b = make_account()
    role = f"it_role_{secrets.token_hex(4)}"
    cleanup[2].append(role)
    user = f"{naming.quote_sql_identifier(a.user)}@'%%'"
    _query(admin, f"CREATE TABLE {naming.quote_sql_identifier(b.database)}.t (v INT)")
    for sql in (f"GRANT SELECT ON mysql.* TO {user}",
                f"GRANT PROCESS ON *.* TO {user}",
                f"GRANT SELECT ON {naming.quote_sql_identifier(b.database)}.t TO {user}",
                f"GRANT ALL PRIVILEGES ON `{a.database.replace('_', chr(92) + '_')}`.* TO {user} "
                "WITH GRANT OPTION",
                f"CREATE ROLE {role}",
                f"GRANT {role} TO {user}",
                f"GRANT PROXY ON %s@'%%' TO {user}"):
        # Only proxying as oneself can be granted without PROXY ... WITH GRANT OPTION.
        _query(admin, sql, (server.admin_user,) if "PROXY" in sql else ())

    changes = backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=False)
    assert changes == [f"revoked role {role}", "revoked proxy privilege",
                       "revoked privileges outside its database", f"granted all privileges on {a.database}"]
    grants = _grants(admin, a.user)
    assert len(grants) == 2 and not any("GRANT OPTION" in g or "mysql" in g or b.database in g
                                        for g in grants), grants
    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=False) == []
    conn = connect_as(server, a.user, a.password, a.database)
    try:
        _query(conn, "CREATE TABLE still_works (v INT)")
    finally:
        conn.close()


# --- password and lock -----------------------------------------------------------------------

def test_set_password_replaces_the_old_one(server, backend, make_account):
    a = make_account()
    new = _password()
    assert backend.password_matches(a.user, a.password)
    backend.set_password(a.user, new)
    connect_as(server, a.user, new, a.database).close()
    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect_as(server, a.user, a.password, a.database)
    assert _error_code(exc) == ACCESS_DENIED
    assert backend.password_matches(a.user, new)
    assert not backend.password_matches(a.user, a.password)
    assert not backend.password_matches(f"it_{secrets.token_hex(4)}_none_user", new)


def test_lock_refuses_logins_and_ends_sessions_unlock_restores(server, backend, make_account, admin):
    a = make_account()
    session = connect_as(server, a.user, a.password, a.database)
    try:
        backend.lock(a.user, True)
        with pytest.raises(pymysql.err.OperationalError) as exc:
            connect_as(server, a.user, a.password, a.database)
        assert _error_code(exc) in ACCOUNT_LOCKED or "locked" in str(exc.value)
        assert _poll(lambda: _sessions(admin, a.user) == 0), "the open session was not ended"
        with pytest.raises(pymysql.err.MySQLError):
            _query(session, "SELECT 1")
    finally:
        session.close()

    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=True) == []
    backend.lock(a.user, False)
    connect_as(server, a.user, a.password, a.database).close()
    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=False) == []


def test_ensure_account_locks_and_unlocks(server, backend, make_account):
    a = make_account(locked=True)
    assert "created user" in a.changes
    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect_as(server, a.user, a.password, a.database)
    assert _error_code(exc) in ACCOUNT_LOCKED or "locked" in str(exc.value)
    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=False) \
        == ["unlocked account"]
    connect_as(server, a.user, a.password, a.database).close()
    assert backend.ensure_account(a.database, a.user, a.password, max_user_connections=5, locked=True) \
        == ["locked account"]


# --- names ---------------------------------------------------------------------------------------

def test_long_tenant_name_is_shortened_and_works(server, make_account):
    tenant = f"a-very-long-tenant-name-{secrets.token_hex(4)}-goes-on"
    assert naming.TENANT_NAME.fullmatch(tenant)
    a = make_account(tenant, "products")
    assert len(a.user) <= naming.MYSQL_USER_MAX and a.user.endswith("_user")
    assert a.user != f"{naming.tenant_id(tenant)}_products_user"
    assert len(a.database) <= naming.MYSQL_DB_MAX
    conn = connect_as(server, a.user, a.password, a.database)
    try:
        _query(conn, "CREATE TABLE t (id INT)")
        _query(conn, "INSERT INTO t VALUES (42)")
        assert _query(conn, "SELECT id FROM t") == [(42,)]
    finally:
        conn.close()


# --- removal -------------------------------------------------------------------------------------

def test_drop_is_idempotent_and_ends_sessions(server, backend, make_account, admin):
    a = make_account()
    session = connect_as(server, a.user, a.password, a.database)
    try:
        assert backend.drop_user(a.user) is True
        assert _poll(lambda: _sessions(admin, a.user) == 0), "the open session was not ended"
    finally:
        session.close()
    assert backend.drop_user(a.user) is False
    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect_as(server, a.user, a.password, a.database)
    assert _error_code(exc) == ACCESS_DENIED

    assert backend.drop_database(a.database) is True
    assert backend.drop_database(a.database) is False
    assert _query(admin, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                  (a.database,)) == []
    assert _query(admin, "SELECT User FROM mysql.user WHERE User = %s", (a.user,)) == []


# --- connectivity --------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_raises_backend_unavailable(server):
    port = _closed_port()
    secret = "admin-" + secrets.token_hex(8)
    dead = MySQLBackend(config.MySQLServer(name="dead", host="127.0.0.1", port=port, admin_user="admin",
                                           admin_password=secret), connect_timeout=2)
    tenant_password = _password()
    try:
        with pytest.raises(BackendUnavailable) as exc:
            dead.ping()
        assert f"127.0.0.1:{port}" in str(exc.value) and secret not in str(exc.value)
        assert exc.value.backend == "mysql"
        with pytest.raises(BackendUnavailable) as exc:
            dead.ensure_account("it_x_db", "it_x_user", tenant_password, max_user_connections=1, locked=False)
        assert f"127.0.0.1:{port}" in str(exc.value)
        assert secret not in str(exc.value) and tenant_password not in str(exc.value)
    finally:
        dead.close()


def test_wrong_admin_password_raises_without_the_password(server):
    wrong = "wrong-" + secrets.token_hex(8)
    bad = MySQLBackend(config.MySQLServer(name="bad", host=server.host, port=server.port,
                                          admin_user=server.admin_user, admin_password=wrong))
    try:
        with pytest.raises(BackendUnavailable) as exc:
            bad.ping()
        assert f"{server.host}:{server.port}" in str(exc.value) and wrong not in str(exc.value)
    finally:
        bad.close()


def test_refused_statement_is_reported_without_secrets(backend):
    password = _password()
    with pytest.raises(BackendUnavailable) as exc:
        backend.set_password(f"it_{secrets.token_hex(4)}_none_user", password)
    assert password not in str(exc.value)


def test_pool_reuses_connections_and_replaces_a_killed_one(server, admin):
    b = MySQLBackend(server, pool_size=1)
    try:
        b.ping()
        first = b._idle[0].thread_id()
        b.ping()
        assert b._idle[0].thread_id() == first, "the pooled connection was not reused"
        _query(admin, f"KILL CONNECTION {int(first)}")
        assert _poll(lambda: not _query(admin, "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s",
                                        (first,)))
        b.ping()
        assert b._idle[0].thread_id() != first
    finally:
        b.close()
