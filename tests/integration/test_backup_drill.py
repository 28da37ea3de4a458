"""Backup and restore drill against the real devenv MariaDB, MinIO and API server.

A tenant database and user are created with `MySQLBackend`, its versioned
backups bucket and scoped storage user with `MinioStore`: the shapes the
operator creates. The backup runs as exactly the command line of the rendered
CronJob's container, as a subprocess whose environment holds the Secret keys
(as `envFrom` gives them) and the container's `env`. No test doubles are used.

The CronJob itself is checked by the API server (server-side dry run, then a
real create in a throwaway namespace with the tenant's restricted Pod
Security, LimitRange and quota), by the real CronJob controller (a scheduled
Job appears), by `kubectl create job --from=cronjob/...`, and by the job
controller (pods of both Jobs pass admission; with no kubelet they stay
Pending).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import pymysql
import pytest
import yaml
from minio import Minio
from minio.error import S3Error
from tenant_operator import backup, config, naming, render, spec
from tenant_operator.backends.mysql.client import MySQLBackend
from tenant_operator.backends.objectstore.client import MinioStore
from tenant_operator.backup.component import BackupComponent
from tenant_operator.kube.client import Kube
from tenant_operator.kube.diff import needs_apply, with_hash
from tenant_operator.render import backup as render_backup

from .conftest import wait_for

MYSQL_ENV = ("MYSQL_HOST", "MYSQL_PORT", "MYSQL_ADMIN_USER", "MYSQL_ADMIN_PASSWORD")
MINIO_ENV = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")

pytestmark = pytest.mark.integration

needs_backends = pytest.mark.skipif(any(not os.environ.get(k) for k in MYSQL_ENV + MINIO_ENV),
                                    reason="devenv MariaDB/MinIO not configured (source .devenv/env)")
needs_cluster = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="devenv is not up (source .devenv/env)")

SERVICE = "auth"
BLOB_ROWS = 20            # 1 MiB of random bytes each: the gzip'd dump needs two 16 MiB parts
TEXT_ROWS = 500


def _host(endpoint: str) -> tuple[str, bool]:
    url = urlsplit(endpoint)
    return url.netloc, url.scheme == "https"


def minio_client(access_key: str, secret_key: str) -> Minio:
    host, secure = _host(os.environ["MINIO_ENDPOINT"])
    return Minio(host, access_key=access_key, secret_key=secret_key, secure=secure, region="us-east-1")


def root_client() -> Minio:
    return minio_client(os.environ["MINIO_ACCESS_KEY"], os.environ["MINIO_SECRET_KEY"])


class DrillTenant:
    """A tenant's database, user, backups bucket and storage user, and the keys
    of its two Secrets, built the way the backend components build them."""

    def __init__(self, name: str):
        self.name = name
        self.server = config.MySQLServer(
            name="main", host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
            admin_user=os.environ["MYSQL_ADMIN_USER"], admin_password=os.environ["MYSQL_ADMIN_PASSWORD"])
        self.mysql = MySQLBackend(self.server)
        self.store = MinioStore(os.environ["MINIO_ENDPOINT"], os.environ["MINIO_ACCESS_KEY"],
                                os.environ["MINIO_SECRET_KEY"])
        self.database = naming.mysql_database(name, SERVICE)
        self.user = naming.mysql_user(name, SERVICE)
        self.password = secrets.token_urlsafe(24)
        self.bucket = naming.backups_bucket(name)
        self.storage_user, self.policy = naming.backup_user(name), naming.backup_policy(name)
        self.db_secret: dict[str, str] = {}
        self.s3_secret: dict[str, str] = {}

    def provision(self) -> DrillTenant:
        self.mysql.ensure_account(self.database, self.user, self.password, max_user_connections=20, locked=False)
        self.store.ensure_bucket(self.bucket, quota_bytes=None, versioning=True)
        creds, _ = self.store.ensure_user(self.storage_user, self.policy, [self.bucket], enabled=True, current=None,
                                          protected=(self.bucket,))
        s = self.server
        url = f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{s.tenant_host}:{s.port}/" \
              f"{self.database}"
        self.db_secret = {"DB_HOST": s.tenant_host, "DB_PORT": str(s.port), "DB_DATABASE": self.database,
                          "DB_USERNAME": self.user, "DB_PASSWORD": self.password, "DATABASE_URL": url}
        self.s3_secret = {"S3_ENDPOINT": os.environ["MINIO_ENDPOINT"], "S3_REGION": "us-east-1",
                          "S3_BACKUPS_BUCKET": self.bucket, "AWS_ACCESS_KEY_ID": creds.access_key,
                          "AWS_SECRET_ACCESS_KEY": creds.secret_key}
        self.s3 = minio_client(creds.access_key, creds.secret_key)

        def usable() -> bool:
            try:
                list(self.s3.list_objects(self.bucket))
                return True
            except S3Error:
                return False
        # A new MinIO user can take a moment to become usable.
        wait_for(usable, 20, what="the storage user to be usable")
        return self

    def remove(self) -> None:
        self.mysql.drop_user(self.user)
        self.mysql.drop_database(self.database)
        self.store.delete_user(self.storage_user, self.policy)
        self.store.delete_bucket(self.bucket, purge=True)
        self.mysql.close()

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(host=self.server.host, port=self.server.port, user=self.user, password=self.password,
                               database=self.database, autocommit=True, charset="utf8mb4")

    def model(self, **spec_fields) -> spec.Tenant:
        body = {"metadata": {"name": self.name}, "spec": {"tier": "standard", "databases": [SERVICE], **spec_fields}}
        return spec.parse(body, config.from_dict({}))


@pytest.fixture
def drill():
    t = DrillTenant(f"bk-{secrets.token_hex(4)}")
    try:
        yield t.provision()
    finally:
        t.remove()


# --- running the CronJob's container --------------------------------------------------------

def container(t: spec.Tenant) -> dict:
    """The backup container of the rendered CronJob (for the tenant's first database)."""
    objs = render_backup.cronjobs(t, config.from_dict({}))
    (cj,) = [o for o in objs if o["kind"] == "CronJob" and o["metadata"]["name"] == naming.backup_cronjob(SERVICE)]
    (c,) = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return c


def container_env(c: dict, secrets_by_name: dict[str, dict[str, str]]) -> dict[str, str]:
    """What the kubelet would give the container: envFrom Secrets in order, then env."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}   # the image's PATH
    for source in c.get("envFrom", []):
        env.update(secrets_by_name[source["secretRef"]["name"]])
    for item in c.get("env", []):
        env[item["name"]] = item["value"]
    return env


def run_container(c: dict, env: dict[str, str], extra_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The container's command line, exactly; `tenant-operator` is resolved in this venv."""
    argv = list(c["command"]) + list(c.get("args", [])) + list(extra_args)
    exe = Path(sys.executable).parent / argv[0]
    argv[0] = str(exe) if exe.exists() else argv[0]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "tenant-operator"), *args]


