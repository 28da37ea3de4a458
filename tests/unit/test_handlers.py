"""The kopf wiring: every handler runs in the event loop."""

from __future__ import annotations

import inspect

import kopf
from tenant_operator import (
    handlers,  # noqa: F401  (importing registers the handlers)
    runtime,
)
from tenant_operator.kube.client import KINDS, OWNED


def _registered():
    registry = kopf.get_default_registry()
    for sub in (registry._indexing, registry._watching, registry._spawning, registry._changing):
        yield from sub.get_all_handlers()


def test_every_handler_is_async():
    # kopf runs sync handlers in its own thread pool: wake() would then set
    # asyncio events from a foreign thread. Blocking work goes to State.executor.
    found = {h.id: inspect.iscoroutinefunction(h.fn) for h in _registered()}
    assert set(found) == {"tenant_changed", "reconcile", "delete", "tenantbackup_changed", "tenantrestore_changed"}
    assert [h for h, is_async in found.items() if not is_async] == []


def test_kopf_watches_only_the_operators_own_resources():
    # Owned objects go to the operator's own watch cache: kopf would give each
    # of them a worker and hold its raw body until every index is populated.
    # kopf serves the Tenants and the TenantBackup/TenantRestore requests.
    registry = kopf.get_default_registry()
    assert registry._indexing.get_all_handlers() == []  # noqa: SLF001
    assert {(h.selector.group, h.selector.any_name) for h in _registered()} == {
        ("tenancy.dev", "tenants"), ("tenancy.dev", "tenantbackups"), ("tenancy.dev", "tenantrestores")}


def test_watch_cache_covers_every_owned_kind_once():
    watched = runtime.watched_kinds("tenant-operator")
    kinds = [w.kind for w in watched]
    assert sorted(kinds) == sorted([k.kind for k in KINDS.values() if k.owned] + ["Tenant", "Job"])
    assert len({w.kind for w in watched}) == len(watched)
    owned = {w.kind: w for w in watched if w.kind not in ("Tenant", "Job")}
    assert len(owned) == len(OWNED)
    assert all(w.label_selector == runtime.OWNED_SELECTOR for w in owned.values())
    assert {ix.index for ix in owned["Ingress"].indexers} == {"owned_ingresses", runtime.INGRESS_HOSTS}


def test_kopf_uses_a_session_with_a_bounded_connection_pool():
    # kopf's own session has no limit: a burst of patches and events opened a TLS connection each.
    import asyncio
    registry = kopf.get_default_registry()
    assert "login" in {h.id for h in registry._activities.get_all_handlers()}  # noqa: SLF001
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", scheme="Bearer", token="t0k",
                               default_namespace="default")

    async def build():
        ctx = runtime.bounded_session(info)
        try:
            s = ctx.aiohttp_session
            return ctx.server, ctx.default_namespace, s.connector.limit, s.headers.get("Authorization")
        finally:
            await ctx.aiohttp_session.close()
    assert asyncio.run(build()) == ("https://127.0.0.1:6443", "default", runtime.KOPF_CONNECTIONS, "Bearer t0k")
