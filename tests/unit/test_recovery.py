"""RecoveryWatch: tenants waiting on a backend are woken as soon as it answers."""

from __future__ import annotations

import asyncio

from tenant_operator.errors import BackendUnavailable
from tenant_operator.recovery import RecoveryWatch


class Backend:
    def __init__(self):
        self.up = False
        self.calls = 0

    def probe(self):
        self.calls += 1
        if not self.up:
            raise BackendUnavailable("rabbitmq", "connection refused")


def test_waiters_are_woken_when_their_backend_answers_and_only_then():
    mq, db = Backend(), Backend()
    woken: list[str] = []
    watch = RecoveryWatch({"rabbitmq": mq.probe, "mysql": db.probe}, woken.append)
    watch.update("acme", {"rabbitmq"})
    watch.update("globex", {"rabbitmq", "mysql"})
    watch.update("initech", set())

    assert asyncio.run(watch.probe_once()) == [] and woken == []
    assert db.calls == 1 and mq.calls == 1
    mq.up = True
    assert asyncio.run(watch.probe_once()) == ["rabbitmq"]
    assert woken == ["acme", "globex"]
    # Woken once: the next reconcile says again what it waits on.
    assert asyncio.run(watch.probe_once()) == [] and woken == ["acme", "globex"] and mq.calls == 2
    watch.close()


def test_nothing_is_probed_while_nothing_waits():
    mq = Backend()
    watch = RecoveryWatch({"rabbitmq": mq.probe}, lambda _t: None)
    watch.update("acme", {"rabbitmq"})
    watch.update("acme", set())          # its next reconcile succeeded
    watch.update("globex", {"backup"})   # a component without a probe is not watched
    asyncio.run(watch.probe_once())
    assert mq.calls == 0
    watch.forget("acme")
    watch.close()
