"""The operator's runtime, apart from its kopf wiring: the service container
(State), what its watch cache keeps of the objects it owns and of Tenants'
placement, and the per-tenant loops the handlers run (reconcile, deletion)."""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

import kopf
from kubernetes.client.rest import ApiException

from tenant_operator import config as config_mod
from tenant_operator import lifecycle, metrics, naming, placement, render
from tenant_operator import shards as shards_mod
from tenant_operator.backends import build_backends
from tenant_operator.kube import view
from tenant_operator.kube.client import KINDS, OWNED, Kube, NotOwner
from tenant_operator.kube.indexes import Indexer
from tenant_operator.kube.watchcache import WatchCache, Watched
from tenant_operator.operations import runner as runner_mod
from tenant_operator.operations.controller import Operations
from tenant_operator.operations.runner import Runner
from tenant_operator.reconciler import Reconciler
from tenant_operator.recovery import RecoveryWatch

log = logging.getLogger("tenant_operator")


class State:
    """Process-wide state, kept in kopf's memo."""

    def __init__(self, cfg: config_mod.OperatorConfig):
        self.cfg = cfg
        self.kube = Kube.from_environment(cfg.field_manager, pool_size=cfg.workers * 2)
        self.backends = build_backends(cfg, self.kube)
        self.drills = next(b for b in self.backends if b.component == "drill")
        self.reconciler = Reconciler(cfg, self.kube, self.backends)
        self.executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="reconcile")
        # A pass takes a slot before it copies its inputs: a thousand tenants woken
        # at once (a start, a burst of new Tenants) wait here holding nothing, not
        # in the executor's queue each holding a copy of its Tenant and objects.
        self.pass_slots = asyncio.Semaphore(cfg.workers)
        self.triggers: dict[str, asyncio.Event] = {}            # reconcile daemons
        self.deletion_triggers: dict[str, asyncio.Event] = {}   # deletion handlers
        self.gone: set[str] = set()   # Tenants deleted from the API (purged by any replica)
        self.recovery = RecoveryWatch({b.component: b.probe for b in self.backends if hasattr(b, "probe")},
                                      self.wake)
        self.recovery_task: asyncio.Task | None = None
        self.shards = shards_mod.from_config(self.kube, cfg)   # None: every tenant is ours
        self.shards_task: asyncio.Task | None = None
        self.operations = Operations(cfg, self.kube, self.backends, owns=self.owns,
                                     tenant_lock=self.reconciler.tenant_lock)
        self.runner = Runner(self.operations.step, self.executor,
                             lambda key: self.cache.indexes[runner_mod.JOBS_INDEX].get(key, ()))
        self.cache = WatchCache(self.kube, watched_kinds(cfg.field_manager),
                                {WAKES_TENANT: self.wake, WAKES_REQUEST: self.runner.wake})
        self.freeze_task: asyncio.Task | None = None

    def owns(self, body) -> bool:
        return self.shards is None or self.shards.owns(body.get("metadata", {}).get("uid", ""))

    def guarded(self, body, fn, *args, **kwargs):
        """Run `fn` (in a worker thread) with every write fenced on holding the tenant's shard."""
        if self.shards is None:
            return fn(*args, **kwargs)
        with self.kube.guarded(lambda: self.owns(body)):
            return fn(*args, **kwargs)

    async def await_ownership(self, body, trigger: asyncio.Event, stopped, timeout: float) -> None:
        """Wait for the tenant's shard to come to this replica (or a wake, or the timeout)."""
        await first_of(timeout, trigger.wait(), self.shards.changed(timeout),
                       *([stopped.wait()] if stopped is not None else []))

    def forget(self, tenant: str) -> None:
        """Drop what this process keeps for a tenant that is gone: caches and its metric series."""
        for backend in self.backends:
            backend.forget(tenant)
        self.reconciler.forget(tenant)
        self.recovery.forget(tenant)
        metrics.forget(tenant)

    def wake(self, tenant: str) -> None:
        """Wake the tenant's reconcile or deletion loop."""
        for triggers in (self.triggers, self.deletion_triggers):
            event = triggers.get(tenant)
            if event is not None:
                event.set()


# Owned objects carry both labels; only they are watched.
OWNED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY},{naming.LABEL_TENANT}"
PLACEMENT_INDEX = "tenant_placement"
# Whom a waking index's changed key wakes: a tenant's loops (key: the tenant's
# name), or a TenantBackup/TenantRestore's runner (key: kind, namespace, name).
WAKES_TENANT, WAKES_REQUEST = "tenant", "request"
INGRESS_HOSTS = "ingress_hosts"


