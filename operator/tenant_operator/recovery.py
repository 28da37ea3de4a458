"""Waking tenants as soon as the backend they wait on is back.

A tenant whose backend is down retries with exponential backoff (up to five
minutes), so without help it would notice the backend's return only at the
end of its current wait. While any tenant waits on a backend, this watch
probes that backend every `interval` seconds (one cheap admin call, on its own
thread so busy reconcile workers cannot delay it); the first success wakes
every tenant waiting on it. Nothing is probed while nothing waits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class RecoveryWatch:
    def __init__(self, probes: dict[str, Callable[[], None]], wake: Callable[[str], None], interval: float = 2.0):
        self.probes = probes              # component -> raises while the backend is unavailable
        self.wake = wake                  # tenant -> wake its reconcile
        self.interval = interval
        self.waiting: dict[str, set[str]] = {}   # component -> tenants
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="probe")

    def update(self, tenant: str, waiting_on: set[str] | frozenset) -> None:
        """What `tenant` waits on after its last reconcile (empty: nothing)."""
        for component, tenants in self.waiting.items():
            if component not in waiting_on:
                tenants.discard(tenant)
        for component in waiting_on:
            if component in self.probes:
                self.waiting.setdefault(component, set()).add(tenant)

    def forget(self, tenant: str) -> None:
        self.update(tenant, frozenset())

    async def probe_once(self) -> list[str]:
        """Probe every backend someone waits on; wake the waiters of those that
        answer. Returns the components found back."""
        loop = asyncio.get_running_loop()
        back = []
        for component in [c for c, tenants in self.waiting.items() if tenants]:
            try:
                await loop.run_in_executor(self._executor, self.probes[component])
            except Exception as exc:  # noqa: BLE001 - still down: the tenants keep waiting
                log.debug("%s still unavailable: %s", component, exc)
                continue
            tenants = self.waiting.pop(component, set())
            log.info("%s is back: waking %d tenant(s) waiting on it", component, len(tenants))
            for tenant in sorted(tenants):
                self.wake(tenant)
            back.append(component)
        return back

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.probe_once()
            except Exception:  # noqa: BLE001 - the watch must outlive any single failure
                log.debug("recovery probe failed", exc_info=True)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
