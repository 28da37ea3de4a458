"""MySQLBackend without a server: a fake pymysql connection records every statement."""

from __future__ import annotations

import json

import pymysql
import pytest
from tenant_operator import config
from tenant_operator.backends.mysql import client as mysql
from tenant_operator.backends.mysql.client import MySQLBackend, native_password_hash
from tenant_operator.errors import BackendUnavailable

ADMIN_PASSWORD = "admin-S3cret!"
PASSWORD = "p'w\"d%s\\;-- DROP é"
SERVER = config.MySQLServer(name="main", host="db.example", port=3307, admin_user="admin",
                            admin_password=ADMIN_PASSWORD, user_host="%")


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.rows: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.conn.executed.append((sql, args))
        self.conn.log.append((sql, args))
        if self.conn.failures:
            failure = self.conn.failures.pop(0)
            if failure is not None:
                raise failure
        self.rows = list(self.conn.responder(sql, args))

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None


class FakeConnection:
    def __init__(self, responder, log):
        self.responder = responder
        self.log = log
        self.executed: list[tuple] = []
        self.failures: list[Exception | None] = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


class Server:
    """Answers the backend's reads from a small state; records writes."""

    def __init__(self, version="10.11.6-MariaDB"):
        self.version = version
        self.databases: set[str] = set()
        self.user: dict | None = None          # MariaDB global_priv JSON
        self.db_rows: list[dict] = []
        self.processes: list[int] = []
        self.mysql_user: dict | None = None    # MySQL 8 mysql.user row

    def __call__(self, sql, args):
        if sql.startswith("SELECT VERSION()"):
            return [{"v": self.version}]
        if "information_schema.SCHEMATA WHERE SCHEMA_NAME = " in sql:
            return [{"SCHEMA_NAME": args[0]}] if args[0] in self.databases else []
        if "SCHEMA_NAME LIKE" in sql:
            return [{"name": n} for n in sorted(self.databases)]
        if "FROM mysql.global_priv" in sql:
            return [{"Priv": json.dumps(self.user)}] if self.user else []
        if "HEX(authentication_string)" in sql:
            return [self.mysql_user] if self.mysql_user else []
        if "USER_PRIVILEGES" in sql:
            return [{"n": 0}]
        if "FROM mysql.db" in sql:
            return self.db_rows
        if "COUNT(*)" in sql:
            return [{"n": 0}]
        if "PROCESSLIST" in sql:
            return [{"ID": i} for i in self.processes]
        if "FROM mysql.user" in sql:
            return [{"name": "t_a_user"}, {"name": "txa_b_user"}] if "LIKE" in sql else []
        return []


def _complete_db_row(db: str) -> dict:
    row = {"Host": "%", "Db": db, "User": "t_svc_user", "Grant_priv": "N"}
    privileges = ("Select", "Insert", "Update", "Delete", "Create", "Drop", "Alter")
    row.update({f"{p}_priv": "Y" for p in privileges})
    return row


@pytest.fixture
def fake(monkeypatch):
    state = Server()
    log: list[tuple] = []
    connections: list[FakeConnection] = []

    def connect(**kwargs):
        assert kwargs["autocommit"] is True
        conn = FakeConnection(state, log)
        connections.append(conn)
        return conn

    monkeypatch.setattr(mysql, "connect", connect)
    state.log = log
    state.connections = connections
    return state


@pytest.fixture
def backend():
    b = MySQLBackend(SERVER, pool_size=2)
    yield b
    b.close()


def ensure(backend, password, *, locked=False):
    return backend.ensure_account("t_svc_db", "t_svc_user", password, max_user_connections=20, locked=locked)


def _assert_no_secret_in_sql(log, *secrets):
    assert log, "nothing was executed"
    for sql, _args in log:
        for secret in secrets:
            assert secret not in sql


# --- hashing and validation --------------------------------------------------------------------

