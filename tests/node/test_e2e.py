"""The operator installed by its Helm chart on a real node (see conftest.py).

Tests run in file order and share two tenants: `e2ea` (premium, every
backend) and `e2eb` (standard, a short grace period, deleted last).
"""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
import time
from datetime import UTC, datetime

import pika
import pytest
import requests
from conftest import (
    OPERATOR_NS,
    RELEASE,
    apply,
    kubectl,
    kubectl_json,
    pod_spec,
    run_pod,
    tenant_ready,
    wait_for,
    wait_job,
)

A, B, C = "e2ea", "e2eb", "e2ec"
NS_A, NS_B, NS_C = (f"tenant-{n}" for n in (A, B, C))
APP_SECRETS = ["app-db-credentials", "objectstorage-credentials", "rabbitmq-credentials"]


def tenant(name: str, spec: dict) -> dict:
    return {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec}


def secret_data(namespace: str, name: str) -> dict[str, str]:
    data = kubectl_json("-n", namespace, "get", "secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def python(script: str) -> list[str]:
    return ["python3", "-c", textwrap.dedent(script)]


def last_json(logs: str) -> dict:
    return json.loads(logs.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tenants(platform):
    apply(tenant(A, {"tier": "premium", "databases": ["app"], "objectStorage": {"buckets": ["files"]},
                     "messaging": {"queues": ["events"]}, "backup": {"enabled": True}}))
    apply(tenant(B, {"tier": "standard", "databases": ["app"], "backup": {"enabled": True},
                     "deletion": {"gracePeriod": "75s"}}))
    for name in (A, B):
        wait_for(lambda name=name: tenant_ready(name), timeout=180, what=f"tenant {name} Ready")
    return platform


# --- the operator itself -------------------------------------------------------


def test_operator_runs_in_cluster_with_only_its_roles(platform):
    dep = kubectl_json("-n", OPERATOR_NS, "get", "deploy", RELEASE)
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == platform.image
    sa = f"system:serviceaccount:{OPERATOR_NS}:{RELEASE}"
    # Bound to nothing but the chart's ClusterRole and its Lease Role: what the code does not use is refused.
    bindings = kubectl_json("get", "clusterrolebindings")["items"] + kubectl_json("get", "rolebindings", "-A")["items"]
    roles = {b["roleRef"]["name"] for b in bindings
             if any(s.get("kind") == "ServiceAccount" and s.get("name") == RELEASE
                    and s.get("namespace") == OPERATOR_NS for s in b.get("subjects") or [])}
    assert roles == {RELEASE, f"{RELEASE}-leases"}
    assert kubectl("auth", "can-i", "update", "leases", "-n", OPERATOR_NS, "--as", sa).strip() == "yes"
    assert kubectl("auth", "can-i", "update", "leases", "-n", "default", "--as", sa, check=False).strip() == "no"
    # Jobs: created for TenantBackups and TenantRestores, never changed or deleted.
    assert kubectl("auth", "can-i", "create", "jobs", "-n", NS_A, "--as", sa).strip() == "yes"
    for verb, resource in (("patch", "jobs"), ("delete", "jobs"), ("update", "tenants"), ("get", "nodes"),
                           ("create", "tenantrestores")):
        assert kubectl("auth", "can-i", verb, resource, "--as", sa, check=False).strip() == "no", (verb, resource)
    assert kubectl("auth", "can-i", "patch", "tenants/status", "--as", sa).strip() == "yes"


def test_premium_tenant_ready_and_reconciled_without_forbidden(tenants):
    t = tenant_ready(A)
    assert t["status"]["phase"] == "Ready"
    logs = tenants.operator_logs()
    assert "Forbidden" not in logs and " 403" not in logs, logs[-2000:]


# --- a workload uses what the tenant got ------------------------------------------


def test_workload_reads_and_writes_database_bucket_and_vhost(tenants):
    phase, logs = run_pod(NS_A, "workload", tenants.image, python("""
        import io, json, os, urllib.parse
        import pika, pymysql
        from minio import Minio
        out = {}
        db = pymysql.connect(host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]),
                             user=os.environ["DB_USERNAME"], password=os.environ["DB_PASSWORD"],
                             database=os.environ["DB_DATABASE"], autocommit=True, connect_timeout=10)
        with db.cursor() as c:
            c.execute("CREATE TABLE IF NOT EXISTS items (id INT PRIMARY KEY, name VARCHAR(64))")
            c.execute("REPLACE INTO items VALUES (1, 'written-by-pod')")
            c.execute("SELECT name FROM items WHERE id = 1")
            out["mysql"] = c.fetchone()[0]
        ep = urllib.parse.urlparse(os.environ["S3_ENDPOINT"])
        s3 = Minio(ep.netloc, access_key=os.environ["AWS_ACCESS_KEY_ID"], secure=ep.scheme == "https",
                   secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], region=os.environ["S3_REGION"])
        bucket = os.environ["S3_BUCKET_FILES"]
        s3.put_object(bucket, "from-pod.txt", io.BytesIO(b"hello"), 5)
        out["s3"] = s3.get_object(bucket, "from-pod.txt").read().decode()
        conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
        ch = conn.channel()
        queue = os.environ["RABBITMQ_VHOST"] + ".events"
        ch.basic_publish(exchange="", routing_key=queue, body=b"ping")
        for _ in range(50):
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method:
                out["amqp"] = body.decode()
                break
            conn.sleep(0.1)
        conn.close()
        print(json.dumps(out))
    """), env_from=APP_SECRETS)
    assert phase == "Succeeded", logs
    assert last_json(logs) == {"mysql": "written-by-pod", "s3": "hello", "amqp": "ping"}
    # And the data is where the platform keeps it.
    db = secret_data(NS_A, "app-db-credentials")
    with tenants.mysql(database=db["DB_DATABASE"]) as conn, conn.cursor() as c:
        c.execute("SELECT name FROM items WHERE id = 1")
        assert c.fetchone() == ("written-by-pod",)
    s3 = secret_data(NS_A, "objectstorage-credentials")
    assert tenants.minio().get_object(s3["S3_BUCKET_FILES"], "from-pod.txt").read() == b"hello"


# --- NetworkPolicies are enforced ----------------------------------------------

PROBE = """
    import json, socket, sys
    def tcp(host, port):
        try:
            socket.create_connection((host, port), timeout=3).close()
            return True
        except OSError:
            return False
    def resolve(name):
        try:
            return socket.gethostbyname(name)
        except OSError:
            return None
    pod_ip, svc = sys.argv[1], sys.argv[2]
    print(json.dumps({
        "pod": tcp(pod_ip, 8080),
        "service": tcp(svc, 8080),
        "dns": resolve(svc),
        "api": tcp("kubernetes.default.svc.cluster.local", 443),
    }))
"""


@pytest.fixture(scope="module")
def web_in_b(tenants):
    """A server pod and its Service in tenant B."""
    apply({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": NS_B, "labels": {"app": "web"}},
           "spec": {"automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "web", "image": tenants.image, "imagePullPolicy": "Never",
                                    "command": ["python3", "-m", "http.server", "8080", "-d", "/tmp"],
                                    "resources": {"limits": {"cpu": "200m", "memory": "128Mi"}},
                                    "securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]},
                                                        "readOnlyRootFilesystem": True},
                                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]}})
    apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS_B},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}})

    def running():
        pod = kubectl_json("-n", NS_B, "get", "pod", "web")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        return pod["status"].get("podIP") if ready else None
    return wait_for(running, timeout=120, what="the web pod in tenant B")