def secrets_for(drill: DrillTenant) -> dict[str, dict[str, str]]:
    return {naming.db_secret(SERVICE): drill.db_secret, naming.BACKUP_SECRET: drill.s3_secret}


# --- data ---------------------------------------------------------------------------------

def load_rows(drill: DrillTenant) -> None:
    rng = __import__("random").Random(42)
    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, "
                    "price DECIMAL(10,2), note TEXT NULL, payload LONGBLOB NULL, created DATETIME(6))")
        cur.execute("CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item INT)")
        cur.execute("CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW "
                    "INSERT INTO audit (item) VALUES (NEW.id)")
        cur.execute("CREATE PROCEDURE item_count() SELECT COUNT(*) FROM items")
        rows = [(i, f"item {i} \u00e9\u00e8 \U0001f600 'quoted' \"dq\" \\ back", f"{i}.{i % 100:02d}",
                 None if i % 7 == 0 else f"note\n{i}\t\0nul", bytes([0, 255, 10, 13, 39, 92]) * (i % 5),
                 f"2024-01-{1 + i % 28:02d} 12:34:56.{i:06d}") for i in range(1, TEXT_ROWS + 1)]
        cur.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s)", rows)
        for i in range(BLOB_ROWS):
            cur.execute("INSERT INTO items VALUES (%s, 'blob', 0, NULL, %s, NOW(6))",
                        (100000 + i, rng.randbytes(1 << 20)))