def index_id(plural: str) -> str:
    return f"owned_{plural}"


def ingress_hosts(obj: dict) -> dict:
    """Which Tenant's Ingress routes each host, and since when (first one keeps it)."""
    meta = obj.get("metadata") or {}
    tenant = (meta.get("labels") or {}).get(naming.LABEL_TENANT)
    return {rule["host"]: (tenant, meta.get("creationTimestamp") or "")
            for rule in (obj.get("spec") or {}).get("rules") or [] if rule.get("host")}


def tenant_placement(obj: dict) -> dict:
    """(backend, server) -> the Tenant (status.placement): what the automatic placement counts."""
    placed = (obj.get("status") or {}).get("placement")
    if not isinstance(placed, dict):
        return {}
    name = (obj.get("metadata") or {}).get("name")
    return {(backend, server): name for backend, server in placed.items() if isinstance(server, str)}


def watched_kinds(manager: str) -> list[Watched]:
    """The one table of what the operator watches besides kopf's Tenants: every
    owned kind (by tenant: the view of each object, kube/view.py), the hosts of
    Ingresses, and the Tenants' placement."""
    def owned(obj: dict) -> dict:
        return {obj["metadata"]["labels"][naming.LABEL_TENANT]: view.compact(obj, manager)}

    def essence(value: dict):
        return value.get(view.VIEW_HASH)

    out = []
    for kind in KINDS.values():
        if not kind.owned:
            continue
        indexers = [Indexer(index_id(kind.plural), owned, essence, wakes=WAKES_TENANT)]
        if kind.kind == "Ingress":
            indexers.append(Indexer(INGRESS_HOSTS, ingress_hosts))
        out.append(Watched(kind.kind, OWNED_SELECTOR, tuple(indexers)))
    out.append(Watched("Tenant", "", (Indexer(PLACEMENT_INDEX, tenant_placement),)))
    out.append(Watched("Job", runner_mod.JOB_SELECTOR, (
        Indexer(runner_mod.JOBS_INDEX, runner_mod.request_jobs, runner_mod.job_essence, wakes=WAKES_REQUEST),
        Indexer(runner_mod.DRILL_JOBS_INDEX, runner_mod.drill_jobs, runner_mod.job_essence, wakes=WAKES_TENANT))))
    return out


def fingerprint(body: kopf.Body, live: dict, claims: dict) -> tuple:
    """Every input of a reconcile: the Tenant's version, what the views keep of its
    objects (view.VIEW_HASH) and the domain claims. While it is unchanged, a pass
    could only repeat the last one."""
    return (body.get("metadata", {}).get("resourceVersion"),
            tuple(sorted((key, obj.get(view.VIEW_HASH) or (obj.get("metadata") or {}).get("resourceVersion"))
                         for key, obj in live.items())),
            claims_key(claims))


def claims_key(claims: dict) -> tuple:
    """The domain claims (domain_claims) as a comparable value."""
    return tuple(sorted((host, tuple(c)) for host, c in claims.items()))


# kopf's connections: its watches (Tenants, TenantBackups, TenantRestores, CRDs)
# hold one each, the rest carry patches and events; more in flight queue for a
# free connection.
KOPF_CONNECTIONS = 12


def bounded_session(info: kopf.ConnectionInfo, limit: int = KOPF_CONNECTIONS) -> kopf.AiohttpSession:
    """The session kopf would build from `info` (kopf's APIContext), with at most
    `limit` connections instead of no limit."""
    import aiohttp
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)


async def request_changed(state: State | None, kind: str, namespace: str, name: str, etype) -> None:
    """A TenantBackup or TenantRestore was listed or changed: step it."""
    if state and etype != "DELETED":
        await state.cache.wait_synced()   # its Jobs must be in the cache before a step trusts it
        state.runner.wake((kind, namespace, name))


async def freeze_heap_when_synced(cache: WatchCache) -> None:
    """Once the first lists are in, move everything alive to the collector's permanent
    generation. The views of ~17,000 objects are long-lived; without this every
    full collection walks all of them, which was most of an idle operator's CPU."""
    await cache.wait_synced()
    gc.collect()
    gc.freeze()


def drill_jobs(tenant: str, indexes: dict) -> tuple:
    """Copies of the views of the tenant's drill Jobs, in a stable order (taken in the event loop)."""
    return tuple(sorted((dict(v) for v in indexes[runner_mod.DRILL_JOBS_INDEX].get(tenant, ())),
                        key=lambda v: v["name"]))


def live_objects(tenant: str, indexes: dict) -> dict:
    out = {}
    for _group, _version, plural in OWNED:
        for obj in indexes[index_id(plural)].get(tenant, []):
            out[render.object_key(obj)] = obj
    return out


