"""Make kopf's start-up with many indexed objects linear (applied before kopf runs).

kopf holds every handler until every index is populated. Each object of an
indexed kind gets a toggle in one ToggleSet, and each object's worker waits on
that set's condition. kopf notifies *all* waiters whenever a toggle is added or
dropped, although the set's overall state only changes at the last one: with
N owned objects that is N^2 wake-ups. At 1020 tenants (about 17,000 owned
objects) a restarted operator had reconciled nothing after six minutes.

Waiters only ever wait for the overall state (`wait_for(state)` re-checks
`is_on() == state`), so waking them when that state did not change is wasted
work. The replacements below notify only on a change of the overall state;
individual Toggle.turn_to() still notifies as before.

This patches private kopf classes, so it is written for one kopf release
exactly: pyproject.toml pins that release, and on any other the operator
refuses to start rather than run an untested patch (or none, and stall at
start-up with many tenants)."""

from __future__ import annotations

import importlib.metadata
import logging

log = logging.getLogger(__name__)

KOPF_VERSION = "1.45.2"   # the release these replacements were written and tested for


class UnsupportedKopf(RuntimeError):
    pass


async def _change(self, change) -> None:
    """Apply `change` to the set's toggles; wake the waiters only if the overall state moved."""
    async with self._condition:
        before = self.is_on()
        change(self._toggles)
        if self.is_on() != before:
            self._condition.notify_all()


async def _make_toggle(self, __val: bool = False, *, name: str | None = None):
    from kopf._cogs.aiokits.aiotoggles import Toggle
    toggle = Toggle(__val, name=name, condition=self._condition)
    await _change(self, lambda toggles: toggles.add(toggle))
    return toggle


async def _drop_toggle(self, toggle) -> None:
    await _change(self, lambda toggles: toggles.discard(toggle))


async def _drop_toggles(self, dropped) -> None:
    await _change(self, lambda toggles: toggles.difference_update(dropped))


def apply() -> bool:
    """Install the replacements; raise UnsupportedKopf on any kopf but KOPF_VERSION
    or if its ToggleSet is not the one they were written for."""
    installed = importlib.metadata.version("kopf")
    if installed != KOPF_VERSION:
        raise UnsupportedKopf(f"kopf {installed} is installed, but tenant-operator patches kopf's private "
                              f"ToggleSet for kopf {KOPF_VERSION} only (kopf_startup.py): install "
                              f"kopf=={KOPF_VERSION}, the version pyproject.toml pins")
    from kopf._cogs.aiokits import aiotoggles
    cls = aiotoggles.ToggleSet
    probe = cls(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "is_on")) or not all(
            hasattr(cls, m) for m in ("make_toggle", "drop_toggle", "drop_toggles")):
        raise UnsupportedKopf(f"kopf {installed}'s ToggleSet is not the one kopf_startup.py was written for")
    cls.make_toggle, cls.drop_toggle, cls.drop_toggles = _make_toggle, _drop_toggle, _drop_toggles
    return True