def test_other_tenants_pods_and_services_are_unreachable(tenants, web_in_b):
    svc = f"web.{NS_B}.svc.cluster.local"
    phase, logs = run_pod(NS_A, "probe", tenants.image, python(PROBE) + [web_in_b, svc])
    assert phase == "Succeeded", logs
    from_a = last_json(logs)
    # The same probe from inside B reaches both: the refusal above is the policy, not the network.
    phase, logs = run_pod(NS_B, "probe", tenants.image, python(PROBE) + [web_in_b, svc])
    assert phase == "Succeeded", logs
    from_b = last_json(logs)
    assert from_b["pod"] and from_b["service"], from_b
    assert from_a["pod"] is False and from_a["service"] is False, from_a
    # DNS resolves from either tenant; the Kubernetes API is closed to tenant pods.
    assert from_a["dns"] and from_a["dns"] == from_b["dns"]
    assert from_a["api"] is False and from_b["api"] is False
    # Nor would their ServiceAccount's role allow anything there: nothing grants it.
    for ns in (NS_A, NS_B):
        sa = f"system:serviceaccount:{ns}:default"
        for verb, resource in (("get", "secrets"), ("list", "pods"), ("create", "pods")):
            assert kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", sa, check=False).strip() == "no"


def test_tenant_pods_reach_only_their_own_backends(tenants):
    """Backend egress is derived from the operator's config: B (no vhost, no buckets of
    its own) may reach MySQL and the object store its backups use, not RabbitMQ."""
    gateway, state = "10.244.0.1", tenants.state
    ports = {"mysql": state["MYSQL_PORT"], "s3": state["MINIO_PORT"], "amqp": state["AMQP_PORT"],
             "mgmt": state["RABBIT_MGMT_PORT"]}
    script = python(f"""
        import json, socket
        def tcp(port):
            try:
                socket.create_connection(("{gateway}", int(port)), timeout=3).close()
                return True
            except OSError:
                return False
        print(json.dumps({{k: tcp(p) for k, p in {ports!r}.items()}}))
    """)
    phase, logs = run_pod(NS_A, "egress", tenants.image, script)
    assert phase == "Succeeded", logs
    assert last_json(logs) == {"mysql": True, "s3": True, "amqp": True, "mgmt": False}
    phase, logs = run_pod(NS_B, "egress", tenants.image, script)
    assert phase == "Succeeded", logs
    assert last_json(logs) == {"mysql": True, "s3": True, "amqp": False, "mgmt": False}


