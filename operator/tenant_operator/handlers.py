"""kopf wiring only. Each Tenant gets one daemon that runs reconciles one at
a time: on start, whenever the Tenant or one of its objects changes (watch
events wake it), and every `drift_interval` otherwise. Deletion goes through
the on.delete handler and the lifecycle module.

The operator's view of the objects it owns comes from kopf indexes fed by
label-selected watches, so checking a tenant for drift costs no API call.
What the handlers run lives in runtime.py."""

from __future__ import annotations

import asyncio
import logging

import kopf

from tenant_operator import GROUP, PLURAL, VERSION, metrics, naming, runtime
from tenant_operator import config as config_mod
from tenant_operator.kube.client import OWNED
from tenant_operator.runtime import State

log = logging.getLogger("tenant_operator")

OWNED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY},{naming.LABEL_TENANT}"
CONFIG_PATH: str = ""   # set by the CLI before kopf starts


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
    if memo.state.shards is not None:
        memo.state.shards_task = asyncio.get_running_loop().create_task(memo.state.shards.run())
    metrics.start_if_configured()
    log.info("tenant-operator started: %d workers, drift check every %ss", cfg.workers, cfg.drift_interval)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    state: State | None = getattr(memo, "state", None)
    if state:
        if state.recovery_task is not None:
            state.recovery_task.cancel()
        if state.shards_task is not None:
            state.shards_task.cancel()
            # Give the shards back at once: the next replica need not wait for them to expire.
            await asyncio.get_running_loop().run_in_executor(None, state.shards.release_all)
        state.recovery.close()
        state.executor.shutdown(wait=False, cancel_futures=True)


def _register_owned(group: str, version: str, plural: str) -> None:
    resource = (group, version, plural) if group else (version, plural)

    # Async on purpose, like tenant_changed: kopf runs sync handlers in its
    # thread pool, and these run for every event of every owned object. In the
    # loop they cost no thread hop, and wake() sets asyncio events from the
    # loop's own thread, the only place that is safe.
    @kopf.index(*resource, id=runtime.index_id(plural), labels={naming.LABEL_TENANT: kopf.PRESENT})
    async def _owned_index(body: kopf.Body, labels, memo: kopf.Memo, **_):
        state: State | None = getattr(memo, "state", None)
        manager = state.cfg.field_manager if state else config_mod.OperatorConfig.field_manager
        return {labels[naming.LABEL_TENANT]: runtime.compact(body, manager)}

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


@kopf.index(GROUP, VERSION, PLURAL, id=runtime.PLACEMENT_INDEX)
async def _tenant_placement(name, status, **_):
    """(backend, server) -> the Tenants placed there (status.placement): what the
    automatic placement counts."""
    placed = (status or {}).get("placement")
    if not isinstance(placed, dict):
        return {}
    return {(backend, server): name for backend, server in placed.items() if isinstance(server, str)}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def tenant_changed(name, type, memo: kopf.Memo, **_) -> None:  # noqa: A002 - kopf's keyword
    state: State | None = getattr(memo, "state", None)
    if state:
        if type == "DELETED" and name in state.deletion_triggers:
            state.gone.add(name)   # a replica waiting to purge it can stop
        state.wake(name)


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=30.0)
async def reconcile_daemon(name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                           memo: kopf.Memo, **kwargs) -> None:
    await runtime.reconcile_loop(memo.state, name, body, stopped, kwargs)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="delete")
async def on_delete(name: str, body: kopf.Body, memo: kopf.Memo, **kwargs) -> None:
    await runtime.deletion(memo.state, name, body, kwargs)
