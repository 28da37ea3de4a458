"""Tenant backends end to end: the real operator provisions MySQL, MinIO and
RabbitMQ for Tenants, and every check uses only what the tenant is given, its
Secrets (credentials decoded from the Secret, never taken from the operator's
config). Admin clients (from the devenv environment) only confirm what exists
on a server after the tenant's own access is gone, and clean up what a test
deliberately leaves behind.

Also holds the small helpers the deletion and outage tests share."""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions
import pymysql
import pytest
import requests
from kubernetes.client.rest import ApiException
from minio import Minio, MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException, S3Error

from .conftest import (
    BACKUPS_RETENTION_DAYS,
    remove_bucket,  # noqa: F401 - shared with the other modules
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

ENV = ("MYSQL_HOST", "MYSQL_PORT", "MYSQL_ADMIN_USER", "MYSQL_ADMIN_PASSWORD",
       "RABBITMQ_MGMT_URL", "RABBITMQ_ADMIN_USER", "RABBITMQ_ADMIN_PASSWORD",
       "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")

# MySQL / MariaDB error codes.
ACCESS_DENIED = 1045          # wrong password or no such user
DB_ACCESS_DENIED = 1044       # no privilege on that database
TABLE_ACCESS_DENIED = 1142    # no privilege on that table
UNKNOWN_DATABASE = 1049
ACCOUNT_LOCKED = (4151, 3118)  # MariaDB, MySQL

# Tenant-side S3 errors for keys that do not (or no longer) sign valid requests.
S3_BAD_KEYS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidClientTokenId")

FULL = {"databases": ["auth"], "objectStorage": {"buckets": ["media"]}, "messaging": {"queues": ["orders"]}}
READY_TIMEOUT = 120
# IAM and password changes on the servers are applied before the operator
# writes the Secret; a short wait only absorbs MinIO's IAM cache.
REFUSAL_TIMEOUT = 20


def _require_env():
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        pytest.skip(f"devenv service variables missing ({', '.join(missing)}): source .devenv/env")


# --- the tenant's side: Secrets and clients built from them --------------------------------

def secret_data(core, namespace: str, name: str) -> dict[str, str]:
    obj = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}


def full_credentials(core, ns: str) -> tuple[dict, dict, dict]:
    """The auth database, RabbitMQ and object-storage credentials of a FULL tenant."""
    return (secret_data(core, ns, "auth-db-credentials"), secret_data(core, ns, "rabbitmq-credentials"),
            secret_data(core, ns, "objectstorage-credentials"))


def wait_secret(core, namespace: str, name: str, timeout: float = 60, differs_from: dict | None = None,
                key: str = "") -> dict[str, str]:
    """The Secret's data once it exists (and, with `differs_from`, once `key` changed)."""
    def check():
        data = secret_data(core, namespace, name)
        if differs_from is not None and data.get(key) == differs_from.get(key):
            return None
        return data
    return wait_for(check, timeout, what=f"Secret {namespace}/{name}")


