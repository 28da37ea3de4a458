"""kopf's index-readiness set notifies its waiters only when its overall state changes."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path

import pytest
from kopf._cogs.aiokits.aiotoggles import ToggleSet
from tenant_operator import kopf_startup


def _counting(toggles: ToggleSet) -> list[int]:
    calls = [0]
    notify_all = toggles._condition.notify_all

    def counted():
        calls[0] += 1
        notify_all()
    toggles._condition.notify_all = counted
    return calls


def test_objects_indexed_at_start_wake_the_waiters_once():
    assert kopf_startup.apply() is True

    async def scenario():
        ready = ToggleSet(all)
        calls = _counting(ready)
        listing = await ready.make_toggle(name="listing")          # one resource kind still listing
        objects = [await ready.make_toggle(name=f"object-{i}") for i in range(500)]
        waiters = [asyncio.create_task(ready.wait_for(True)) for _ in range(500)]
        await asyncio.sleep(0)                                       # let every waiter start waiting
        for toggle in objects:
            await ready.drop_toggle(toggle)
        assert not any(w.done() for w in waiters)                    # the listing still holds them
        await listing.turn_to(True)
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=10)
        return calls[0]

    # kopf as shipped notifies on each of the 1001 toggle changes; here only the
    # first toggle (on -> off) and the listing's own turn_to notify.
    assert asyncio.run(scenario()) <= 2


def test_dropping_the_last_object_toggle_releases_the_waiters():
    assert kopf_startup.apply() is True

    async def scenario():
        ready = ToggleSet(all)
        toggles = [await ready.make_toggle() for _ in range(3)]
        waiter = asyncio.create_task(ready.wait_for(True))
        await ready.drop_toggles(toggles[:2])
        await asyncio.sleep(0)
        assert not waiter.done()
        await ready.drop_toggle(toggles[2])
        await asyncio.wait_for(waiter, timeout=10)
        assert ready.is_on()

    asyncio.run(scenario())


def test_any_other_kopf_is_refused(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "1.46.0" if name == "kopf" else real(name))
    with pytest.raises(kopf_startup.UnsupportedKopf, match="kopf 1.46.0 is installed.*kopf==1.45.2"):
        kopf_startup.apply()


def test_the_pin_is_the_patched_version():
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"kopf=={kopf_startup.KOPF_VERSION}"' in pyproject
    assert importlib.metadata.version("kopf") == kopf_startup.KOPF_VERSION
