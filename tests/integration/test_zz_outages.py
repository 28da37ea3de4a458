"""Backend outages: the real operator reports a stopped MariaDB, RabbitMQ or
MinIO as a False condition (reason BackendUnavailable, with a message), keeps
the credentials it had, and recovers to Ready once the service is back.

These tests STOP SHARED DEVENV SERVICES (`devenv/down.sh <component>`) and
always start them again (`devenv/up.sh <component>`, same ports and data). The
file is named to run last in a full run; do not run it while anyone else uses
the devenv. Each test changes the tenant's spec during the outage, so the
operator has to call the backend instead of reusing its last result."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import ROOT, unique, wait_for
from .test_tenant_backends import (
    READY_TIMEOUT,
    _require_env,
    amqp_queue_exists,
    amqp_roundtrip,
    db_error,
    db_query,
    s3_works,
    secret_data,
    secret_gone,
    tenant_events,
    wait_condition,
    wait_secret,
)

pytestmark = pytest.mark.integration

# After the service is back the operator retries with backoff (5 s, 10 s, 20 s, ...).
RECOVERY_TIMEOUT = 240
DETECT_TIMEOUT = 120



def devenv(script: str, component: str) -> None:
    proc = subprocess.run(["bash", str(ROOT / "devenv" / script), component], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"devenv/{script} {component} failed:\n{proc.stdout}\n{proc.stderr}"


@contextmanager
def outage(component: str):
    """`component` stopped inside the block; started again whatever happens."""
    _require_env()
    try:
        devenv("down.sh", component)
        yield
    finally:
        devenv("up.sh", component)


def assert_unavailable(cond: dict, backend: str) -> None:
    assert cond["reason"] == "BackendUnavailable", cond
    assert cond["message"].startswith(f"{backend}: "), cond
    assert len(cond["message"]) > len(backend) + 10, cond
    for secret in ("MYSQL_ADMIN_PASSWORD", "RABBITMQ_ADMIN_PASSWORD", "MINIO_SECRET_KEY"):
        assert os.environ[secret] not in cond["message"], "a status message shows an admin secret"


def assert_degraded(tenants, name: str) -> None:
    t = tenants.get(name)
    assert t["status"]["phase"] == "Degraded", t["status"]
    ready = next(c for c in t["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "BackendUnavailable", ready


def test_mariadb_outage_is_reported_and_recovered(tenants, core):
    name = tenants.create(unique("out-db"), databases=["auth"])
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    auth = secret_data(core, ns, "auth-db-credentials")
    db_query(auth, "CREATE TABLE t (v INT)", "INSERT INTO t VALUES (1)")

    with outage("mariadb"):
        tenants.patch(name, {"spec": {"databases": ["auth", "orders"]}})
        cond = wait_condition(tenants, name, "DatabasesReady", "False", "BackendUnavailable", DETECT_TIMEOUT)
        assert_unavailable(cond, "mysql")
        assert_degraded(tenants, name)
        # What existed is kept; nothing half-made is handed out.
        assert secret_data(core, ns, "auth-db-credentials") == auth
        assert secret_gone(core, ns, "orders-db-credentials")

    tenants.wait_phase(name, "Ready", RECOVERY_TIMEOUT)
    cond = tenants.condition(name, "DatabasesReady")
    assert cond["status"] == "True" and cond["reason"] == "Provisioned", cond
    orders = wait_secret(core, ns, "orders-db-credentials")
    assert db_error(orders) is None
    assert secret_data(core, ns, "auth-db-credentials") == auth
    assert db_query(auth, "SELECT v FROM t") == [(1,)]


def test_rabbitmq_outage_is_reported_and_recovered(tenants, core):
    name = tenants.create(unique("out-mq"), messaging={"queues": ["orders"]})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    mq = secret_data(core, ns, "rabbitmq-credentials")

    with outage("rabbitmq"):
        tenants.patch(name, {"spec": {"messaging": {"queues": ["orders", "mail"]}}})
        cond = wait_condition(tenants, name, "MessagingReady", "False", "BackendUnavailable", DETECT_TIMEOUT)
        assert_unavailable(cond, "rabbitmq")
        assert_degraded(tenants, name)
        assert secret_data(core, ns, "rabbitmq-credentials") == mq

    tenants.wait_phase(name, "Ready", RECOVERY_TIMEOUT)
    cond = tenants.condition(name, "MessagingReady")
    assert cond["status"] == "True" and cond["reason"] == "Provisioned", cond
    assert secret_data(core, ns, "rabbitmq-credentials") == mq
    assert amqp_queue_exists(mq, f"{name}.mail")
    amqp_roundtrip(mq, f"{name}.events", "mail.sent", f"{name}.mail")
    amqp_roundtrip(mq, f"{name}.events", "orders.created", f"{name}.orders")


def test_minio_outage_is_reported_and_recovered(tenants, core):
    name = tenants.create(unique("out-s3"), objectStorage={"buckets": ["media"]})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = f"tenant-{name}"
    s3 = secret_data(core, ns, "objectstorage-credentials")

    with outage("minio"):
        tenants.patch(name, {"spec": {"objectStorage": {"buckets": ["media", "docs"]}}})
        cond = wait_condition(tenants, name, "ObjectStorageReady", "False", "BackendUnavailable",
                              DETECT_TIMEOUT)
        assert_unavailable(cond, "objectstorage")
        assert_degraded(tenants, name)
        assert secret_data(core, ns, "objectstorage-credentials") == s3

    tenants.wait_phase(name, "Ready", RECOVERY_TIMEOUT)
    cond = tenants.condition(name, "ObjectStorageReady")
    assert cond["status"] == "True" and cond["reason"] == "Provisioned", cond
    def with_docs():
        data = secret_data(core, ns, "objectstorage-credentials")
        return data if data.get("S3_BUCKET_DOCS") else None
    new = wait_for(with_docs, 60, what="docs bucket in the Secret")
    assert (new["AWS_ACCESS_KEY_ID"], new["AWS_SECRET_ACCESS_KEY"]) == (s3["AWS_ACCESS_KEY_ID"],
                                                                      s3["AWS_SECRET_ACCESS_KEY"])
    assert s3_works(new, new["S3_BUCKET_DOCS"])
    assert s3_works(new, new["S3_BUCKET_MEDIA"])


def test_waiting_tenants_are_ready_within_seconds_of_the_backends_return(tenants, core, operator):
    """Without a wake-up each tenant would notice only at its next backoff retry,
    40 s after its fourth failure here (5, 10, 20, 40 s)."""
    names = [tenants.create(unique("out-wake"), messaging={"queues": ["orders"]}) for _ in range(3)]
    for name in names:
        tenants.wait_phase(name, "Ready", READY_TIMEOUT)

    def failures(name: str) -> int:
        return Path(operator.log).read_text(errors="replace").count(f"tenant {name}: rabbitmq: ")

    with outage("rabbitmq"):
        for name in names:
            tenants.patch(name, {"spec": {"messaging": {"queues": ["orders", "mail"]}}})
        for name in names:
            assert_unavailable(wait_condition(tenants, name, "MessagingReady", "False", "BackendUnavailable",
                                              DETECT_TIMEOUT), "rabbitmq")
        wait_for(lambda: all(failures(n) >= 4 for n in names), 120, what="four failed attempts per tenant")
        for name in names:
            (event,) = tenant_events(core, name, "BackendUnavailable")   # one per outage, not per retry
            assert event.type == "Warning" and event.message.startswith("rabbitmq: ")
    back = time.monotonic()
    wait_for(lambda: all(tenants.get(n).get("status", {}).get("phase") == "Ready" for n in names), 15,
             what="every waiting tenant Ready within 15 s of RabbitMQ's return")
    print(f"all {len(names)} tenants Ready {time.monotonic() - back:.1f} s after RabbitMQ was back")
    assert all(failures(n) <= 6 for n in names), "the tenants were woken, not retried in a loop"
