"""The operator's watch cache (kube/watchcache.py) against the real API server:
what a first list brings, what watch events change, whom they wake, and a
clean stop."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time

import pytest
from tenant_operator import naming, runtime
from tenant_operator.kube.client import Kube
from tenant_operator.kube.view import VIEW_HASH
from tenant_operator.kube.watchcache import WatchCache

MANAGER = "tenant-operator"


async def until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def labelled_secret(ns: str, name: str, tenant: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {naming.LABEL_MANAGED_BY: naming.MANAGED_BY, naming.LABEL_TENANT: tenant}},
            "stringData": {"k": value}}


def test_list_watch_wake_and_stop(kube_config, crd):   # crd: the cache lists Tenants too
    kube = Kube(kube_config, MANAGER)
    tenant = f"wc-{secrets.token_hex(3)}"
    ns = tenant
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})   # unlabelled: not ours
    kube.create(labelled_secret(ns, "before", tenant, "one"))
    woken: list[str] = []

    async def scenario():
        cache = WatchCache(kube, runtime.watched_kinds(MANAGER),
                           {runtime.WAKES_TENANT: woken.append, runtime.WAKES_REQUEST: woken.append})
        cache.start()
        await asyncio.wait_for(cache.wait_synced(), 60)
        secrets_index = cache.indexes["owned_secrets"]
        # Synced means listed: the object made before the start is there, the unlabelled namespace is not.
        assert [v["metadata"]["name"] for v in secrets_index[tenant]] == ["before"]
        assert not any(v["metadata"]["name"] == ns for vs in cache.indexes["owned_namespaces"].values() for v in vs)

        await asyncio.to_thread(kube.create, labelled_secret(ns, "after", tenant, "two"))
        await until(lambda: len(secrets_index.get(tenant, [])) == 2, what="the new Secret in the index")
        assert tenant in woken

        # A change to a field we neither manage nor read moves only the resourceVersion: nobody is woken.
        before = {v["metadata"]["name"]: v for v in secrets_index[tenant]}["after"]
        woken.clear()
        await asyncio.to_thread(kube.api.call_api, f"/api/v1/namespaces/{ns}/secrets/after", "PATCH",
                                header_params={"Content-Type": "application/merge-patch+json"},
                                body={"metadata": {"annotations": {"example.com/note": "x"}}},
                                response_types_map={200: "object"}, auth_settings=["BearerToken"])
        await until(lambda: {v["metadata"]["name"]: v for v in secrets_index[tenant]}["after"]["metadata"][
            "resourceVersion"] != before["metadata"]["resourceVersion"], what="the new resourceVersion")
        assert woken == []
        # Its data changed: the tenant is woken and the view follows.
        await asyncio.to_thread(kube.apply, labelled_secret(ns, "after", tenant, "three"))
        await until(lambda: tenant in woken, what="a wake for the changed Secret")
        after = {v["metadata"]["name"]: v for v in secrets_index[tenant]}["after"]
        assert after[VIEW_HASH] != before[VIEW_HASH]

        woken.clear()
        await asyncio.to_thread(kube.delete, "Secret", "after", ns)
        await until(lambda: [v["metadata"]["name"] for v in secrets_index.get(tenant, [])] == ["before"],
                    what="the deleted Secret gone from the index")
        assert tenant in woken

        cache.stop()
        await until(lambda: not [t for t in threading.enumerate() if t.name.startswith("watch-")], 15,
                    what="every watch thread to end after stop()")

    try:
        asyncio.run(scenario())
    finally:
        kube.delete("Namespace", ns)
