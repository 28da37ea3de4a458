"""The kopf wiring: every handler runs in the event loop."""

from __future__ import annotations

import inspect

import kopf
from tenant_operator import handlers  # noqa: F401  (importing registers the handlers)
from tenant_operator.kube.client import OWNED


def _registered():
    registry = kopf.get_default_registry()
    for sub in (registry._indexing, registry._watching, registry._spawning, registry._changing):
        yield from sub.get_all_handlers()


def test_every_handler_is_async():
    # kopf runs sync handlers in its own thread pool: for the per-event handlers
    # of owned objects that is a thread hop per event, and wake() would set
    # asyncio events from a foreign thread. Blocking work goes to State.executor.
    found = {h.id: inspect.iscoroutinefunction(h.fn) for h in _registered()}
    assert {"tenant_changed", "reconcile", "delete", "owned_secrets", "wake_secrets", "ingress_hosts",
            "tenant_placement"} <= set(found)
    assert len(found) == 2 * len(OWNED) + 5
    assert [h for h, is_async in found.items() if not is_async] == []