def secret_gone(core, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_secret(name, namespace)
        return False
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise


_OWN = object()


def db_connect(creds: dict, database=_OWN, password: str | None = None):
    return pymysql.connect(host=creds["DB_HOST"], port=int(creds["DB_PORT"]), user=creds["DB_USERNAME"],
                           password=creds["DB_PASSWORD"] if password is None else password,
                           database=creds["DB_DATABASE"] if database is _OWN else database,
                           connect_timeout=5, read_timeout=10, write_timeout=10, autocommit=True)


def db_error(creds: dict, database=_OWN, password: str | None = None) -> int | None:
    """None when the tenant's credentials log in (to `database`), else the server's error code."""
    try:
        conn = db_connect(creds, database, password)
    except pymysql.err.OperationalError as exc:
        return exc.args[0]
    conn.close()
    return None


def db_query(creds: dict, *statements: str) -> list[tuple]:
    """Run statements with the tenant's credentials; the rows of the last one."""
    conn = db_connect(creds)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def check_db_secret(creds: dict) -> None:
    """The Secret's fields agree with each other (DATABASE_URL is what most apps read)."""
    url = urlsplit(creds["DATABASE_URL"])
    assert url.scheme == "mysql"
    assert unquote(url.username) == creds["DB_USERNAME"]
    assert unquote(url.password) == creds["DB_PASSWORD"]
    assert url.hostname == creds["DB_HOST"] and url.port == int(creds["DB_PORT"])
    assert url.path == "/" + creds["DB_DATABASE"]


def s3_client(creds: dict) -> Minio:
    url = urlsplit(creds["S3_ENDPOINT"])
    return Minio(url.netloc, access_key=creds["AWS_ACCESS_KEY_ID"], secret_key=creds["AWS_SECRET_ACCESS_KEY"],
                 secure=url.scheme == "https", region=creds["S3_REGION"])


def s3_error(action) -> str | None:
    """Run `action`; None when it succeeds, else the S3 error code."""
    try:
        action()
    except S3Error as exc:
        return exc.code
    return None


def s3_works(creds: dict, bucket: str) -> bool:
    client = s3_client(creds)
    key = f"probe-{uuid.uuid4().hex[:8]}"
    client.put_object(bucket, key, io.BytesIO(b"probe"), 5)
    ok = client.get_object(bucket, key).read() == b"probe"
    client.remove_object(bucket, key)
    return ok


def s3_refused(creds: dict, bucket: str) -> str | None:
    """The error code once the keys no longer list `bucket` (None while they still do)."""
    code = s3_error(lambda: list(s3_client(creds).list_objects(bucket)))
    return code if code in S3_BAD_KEYS else None


def amqp_params(creds: dict, vhost: str | None = None, password: str | None = None) -> pika.URLParameters:
    params = pika.URLParameters(creds["AMQP_URL"])
    if vhost is not None:
        params.virtual_host = vhost
    if password is not None:
        params.credentials = pika.PlainCredentials(creds["RABBITMQ_USERNAME"], password)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    return params


AMQP_REFUSALS = (pika.exceptions.ProbableAccessDeniedError, pika.exceptions.ProbableAuthenticationError,
                 pika.exceptions.AuthenticationError, pika.exceptions.ConnectionClosedByBroker)


def amqp_refused(creds: dict, vhost: str | None = None, password: str | None = None) -> Exception | None:
    """The broker's refusal of a connection with these credentials (None when it is accepted)."""
    try:
        conn = pika.BlockingConnection(amqp_params(creds, vhost, password))
    except AMQP_REFUSALS as exc:
        return exc
    conn.close()
    return None


def check_amqp_secret(creds: dict) -> None:
    params = pika.URLParameters(creds["AMQP_URL"])
    assert params.host == creds["RABBITMQ_HOST"] and params.port == int(creds["RABBITMQ_PORT"])
    assert params.virtual_host == creds["RABBITMQ_VHOST"]
    assert params.credentials.username == creds["RABBITMQ_USERNAME"]
    assert params.credentials.password == creds["RABBITMQ_PASSWORD"]


def amqp_roundtrip(creds: dict, exchange: str, routing_key: str, queue: str) -> None:
    """Publish (confirmed, mandatory: an unroutable message raises) and read it back from `queue`."""
    body = f"msg-{uuid.uuid4().hex}".encode()
    conn = pika.BlockingConnection(amqp_params(creds))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, body, properties=pika.BasicProperties(delivery_mode=2),
                         mandatory=True)
        got = wait_for(lambda: ch.basic_get(queue, auto_ack=True)[2], 10, what=f"message on {queue}")
        assert got == body
    finally:
        conn.close()


def amqp_publish(creds: dict, exchange: str, routing_key: str, body: bytes) -> None:
    conn = pika.BlockingConnection(amqp_params(creds))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, body, properties=pika.BasicProperties(delivery_mode=2),
                         mandatory=True)
    finally:
        conn.close()


def amqp_queue_exists(creds: dict, queue: str) -> bool:
    conn = pika.BlockingConnection(amqp_params(creds))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    finally:
        if conn.is_open:
            conn.close()


# --- the platform's side: admin clients from the devenv environment --------------------------

def admin_db():
    return pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_ADMIN_USER"], password=os.environ["MYSQL_ADMIN_PASSWORD"],
                           connect_timeout=5, autocommit=True)


