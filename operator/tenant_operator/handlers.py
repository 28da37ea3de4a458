"""kopf wiring only. Each Tenant gets one daemon that runs reconciles one at
a time: on start, whenever the Tenant or one of its objects changes (watch
events wake it), and every `drift_interval` otherwise. Deletion goes through
the on.delete handler and the lifecycle module.

kopf watches Tenants, and TenantBackups and TenantRestores (operations/: an
event steps the request; no finalizer). What the operator keeps of the objects it owns
comes from its own watch cache (kube/watchcache.py, started here), so
checking a tenant for drift costs no API call, and a change to one of a
tenant's objects wakes that tenant's daemon. What the handlers run lives in
runtime.py."""

from __future__ import annotations

import asyncio
import logging

import kopf

from tenant_operator import GROUP, PLURAL, VERSION, metrics, naming, operations, runtime
from tenant_operator import config as config_mod
from tenant_operator.runtime import State

log = logging.getLogger("tenant_operator")

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
    memo.state = State(cfg)
    memo.state.cache.start()
    memo.state.freeze_task = asyncio.get_running_loop().create_task(runtime.freeze_heap_when_synced(memo.state.cache))
    memo.state.recovery_task = asyncio.get_running_loop().create_task(memo.state.recovery.run())
    if memo.state.shards is not None:
        memo.state.shards_task = asyncio.get_running_loop().create_task(memo.state.shards.run())
    metrics.start_if_configured()
    log.info("tenant-operator started: %d workers, drift check every %ss", cfg.workers, cfg.drift_interval)


@kopf.on.login()
async def login(**kwargs) -> kopf.AiohttpSession | None:
    """kopf's credentials, in a session with a bounded connection pool. kopf's own
    session has no limit: a burst of Tenant patches and events (1000 tenants
    provisioning) opens one TLS connection each, and their buffers were the
    largest part of the operator's memory that was not its own data."""
    info = kopf.login_via_client(**kwargs)
    return None if info is None else runtime.bounded_session(info)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    state: State | None = getattr(memo, "state", None)
    if state:
        for task in (state.recovery_task, state.freeze_task):
            if task is not None:
                task.cancel()
        if state.shards_task is not None:
            state.shards_task.cancel()
            # Give the shards back at once: the next replica need not wait for them to expire.
            await asyncio.get_running_loop().run_in_executor(None, state.shards.release_all)
        state.cache.stop()
        state.recovery.close()
        state.executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def tenant_changed(name, type, memo: kopf.Memo, **_) -> None:  # noqa: A002 - kopf's keyword
    state: State | None = getattr(memo, "state", None)
    if state:
        if type == "DELETED" and name in state.deletion_triggers:
            state.gone.add(name)   # a replica waiting to purge it can stop (and forgets it then)
        elif type == "DELETED":
            state.forget(name)     # gone without a deletion handler here: its series and caches go too
        state.wake(name)


@kopf.on.event(GROUP, VERSION, operations.BACKUP_PLURAL)
async def tenantbackup_changed(namespace, name, type, memo: kopf.Memo, **_) -> None:  # noqa: A002
    await runtime.request_changed(getattr(memo, "state", None), operations.BACKUP_KIND, namespace, name, type)


@kopf.on.event(GROUP, VERSION, operations.RESTORE_PLURAL)
async def tenantrestore_changed(namespace, name, type, memo: kopf.Memo, **_) -> None:  # noqa: A002
    await runtime.request_changed(getattr(memo, "state", None), operations.RESTORE_KIND, namespace, name, type)


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=30.0)
async def reconcile_daemon(name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                           memo: kopf.Memo, **kwargs) -> None:
    await runtime.reconcile_loop(memo.state, name, body, stopped)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="delete")
async def on_delete(name: str, body: kopf.Body, memo: kopf.Memo, **kwargs) -> None:
    await runtime.deletion(memo.state, name, body)