# --- backups run as real Jobs ---------------------------------------------------


def test_backup_job_from_cronjob_and_restore_job(tenants):
    db = secret_data(NS_A, "app-db-credentials")
    bucket = secret_data(NS_A, "objectstorage-credentials")["S3_BACKUPS_BUCKET"]
    minio = tenants.minio()
    before = {o.object_name for o in minio.list_objects(bucket, prefix="mysql/app/", recursive=True)}
    kubectl("-n", NS_A, "create", "job", "--from=cronjob/backup-app-db", "backup-now")
    wait_job(NS_A, "backup-now")
    after = {o.object_name for o in minio.list_objects(bucket, prefix="mysql/app/", recursive=True)}
    dumps = sorted(k for k in after - before if k.endswith(".sql.gz"))
    assert dumps, f"no new dump in {bucket}: {sorted(after)}"

    with tenants.mysql(database=db["DB_DATABASE"]) as conn, conn.cursor() as c:
        c.execute("DELETE FROM items")
    # The runbook's restore, as a Job with the tenant's own (read-only on backups) credentials.
    spec = pod_spec(tenants.image, ["tenant-operator", "restore", "--secret-env", "--service", "app", "--latest"],
                    env_from=["app-db-credentials", "objectstorage-credentials"])
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "restore-now", "namespace": NS_A},
           "spec": {"backoffLimit": 0, "template": {"spec": spec}}})
    wait_job(NS_A, "restore-now")
    with tenants.mysql(database=db["DB_DATABASE"]) as conn, conn.cursor() as c:
        c.execute("SELECT name FROM items WHERE id = 1")
        assert c.fetchone() == ("written-by-pod",)


# --- TenantBackup, TenantRestore and recovery drills, run for real -------------------


def request(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "tenancy.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": NS_A},
            "spec": spec}


def request_phase(plural: str, name: str, phase: str, timeout: float = 240) -> dict:
    def done():
        obj = kubectl_json("-n", NS_A, "get", plural, name)
        st = obj.get("status") or {}
        if st.get("phase") == "Failed" and phase != "Failed":
            pytest.fail(f"{plural} {name} failed: {st}")
        return obj if st.get("phase") == phase else None
    return wait_for(done, timeout=timeout, what=f"{plural} {name} {phase}")


def test_tenant_backup_and_restore_resources(tenants):
    db = secret_data(NS_A, "app-db-credentials")
    bucket = secret_data(NS_A, "objectstorage-credentials")["S3_BACKUPS_BUCKET"]
    apply(request("TenantBackup", "e2e-backup", {}))
    backup = request_phase("tenantbackups", "e2e-backup", "Complete")
    (written,) = backup["status"]["backups"]
    assert written["service"] == "app" and written["key"].startswith("mysql/app/")
    manifest = json.loads(tenants.minio().get_object(bucket, written["key"] + ".manifest.json").read())
    assert manifest["sha256"] == written["sha256"] and manifest["request"] == backup["metadata"]["uid"]
    listed = kubectl("-n", NS_A, "get", "tenantbackups,tenantrestores")
    assert "e2e-backup" in listed and "Complete" in listed

    with tenants.mysql(database=db["DB_DATABASE"]) as conn, conn.cursor() as c:
        c.execute("DELETE FROM items")
    apply(request("TenantRestore", "e2e-restore", {"service": "app", "backup": written["key"]}))
    restored = request_phase("tenantrestores", "e2e-restore", "Complete")
    assert restored["status"]["verified"] is True and restored["status"]["sha256"] == written["sha256"]
    assert restored["status"]["database"] == db["DB_DATABASE"]
    with tenants.mysql(database=db["DB_DATABASE"]) as conn, conn.cursor() as c:
        c.execute("SELECT name FROM items WHERE id = 1")
        assert c.fetchone() == ("written-by-pod",)