def domain_claims(body: dict, indexes: dict) -> dict[str, list[tuple[str, str]]]:
    """(tenant, ingress creationTimestamp) of every operator Ingress routing one of
    the Tenant's domains (looked up by host: no scan of all tenants)."""
    index = indexes[INGRESS_HOSTS]
    hosts = (body.get("spec") or {}).get("domains") or []
    return {h.lower(): list(index.get(h.lower(), ())) for h in hosts if isinstance(h, str)}


def placement_members(body: dict, indexes: dict):
    """(backend, server) -> the Tenants whose status.placement records that
    server: what the automatic placement counts (placement.py). A copy taken
    here, in the event loop that updates the index, for the reconcile thread;
    only for a Tenant that may need a choice (else None: nothing to count)."""
    if not placement.may_choose(body):
        return None
    snapshot = {key: frozenset(store) for key, store in indexes[PLACEMENT_INDEX].items()}
    return lambda backend, server: snapshot.get((backend, server), frozenset())


async def first_of(timeout: float, *waits) -> None:
    """Return when the first of `waits` (coroutines) completes or `timeout` passes; cancel the rest."""
    waiters = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def wait(trigger: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    await first_of(timeout, trigger.wait(), stopped.wait())


def tenant_snapshot(body) -> dict:
    """A copy of the Tenant for a worker thread (kopf replaces `body` in the event
    loop as events arrive), without its managedFields, which no pass reads."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return copy.deepcopy({**body, "metadata": meta})


def observe(state: State, name: str, body, indexes: dict) -> tuple[dict, dict, tuple]:
    """The tenant's inputs from the watch cache: its objects, its domain claims,
    and the fingerprint of those, its Tenant and its drill Jobs."""
    live = live_objects(name, indexes)
    claims = domain_claims(body, indexes)
    drills = drill_jobs(name, indexes)
    state.drills.observed[name] = drills
    return live, claims, fingerprint(body, live, claims) + (tuple(runner_mod.job_essence(v) for v in drills),)


def stamp(state: State, name: str, body, claims: dict) -> tuple:
    """What moves whenever an input of the tenant's pass may have moved: the
    Tenant's version, how often the watch cache woke the tenant (every change of
    the view of one of its objects or drill Jobs does) and its domain claims.
    Equal stamps mean equal inputs, for a few lookups instead of a fingerprint:
    the drift timer of a thousand quiet tenants checks only this."""
    return (body.get("metadata", {}).get("resourceVersion"), state.cache.changes.get((WAKES_TENANT, name), 0),
            claims_key(claims))


def tenant_gone(state: State, name: str) -> bool:
    return state.kube.get("Tenant", name) is None


def changed_inputs(before: tuple, after: tuple) -> list[str]:
    """Which inputs differ between two fingerprints (for the debug log)."""
    out = ["tenant"] if before[0] != after[0] else []
    old, new = dict(before[1]), dict(after[1])
    out += [f"{k[1]}/{k[3]}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out + (["domain claims"] if before[2] != after[2] else [])


def quiet(result) -> bool:
    """A pass that changed nothing and waits on nothing: until its inputs move
    (or the backend resync is due), another pass would only repeat it."""
    return not (result.writes or result.retry_after or result.waiting_on or result.pending_removals)


async def reconcile_loop(state: State, name: str, body: dict, stopped) -> None:
    """One tenant's reconciles, one at a time: now, on every wake() (watch
    events of the Tenant and its objects), and at least every backend resync.
    A wake or drift timer whose inputs are those of the last quiet pass costs
    a fingerprint and nothing else: no rendering, no API or backend call."""
    trigger = state.triggers.setdefault(name, asyncio.Event())
    loop = asyncio.get_running_loop()
    quiet_inputs: tuple | None = None
    quiet_stamp: tuple | None = None   # the stamp under which quiet_inputs were last seen
    resync_at = 0.0
    indexes = state.cache.indexes
    await state.cache.wait_synced()   # an unlisted object would look missing and be created again
    try:
        while not stopped:
            trigger.clear()
            if body.get("metadata", {}).get("deletionTimestamp"):
                return
            if not state.owns(body):
                # Another replica's tenant: wait, at no cost, until the shard comes here.
                if quiet_inputs is not None or resync_at:
                    state.forget(name)   # its caches and series belong to the replica that has it now
                quiet_inputs, quiet_stamp, resync_at = None, None, 0.0
                await state.await_ownership(body, trigger, stopped, state.cfg.drift_interval)
                continue
            now_stamp = stamp(state, name, body, domain_claims(body, indexes))
            if loop.time() < resync_at and (now_stamp == quiet_stamp
                                            or observe(state, name, body, indexes)[-1] == quiet_inputs):
                quiet_stamp = now_stamp   # moved and came back (or only its stamp moved): the same inputs
                metrics.SKIPPED_PASSES.inc()
                await wait(trigger, stopped, min(state.cfg.drift_interval, resync_at - loop.time()))
                continue
            async with state.pass_slots:
                # Observed again: the wait for a slot may have been long, and the
                # fingerprint must be that of what this pass reconciles.
                live, claims, inputs = observe(state, name, body, indexes)
                pass_stamp = stamp(state, name, body, claims)
                if quiet_inputs is not None and log.isEnabledFor(logging.DEBUG):
                    log.debug("tenant %s: inputs moved: %s", name, changed_inputs(quiet_inputs, inputs))
                snapshot = tenant_snapshot(body)
                started = time.monotonic()
                try:
                    result = await loop.run_in_executor(state.executor, functools.partial(
                        state.guarded, body, state.reconciler.reconcile, snapshot, live, claims=claims,
                        placed=placement_members(snapshot, indexes)))
                    failure = None
                except Exception as exc:  # noqa: BLE001 - handled below, outside the slot
                    failure = exc
                # Not kept through the wait below: a thousand idle loops would each hold a copy.
                del snapshot, live
            if isinstance(failure, NotOwner):
                log.info("tenant %s: its shard moved to another replica; pass abandoned", name)
                quiet_inputs = quiet_stamp = None
                continue
            if failure is not None:
                if isinstance(failure, ApiException) and failure.status == 404 \
                        and await loop.run_in_executor(state.executor, tenant_gone, state, name):
                    # Deleted before kopf could add its finalizer (no deletion handler runs):
                    # what this pass created stays, marked with the Tenant's UID, for a person to remove.
                    log.warning("tenant %s was deleted while it was reconciled, before it had a finalizer; "
                                "its objects and backend resources carry UID %s and are left in place", name,
                                body.get("metadata", {}).get("uid"))
                    return
                # One line with the cause (an API server outage fails every tenant at once);
                # the traceback only at debug level.
                log.error("reconcile of tenant %s failed: %s: %s", name, type(failure).__name__, str(failure)[:300])
                log.debug("traceback", exc_info=failure)
                metrics.RECONCILE_ERRORS.inc()
                kopf.warn(body, reason="ReconcileError", message=str(failure)[:500])
                quiet_inputs = quiet_stamp = None
                await wait(trigger, stopped, 30.0)
                continue
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
            state.recovery.update(name, result.waiting_on)
            metrics.set_phase(name, result.phase)
            for etype, reason, message in result.events:
                kopf.event(body, type=etype, reason=reason, message=message[:1000])
            if quiet(result):
                # Spread: tenants confirmed together after a start resync over a whole
                # interval, not together; later ones keep their place give or take 10%.
                spread = (0.9, 1.1) if quiet_inputs is not None or resync_at else (0.1, 1.0)
                quiet_inputs, quiet_stamp = inputs, pass_stamp
                resync_at = loop.time() + state.cfg.backend_resync_interval * random.uniform(*spread)  # nosec B311
            else:
                quiet_inputs = quiet_stamp = None
                log.debug("tenant %s: pass not quiet (writes %d, retry %s, waiting on %s, pending removals %s)",
                          name, result.writes, result.retry_after, sorted(result.waiting_on), result.pending_removals)
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


async def deletion(state: State, name: str, body: dict) -> None:
    """Waits out the grace period in-process, woken at once by changes to the
    Tenant (the purge-now annotation), so no polling writes are needed."""
    trigger = state.deletion_triggers.setdefault(name, asyncio.Event())
    indexes = state.cache.indexes
    await state.cache.wait_synced()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DELETE_HANDLER_BUDGET
    while True:
        trigger.clear()
        if name in state.gone:   # purged by another replica
            state.gone.discard(name)
            break
        if not state.owns(body):
            # Another replica purges it. Wait here (no writes) for the shard to come
            # to this replica, and hand back to kopf when the budget is spent.
            budget = deadline - loop.time()
            if budget <= 0:
                raise kopf.TemporaryError("another replica holds this tenant's shard", delay=1)
            await state.await_ownership(body, trigger, None, budget)
            continue
        async with state.pass_slots:
            try:
                step = await loop.run_in_executor(state.executor, state.guarded, body, lifecycle.advance,
                                                  state, tenant_snapshot(body), live_objects(name, indexes))
            except NotOwner:
                continue
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
    state.forget(name)
