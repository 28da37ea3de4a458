"""Rotation without downtime: a client keeps working through a rotation of its
backend's credentials, the previous credential stops working after the
overlap, and a purge removes both accounts of every pair.

The clients behave like a pod that reads its Secret from a mounted volume:
they re-read it periodically (and whenever an operation fails) and reconnect
when it changed. An operation that fails counts as failed even if a retry with
the re-read Secret would succeed."""

from __future__ import annotations

import io
import threading
import time
import uuid

import pika
import pytest

from .conftest import unique, wait_for
from .test_tenant_backends import (
    ACCESS_DENIED,
    ACCOUNT_LOCKED,
    AMQP_REFUSALS,
    READY_TIMEOUT,
    REFUSAL_TIMEOUT,
    _require_env,
    amqp_params,
    amqp_refused,
    db_connect,
    db_error,
    minio_user_exists,
    mysql_user_exists,
    rabbit_user_exists,
    s3_client,
    s3_refused,
    secret_data,
)

pytestmark = pytest.mark.integration

OVERLAP = "5s"
RELOAD_EVERY = 0.5    # seconds between Secret reads: a kubelet refreshes mounted Secrets likewise
SPEC = {"databases": ["auth"], "objectStorage": {"buckets": ["media"]}, "messaging": {"queues": ["orders"]},
        "credentials": {"rotationOverlap": OVERLAP}}


class LiveClient(threading.Thread):
    """Runs `operate(session)` in a loop with the credentials of one Secret,
    re-read every RELOAD_EVERY seconds and after a failure; `connect(creds)`
    opens a session (None for stateless clients), `close(session)` ends it."""

    def __init__(self, core, namespace: str, secret: str, user_key: str):
        super().__init__(daemon=True)
        self.core, self.namespace, self.secret, self.user_key = core, namespace, secret, user_key
        self.ok, self.failures, self.errors = 0, 0, []
        self.users: list[str] = []        # the accounts it used, in order
        self.stopping = threading.Event()

    def connect(self, creds: dict):
        return None

    def close(self, session) -> None:
        pass

    def operate(self, creds: dict, session) -> None:
        raise NotImplementedError

    def run(self) -> None:
        creds, session, read_at = None, None, 0.0
        while not self.stopping.is_set():
            try:
                if creds is None or time.monotonic() - read_at >= RELOAD_EVERY:
                    fresh = secret_data(self.core, self.namespace, self.secret)
                    read_at = time.monotonic()
                    if fresh != creds:
                        self.close(session)
                        creds, session = fresh, None
                        self.users.append(creds[self.user_key])
                if session is None:
                    session = self.connect(creds)
                self.operate(creds, session)
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and kept for the assertion
                self.failures += 1
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                self.close(session)
                creds, session = None, None
        self.close(session)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        assert not self.is_alive(), "client did not stop"