def drill_verdict() -> tuple[dict, dict]:
    t = kubectl_json("get", "tenant", A)
    cond = next((c for c in t["status"].get("conditions") or [] if c["type"] == "BackupsVerified"), {})
    return cond, (t["status"].get("backups") or {}).get("lastVerified") or {}


def test_recovery_drill_passes_then_fails_on_a_corrupted_backup(tenants):
    kubectl("-n", NS_A, "create", "job", "--from=cronjob/drill-app-db", "drill-e2e-pass")
    wait_job(NS_A, "drill-e2e-pass")
    cond, last = wait_for(lambda: (lambda v: v if v[0].get("status") == "True" else None)(drill_verdict()),
                          timeout=60, what="BackupsVerified True")
    assert cond["reason"] == "Verified"
    assert last["databases"]["app"]["outcome"] == "Passed" and last["databases"]["app"]["job"] == "drill-e2e-pass"
    scratch = kubectl_json("-n", NS_A, "get", "cronjob", "drill-app-db")["spec"]["jobTemplate"]["spec"][
        "template"]["spec"]["containers"][0]["command"][-1]
    with tenants.mysql() as conn, conn.cursor() as c:
        c.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (scratch,))
        assert c.fetchone() == (0,), "the drill leaves its scratch database empty"

    # Corrupt the newest dump (same size, other bytes) with the admin client.
    bucket = secret_data(NS_A, "objectstorage-credentials")["S3_BACKUPS_BUCKET"]
    minio = tenants.minio()
    dumps = sorted(o.object_name for o in minio.list_objects(bucket, prefix="mysql/app/", recursive=True)
                   if o.object_name.endswith(".sql.gz"))
    size = minio.stat_object(bucket, dumps[-1]).size
    import io
    minio.put_object(bucket, dumps[-1], io.BytesIO(b"\0" * size), size)
    kubectl("-n", NS_A, "create", "job", "--from=cronjob/drill-app-db", "drill-e2e-corrupt")
    wait_for(lambda: kubectl_json("-n", NS_A, "get", "job", "drill-e2e-corrupt")["status"].get("failed"),
             timeout=180, what="the drill Job on a corrupted backup to fail")
    cond, last = wait_for(lambda: (lambda v: v if v[0].get("status") == "False" else None)(drill_verdict()),
                          timeout=60, what="BackupsVerified False")
    assert cond["reason"] == "IntegrityCheckFailed" and cond["message"].startswith("app: drill Job drill-e2e-corrupt")
    assert last["databases"]["app"] == {**last["databases"]["app"], "outcome": "Failed",
                                        "reason": "IntegrityCheckFailed"}
    assert tenant_ready(A), "a failed drill does not make the tenant unready"


# --- the operator pod dies mid-provisioning ---------------------------------------


def _credentials_work(platform, namespace: str) -> dict[str, int]:
    """Every credential in the tenant's Secrets opens its backend; returns counts seen."""
    secrets = kubectl_json("-n", namespace, "get", "secrets")["items"]
    names = {s["metadata"]["name"] for s in secrets}
    db_users = set()
    for name in sorted(n for n in names if n.endswith("-db-credentials")):
        d = secret_data(namespace, name)
        with platform.mysql(user=d["DB_USERNAME"], password=d["DB_PASSWORD"], database=d["DB_DATABASE"]) as conn:
            conn.ping()
        db_users.add(d["DB_USERNAME"])
    s3 = secret_data(namespace, "objectstorage-credentials")
    from minio import Minio
    app = Minio(f"127.0.0.1:{platform.state['MINIO_PORT']}", access_key=s3["AWS_ACCESS_KEY_ID"],
                secret_key=s3["AWS_SECRET_ACCESS_KEY"], secure=False)
    assert app.bucket_exists(s3["S3_BUCKET_X"])
    mq = secret_data(namespace, "rabbitmq-credentials")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", int(platform.state["AMQP_PORT"]), mq["RABBITMQ_VHOST"],
        pika.PlainCredentials(mq["RABBITMQ_USERNAME"], mq["RABBITMQ_PASSWORD"])))
    conn.close()
    return {"db_users": len(db_users), "mq_user": mq["RABBITMQ_USERNAME"]}


