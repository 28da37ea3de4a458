"""A quiet tenant's drift timer costs a stamp, not a fingerprint: the watch
cache counts the wakes of each tenant, and while that count, the Tenant's
version and its domain claims stay put, nothing is observed or reconciled."""

from __future__ import annotations

import asyncio

from tenant_operator import runtime
from tenant_operator.reconciler import ReconcileResult

from .test_pass_slots import Stopped, _body, _state


class Counting:
    def __init__(self):
        self.passes = 0

    def reconcile(self, body, live, **_):
        self.passes += 1
        return ReconcileResult(phase="Ready")


async def _until(check, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_drift_timer_of_a_quiet_tenant_observes_nothing_until_its_stamp_moves(monkeypatch):
    observed = []
    real_observe = runtime.observe
    monkeypatch.setattr(runtime, "observe", lambda *a: observed.append(a[1]) or real_observe(*a))
    skipped = []
    monkeypatch.setattr(runtime.metrics.SKIPPED_PASSES, "inc", lambda: skipped.append(1))
    reconciler = Counting()

    async def scenario():
        state, stopped = _state(reconciler), Stopped()
        state.cfg.drift_interval = 0.01
        body = _body("t0")
        loop = asyncio.create_task(runtime.reconcile_loop(state, "t0", body, stopped))
        await _until(lambda: reconciler.passes == 1 and len(skipped) >= 20, "twenty drift checks")
        assert observed == ["t0"]   # the pass's own observation; the checks took only stamps

        # A wake whose views came back to what they were: observed once, no pass.
        state.cache.changes[(runtime.WAKES_TENANT, "t0")] = 1
        state.triggers["t0"].set()
        await _until(lambda: len(observed) == 2, "one observation")
        count = len(skipped)
        await _until(lambda: len(skipped) >= count + 20, "twenty more drift checks")
        assert len(observed) == 2 and reconciler.passes == 1

        # A view that did change: a pass.
        state.cache.indexes[runtime.index_id("secrets")]["t0"] = [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "tenant-t0"},
             "viewHash": "1"}]
        state.cache.changes[(runtime.WAKES_TENANT, "t0")] = 2
        state.triggers["t0"].set()
        await _until(lambda: reconciler.passes == 2, "a second pass")

        # The Tenant's version moved (kopf updates the body in place): observed, reconciled.
        body["metadata"]["resourceVersion"] = "2"
        state.triggers["t0"].set()
        await _until(lambda: reconciler.passes == 3, "a third pass")
        stopped.flag.set()
        state.triggers["t0"].set()
        await asyncio.wait_for(loop, 5)

    asyncio.run(scenario())
