"""`tenant-operator verify` against a real pair of tenants, and the operator's
Prometheus endpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pymysql
from tenant_operator import naming

from .conftest import unique

SPEC = {"tier": "standard", "databases": ["auth"], "objectStorage": {"buckets": ["media"]},
        "messaging": {"queues": ["orders"]}}


def _verify(tenant: str, other: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenant_operator", "verify", tenant, "--against", other],
                          capture_output=True, text=True, timeout=120)


def _admin():
    return pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_ADMIN_USER"], password=os.environ["MYSQL_ADMIN_PASSWORD"],
                           autocommit=True)


def test_verify_passes_for_isolated_pair_and_fails_when_broken(tenants):
    a = tenants.create(unique("va"), **SPEC)
    b = tenants.create(unique("vb"), **SPEC)
    tenants.wait_phase(a, "Ready")
    tenants.wait_phase(b, "Ready")

    ok = _verify(a, b)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "7 passed, 0 failed" in ok.stdout

    # Break isolation on purpose: give A's database user a grant on B's database.
    user_a, db_b = naming.mysql_user(a, "auth"), naming.mysql_database(b, "auth")
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"GRANT SELECT ON `{db_b}`.* TO %s@'%%'", (user_a,))
        broken = _verify(a, b)
        assert broken.returncode == 1, broken.stdout
        assert "FAIL  mysql: other tenant's database refused" in broken.stdout
    finally:
        with conn.cursor() as cur:
            cur.execute(f"REVOKE SELECT ON `{db_b}`.* FROM %s@'%%'", (user_a,))
        conn.close()


def test_metrics_endpoint(tenants, operator):
    name = tenants.create(unique("met"), tier="standard")
    tenants.wait_phase(name, "Ready")
    assert operator.metric("tenant_operator_tenants", '{phase="Ready"}') >= 1
    assert operator.metric("tenant_operator_reconcile_duration_seconds_count") >= 1
    assert operator.metric("tenant_operator_api_writes_total") >= 1
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5) as resp:
        assert resp.status == 200