def test_operator_killed_mid_provisioning_converges(tenants):
    services = [f"s{i}" for i in range(8)]
    old = [p["metadata"]["name"] for p in tenants.operator_pods()]
    apply(tenant(C, {"tier": "standard", "databases": services, "objectStorage": {"buckets": ["x"]},
                     "messaging": {"queues": ["q"]}, "backup": {"enabled": True}}))

    def started():
        t = kubectl_json("get", "tenant", C)
        return t if t.get("status") or t["metadata"].get("finalizers") else None
    wait_for(started, timeout=60, interval=0.1, what="the operator to start on tenant C")
    killed_before_ready = tenant_ready(C) is None
    kubectl("-n", OPERATOR_NS, "delete", "pod", *old, "--grace-period=0", "--force")
    assert killed_before_ready, "tenant C was Ready before the operator was killed: nothing was interrupted"

    def replaced():
        pods = [p for p in tenants.operator_pods() if p["metadata"]["name"] not in old]
        return pods and all(cs.get("ready") for p in pods for cs in p["status"].get("containerStatuses", []))
    wait_for(replaced, timeout=120, what="a replacement operator pod")
    wait_for(lambda: tenant_ready(C), timeout=240, what="tenant C Ready after the restart")

    seen = _credentials_work(tenants, NS_C)
    assert seen["db_users"] == len(services)
    # Exactly one account per credential on each backend: nothing duplicated or orphaned.
    with tenants.mysql() as conn, conn.cursor() as c:
        c.execute("SELECT COUNT(*) FROM mysql.user WHERE User LIKE %s", (f"{C}\\_%",))
        assert c.fetchone()[0] == len(services)
    users = requests.get(f"http://127.0.0.1:{tenants.state['RABBIT_MGMT_PORT']}/api/users",
                         auth=("admin", tenants.state["RABBITMQ_ADMIN_PASSWORD"]), timeout=10).json()
    assert [u["name"] for u in users if C in u["name"]] == [seen["mq_user"]]
    db = secret_data(NS_C, "s0-db-credentials")
    assert kubectl_json("get", "tenant", C)["status"]["phase"] == "Ready", db["DB_USERNAME"]


# --- deletion: grace period first, then purge --------------------------------------


def test_foreground_delete_keeps_namespace_pods_and_data_through_grace(tenants, web_in_b):
    db = secret_data(NS_B, "app-db-credentials")["DB_DATABASE"]
    subprocess.run(["kubectl", "delete", "tenant", B, "--cascade=foreground", "--wait=false"],
                   check=True, capture_output=True, timeout=60)

    def purge_after():
        deletion = kubectl_json("get", "tenant", B).get("status", {}).get("deletion") or {}
        return deletion.get("purgeAfter")
    when = datetime.fromisoformat(wait_for(purge_after, timeout=60, what="the deletion's purgeAfter")
                                  .replace("Z", "+00:00"))
    checks = 0
    # Through the grace period: the namespace, the running pod and the database stay.
    while (when - datetime.now(UTC)).total_seconds() > 5:
        assert kubectl_json("get", "namespace", NS_B)["status"]["phase"] == "Active"
        assert kubectl_json("-n", NS_B, "get", "pod", "web")["status"]["phase"] == "Running"
        with tenants.mysql() as conn, conn.cursor() as c:
            assert c.execute("SHOW DATABASES LIKE %s", (db,)) == 1
        checks += 1
        time.sleep(2)  # pacing of the repeated check, not a synchronisation
    assert checks >= 5

    def purged():
        gone = kubectl("get", "tenant", B, "--ignore-not-found").strip() == ""
        ns_gone = kubectl("get", "namespace", NS_B, "--ignore-not-found").strip() == ""
        return gone and ns_gone
    wait_for(purged, timeout=240, interval=2, what="tenant B purged after its grace period")
    with tenants.mysql() as conn, conn.cursor() as c:
        assert c.execute("SHOW DATABASES LIKE %s", (db,)) == 0
