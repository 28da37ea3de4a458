"""The watch cache's indexes (kube/indexes.py): what each event leaves in them
and which tenants it wakes."""

from __future__ import annotations

from tenant_operator import runtime
from tenant_operator.kube.indexes import Index, Indexer, IndexSet
from tenant_operator.kube.view import VIEW_HASH

MANAGER = "tenant-operator"


def tenants(*names: str) -> set:
    """What a change of owned objects wakes: those tenants' loops."""
    return {(runtime.WAKES_TENANT, name) for name in names}


def secret(name: str, tenant: str, rv: str, data: str = "x", hosts=()) -> dict:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": f"t-{tenant}", "uid": f"uid-{name}", "resourceVersion": rv,
                         "labels": {"app.kubernetes.io/managed-by": "tenant-operator", "tenancy.dev/tenant": tenant}},
            "data": {"k": data}}


def owned_set() -> IndexSet:
    by_kind = {w.kind: w for w in runtime.watched_kinds(MANAGER)}
    indexes = {ix.index: Index() for w in by_kind.values() for ix in w.indexers}
    return IndexSet(list(by_kind["Secret"].indexers), indexes)


def test_add_change_delete_and_who_is_woken():
    s = owned_set()
    index = s.indexes["owned_secrets"]
    assert s.put("uid-a", s.reduce(secret("a", "acme", "1"))) == tenants("acme")
    [view] = index["acme"]
    assert view["metadata"]["resourceVersion"] == "1" and VIEW_HASH in view
    # Only the resourceVersion moved (someone else's change we do not keep): stored, nobody woken.
    assert s.put("uid-a", s.reduce(secret("a", "acme", "2"))) == set()
    assert index["acme"][0]["metadata"]["resourceVersion"] == "2"
    # Its data changed: the tenant is woken.
    assert s.put("uid-a", s.reduce(secret("a", "acme", "3", data="y"))) == tenants("acme")
    assert s.put("uid-a", None) == tenants("acme")
    assert "acme" not in index and index.get("acme", []) == []


def test_relabelled_object_moves_between_tenants_and_wakes_both():
    s = owned_set()
    s.put("uid-a", s.reduce(secret("a", "acme", "1")))
    assert s.put("uid-a", s.reduce(secret("a", "globex", "2"))) == tenants("acme", "globex")
    assert list(s.indexes["owned_secrets"]) == ["globex"]


def test_relist_drops_what_is_gone_and_wakes_only_changes():
    s = owned_set()
    for name, tenant in (("a", "acme"), ("b", "acme"), ("c", "globex")):
        s.put(f"uid-{name}", s.reduce(secret(name, tenant, "1")))
    fresh = {"uid-a": s.reduce(secret("a", "acme", "5")),          # same content, newer version
             "uid-c": s.reduce(secret("c", "globex", "5", data="z"))}  # changed; uid-b is gone
    assert s.replace(fresh) == tenants("acme", "globex")
    assert [v["metadata"]["name"] for v in s.indexes["owned_secrets"]["acme"]] == ["a"]


def test_index_without_wakes_and_several_keys_per_object():
    hosts = Indexer("hosts", lambda o: {h: o["metadata"]["name"] for h in o["hosts"]})
    s = IndexSet([hosts], {"hosts": Index()})
    assert s.put("u1", s.reduce({"metadata": {"name": "one"}, "hosts": ["a.example", "b.example"]})) == set()
    s.put("u2", s.reduce({"metadata": {"name": "two"}, "hosts": ["b.example"]}))
    assert sorted(s.indexes["hosts"]["b.example"]) == ["one", "two"]
    s.put("u1", s.reduce({"metadata": {"name": "one"}, "hosts": []}))
    assert "a.example" not in s.indexes["hosts"] and s.indexes["hosts"]["b.example"] == ["two"]


def test_tenant_placement_and_ingress_hosts_reducers():
    tenant = {"metadata": {"name": "acme"}, "status": {"placement": {"mysql": "main", "rabbitmq": "second"}}}
    assert runtime.tenant_placement(tenant) == {("mysql", "main"): "acme", ("rabbitmq", "second"): "acme"}
    assert runtime.tenant_placement({"metadata": {"name": "x"}, "status": {"placement": "bad"}}) == {}
    ingress = {"metadata": {"labels": {"tenancy.dev/tenant": "acme"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"rules": [{"host": "a.example"}, {"http": {}}]}}
    assert runtime.ingress_hosts(ingress) == {"a.example": ("acme", "2026-01-01T00:00:00Z")}


def test_first_of_returns_on_the_first_and_cancels_the_rest():
    import asyncio

    async def scenario():
        fired, never = asyncio.Event(), asyncio.Event()
        pending = []

        async def track(event):
            pending.append(asyncio.current_task())
            await event.wait()

        asyncio.get_running_loop().call_soon(fired.set)
        await asyncio.wait_for(runtime.first_of(30, track(fired), track(never)), 5)
        await asyncio.sleep(0)   # let the cancellation land
        assert [t.cancelled() for t in pending] == [False, True]
        # Nothing fires: the timeout ends it.
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runtime.first_of(0.05, never.wait())
        assert loop.time() - started >= 0.05

    asyncio.run(scenario())


def test_a_request_job_wakes_its_request_and_a_drill_job_its_tenant():
    from tenant_operator import naming
    by_kind = {w.kind: w for w in runtime.watched_kinds(MANAGER)}
    s = IndexSet(list(by_kind["Job"].indexers), {ix.index: Index() for w in by_kind.values() for ix in w.indexers})

    def job(name: str, **labels) -> dict:
        return {"apiVersion": "batch/v1", "kind": "Job", "status": {},
                "metadata": {"name": name, "namespace": "tenant-acme", "uid": f"uid-{name}",
                             "labels": {naming.LABEL_TENANT: "acme", **labels}}}

    backup = job("nightly-auth", **{naming.LABEL_OPERATION: "backup", naming.LABEL_REQUEST: "nightly"})
    assert s.put("uid-b", s.reduce(backup)) == {(runtime.WAKES_REQUEST, ("TenantBackup", "tenant-acme", "nightly"))}
    assert s.put("uid-d", s.reduce(job("drill-auth-db-1", **{naming.LABEL_OPERATION: "drill"}))) == tenants("acme")


def test_the_cache_counts_each_wake_of_a_key():
    """What the drift timer compares (runtime.stamp): a count that moves with every wake."""
    from tenant_operator.kube.watchcache import WatchCache
    woken = []
    cache = WatchCache(None, [w for w in runtime.watched_kinds(MANAGER) if w.kind == "Secret"],
                       {runtime.WAKES_TENANT: woken.append})
    cache._changed("Secret", "uid-a", cache._sets["Secret"].reduce(secret("a", "acme", "1")))  # noqa: SLF001
    cache._changed("Secret", "uid-a", cache._sets["Secret"].reduce(secret("a", "acme", "2")))  # noqa: SLF001
    assert cache.changes == {(runtime.WAKES_TENANT, "acme"): 1} and woken == ["acme"]
    cache._changed("Secret", "uid-a", None)  # noqa: SLF001
    assert cache.changes == {(runtime.WAKES_TENANT, "acme"): 2} and woken == ["acme", "acme"]