class MySQLClient(LiveClient):
    def connect(self, creds):
        conn = db_connect(creds)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS rotation_probe (id INT AUTO_INCREMENT PRIMARY KEY, "
                        "at VARCHAR(32))")
        return conn

    def close(self, session):
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001 # nosec B110 - a killed session may already be gone
                pass

    def operate(self, creds, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
            cur.execute("INSERT INTO rotation_probe (at) VALUES (%s)", (str(time.time()),))


class S3Client(LiveClient):
    def operate(self, creds, session):
        client = s3_client(creds)
        bucket, key = creds["S3_BUCKET_MEDIA"], f"probe-{uuid.uuid4().hex[:8]}"
        client.put_object(bucket, key, io.BytesIO(b"probe"), 5)
        assert client.get_object(bucket, key).read() == b"probe"


class AMQPClient(LiveClient):
    def __init__(self, *args, tenant: str):
        super().__init__(*args)
        self.tenant = tenant

    def connect(self, creds):
        return pika.BlockingConnection(amqp_params(creds))

    def close(self, session):
        if session is not None and session.is_open:
            try:
                session.close()
            except Exception:  # noqa: BLE001 # nosec B110 - a closed connection may already be gone
                pass

    def operate(self, creds, conn):
        channel = conn.channel()
        try:
            body = uuid.uuid4().hex.encode()
            channel.confirm_delivery()
            channel.basic_publish(f"{self.tenant}.events", "orders.rotation", body,
                                  mandatory=True)
            got = None
            deadline = time.monotonic() + 5
            while got is None and time.monotonic() < deadline:
                _method, _props, got = channel.basic_get(f"{self.tenant}.orders", auto_ack=True)
            assert got is not None, "published message not consumed"
        finally:
            if channel.is_open:
                channel.close()


def rotation_settled(tenants, name: str, token: str):
    """The Tenant once every backend rotated for `token` and revoked the previous credential."""
    t = tenants.get(name)
    creds = (t.get("status") or {}).get("credentials") or {}
    backends = [creds.get(b) or {} for b in ("mysql", "objectstorage", "rabbitmq")]
    if creds.get("rotationToken") == token and all(b.get("rotationToken") == token and "previousRevokeAt" not in b
                                                   for b in backends):
        return t
    return None


def test_rotation_under_live_clients_fails_no_operation(tenants, core):
    _require_env()
    name = tenants.create(unique("rot-live"), **SPEC)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    old = {s: secret_data(core, ns, s) for s in ("auth-db-credentials", "objectstorage-credentials",
                                                 "rabbitmq-credentials")}
    clients = [MySQLClient(core, ns, "auth-db-credentials", "DB_USERNAME"),
               S3Client(core, ns, "objectstorage-credentials", "AWS_ACCESS_KEY_ID"),
               AMQPClient(core, ns, "rabbitmq-credentials", "RABBITMQ_USERNAME", tenant=name)]
    for c in clients:
        c.start()
    try:
        wait_for(lambda: all(c.ok >= 5 for c in clients), 30, what="clients working before the rotation")
        tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/rotate-credentials": "live-1"}}})
        wait_for(lambda: rotation_settled(tenants, name, "live-1"), 90, what="rotation done and previous revoked")
        # Each client keeps working after the revocation, on the new account.
        marks = [c.ok for c in clients]
        wait_for(lambda: all(c.ok >= m + 5 for c, m in zip(clients, marks, strict=True)), 30,
                 what="clients working after the revocation")
    finally:
        for c in clients:
            c.stop()
    for c in clients:
        assert c.failures == 0, (type(c).__name__, c.failures, c.errors[:5])
        assert len(c.users) >= 2 and c.users[-1] != c.users[0], (type(c).__name__, c.users)

    new_db = secret_data(core, ns, "auth-db-credentials")
    new_s3 = secret_data(core, ns, "objectstorage-credentials")
    new_mq = secret_data(core, ns, "rabbitmq-credentials")
    old_db, old_s3, old_mq = (old["auth-db-credentials"], old["objectstorage-credentials"],
                              old["rabbitmq-credentials"])
    assert new_db["DB_USERNAME"] != old_db["DB_USERNAME"]
    assert db_error(new_db) is None
    assert db_error(old_db) in (ACCESS_DENIED, *ACCOUNT_LOCKED), "the previous MySQL account is revoked"
    assert amqp_refused(new_mq) is None
    assert isinstance(amqp_refused(old_mq), AMQP_REFUSALS), "the previous RabbitMQ user is revoked"
    bucket = new_s3["S3_BUCKET_MEDIA"]
    assert s3_refused(new_s3, bucket) is None
    wait_for(lambda: s3_refused(old_s3, bucket), REFUSAL_TIMEOUT, what="previous storage keys refused")


def test_second_rotation_reuses_the_first_account_and_purge_removes_both(tenants, core):
    _require_env()
    name = tenants.create(unique("rot-purge"), **SPEC)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    first = secret_data(core, ns, "auth-db-credentials")
    for token in ("p-1", "p-2"):
        tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/rotate-credentials": token}}})
        wait_for(lambda tok=token: rotation_settled(tenants, name, tok), 90, what=f"rotation {token} settled")
    again = secret_data(core, ns, "auth-db-credentials")
    assert again["DB_USERNAME"] == first["DB_USERNAME"], "two rotations come back to the first account"
    assert again["DB_PASSWORD"] != first["DB_PASSWORD"]
    assert db_error(again) is None
    assert db_error(first) == ACCESS_DENIED, "the first account's old password no longer logs in"

    users = {
        "mysql": [first["DB_USERNAME"], first["DB_USERNAME"] + "_b"],
        "rabbitmq": [name, f"{name}_b"],
        "minio": [f"tenant-{name}", f"tenant-{name}_b", f"backup-{name}", f"backup-{name}_b"],
    }
    assert all(mysql_user_exists(u) for u in users["mysql"])
    assert all(rabbit_user_exists(u) for u in users["rabbitmq"])
    assert all(minio_user_exists(u) for u in users["minio"])

    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true",
                                                      "tenancy.dev/skip-final-backup": "true"}}})
    tenants.delete(name)
    wait_for(lambda: tenants.gone(name), 120, what=f"tenant {name} purged")
    assert not any(mysql_user_exists(u) for u in users["mysql"]), users["mysql"]
    assert not any(rabbit_user_exists(u) for u in users["rabbitmq"]), users["rabbitmq"]
    assert not any(minio_user_exists(u) for u in users["minio"]), users["minio"]


def test_rotate_every_rotates_on_schedule_without_the_annotation(tenants, core):
    _require_env()
    name = tenants.create(unique("rot-every"), messaging={"queues": ["orders"]},
                          credentials={"rotateEvery": "15s", "rotationOverlap": "3s"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    first = secret_data(core, ns, "rabbitmq-credentials")

    def rotated():
        t = tenants.get(name)
        record = ((t.get("status") or {}).get("credentials") or {}).get("rabbitmq") or {}
        return record if record.get("rotatedAt") else None
    record = wait_for(rotated, 60, what="a scheduled rotation recorded in status.credentials.rabbitmq")
    assert "rotationToken" not in (tenants.get(name)["status"]["credentials"]), "no annotation was fulfilled"
    now = secret_data(core, ns, "rabbitmq-credentials")
    assert now["RABBITMQ_USERNAME"] != first["RABBITMQ_USERNAME"], record
    assert amqp_refused(now) is None
    wait_for(lambda: isinstance(amqp_refused(first), AMQP_REFUSALS), 30,
             what="the first credential revoked after the overlap")