def checksums(drill: DrillTenant) -> dict:
    """CHECKSUM TABLE plus an ordered SHA-256 over every row, and the objects beside the rows."""
    out = {}
    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        present = {r[0] for r in cur.fetchall()}
        for table in ("items", "audit"):
            if table not in present:
                out[f"checksum:{table}"] = out[f"sha256:{table}"] = None
                continue
            cur.execute(f"CHECKSUM TABLE {table}")
            out[f"checksum:{table}"] = cur.fetchone()[1]
            cur.execute(f"SELECT * FROM {table} ORDER BY id")
            digest = hashlib.sha256()
            n = 0
            for row in cur.fetchall():
                digest.update(repr(row).encode())
                n += 1
            out[f"sha256:{table}"] = (n, digest.hexdigest())
        cur.execute("SHOW TRIGGERS")
        out["triggers"] = sorted(r[0] for r in cur.fetchall())
        cur.execute("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
                    (drill.database,))
        out["routines"] = sorted(r[0] for r in cur.fetchall())
    return out


def objects(drill: DrillTenant, prefix: str = "") -> dict[str, bytes]:
    client = root_client()
    out = {}
    for o in client.list_objects(drill.bucket, prefix=prefix, recursive=True):
        resp = client.get_object(drill.bucket, o.object_name)
        try:
            out[o.object_name] = resp.read()
        finally:
            resp.close()
            resp.release_conn()
    return out


# --- the drill ------------------------------------------------------------------------------

