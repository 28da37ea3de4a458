"""The local environment is real: API server, controller-manager, CRD
validation by the API server itself, and the three backends."""

from __future__ import annotations

import copy
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from .conftest import DEVENV, GROUP, PLURAL, VERSION, tenant_body, unique, wait_for

VALID = {
    "displayName": "Client ABC", "tier": "premium", "domains": ["client-abc.example.com"],
    "billing": {"id": "sub_abc123", "costCenter": "CC-ABC-001"}, "quota": {"pods": "60"},
    "databases": ["auth", "products", "orders"],
    "objectStorage": {"buckets": ["products", "sav"], "quotaGiB": 150},
    "messaging": {"queues": ["auth", "orders"]},
    "ingress": {"className": "nginx", "clusterIssuer": "letsencrypt-prod", "service": "api-gateway", "port": 8100},
    "admins": [{"kind": "User", "name": "alice@client-abc.example.com"}],
    "backup": {"schedule": "0 2 * * *", "retention": {"daily": 30, "weekly": 12, "monthly": 12}},
    "suspended": False, "deletion": {"gracePeriod": "720h", "policy": "Delete"},
}


def test_apiserver_ready():
    out = subprocess.run(["kubectl", "get", "--raw", "/readyz"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_valid_tenant_accepted(custom, crd):
    body = tenant_body(unique("valid"))
    body["spec"] = copy.deepcopy(VALID)
    created = custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    assert created["spec"]["tier"] == "premium"
    assert created["spec"]["ingress"]["enabled"] is True   # defaulted by the schema


def _with(path: str, value):
    spec = copy.deepcopy(VALID)
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return spec


INVALID = [
    ("tier", _with("tier", "gold"), "spec.tier"),
    ("domain", _with("domains", ["not a domain"]), "spec.domains"),
    ("database name", _with("databases", ["Auth_DB"]), "spec.databases"),
    ("reserved bucket", _with("objectStorage.buckets", ["backups"]), "spec.objectStorage.buckets"),
    ("negative quota", _with("objectStorage.quotaGiB", -1), "spec.objectStorage.quotaGiB"),
    ("ingress port", _with("ingress.port", 70000), "spec.ingress.port"),
    ("admin kind", _with("admins", [{"kind": "Robot", "name": "x"}]), "spec.admins[0].kind"),
    ("service account admin without namespace", _with("admins", [{"kind": "ServiceAccount", "name": "ci"}]),
     "spec.admins[0]"),
    ("cron schedule", _with("backup.schedule", "every day"), "spec.backup.schedule"),
    ("deletion policy", _with("deletion.policy", "Shred"), "spec.deletion.policy"),
    ("grace period", _with("deletion.gracePeriod", "thirty days"), "spec.deletion.gracePeriod"),
    ("billing id", _with("billing.id", "sub abc!"), "spec.billing.id"),
    ("retention keeps nothing", _with("backup.retention", {"daily": 0, "weekly": 0, "monthly": 0}),
     "spec.backup.retention"),
    ("quota value", _with("quota", {"pods": "lots"}), "spec.quota.pods"),
]


@pytest.mark.parametrize("case,spec,field", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_tenant_rejected_naming_field(custom, crd, case, spec, field):
    body = tenant_body(unique("valid"))
    body["spec"] = spec
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    assert err.value.status == 422
    assert field in err.value.body, err.value.body


def test_tenant_name_too_long_rejected(custom, crd):
    body = tenant_body("x" + "a" * 45)
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    assert err.value.status == 422
    assert "metadata.name" in err.value.body


def test_ingress_without_domains_rejected(custom, crd):
    spec = copy.deepcopy(VALID)
    del spec["domains"]
    body = tenant_body(unique("valid"))
    body["spec"] = spec
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    assert "spec.ingress" in err.value.body


def test_namespace_deletion_finalizes(core):
    """The namespace controller runs: a deleted namespace with content goes away."""
    name = unique("ns")
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    core.delete_namespace(name)

    def gone():
        try:
            core.read_namespace(name)
            return False
        except ApiException as exc:
            return exc.status == 404
    wait_for(gone, 60, what=f"namespace {name} to finalize")


def test_garbage_collector_runs(core):
    """ownerReference garbage collection works (the operator relies on it NOT being used for tenant data)."""
    name = unique("gc")
    core.create_namespace({"metadata": {"name": name}})
    try:
        owner = core.create_namespaced_config_map(name, {"metadata": {"name": "owner"}})
        core.create_namespaced_config_map(name, {"metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})
        core.delete_namespaced_config_map("owner", name)

        def child_gone():
            try:
                core.read_namespaced_config_map("child", name)
                return False
            except ApiException as exc:
                return exc.status == 404
        wait_for(child_gone, 60, what="garbage collection of the dependent")
    finally:
        core.delete_namespace(name)


def test_mariadb_answers():
    import pymysql
    conn = pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_ADMIN_USER"], password=os.environ["MYSQL_ADMIN_PASSWORD"])
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        assert "MariaDB" in cur.fetchone()[0]
    conn.close()


def test_rabbitmq_management_answers():
    import requests
    r = requests.get(os.environ["RABBITMQ_MGMT_URL"] + "/api/overview",
                     auth=(os.environ["RABBITMQ_ADMIN_USER"], os.environ["RABBITMQ_ADMIN_PASSWORD"]), timeout=5)
    assert r.status_code == 200
    assert r.json()["rabbitmq_version"]


def test_minio_answers():
    from urllib.parse import urlparse

    from minio import Minio
    url = urlparse(os.environ["MINIO_ENDPOINT"])
    client = Minio(url.netloc, access_key=os.environ["MINIO_ACCESS_KEY"],
                   secret_key=os.environ["MINIO_SECRET_KEY"], secure=False)
    name = unique("probe")
    client.make_bucket(name)
    try:
        assert client.bucket_exists(name)
    finally:
        client.remove_bucket(name)


def _listening_inodes() -> dict[int, str]:
    """socket inode -> 'address:port' for every listening TCP socket."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":          # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[int(fields[9])] = f"{ipaddress.ip_address(words)}:{int(port_hex, 16)}"
    return out


def _devenv_pids(run_dir: Path) -> set[int]:
    """Every process of the devenv: each component is started in its own
    session, so its whole tree shares the session id; epmd daemonises apart."""
    leaders = {int(p.read_text()) for p in run_dir.glob("*.pid")}
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if int(stat[3]) in leaders or comm == "epmd":
            pids.add(int(proc.name))
    return pids


def test_every_devenv_server_listens_on_loopback_only():
    run_dir = DEVENV / "run"
    listening = _listening_inodes()
    seen = {}
    for pid in _devenv_pids(run_dir):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in listening:
                seen[listening[int(target[8:-1])]] = pid
    assert len(seen) >= 8, f"expected the listeners of etcd, apiserver, backends; found {sorted(seen)}"
    exposed = {a: p for a, p in seen.items() if not ipaddress.ip_address(a.rsplit(":", 1)[0]).is_loopback}
    assert not exposed, f"listening beyond loopback: {exposed}"
