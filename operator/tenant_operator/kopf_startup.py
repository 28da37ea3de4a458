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
individual Toggle.turn_to() still notifies as before."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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
    """Install the replacements if kopf's ToggleSet is the one they were written
    for (kopf 1.45); otherwise leave kopf as it is and say so."""
    try:
        from kopf._cogs.aiokits import aiotoggles
    except ImportError:
        log.warning("kopf start-up fix not applied: kopf's aiotoggles module is not where expected")
        return False
    cls = aiotoggles.ToggleSet
    probe = cls(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "is_on")) or not all(
            hasattr(cls, m) for m in ("make_toggle", "drop_toggle", "drop_toggles")):
        log.warning("kopf start-up fix not applied: kopf's ToggleSet has changed")
        return False
    cls.make_toggle, cls.drop_toggle, cls.drop_toggles = _make_toggle, _drop_toggle, _drop_toggles
    return True