@needs_backends
def test_backup_restore_drill(drill):
    load_rows(drill)
    before = checksums(drill)
    assert before["sha256:items"][0] == TEXT_ROWS + BLOB_ROWS
    assert before["triggers"] == ["items_audit"] and before["routines"] == ["item_count"]

    c = container(drill.model())
    assert c["command"] == ["tenant-operator", "backup", "--secret-env"]
    env = container_env(c, secrets_for(drill))
    assert env["BACKUP_SERVICE"] == SERVICE

    # 1. The CronJob's command: dump, upload, manifest, retention.
    proc = run_container(c, env)
    assert proc.returncode == 0, proc.stderr
    for secret in (drill.password, drill.s3_secret["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in proc.stdout + proc.stderr
    manifest = json.loads(proc.stdout)
    key = manifest["key"]
    assert backup.parse_key(SERVICE, key) == (backup.parse_timestamp(key.split("/")[-1][:16]), False)
    stored = objects(drill)
    assert set(stored) == {key, backup.manifest_key(key)}
    dump = stored[key]
    assert json.loads(stored[backup.manifest_key(key)]) == manifest
    assert manifest["size"] == len(dump) > 16 * 2**20        # took a real multipart upload
    assert manifest["sha256"] == hashlib.sha256(dump).hexdigest()
    assert manifest["database"] == drill.database and manifest["service"] == SERVICE
    assert "MariaDB" in manifest["serverVersion"] and manifest["tool"]
    assert manifest["uncompressedSize"] == len(gzip.decompress(dump))
    sql = gzip.decompress(dump)
    assert b"CREATE TABLE `items`" in sql and b"items_audit" in sql and b"item_count" in sql
    assert drill.password.encode() not in sql

    # 2. Lose the data, restore the latest backup with the tenant's credentials.
    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE items")
        cur.execute("DROP PROCEDURE item_count")
        cur.execute("DELETE FROM audit")
    assert checksums(drill) != before
    # A newer run that never completed (a dump without its manifest) is never "latest".
    newer = f"mysql/{SERVICE}/{backup.timestamp(datetime.now(UTC) + timedelta(days=1))}.sql.gz"
    root_client().put_object(drill.bucket, newer, io.BytesIO(b"not a dump"), 10)
    proc = subprocess.run(cli("restore", "--secret-env", "--service", SERVICE, "--latest"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["key"] == key
    assert checksums(drill) == before

    # 3. A corrupted dump (same size, other bytes; manifest kept) is refused; nothing runs.
    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO items (id, name) VALUES (999999, 'after the backup')")
    marked = checksums(drill)
    corrupted = bytearray(dump)
    corrupted[len(corrupted) // 2: len(corrupted) // 2 + 16] = bytes(16)
    assert bytes(corrupted) != dump and len(corrupted) == len(dump)
    root_client().put_object(drill.bucket, key, io.BytesIO(bytes(corrupted)), len(corrupted))
    proc = subprocess.run(cli("restore", "--secret-env", "--service", SERVICE, "--backup", key), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "does not match its manifest" in proc.stderr and "nothing was executed" in proc.stderr
    assert checksums(drill) == marked                 # the marker row is still there

    # A truncated one is refused too (size differs: refused before downloading).
    root_client().put_object(drill.bucket, key, io.BytesIO(dump[:1000]), 1000)
    proc = subprocess.run(cli("restore", "--secret-env", "--service", SERVICE, "--latest"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3 and "refusing to restore" in proc.stderr
    assert checksums(drill) == marked


@needs_backends
def test_failed_dump_leaves_nothing(drill):
    """The dump tool fails half-way (a view over a dropped table makes it exit 2
    after 20 MiB of data went out, in the middle of the multipart upload): the
    command exits non-zero and the bucket holds nothing, not even a noncurrent
    version, and no manifest."""
    load_rows(drill)
    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE zbase (id INT)")
        cur.execute("CREATE VIEW zview AS SELECT id FROM zbase")
        cur.execute("DROP TABLE zbase")
    c = container(drill.model())
    proc = run_container(c, container_env(c, secrets_for(drill)))
    assert proc.returncode == 1, proc.stderr
    assert "exited with status" in proc.stderr and "zview" in proc.stderr
    assert list(root_client().list_objects(drill.bucket, recursive=True, include_version=True)) == []
    assert drill.password not in proc.stderr


@needs_backends
def test_retention_against_real_objects(drill):
    """Seeded backups (complete, incomplete, orphaned manifest) and foreign keys;
    one real run with daily 1 / weekly 0 / monthly 2 deletes exactly the expected keys."""
    load_small = [(1, "one"), (2, "two")]
    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        cur.executemany("INSERT INTO t VALUES (%s, %s)", load_small)

    def seed(ts: str, manifest: bool = True) -> str:
        key = f"mysql/{SERVICE}/{ts}.sql.gz"
        body = gzip.compress(b"-- seeded\n")
        drill.s3.put_object(drill.bucket, key, io.BytesIO(body), len(body))
        if manifest:
            doc = json.dumps({"key": key, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
            drill.s3.put_object(drill.bucket, backup.manifest_key(key), io.BytesIO(doc), len(doc))
        return key

    complete = {ts: seed(ts) for ts in ("20240301T020000Z", "20240315T020000Z", "20240331T020000Z",
                                         "20240401T020000Z", "20240402T020000Z")}
    orphan_dump = seed("20240201T020000Z", manifest=False)
    orphan_manifest = backup.manifest_key(f"mysql/{SERVICE}/20240115T020000Z.sql.gz")
    drill.s3.put_object(drill.bucket, orphan_manifest, io.BytesIO(b"{}"), 2)
    foreign = [f"mysql/{SERVICE}/notes.txt", f"mysql/{SERVICE}/20240101T000000Z.sql.gz.bak",
               f"mysql/{SERVICE}/20241399T000000Z.sql.gz", f"mysql/{SERVICE}/old/20240101T000000Z.sql.gz",
               "mysql/other/20240101T000000Z.sql.gz", "README"]
    for k in foreign:
        drill.s3.put_object(drill.bucket, k, io.BytesIO(b"x"), 1)

    c = container(drill.model(backup={"retention": {"daily": 1, "weekly": 0, "monthly": 2}}))
    env = container_env(c, secrets_for(drill))
    assert (env["BACKUP_KEEP_DAILY"], env["BACKUP_KEEP_WEEKLY"], env["BACKUP_KEEP_MONTHLY"]) == ("1", "0", "2")
    proc = run_container(c, env)
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout)["key"]

    # daily 1 and the current month: the new backup; the previous month with a backup: April 2024.
    kept = {new, complete["20240402T020000Z"]}
    expected = set(foreign) | kept | {backup.manifest_key(k) for k in kept}
    assert set(objects(drill)) == expected
    assert orphan_dump not in expected and orphan_manifest not in expected


# --- the CronJob on the real API server -----------------------------------------------------

def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def get_json(*args: str) -> dict | None:
    proc = kubectl("get", *args, "-o", "json", "--ignore-not-found")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.fixture
def cluster_tenant():
    """A tenant model whose namespace exists for real with the tenant's Pod Security
    level (restricted, enforced), LimitRange and ResourceQuota; removed afterwards."""
    name = f"bk-{secrets.token_hex(4)}"
    t = spec.parse({"metadata": {"name": name},
                    "spec": {"tier": "standard", "databases": [SERVICE],
                             "backup": {"schedule": "* * * * *"}}}, config.from_dict({}))
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": t.namespace, "labels": {
              "pod-security.kubernetes.io/enforce": t.pod_security,
              "pod-security.kubernetes.io/enforce-version": "latest"}}}
    guard_rails = []
    for obj in render.quota(t, config.from_dict({})):
        obj = copy.deepcopy(obj)
        obj["metadata"].pop("labels")     # no tenant labels: no operator ever adopts these
        guard_rails.append(obj)
    kubectl("create", "-f", "-", input=yaml.safe_dump_all([ns, *guard_rails]))
    try:
        yield t
    finally:
        kubectl("delete", "namespace", t.namespace, "--wait=false", check=False)
        wait_for(lambda: get_json("namespace", t.namespace) is None, 120, what=f"namespace {t.namespace} gone")


def job_pod_template(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


@needs_cluster
def test_cronjob_accepted_and_run_by_the_controllers(cluster_tenant):
    t = cluster_tenant
    cfg = config.from_dict({"backupImage": "tenant-operator:test"})
    rendered = render_backup.cronjobs(t, cfg)
    assert [o["kind"] for o in rendered] == ["ServiceAccount", "CronJob"]
    manifest = yaml.safe_dump_all(rendered)

    # Server-side dry run: schema (strict field validation), defaults, admission.
    proc = kubectl("create", "--dry-run=server", "-f", "-", input=manifest)
    assert proc.stdout.count("(server dry run)") == 2, proc.stdout
    assert get_json("cronjob", naming.backup_cronjob(SERVICE), "-n", t.namespace) is None

    # For real, as the operator applies (server-side apply); a second pass would send nothing.
    kube = Kube.from_environment("tenant-operator")
    for obj in rendered:
        kube.apply(with_hash(obj))
    for obj in rendered:
        live = kube.get(obj["kind"], obj["metadata"]["name"], t.namespace)
        assert not needs_apply(with_hash(obj), live), f"{obj['kind']} differs from what the server keeps"
    cj_name = naming.backup_cronjob(SERVICE)
    want = rendered[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    def same_template(job: dict) -> None:
        got = job_pod_template(job)
        (gc,), (wc,) = got["containers"], want["containers"]
        for field in ("command", "envFrom", "env", "securityContext", "volumeMounts", "image"):
            assert gc[field] == wc[field], field
        assert {k: {r: str(v) for r, v in d.items()} for k, d in gc["resources"].items()} == wc["resources"]
        for field in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "restartPolicy"):
            assert got[field] == want[field], field
        assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] > 0

    def pod_of(job_name: str):
        pods = get_json("pods", "-n", t.namespace, "-l", f"job-name={job_name}") or {}
        return (pods.get("items") or [None])[0]

    # The real CronJob controller schedules a Job (every minute here)...
    def scheduled_job():
        jobs = (get_json("jobs", "-n", t.namespace) or {}).get("items") or []
        return next((j for j in jobs if any(r.get("kind") == "CronJob" and r.get("name") == cj_name
                                            for r in j["metadata"].get("ownerReferences", []))), None)
    job = wait_for(scheduled_job, 150, what="the CronJob controller to create a Job")
    same_template(job)
    # ...whose pod passes admission: restricted Pod Security, LimitRange, quota, ServiceAccount.
    pod = wait_for(lambda: pod_of(job["metadata"]["name"]), 60, what="the job controller to create a pod")
    assert pod["status"].get("phase") == "Pending"      # no kubelet here
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}

    # The component reads the real CronJob status: scheduled, not yet succeeded.
    cj = wait_for(lambda: (c := get_json("cronjob", cj_name, "-n", t.namespace)) and
                  (c.get("status") or {}).get("lastScheduleTime") and c, 30, what="lastScheduleTime")
    # Never contacted; an IP, so loading the config derives its egress without a name lookup.
    comp = BackupComponent(config.from_dict({"objectStorage": {"endpoint": "http://192.0.2.1:9000"},
                                             "backupImage": "tenant-operator:test"}), kube)
    res = comp.sync(t, {("batch/v1", "CronJob", t.namespace, cj_name): cj}, {})
    assert res.condition.type == "BackupsReady"
    assert (res.condition.status, res.condition.reason) == (True, "LastRunPending"), res.condition
    assert "lastSuccessfulTime" not in res.status["backup"]
    # The ServiceAccount (not watched) is found as wanted on the server: not handed out again.
    assert [o["kind"] for o in res.objects] == ["CronJob"]

    # `kubectl create job --from=cronjob/...` (the runbook's "back up now").
    kubectl("create", "job", f"--from=cronjob/{cj_name}", "manual-1", "-n", t.namespace)
    manual = wait_for(lambda: get_json("job", "manual-1", "-n", t.namespace), 30, what="Job manual-1")
    same_template(manual)
    wait_for(lambda: pod_of("manual-1"), 60, what="a pod of manual-1")


# --- the final backup of a deleted tenant -------------------------------------------------------

@needs_backends
@needs_cluster
def test_final_backup_reads_the_secrets_through_the_api(drill):
    """`BackupComponent.final_backup` as the deletion lifecycle calls it: Secrets read
    through the API, the dump run in this process. Then again with the tenant
    suspended (MySQL user locked, storage user disabled) and a model that lists no
    databases (a Tenant whose spec no longer parses): the databases are found from
    their Secrets and the operator's admin credentials take over."""
    from tenant_operator.backends.objectstore.client import Credentials

    with drill.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, f"v{i}") for i in range(100)])
    t = drill.model()

    def secret(name: str, component: str, data: dict[str, str], annotations: dict | None = None) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": t.namespace, "annotations": annotations or {},
                             "labels": naming.tenant_labels(t.name, component)},
                "stringData": data}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": t.namespace}}
    kubectl("create", "-f", "-", input=yaml.safe_dump_all([
        ns, secret(naming.db_secret(SERVICE), "mysql", drill.db_secret, {"tenancy.dev/mysql-server": "main"}),
        secret(naming.BACKUP_SECRET, "objectstorage", drill.s3_secret)]))
    try:
        cfg = config.from_dict({
            "mysql": {"servers": {"main": {"host": drill.server.host, "port": drill.server.port,
                                           "adminUser": drill.server.admin_user,
                                           "adminPassword": drill.server.admin_password}}},
            "objectStorage": {"endpoint": os.environ["MINIO_ENDPOINT"], "accessKey": os.environ["MINIO_ACCESS_KEY"],
                              "secretKey": os.environ["MINIO_SECRET_KEY"]}})
        component = BackupComponent(cfg, Kube.from_environment("tenant-operator-test"))

        first = component.final_backup(t)
        assert "error" not in first, first
        assert len(first["objects"]) == 1 and first["at"].endswith("Z")

        drill.mysql.lock(drill.user, True)
        drill.store.ensure_user(drill.storage_user, drill.policy, [drill.bucket], enabled=False,
                                protected=(drill.bucket,), current=Credentials(drill.s3_secret["AWS_ACCESS_KEY_ID"],
                                                    drill.s3_secret["AWS_SECRET_ACCESS_KEY"]))
        no_spec = spec.Tenant(name=t.name, namespace=t.namespace, tier="standard")
        second = component.final_backup(no_spec)
        assert "error" not in second, second
        assert len(second["objects"]) == 1 and second["objects"] != first["objects"]

        stored = objects(drill)
        for url in first["objects"] + second["objects"]:
            key = url.removeprefix(f"s3://{drill.bucket}/")
            manifest = json.loads(stored[backup.manifest_key(key)])
            assert manifest["trigger"] == "final"
            assert manifest["sha256"] == hashlib.sha256(stored[key]).hexdigest()
            assert b"INSERT INTO `t` VALUES" in gzip.decompress(stored[key])
        assert len(stored) == 4                      # no retention on a final backup
    finally:
        kubectl("delete", "namespace", t.namespace, "--wait=false", check=False)
        wait_for(lambda: get_json("namespace", t.namespace) is None, 120, what=f"namespace {t.namespace} gone")