def admin_rows(sql: str, args: tuple = ()) -> list[tuple]:
    conn = admin_db()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def database_exists(name: str) -> bool:
    return bool(admin_rows("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)))


def mysql_user_exists(name: str) -> bool:
    return bool(admin_rows("SELECT 1 FROM mysql.user WHERE User = %s", (name,)))


def tenant_databases(tenant: str) -> list[str]:
    prefix = tenant.replace("-", "_") + "_"
    return [r[0] for r in admin_rows("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            if r[0].startswith(prefix)]


def _minio_host() -> tuple[str, bool]:
    url = urlsplit(os.environ["MINIO_ENDPOINT"])
    return url.netloc, url.scheme == "https"


def admin_s3() -> Minio:
    host, secure = _minio_host()
    return Minio(host, access_key=os.environ["MINIO_ACCESS_KEY"], secret_key=os.environ["MINIO_SECRET_KEY"],
                 secure=secure, region="us-east-1")


def admin_minio() -> MinioAdmin:
    host, secure = _minio_host()
    return MinioAdmin(endpoint=host, secure=secure,
                      credentials=StaticProvider(os.environ["MINIO_ACCESS_KEY"], os.environ["MINIO_SECRET_KEY"]))


def tenant_buckets(tenant: str) -> list[str]:
    """Buckets named `<tenant>-<name>` (not those of a tenant whose name extends this one)."""
    prefix = f"{tenant}-"
    return sorted(b.name for b in admin_s3().list_buckets()
                  if b.name.startswith(prefix) and "-" not in b.name[len(prefix):])


def minio_user_exists(user: str) -> bool:
    try:
        json.loads(admin_minio().user_info(user))
        return True
    except MinioAdminException as exc:
        if "XMinioAdminNoSuchUser" in str(getattr(exc, "_body", "")):
            return False
        raise


def rabbit(method: str, *segments: str, json_body: dict | None = None):
    url = os.environ["RABBITMQ_MGMT_URL"].rstrip("/") + "/api/" + "/".join(quote(s, safe="") for s in segments)
    resp = requests.request(method, url, timeout=10, json=json_body,
                            auth=(os.environ["RABBITMQ_ADMIN_USER"], os.environ["RABBITMQ_ADMIN_PASSWORD"]))
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json() if resp.content else {}


def vhost_exists(vhost: str) -> bool:
    return rabbit("GET", "vhosts", vhost) is not None


def rabbit_user_exists(user: str) -> bool:
    return rabbit("GET", "users", user) is not None


def admin_cleanup(tenant: str) -> None:
    """Remove whatever a tenant left on the servers (Retain policy, backups bucket).
    Only for tenants whose Tenant object is gone: the operator would recreate them."""
    for db in tenant_databases(tenant):
        admin_rows(f"DROP DATABASE IF EXISTS `{db}`")
    prefix = tenant.replace("-", "_") + "_"
    for (user, host) in admin_rows("SELECT User, Host FROM mysql.user"):
        if user.startswith(prefix) and user.endswith("_user"):
            admin_rows("DROP USER IF EXISTS %s@%s", (user, host))
    for bucket in tenant_buckets(tenant):
        remove_bucket(bucket)
    admin = admin_minio()
    for call in (lambda: admin.user_remove(f"tenant-{tenant}"), lambda: admin.policy_remove(f"tenant-{tenant}")):
        try:
            call()
        except MinioAdminException:
            pass
    for kind in ("vhosts", "users"):
        rabbit("DELETE", kind, tenant)



def tenant_events(core, name: str, reason: str | None = None) -> list:
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    events = [e for e in events if reason is None or e.reason == reason]
    return sorted(events, key=lambda e: int(e.metadata.resource_version))


def conditions(t: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (t.get("status") or {}).get("conditions") or []}


def wait_condition(tenants, name: str, ctype: str, status: str, reason: str | None = None,
                   timeout: float = 60) -> dict:
    def check():
        c = tenants.condition(name, ctype)
        return c if c and c["status"] == status and (reason is None or c["reason"] == reason) else None
    return wait_for(check, timeout, what=f"{name} {ctype}={status}" + (f" ({reason})" if reason else ""))


# --- tests -----------------------------------------------------------------------------------

def test_two_tenants_are_isolated_on_every_backend(tenants, core):
    a = tenants.create(unique("bk-a"), **FULL)
    b = tenants.create(unique("bk-b"), **FULL)
    for name in (a, b):
        t = tenants.wait_phase(name, "Ready", READY_TIMEOUT)
        conds = conditions(t)
        for ctype in ("DatabasesReady", "ObjectStorageReady", "MessagingReady"):
            assert conds[ctype]["status"] == "True", conds[ctype]
    ns_a, ns_b = f"tenant-{a}", f"tenant-{b}"

    # MySQL: A works in its own database only.
    db_a, db_b = secret_data(core, ns_a, "auth-db-credentials"), secret_data(core, ns_b, "auth-db-credentials")
    check_db_secret(db_a)
    assert db_a["DB_DATABASE"] != db_b["DB_DATABASE"] and db_a["DB_USERNAME"] != db_b["DB_USERNAME"]
    rows = db_query(db_a, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40))",
                    "INSERT INTO items VALUES (1, 'first'), (2, 'second')",
                    "SELECT id, name FROM items ORDER BY id")
    assert rows == [(1, "first"), (2, "second")]
    assert db_error(db_a, database=db_b["DB_DATABASE"]) == DB_ACCESS_DENIED
    conn = db_connect(db_a)
    try:
        with conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as denied:
            cur.execute("SELECT User FROM mysql.user")
        assert denied.value.args[0] in (TABLE_ACCESS_DENIED, DB_ACCESS_DENIED), denied.value
        with conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as denied:
            cur.execute(f"SELECT 1 FROM `{db_b['DB_DATABASE']}`.items")
        assert denied.value.args[0] in (TABLE_ACCESS_DENIED, DB_ACCESS_DENIED), denied.value
    finally:
        conn.close()

    # Object storage: A reads and writes its own buckets only, and creates none.
    s3_a, s3_b = (secret_data(core, ns_a, "objectstorage-credentials"),
                  secret_data(core, ns_b, "objectstorage-credentials"))
    bucket_a, bucket_b = s3_a["S3_BUCKET_MEDIA"], s3_b["S3_BUCKET_MEDIA"]
    assert bucket_a == f"{a}-media" and s3_a["S3_BUCKETS"] == bucket_a
    assert s3_a["S3_BACKUPS_BUCKET"] == f"{a}-backups"
    # Replaced or deleted backups stay recoverable for the platform's retention, then go.
    (rule,) = admin_s3().get_bucket_lifecycle(s3_a["S3_BACKUPS_BUCKET"]).rules
    assert rule.noncurrent_version_expiration.noncurrent_days == BACKUPS_RETENTION_DAYS
    assert rule.expiration.expired_object_delete_marker is True and rule.expiration.days is None
    client = s3_client(s3_a)
    client.put_object(bucket_a, "docs/hello.txt", io.BytesIO(b"hello"), 5, content_type="text/plain")
    assert client.get_object(bucket_a, "docs/hello.txt").read() == b"hello"
    assert [o.object_name for o in client.list_objects(bucket_a, prefix="docs/")] == ["docs/hello.txt"]
    assert s3_error(lambda: client.put_object(bucket_b, "x", io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert s3_error(lambda: list(client.list_objects(bucket_b))) == "AccessDenied"
    assert s3_error(lambda: client.make_bucket(f"{a}-extra")) == "AccessDenied"

    # RabbitMQ: A publishes to its exchange and consumes its queue; B's vhost refuses it.
    mq_a, mq_b = secret_data(core, ns_a, "rabbitmq-credentials"), secret_data(core, ns_b, "rabbitmq-credentials")
    check_amqp_secret(mq_a)
    assert mq_a["RABBITMQ_VHOST"] == a and mq_b["RABBITMQ_VHOST"] == b
    amqp_roundtrip(mq_a, f"{a}.events", "orders.created", f"{a}.orders")
    assert isinstance(amqp_refused(mq_a, vhost=mq_b["RABBITMQ_VHOST"]), AMQP_REFUSALS)
    assert isinstance(amqp_refused(mq_a, password=mq_b["RABBITMQ_PASSWORD"]), AMQP_REFUSALS)


def test_deleted_secret_comes_back_with_new_working_credentials(tenants, core):
    name = tenants.create(unique("bk-sec"), **FULL)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"

    old = secret_data(core, ns, "auth-db-credentials")
    assert db_error(old) is None
    core.delete_namespaced_secret("auth-db-credentials", ns)
    new = wait_secret(core, ns, "auth-db-credentials", differs_from=old, key="DB_PASSWORD")
    assert new["DB_USERNAME"] == old["DB_USERNAME"] and new["DB_DATABASE"] == old["DB_DATABASE"]
    check_db_secret(new)
    assert db_error(new) is None
    assert db_error(old) == ACCESS_DENIED

    old = secret_data(core, ns, "rabbitmq-credentials")
    assert amqp_refused(old) is None
    core.delete_namespaced_secret("rabbitmq-credentials", ns)
    new = wait_secret(core, ns, "rabbitmq-credentials", differs_from=old, key="RABBITMQ_PASSWORD")
    check_amqp_secret(new)
    assert amqp_refused(new) is None
    assert isinstance(amqp_refused(old), AMQP_REFUSALS)
    amqp_roundtrip(new, f"{name}.events", "orders.created", f"{name}.orders")

    old = secret_data(core, ns, "objectstorage-credentials")
    bucket = old["S3_BUCKET_MEDIA"]
    assert s3_works(old, bucket)
    core.delete_namespaced_secret("objectstorage-credentials", ns)
    new = wait_secret(core, ns, "objectstorage-credentials", differs_from=old, key="AWS_SECRET_ACCESS_KEY")
    assert new["S3_BUCKET_MEDIA"] == bucket
    assert s3_works(new, bucket)
    wait_for(lambda: s3_refused(old, bucket), REFUSAL_TIMEOUT, what="old S3 keys refused")

    t = tenants.wait_phase(name, "Ready")
    # BackupsVerified stays Unknown until a first recovery drill ran (and is not part of Ready).
    assert all(c["status"] == "True" for k, c in conditions(t).items() if k != "BackupsVerified"), conditions(t)
    assert conditions(t)["BackupsVerified"]["reason"] == "NotRunYet"


def test_rotation_replaces_every_credential(tenants, core):
    name = tenants.create(unique("bk-rot"), **FULL)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    old_db, old_mq, old_s3 = full_credentials(core, ns)
    bucket = old_s3["S3_BUCKET_MEDIA"]

    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/rotate-credentials": "r1"}}})
    def rotated():
        t = tenants.get(name)
        return t if ((t.get("status") or {}).get("credentials") or {}).get("rotationToken") == "r1" else None
    t = wait_for(rotated, 90, what="rotationToken r1 in status")
    creds = t["status"]["credentials"]
    assert creds["rotatedAt"], creds
    tenants.wait_phase(name, "Ready")

    new_db, new_mq, new_s3 = full_credentials(core, ns)
    assert new_db["DB_PASSWORD"] != old_db["DB_PASSWORD"]
    assert new_mq["RABBITMQ_PASSWORD"] != old_mq["RABBITMQ_PASSWORD"]
    assert new_s3["AWS_SECRET_ACCESS_KEY"] != old_s3["AWS_SECRET_ACCESS_KEY"]

    check_db_secret(new_db)
    assert new_db["DB_USERNAME"] == old_db["DB_USERNAME"] + "_b", "the Secret moved to the second account"
    assert new_mq["RABBITMQ_USERNAME"] == old_mq["RABBITMQ_USERNAME"] + "_b"
    assert db_error(new_db) is None
    check_amqp_secret(new_mq)
    assert amqp_refused(new_mq) is None
    assert s3_works(new_s3, bucket)
    # Within the overlap (1h by default) the previous credentials still work.
    assert db_error(old_db) is None
    assert amqp_refused(old_mq) is None
    assert s3_works(old_s3, bucket)
    for backend in ("mysql", "objectstorage", "rabbitmq"):
        assert creds[backend]["rotationToken"] == "r1" and creds[backend]["previousRevokeAt"], creds

    events = tenant_events(core, name, "CredentialsRotated")
    assert {e.message.split()[0] for e in events} >= {"mysql", "objectstorage", "rabbitmq"}, \
        [e.message for e in events]

    # The same token again rotates nothing.
    tenants.patch(name, {"spec": {"displayName": "after rotation"}})
    tenants.wait_phase(name, "Ready")
    assert secret_data(core, ns, "auth-db-credentials")["DB_PASSWORD"] == new_db["DB_PASSWORD"]
    assert secret_data(core, ns, "rabbitmq-credentials")["RABBITMQ_PASSWORD"] == new_mq["RABBITMQ_PASSWORD"]
    assert tenants.get(name)["status"]["credentials"] == creds


def test_suspension_locks_every_backend_and_resume_restores(tenants, core):
    name = tenants.create(unique("bk-sus"), **FULL)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    db, mq, s3 = full_credentials(core, ns)
    bucket = s3["S3_BUCKET_MEDIA"]
    db_query(db, "CREATE TABLE kept (id INT PRIMARY KEY)", "INSERT INTO kept VALUES (7)")
    session = db_connect(db)   # an open session is ended by the lock

    try:
        tenants.patch(name, {"spec": {"suspended": True}})
        t = tenants.wait_phase(name, "Suspended", 90)
        conds = conditions(t)
        assert conds["DatabasesReady"]["reason"] == "Locked", conds["DatabasesReady"]
        assert conds["ObjectStorageReady"]["reason"] == "Disabled", conds["ObjectStorageReady"]
        assert conds["MessagingReady"]["reason"] == "Revoked", conds["MessagingReady"]

        assert db_error(db) in ACCOUNT_LOCKED
        with pytest.raises(pymysql.err.Error):
            session.ping(reconnect=False)
        wait_for(lambda: s3_refused(s3, bucket), REFUSAL_TIMEOUT, what="suspended S3 keys refused")
        assert isinstance(amqp_refused(mq), AMQP_REFUSALS)
    finally:
        try:
            session.close()
        except pymysql.err.Error:
            pass

    # Suspension keeps the credentials: the apps need no new Secret on resume.
    assert full_credentials(core, ns) == (db, mq, s3)

    tenants.patch(name, {"spec": {"suspended": False}})
    tenants.wait_phase(name, "Ready", 90)
    db, mq, s3 = full_credentials(core, ns)
    assert db_query(db, "SELECT id FROM kept") == [(7,)]
    assert s3_works(s3, bucket)
    amqp_roundtrip(mq, f"{name}.events", "orders.created", f"{name}.orders")


def long_name() -> str:
    name = f"a-very-long-tenant-name-goes-on-and-{uuid.uuid4().hex[:4]}"
    assert len(name) == 40    # the longest name a Tenant may have
    return name


def test_long_tenant_name_gets_shortened_backend_names(tenants, core):
    name = tenants.create(long_name(), databases=["products"])
    t = tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    assert conditions(t)["DatabasesReady"]["status"] == "True"
    tid = name.replace("-", "_")

    creds = secret_data(core, f"tenant-{name}", "products-db-credentials")
    user, db = creds["DB_USERNAME"], creds["DB_DATABASE"]
    assert len(f"{tid}_products_user") > 32
    assert len(user) <= 32 and user.endswith("_user") and user.startswith(tid[:10]), user
    assert db == f"{tid}_products_db"          # fits in 64: kept readable as is
    check_db_secret(creds)
    rows = db_query(creds, "CREATE TABLE t (v VARCHAR(20))", "INSERT INTO t VALUES ('products')", "SELECT v FROM t")
    assert rows == [("products",)]
    assert mysql_user_exists(user)


def test_database_name_at_the_mysql_limit_is_usable(tenants, core):
    name = long_name()
    tid = name.replace("-", "_")
    # 40 + 1 + 21 + 3 = 65 characters: the database name itself must be shortened.
    tenants.create(name, databases=["inventoryreservations"])
    assert len(f"{tid}_inventoryreservations_db") > 64

    def reported():
        t = tenants.get(name)
        c = conditions(t).get("DatabasesReady")
        return c if c and c["observedGeneration"] == t["metadata"]["generation"] else None
    cond = wait_for(reported, READY_TIMEOUT, what="DatabasesReady reported")
    assert cond["status"] == "True", cond
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    creds = secret_data(core, f"tenant-{name}", "inventoryreservations-db-credentials")
    assert len(creds["DB_DATABASE"]) <= 64 and creds["DB_DATABASE"].endswith("_db")
    assert len(creds["DB_USERNAME"]) <= 32
    check_db_secret(creds)
    assert db_query(creds, "CREATE TABLE t (v INT)", "INSERT INTO t VALUES (3)", "SELECT v FROM t") == [(3,)]


def test_removed_queue_waits_out_its_grace_then_goes_when_empty_and_stays_when_not(tenants, core):
    name = tenants.create(unique("bk-q"), messaging={"queues": ["orders", "mail", "audit"]},
                          deletion={"gracePeriod": "20s"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    mq = secret_data(core, f"tenant-{name}", "rabbitmq-credentials")
    for q in ("orders", "mail", "audit"):
        assert amqp_queue_exists(mq, f"{name}.{q}")
    amqp_publish(mq, f"{name}.events", "audit.login", b"keep me")

    tenants.patch(name, {"spec": {"messaging": {"queues": ["orders"]}}})
    pending = wait_for(lambda: ((tenants.get(name).get("status") or {}).get("pendingRemovals") or {}).get("queues"),
                       60, what="status.pendingRemovals.queues")
    assert sorted(p["queue"] for p in pending) == [f"{name}.audit", f"{name}.mail"]
    purge_after = min(datetime.fromisoformat(p["purgeAfter"].replace("Z", "+00:00")) for p in pending)
    assert amqp_queue_exists(mq, f"{name}.mail") or datetime.now(UTC) >= purge_after, \
        "an empty removed queue is kept through its grace period"
    assert tenant_events(core, name, "QueuePendingRemoval")
    wait_for(lambda: not amqp_queue_exists(mq, f"{name}.mail"), 90, what="empty queue removed after its grace")
    assert datetime.now(UTC) >= purge_after
    cond = wait_condition(tenants, name, "MessagingReady", "True", "QueuesRetained")
    assert f"{name}.audit" in cond["message"]
    assert amqp_queue_exists(mq, f"{name}.audit") and amqp_queue_exists(mq, f"{name}.orders")
    # The kept queue no longer receives new messages; its message can still be drained.
    amqp_roundtrip(mq, f"{name}.events", "orders.created", f"{name}.orders")
    with pytest.raises(pika.exceptions.UnroutableError):
        amqp_publish(mq, f"{name}.events", "audit.again", b"unroutable")
    conn = pika.BlockingConnection(amqp_params(mq))
    try:
        assert conn.channel().basic_get(f"{name}.audit", auto_ack=True)[2] == b"keep me"
    finally:
        conn.close()
    # Once drained, the next full backend check removes it.
    tenants.patch(name, {"spec": {"displayName": "drained"}})
    wait_for(lambda: not amqp_queue_exists(mq, f"{name}.audit"), 60, what="drained queue removed")
    wait_condition(tenants, name, "MessagingReady", "True", "Provisioned")


def test_removed_database_with_retain_keeps_data_but_drops_user(tenants, core):
    name = tenants.create(unique("bk-ret"), databases=["auth", "billing"], deletion={"gracePeriod": "0s",
                                                                                     "policy": "Retain"})
    ns = f"tenant-{name}"
    billing_db = None
    try:
        tenants.wait_phase(name, "Ready", READY_TIMEOUT)
        billing = secret_data(core, ns, "billing-db-credentials")
        billing_db = billing["DB_DATABASE"]
        db_query(billing, "CREATE TABLE invoices (id INT)", "INSERT INTO invoices VALUES (42)")

        tenants.patch(name, {"spec": {"databases": ["auth"]}})
        tenants.wait_phase(name, "Ready")
        wait_for(lambda: secret_gone(core, ns, "billing-db-credentials"), 60, what="billing Secret removed")
        assert db_error(billing) == ACCESS_DENIED
        assert not mysql_user_exists(billing["DB_USERNAME"])
        assert database_exists(billing_db)
        assert admin_rows(f"SELECT id FROM `{billing_db}`.invoices") == [(42,)]
        assert db_error(secret_data(core, ns, "auth-db-credentials")) is None
        assert any(billing_db in e.message for e in tenant_events(core, name, "DatabaseRetained"))
    finally:
        # Let the purge at teardown remove everything, the retained database included.
        if not tenants.gone(name):
            tenants.patch(name, {"spec": {"deletion": {"policy": "Delete"}}})
            tenants.wait_phase(name, "Ready")
        elif billing_db:
            admin_rows(f"DROP DATABASE IF EXISTS `{billing_db}`")


def test_removed_database_with_delete_drops_it(tenants, core):
    name = tenants.create(unique("bk-del"), databases=["auth", "billing"])
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    billing = secret_data(core, ns, "billing-db-credentials")
    db_query(billing, "CREATE TABLE invoices (id INT)")
    assert database_exists(billing["DB_DATABASE"])

    tenants.patch(name, {"spec": {"databases": ["auth"]}})
    tenants.wait_phase(name, "Ready")
    wait_for(lambda: secret_gone(core, ns, "billing-db-credentials"), 60, what="billing Secret removed")
    assert not database_exists(billing["DB_DATABASE"])
    assert not mysql_user_exists(billing["DB_USERNAME"])
    assert db_error(billing) == ACCESS_DENIED
    assert db_error(secret_data(core, ns, "auth-db-credentials")) is None
    assert any(billing["DB_DATABASE"] in e.message for e in tenant_events(core, name, "DatabaseDropped"))
