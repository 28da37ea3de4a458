"""kopf wiring only. Each Tenant gets one daemon that runs reconciles one at
a time: on start, whenever the Tenant or one of its objects changes (watch
events wake it), and every `drift_interval` otherwise. Deletion goes through
the on.delete handler and the lifecycle module.

The operator's view of the objects it owns comes from kopf indexes fed by
label-selected watches, so checking a tenant for drift costs no API call."""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import kopf

from tenant_operator import GROUP, PLURAL, VERSION, lifecycle, metrics, naming, render
from tenant_operator import config as config_mod
from tenant_operator.backends import build_backends
from tenant_operator.kube.client import OWNED, Kube
from tenant_operator.reconciler import Reconciler
from tenant_operator.recovery import RecoveryWatch

log = logging.getLogger("tenant_operator")

OWNED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY},{naming.LABEL_TENANT}"
CONFIG_PATH: str = ""   # set by the CLI before kopf starts


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


def _compact(body: kopf.Body) -> dict:
    """A plain copy of an owned object without the bulky managedFields."""
    obj = copy.deepcopy(dict(body))
    obj["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return obj


def _index_id(plural: str) -> str:
    return f"owned_{plural}"


def live_objects(tenant: str, indexes: dict) -> dict:
    out = {}
    for _group, _version, plural in OWNED:
        for obj in indexes[_index_id(plural)].get(tenant, []):
            out[render.object_key(obj)] = obj
    return out


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    cfg = config_mod.load(CONFIG_PATH) if CONFIG_PATH else config_mod.from_dict({})
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.tenancy.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.tenancy.dev", key="last-handled-configuration")
    # Only explicit events reach the Tenant; kopf's own log lines stay in the log.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    for group, _version, plural in OWNED:
        settings.watching.label_selectors[(group or "v1", plural)] = OWNED_SELECTOR
    memo.state = State(cfg)
    memo.state.recovery_task = asyncio.get_running_loop().create_task(memo.state.recovery.run())
    metrics.start_if_configured()
    log.info("tenant-operator started: %d workers, drift check every %ss", cfg.workers, cfg.drift_interval)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    state: State | None = getattr(memo, "state", None)
    if state:
        if state.recovery_task is not None:
            state.recovery_task.cancel()
        state.recovery.close()
        state.executor.shutdown(wait=False, cancel_futures=True)


def _register_owned(group: str, version: str, plural: str) -> None:
    resource = (group, version, plural) if group else (version, plural)

    # Async on purpose, like tenant_changed: kopf runs sync handlers in its
    # thread pool, and these run for every event of every owned object. In the
    # loop they cost no thread hop, and wake() sets asyncio events from the
    # loop's own thread, the only place that is safe.
    @kopf.index(*resource, id=_index_id(plural), labels={naming.LABEL_TENANT: kopf.PRESENT})
    async def _owned_index(body: kopf.Body, labels, **_):
        return {labels[naming.LABEL_TENANT]: _compact(body)}

    @kopf.on.event(*resource, id=f"wake_{plural}", labels={naming.LABEL_TENANT: kopf.PRESENT})
    async def _owned_changed(labels, memo: kopf.Memo, **_):
        state: State | None = getattr(memo, "state", None)
        if state:
            state.wake(labels[naming.LABEL_TENANT])


for _g, _v, _p in OWNED:
    _register_owned(_g, _v, _p)


@kopf.index("networking.k8s.io", "v1", "ingresses", id="ingress_hosts", labels={naming.LABEL_TENANT: kopf.PRESENT})
async def _ingress_hosts(body: kopf.Body, labels, **_):
    """Which Tenant's Ingress routes each host, and since when (first one keeps it)."""
    created = body.get("metadata", {}).get("creationTimestamp") or ""
    return {rule["host"]: (labels[naming.LABEL_TENANT], created)
            for rule in (body.get("spec") or {}).get("rules") or [] if rule.get("host")}


def domain_claims(body: dict, indexes: dict) -> dict[str, list[tuple[str, str]]]:
    """(tenant, ingress creationTimestamp) of every operator Ingress routing one of
    the Tenant's domains (looked up by host: no scan of all tenants)."""
    index = indexes["ingress_hosts"]
    hosts = (body.get("spec") or {}).get("domains") or []
    return {h.lower(): list(index.get(h.lower(), ())) for h in hosts if isinstance(h, str)}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def tenant_changed(name, memo: kopf.Memo, **_) -> None:
    state: State | None = getattr(memo, "state", None)
    if state:
        state.wake(name)


async def _wait(trigger: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    waiters = [asyncio.ensure_future(trigger.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=30.0)
async def reconcile_daemon(name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                           memo: kopf.Memo, **kwargs) -> None:
    state: State = memo.state
    trigger = state.triggers.setdefault(name, asyncio.Event())
    loop = asyncio.get_running_loop()
    try:
        while not stopped:
            trigger.clear()
            snapshot = copy.deepcopy(dict(body))
            if snapshot.get("metadata", {}).get("deletionTimestamp"):
                return
            live = live_objects(name, kwargs)
            claims = domain_claims(snapshot, kwargs)
            started = time.monotonic()
            try:
                result = await loop.run_in_executor(state.executor, functools.partial(
                    state.reconciler.reconcile, snapshot, live, claims=claims))
            except Exception as exc:  # noqa: BLE001 - keep the loop alive, back off
                # One line with the cause (an API server outage fails every tenant at once);
                # the traceback only at debug level.
                log.error("reconcile of tenant %s failed: %s: %s", name, type(exc).__name__, str(exc)[:300])
                log.debug("traceback", exc_info=True)
                metrics.RECONCILE_ERRORS.inc()
                kopf.warn(body, reason="ReconcileError", message=str(exc)[:500])
                await _wait(trigger, stopped, 30.0)
                continue
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
            state.recovery.update(name, result.waiting_on)
            metrics.set_phase(name, result.phase)
            for etype, reason, message in result.events:
                kopf.event(body, type=etype, reason=reason, message=message[:1000])
            await _wait(trigger, stopped, result.retry_after or state.cfg.drift_interval)
            # Coalesce bursts of watch events (our own writes echo back).
            if trigger.is_set() and not stopped:
                await asyncio.sleep(0.2)
    finally:
        state.triggers.pop(name, None)
        state.recovery.forget(name)


# How long one invocation of the deletion handler keeps waiting in-process
# before handing back to kopf (which records progress and calls again).
DELETE_HANDLER_BUDGET = 300.0


@kopf.on.delete(GROUP, VERSION, PLURAL, id="delete")
async def on_delete(name: str, body: kopf.Body, memo: kopf.Memo, **kwargs) -> None:
    """Waits out the grace period inside the handler, woken at once by changes
    to the Tenant (the purge-now annotation), so no polling writes are needed."""
    state: State = memo.state
    trigger = state.deletion_triggers.setdefault(name, asyncio.Event())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DELETE_HANDLER_BUDGET
    while True:
        trigger.clear()
        snapshot = copy.deepcopy(dict(body))
        live = live_objects(name, kwargs)
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