@pytest.mark.parametrize("password, expected", [
    ("password", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
    ("root", "*81F5E21E35407D884A6CD4A731AEBFB6AF209E1B"),
    ("pässwörd €", "*D027AD51A51AEC3438576BE6B74D8DAEF904D8F1"),
    ("a'b\\c%", "*8A0C48C7486351694B5655F5AE95378895F1612F"),
])
def test_native_password_hash_matches_the_server(password, expected):
    assert native_password_hash(password) == expected


@pytest.mark.parametrize("name", ["a`b", "x; DROP", "x` ; DROP DATABASE mysql; --", "", "a b", "a-b",
                                  "é", "a" * 65, "db\\_x", "a%", "a'b"])
def test_unsafe_identifiers_are_rejected_before_connecting(fake, backend, name):
    calls = [
        lambda: backend.ensure_account(name, "ok_user", PASSWORD, max_user_connections=1, locked=False),
        lambda: backend.ensure_account("ok_db", name, PASSWORD, max_user_connections=1, locked=False),
        lambda: backend.set_password(name, PASSWORD),
        lambda: backend.password_matches(name, PASSWORD),
        lambda: backend.drop_user(name),
        lambda: backend.drop_database(name),
        lambda: backend.lock(name, True),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert fake.connections == []


def test_user_names_longer_than_mysql_allows_are_rejected(fake, backend):
    with pytest.raises(ValueError, match="longer than 32"):
        backend.drop_user("u" * 33)


@pytest.mark.parametrize("limit", [-1, True, 1.5, "5", 2**31])
def test_bad_connection_limits_are_rejected(fake, backend, limit):
    with pytest.raises(ValueError):
        backend.ensure_account("t_db", "t_user", PASSWORD, max_user_connections=limit, locked=False)


def test_empty_password_is_rejected(fake, backend):
    with pytest.raises(ValueError):
        backend.ensure_account("t_db", "t_user", "", max_user_connections=1, locked=False)
    with pytest.raises(ValueError):
        backend.set_password("t_user", "")


# --- statements ----------------------------------------------------------------------------------

def test_new_account_passes_the_password_only_as_a_parameter(fake, backend):
    changes = ensure(backend, PASSWORD)
    assert changes == ["created database", "created user", "granted all privileges on t_svc_db"]
    _assert_no_secret_in_sql(fake.log, PASSWORD, ADMIN_PASSWORD)
    create = [(sql, args) for sql, args in fake.log if sql.startswith("CREATE USER")]
    assert create == [("CREATE USER `t_svc_user`@%s IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS 20 "
                       "ACCOUNT UNLOCK", ("%", PASSWORD))]
    assert ("CREATE DATABASE IF NOT EXISTS `t_svc_db` CHARACTER SET utf8mb4", None) in fake.log
    # '_' is a wildcard in a GRANT's database name: it must be escaped.
    assert ("GRANT ALL PRIVILEGES ON `t\\_svc\\_db`.* TO `t_svc_user`@%s", ("%",)) in fake.log


def test_set_password_and_password_matches_never_format_the_password(fake, backend):
    fake.user = {"plugin": "mysql_native_password", "authentication_string": native_password_hash(PASSWORD),
                 "access": 0}
    backend.set_password("t_svc_user", PASSWORD)
    assert backend.password_matches("t_svc_user", PASSWORD) is True
    assert backend.password_matches("t_svc_user", PASSWORD + "x") is False
    _assert_no_secret_in_sql(fake.log, PASSWORD, ADMIN_PASSWORD)
    assert ("ALTER USER `t_svc_user`@%s IDENTIFIED BY %s", ("%", PASSWORD)) in fake.log


def test_password_change_is_a_parameterised_alter(fake, backend):
    fake.databases.add("t_svc_db")
    fake.user = {"plugin": "mysql_native_password", "authentication_string": native_password_hash("old"),
                 "max_user_connections": 20, "access": 0}
    fake.db_rows = [_complete_db_row("t\\_svc\\_db")]
    changes = ensure(backend, PASSWORD)
    assert changes == ["set password"]
    _assert_no_secret_in_sql(fake.log, PASSWORD, ADMIN_PASSWORD)


def test_unchanged_account_only_reads(fake, backend):
    fake.databases.add("t_svc_db")
    fake.user = {"plugin": "mysql_native_password", "authentication_string": native_password_hash(PASSWORD),
                 "max_user_connections": 20, "account_locked": True, "access": 0}
    fake.db_rows = [_complete_db_row("t\\_svc\\_db")]
    assert ensure(backend, PASSWORD, locked=True) == []
    assert all(sql.startswith("SELECT") for sql, _ in fake.log), fake.log


def test_global_privileges_or_grant_option_are_revoked(fake, backend):
    fake.databases.add("t_svc_db")
    fake.user = {"plugin": "mysql_native_password", "authentication_string": native_password_hash(PASSWORD),
                 "max_user_connections": 20, "access": 1}
    row = _complete_db_row("t\\_svc\\_db")
    fake.db_rows = [row]
    changes = ensure(backend, PASSWORD)
    assert changes == ["revoked privileges outside its database", "granted all privileges on t_svc_db"]
    assert ("REVOKE ALL PRIVILEGES, GRANT OPTION FROM `t_svc_user`@%s", ("%",)) in fake.log

    fake.user["access"] = 0
    row["Grant_priv"] = "Y"
    fake.log.clear()
    changes = ensure(backend, PASSWORD)
    assert changes == ["revoked privileges outside its database", "granted all privileges on t_svc_db"]


def test_locking_kills_open_sessions_and_ignores_ended_ones(fake, backend):
    fake.processes = [12, 13]
    backend.lock("t_svc_user", True)
    conn = fake.connections[0]
    kills = [sql for sql, _ in conn.executed if sql.startswith("KILL")]
    assert kills == ["KILL CONNECTION 12", "KILL CONNECTION 13"]

    conn.failures = [None, None, None, pymysql.err.OperationalError(1094, "Unknown thread id: 13")]
    backend.lock("t_svc_user", True)     # a session that ended meanwhile is not an error
    fake.log.clear()
    backend.lock("t_svc_user", False)
    assert [sql for sql, _ in fake.log] == ["ALTER USER `t_svc_user`@%s ACCOUNT UNLOCK"]


def test_mysql8_non_native_hash_counts_as_different(fake, backend):
    fake.version = "8.0.36"
    fake.databases.add("t_svc_db")
    fake.mysql_user = {"plugin": "caching_sha2_password", "auth_hex": b"$A$005$\x01\xff".hex(),
                       "max_user_connections": 20, "account_locked": "N"}
    fake.db_rows = [_complete_db_row("t\\_svc\\_db")]
    changes = ensure(backend, PASSWORD)
    assert changes == ["set password"]
    assert not any("global_priv" in sql for sql, _ in fake.log)


# --- pool and errors -----------------------------------------------------------------------------

def test_connections_are_reused(fake, backend):
    backend.ping()
    backend.ping()
    assert len(fake.connections) == 1
    assert [sql for sql, _ in fake.log].count("SELECT VERSION() AS v") == 1


def test_dead_pooled_connection_is_discarded_and_retried_once(fake, backend):
    backend.ping()
    first = fake.connections[0]
    first.failures = [pymysql.err.OperationalError(2006, "MySQL server has gone away")]
    backend.ping()
    assert first.closed and len(fake.connections) == 2
    assert fake.connections[1].executed[-1] == ("SELECT 1", None)


def test_a_second_failure_is_not_retried(fake, backend, monkeypatch):
    backend.ping()
    fake.connections[0].failures = [pymysql.err.OperationalError(2013, "Lost connection")]
    original = mysql.connect

    def connect_then_fail(**kwargs):
        conn = original(**kwargs)
        conn.failures = [pymysql.err.OperationalError(2013, "Lost connection")]
        return conn

    monkeypatch.setattr(mysql, "connect", connect_then_fail)
    with pytest.raises(BackendUnavailable, match="lost the connection"):
        backend.ping()
    assert len(fake.connections) == 2 and all(c.closed for c in fake.connections)


def test_refused_statement_keeps_the_connection_and_hides_the_password(fake, backend):
    backend.ping()
    conn = fake.connections[0]
    conn.failures = [pymysql.err.ProgrammingError(
        1064, f"You have an error in your SQL syntax; near 'IDENTIFIED BY '{PASSWORD}'' at line 1")]
    with pytest.raises(BackendUnavailable) as exc:
        backend.set_password("t_svc_user", PASSWORD)
    message = str(exc.value)
    assert "db.example:3307" in message and "(1064)" in message
    assert PASSWORD not in message and ADMIN_PASSWORD not in message
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert not conn.closed
    backend.ping()
    assert len(fake.connections) == 1


def test_passwords_echoed_by_the_server_are_masked(fake, backend):
    backend.ping()
    fake.connections[0].failures = [pymysql.err.OperationalError(1396, f"failed for {PASSWORD}")]
    with pytest.raises(BackendUnavailable) as exc:
        backend.set_password("t_svc_user", PASSWORD)
    assert PASSWORD not in str(exc.value) and "***" in str(exc.value)


def test_connect_failure_names_host_and_port_without_secrets(monkeypatch, backend):
    def refuse(**kwargs):
        raise pymysql.err.OperationalError(
            2003, f"Can't connect to MySQL server on 'db.example' (password {kwargs['password']})")

    monkeypatch.setattr(mysql, "connect", refuse)
    with pytest.raises(BackendUnavailable) as exc:
        backend.ensure_account("t_db", "t_user", PASSWORD, max_user_connections=1, locked=False)
    message = str(exc.value)
    assert message.startswith("mysql: db.example:3307: cannot connect")
    assert ADMIN_PASSWORD not in message and PASSWORD not in message
    assert exc.value.backend == "mysql"


def test_pool_size_bounds_open_connections(fake, backend):
    # pool_size=2: with both slots held, a third caller waits, then gives up.
    backend._acquire_timeout = 0.01
    held = [backend._acquire(), backend._acquire()]
    try:
        with pytest.raises(BackendUnavailable, match="no free connection"):
            backend.ping()
    finally:
        for conn, _ in held:
            backend._release(conn)
    backend.ping()
    assert len(fake.connections) == 2


def test_closed_backend_refuses_calls(fake, backend):
    backend.ping()
    backend.close()
    assert fake.connections[0].closed
    with pytest.raises(BackendUnavailable, match="closed"):
        backend.ping()


def test_connections_share_one_tls_context_in_preferred_mode():
    """pymysql builds a TLS context per connection in its default mode; ours
    reuse one (building it loads the CA store, a measured cost)."""
    from tenant_operator.backends.mysql.client import connect
    a = connect(host="127.0.0.1", port=1, user="u", password="p", defer_connect=True)
    b = connect(host="127.0.0.1", port=1, user="v", password="q", defer_connect=True)
    assert a.ssl and not a._ssl_required          # still PREFERRED: TLS when offered, plain otherwise
    assert a.ctx is not None and a.ctx is b.ctx
    explicit = connect(host="127.0.0.1", port=1, user="u", password="p", defer_connect=True,
                       ssl={"check_hostname": False})
    assert explicit.ctx is not a.ctx and explicit._ssl_required
