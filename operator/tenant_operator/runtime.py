"""The operator's runtime, apart from its kopf wiring: the service container
(State), the view of owned objects that kopf's indexes feed, and the
per-tenant loops the handlers run (reconcile, deletion)."""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import kopf

from tenant_operator import config as config_mod
from tenant_operator import lifecycle, metrics, placement, render
from tenant_operator.backends import build_backends
from tenant_operator.kube.client import OWNED, Kube
from tenant_operator.reconciler import Reconciler
from tenant_operator.recovery import RecoveryWatch

log = logging.getLogger("tenant_operator")


class State:
    """Process-wide state, kept in kopf's memo."""

    def __init__(self, cfg: config_mod.OperatorConfig):
        self.cfg = cfg
        self.kube = Kube.from_environment(cfg.field_manager, pool_size=cfg.workers * 2)
        self.backends = build_backends(cfg, self.kube)
        self.reconciler = Reconciler(cfg, self.kube, self.backends)
        self.executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="reconcile")
        self.triggers: dict[str, asyncio.Event] = {}            # reconcile daemons
        self.deletion_triggers: dict[str, asyncio.Event] = {}   # deletion handlers
        self.recovery = RecoveryWatch({b.component: b.probe for b in self.backends if hasattr(b, "probe")},
                                      self.wake)
        self.recovery_task: asyncio.Task | None = None

    def wake(self, tenant: str) -> None:
        for triggers in (self.triggers, self.deletion_triggers):
            event = triggers.get(tenant)
            if event is not None:
                event.set()


def compact(body: kopf.Body) -> dict:
    """A plain copy of an owned object without the bulky managedFields."""
    obj = copy.deepcopy(dict(body))
    obj["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return obj


def index_id(plural: str) -> str:
    return f"owned_{plural}"


def live_objects(tenant: str, indexes: dict) -> dict:
    out = {}
    for _group, _version, plural in OWNED:
        for obj in indexes[index_id(plural)].get(tenant, []):
            out[render.object_key(obj)] = obj
    return out


def domain_claims(body: dict, indexes: dict) -> dict[str, list[tuple[str, str]]]:
    """(tenant, ingress creationTimestamp) of every operator Ingress routing one of
    the Tenant's domains (looked up by host: no scan of all tenants)."""
    index = indexes["ingress_hosts"]
    hosts = (body.get("spec") or {}).get("domains") or []
    return {h.lower(): list(index.get(h.lower(), ())) for h in hosts if isinstance(h, str)}


PLACEMENT_INDEX = "tenant_placement"


def placement_members(body: dict, indexes: dict):
    """(backend, server) -> the Tenants whose status.placement records that
    server: what the automatic placement counts (placement.py). A copy taken
    here, in the event loop that updates the index, for the reconcile thread;
    only for a Tenant that may need a choice (else None: nothing to count)."""
    if not placement.may_choose(body):
        return None
    snapshot = {key: frozenset(store) for key, store in indexes[PLACEMENT_INDEX].items()}
    return lambda backend, server: snapshot.get((backend, server), frozenset())


async def wait(trigger: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    waiters = [asyncio.ensure_future(trigger.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def reconcile_loop(state: State, name: str, body: dict, stopped, indexes: dict) -> None:
    """One tenant's reconciles, one at a time: now, on every wake(), and every
    drift interval; kopf's daemon for the Tenant runs it until stopped."""
    trigger = state.triggers.setdefault(name, asyncio.Event())
    loop = asyncio.get_running_loop()
    try:
        while not stopped:
            trigger.clear()
            snapshot = copy.deepcopy(dict(body))
            if snapshot.get("metadata", {}).get("deletionTimestamp"):
                return
            live = live_objects(name, indexes)
            claims = domain_claims(snapshot, indexes)
            started = time.monotonic()
            try:
                result = await loop.run_in_executor(state.executor, functools.partial(
                    state.reconciler.reconcile, snapshot, live, claims=claims,
                    placed=placement_members(snapshot, indexes)))
            except Exception as exc:  # noqa: BLE001 - keep the loop alive, back off
                # One line with the cause (an API server outage fails every tenant at once);
                # the traceback only at debug level.
                log.error("reconcile of tenant %s failed: %s: %s", name, type(exc).__name__, str(exc)[:300])
                log.debug("traceback", exc_info=True)
                metrics.RECONCILE_ERRORS.inc()
                kopf.warn(body, reason="ReconcileError", message=str(exc)[:500])
                await wait(trigger, stopped, 30.0)
                continue
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
            state.recovery.update(name, result.waiting_on)
            metrics.set_phase(name, result.phase)
            for etype, reason, message in result.events:
                kopf.event(body, type=etype, reason=reason, message=message[:1000])
            await wait(trigger, stopped, result.retry_after or state.cfg.drift_interval)
            # Coalesce bursts of watch events (our own writes echo back).
            if trigger.is_set() and not stopped:
                await asyncio.sleep(0.2)
    finally:
        state.triggers.pop(name, None)
        state.recovery.forget(name)


# How long one invocation of the deletion handler keeps waiting in-process
# before handing back to kopf (which records progress and calls again).
DELETE_HANDLER_BUDGET = 300.0


async def deletion(state: State, name: str, body: dict, indexes: dict) -> None:
    """Waits out the grace period in-process, woken at once by changes to the
    Tenant (the purge-now annotation), so no polling writes are needed."""
    trigger = state.deletion_triggers.setdefault(name, asyncio.Event())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DELETE_HANDLER_BUDGET
    while True:
        trigger.clear()
        snapshot = copy.deepcopy(dict(body))
        live = live_objects(name, indexes)
        step = await loop.run_in_executor(state.executor, lifecycle.advance, state, snapshot, live)
        for etype, reason, message in step.events:
            kopf.event(body, type=etype, reason=reason, message=message[:1000])
        if step.done:
            break
        budget = deadline - loop.time()
        if budget <= 0:
            raise kopf.TemporaryError(step.message, delay=1)
        try:
            await asyncio.wait_for(trigger.wait(), timeout=min(step.retry_after, budget))
        except TimeoutError:
            pass
    state.deletion_triggers.pop(name, None)
    for backend in state.backends:
        backend.forget(name)
    state.reconciler.forget(name)
    metrics.forget(name)
