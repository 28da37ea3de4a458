"""Two operator replicas share the tenants through shard Leases (shards.py),
on the real API server and backends.

The session's standalone operator reconciles every tenant, so it is stopped
while these tests run and started again after them."""

from __future__ import annotations

import os
import signal

import pymysql
import pytest
from kubernetes.client.rest import ApiException
from tenant_operator import naming
from tenant_operator.shards import shard_of

from .conftest import GROUP, PLURAL, VERSION, Operator, free_port, operator_config, unique, wait_for
from .test_tenant_backends import db_error, secret_data

SHARDS = 4
LEASE_SECONDS, RENEW_SECONDS = 6, 2
LEASE_NAMESPACE = "default"


@pytest.fixture(scope="module")
def replicas(operator, tmp_path_factory, kube_config):
    """Replicas A and B of one sharded operator; the standalone one is paused meanwhile."""
    name = unique("shard")
    config = operator_config(tmp_path_factory, sharding={
        "shards": SHARDS, "name": name, "namespace": LEASE_NAMESPACE,
        "leaseDuration": f"{LEASE_SECONDS}s", "renewInterval": f"{RENEW_SECONDS}s"})
    logs = tmp_path_factory.mktemp("sharded")
    operator.stop()
    ops = {r: Operator(config, logs / f"{r}.log", free_port()) for r in ("a", "b")}
    try:
        yield name, ops
    finally:
        for op in ops.values():
            if op.proc and op.proc.poll() is None:
                os.kill(op.proc.pid, signal.SIGCONT)
            op.stop()
        import kubernetes
        coord = kubernetes.client.CoordinationV1Api(kube_config)
        for lease in coord.list_namespaced_lease(LEASE_NAMESPACE, label_selector=f"app.kubernetes.io/instance={name}"
                                                 ).items:
            coord.delete_namespaced_lease(lease.metadata.name, LEASE_NAMESPACE)
        operator.start()
        print(f"replica logs: {logs}")


def holders(kube_config, name: str) -> dict[int, str]:
    import kubernetes
    coord = kubernetes.client.CoordinationV1Api(kube_config)
    out = {}
    for lease in coord.list_namespaced_lease(LEASE_NAMESPACE,
                                             label_selector=f"tenancy.dev/lease=shard,app.kubernetes.io/instance={name}"
                                             ).items:
        out[int(lease.metadata.name.rsplit("-", 1)[1])] = lease.spec.holder_identity or ""
    return out


def owned(op: Operator) -> int:
    return int(op.metric("tenant_operator_shards_owned") or 0)


def tenants_reconciled(op: Operator) -> int:
    """Tenants this replica reports a phase for, i.e. reconciles."""
    import re
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=2).read().decode()
    return sum(int(float(v)) for v in re.findall(r'^tenant_operator_tenants\{phase="\w+"\} ([0-9.]+)$', text, re.M))


def start_both(ops) -> None:
    ops["a"].start()
    wait_for(lambda: owned(ops["a"]) == SHARDS, 30, what="replica a holds every shard")
    ops["b"].start()
    wait_for(lambda: owned(ops["a"]) == SHARDS // 2 and owned(ops["b"]) == SHARDS // 2, 30,
             what="the shards split between the two replicas")


def test_two_replicas_split_the_shards_and_every_tenant_has_one_reconciler(replicas, tenants, custom, kube_config):
    _name, ops = replicas
    start_both(ops)
    created = [tenants.create(unique("sh"), databases=["app"]) for _ in range(6)]
    for name in created:
        tenants.wait_phase(name, "Ready", 120)

    def split_matches():
        live = [t for t in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
                if not t["metadata"].get("deletionTimestamp")]
        per_holder: dict[str, int] = {}
        who = holders(kube_config, _name)
        for t in live:
            holder = who.get(shard_of(t["metadata"]["uid"], SHARDS), "")
            per_holder[holder] = per_holder.get(holder, 0) + 1
        counts = {r: tenants_reconciled(op) for r, op in ops.items()}
        # Each replica reconciles exactly the tenants of its shards, together all of them, none twice.
        return sum(counts.values()) == len(live) and sorted(counts.values()) == sorted(per_holder.values()) \
            and counts
    counts = wait_for(split_matches, 60, what="each replica reconciling exactly its shards' tenants")
    assert sum(counts.values()) >= len(created)


def _mysql_users(tenant: str) -> list[str]:
    conn = pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_ADMIN_USER"], password=os.environ["MYSQL_ADMIN_PASSWORD"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT user FROM mysql.user WHERE user LIKE %s", (naming.tenant_id(tenant) + "\\_%",))
            return sorted(r[0] for r in cur.fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_the_holder_of_a_shard_dies_mid_provisioning_and_the_other_replica_takes_over(
        how, replicas, tenants, core, kube_config):
    name, ops = replicas
    if not all(op.proc and op.proc.poll() is None for op in ops.values()):
        for op in ops.values():
            op.stop()
        start_both(ops)
    services = [f"s{i}" for i in range(8)]
    tenant = tenants.create(unique("hand"), databases=services)
    uid = tenants.get(tenant)["metadata"]["uid"]
    shard = shard_of(uid, SHARDS)
    holder_id = wait_for(lambda: holders(kube_config, name).get(shard), 30, what="the shard's holder")
    holder = next(r for r, op in ops.items() if holder_id.startswith(_identity_prefix(op)))
    other = "b" if holder == "a" else "a"

    # Provisioning has begun (its first credentials exist) but is not done.
    def started():
        st = tenants.get(tenant).get("status") or {}
        try:
            core.read_namespaced_secret("s0-db-credentials", st.get("namespace") or f"tenant-{tenant}")
        except ApiException:
            return st.get("phase") == "Ready" and "too late"
        return "yes"
    assert wait_for(started, 60, interval=0.05, what="provisioning to start") == "yes"
    assert (tenants.get(tenant).get("status") or {}).get("phase") != "Ready"

    victim = ops[holder]
    if how == "killed":
        victim.proc.kill()
        victim.proc.wait(10)
    else:
        os.kill(victim.proc.pid, signal.SIGSTOP)
    # Within a lease duration plus a renewal, the survivor holds the shard ...
    wait_for(lambda: holders(kube_config, name).get(shard, "").startswith(_identity_prefix(ops[other])),
             LEASE_SECONDS + 4 * RENEW_SECONDS + 10, what=f"replica {other} to take shard {shard} over")
    # ... and finishes the tenant.
    st = tenants.wait_phase(tenant, "Ready", 120)["status"]
    if how == "frozen":
        # Resumed, the old holder finds its shards gone: its late writes are refused, not raced.
        os.kill(victim.proc.pid, signal.SIGCONT)
        wait_for(lambda: owned(victim) == SHARDS // 2 and owned(ops[other]) == SHARDS // 2, 60,
                 what="the shards to split again")
        tenants.wait_phase(tenant, "Ready", 60)
    # One account per service, each working with what its Secret says: no two writers raced.
    assert _mysql_users(tenant) == sorted(naming.mysql_user(tenant, s) for s in services)
    for service in services:
        creds = secret_data(core, st["namespace"], f"{service}-db-credentials")
        assert db_error(creds) is None, f"{service}: the Secret's credentials do not log in"


def _identity_prefix(op: Operator) -> str:
    """Identities are `<host>-<pid>-<random>` outside a pod."""
    import socket
    return f"{socket.gethostname()}-{op.proc.pid}-"
