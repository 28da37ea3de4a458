"""The per-tenant loops take one of `workers` slots before they copy their
inputs: a thousand tenants woken at once hold no copies while they queue."""

from __future__ import annotations

import asyncio
import collections
import threading
import types
from concurrent.futures import ThreadPoolExecutor

from tenant_operator import runtime
from tenant_operator.reconciler import ReconcileResult

WORKERS, TENANTS = 2, 6


class Stopped:
    def __init__(self):
        self.flag = asyncio.Event()

    def __bool__(self):
        return self.flag.is_set()

    async def wait(self):
        await self.flag.wait()


class FakeReconciler:
    """Blocks every pass until released; counts how many run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = self.most = self.done = 0
        self.release = threading.Event()

    def reconcile(self, body, live, **_):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
            self.done += 1
        return ReconcileResult(phase="Ready")


def _state(reconciler: FakeReconciler) -> types.SimpleNamespace:
    async def synced():
        return None

    return types.SimpleNamespace(
        cfg=types.SimpleNamespace(drift_interval=60.0, backend_resync_interval=3600.0),
        triggers={}, owns=lambda body: True, reconciler=reconciler,
        cache=types.SimpleNamespace(indexes=collections.defaultdict(dict), wait_synced=synced, changes={}),
        drills=types.SimpleNamespace(observed={}), executor=ThreadPoolExecutor(max_workers=TENANTS),
        guarded=lambda body, fn, *args, **kwargs: fn(*args, **kwargs),
        recovery=types.SimpleNamespace(update=lambda *a: None, forget=lambda *a: None),
        pass_slots=asyncio.Semaphore(WORKERS))


def _body(name: str) -> dict:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1", "generation": 1,
                         "managedFields": [{"manager": "kubectl"}]}, "spec": {}}


def test_at_most_workers_passes_hold_a_copy_of_their_tenant(monkeypatch):
    copies = []
    real = runtime.tenant_snapshot
    monkeypatch.setattr(runtime, "tenant_snapshot", lambda body: copies.append(body) or real(body))
    reconciler = FakeReconciler()

    async def scenario():
        state, stopped = _state(reconciler), Stopped()
        loops = [asyncio.create_task(runtime.reconcile_loop(state, f"t{i}", _body(f"t{i}"), stopped))
                 for i in range(TENANTS)]
        for _ in range(200):   # until the first passes are in the workers
            if reconciler.running == WORKERS:
                break
            await asyncio.sleep(0.01)
        queued_copies = len(copies)
        reconciler.release.set()
        for _ in range(500):
            if reconciler.done == TENANTS:
                break
            await asyncio.sleep(0.01)
        stopped.flag.set()
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        state.executor.shutdown()
        return queued_copies

    queued_copies = asyncio.run(scenario())
    assert queued_copies == WORKERS   # the other four tenants wait holding nothing
    assert reconciler.most == WORKERS and reconciler.done == TENANTS
    assert len(copies) == TENANTS


def test_the_snapshot_is_a_deep_copy_without_managed_fields():
    body = _body("a")
    copy = runtime.tenant_snapshot(body)
    assert "managedFields" not in copy["metadata"] and copy["metadata"]["uid"] == "uid-a"
    copy["spec"]["x"] = 1
    assert body["spec"] == {} and body["metadata"]["managedFields"]
