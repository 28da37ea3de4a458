"""The shard Lease protocol of ShardManager.tick, against an in-memory Lease
store with the API server's rules for creates and conditional replaces
(the integration tests run it on the real API server)."""

from __future__ import annotations

import copy

import pytest
from kubernetes.client.rest import ApiException
from tenant_operator import shards

SHARDS, LEASE, RENEW = 4, 15.0, 5.0


class Leases:
    """Leases by name: POST fails on a taken name, PUT on a moved resourceVersion."""

    def __init__(self):
        self.items: dict[str, dict] = {}
        self.writes: list[tuple[str, str]] = []   # (name, holder)
        self.version = 0
        self.before_put = None   # hook: called with the body of each PUT, before it lands

    def _store(self, obj: dict) -> dict:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.items[obj["metadata"]["name"]] = obj
        self.writes.append((obj["metadata"]["name"], obj["spec"]["holderIdentity"]))
        return obj

    def list(self, kind, namespace="", label_selector=""):
        return copy.deepcopy(list(self.items.values()))

    def create(self, obj, lease=False):
        if obj["metadata"]["name"] in self.items:
            raise ApiException(status=409)
        return self._store(obj)

    def replace(self, obj, lease=False):
        if self.before_put:
            hook, self.before_put = self.before_put, None
            hook(obj)
        current = self.items.get(obj["metadata"]["name"])
        if current is None:
            raise ApiException(status=404)
        if current["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        return self._store(obj)

    def delete(self, kind, name, namespace="", lease=False):
        return self.items.pop(name, None) is not None

    def holders(self) -> dict[int, str]:
        return {int(n.rsplit("-", 1)[1]): o["spec"]["holderIdentity"]
                for n, o in self.items.items() if "-shard-" in n}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(shards.time, "monotonic", c)
    return c


def replica(store: Leases, me: str) -> shards.ShardManager:
    return shards.ShardManager(store, shards=SHARDS, namespace="ops", prefix="tenant-operator",
                               lease_seconds=LEASE, renew_seconds=RENEW, me=me)


def test_an_idle_replica_writes_only_its_member_lease(clock):
    store = Leases()
    a = replica(store, "a")
    a.tick()
    assert store.holders() == {s: "a" for s in range(SHARDS)} and a.owned_shards() == [0, 1, 2, 3]
    for _ in range(3):
        store.writes.clear()
        clock.now += RENEW
        a.tick()
        assert store.writes == [(a._member_lease(), "a")]   # noqa: SLF001
        assert a.owned_shards() == [0, 1, 2, 3]
    # Without renewals the shards lapse at the deadline, one renew interval before expiry.
    clock.now += LEASE - RENEW
    assert a.owned_shards() == []


def test_a_dead_replicas_shards_are_taken_once_its_member_lease_stops_changing(clock):
    store = Leases()
    a, b = replica(store, "a"), replica(store, "b")
    a.tick()
    b.tick()
    assert b.owned_shards() == []   # every shard held by a live member
    a.tick()   # a sees b: its surplus is given back next tick
    clock.now += RENEW
    a.tick()
    b.tick()
    assert len(a.owned_shards()) == 2 and len(b.owned_shards()) == 2
    # a dies: its member Lease stops changing. b takes its shards only after a lease duration.
    a_shards = a.owned_shards()
    for _ in range(3):
        clock.now += RENEW
        b.tick()
        assert len(b.owned_shards()) == 2 and all(store.holders()[s] == "a" for s in a_shards)
    clock.now += RENEW
    b.tick()
    assert b.owned_shards() == [0, 1, 2, 3]


def test_a_replica_whose_deadline_lapsed_takes_its_shards_again_on_the_version_listed(clock):
    """Frozen past its deadline, a replica lists its shards as its own; another one
    takes a shard between that list and its renewal. The shard's conditional write
    fails, so only the taker holds it."""
    store = Leases()
    a, b = replica(store, "a"), replica(store, "b")
    a.tick()
    clock.now += 2 * LEASE   # a frozen: its deadline passed, and b found its member Lease expired

    def b_takes_shard_0(_body):
        lease = store.items[shards.lease_name("tenant-operator", "shard", "0")]
        assert b._write(0, lease, holder="b")  # noqa: SLF001

    store.before_put = b_takes_shard_0   # runs as a renews its member Lease
    a.tick()
    assert store.holders()[0] == "b" and 0 not in a.owned_shards()
    assert a.owned_shards() == [1, 2, 3]   # taken again, each by a write of its own


def test_a_renewal_that_is_refused_extends_nothing(clock):
    store = Leases()
    a = replica(store, "a")
    a.tick()
    deadline = clock.now + LEASE - RENEW
    clock.now += RENEW
    store.before_put = lambda body: store.items[body["metadata"]["name"]]["metadata"].update(resourceVersion="x")
    a.tick()   # the member Lease moved on under it: 409
    clock.now = deadline - 0.1
    assert a.owned_shards() == [0, 1, 2, 3]
    clock.now = deadline
    assert a.owned_shards() == []


def test_shard_leases_carry_a_long_duration_and_member_leases_the_configured_one(clock):
    store = Leases()
    replica(store, "a").tick()
    durations = {n.split("-")[2]: o["spec"]["leaseDurationSeconds"] for n, o in store.items.items()}
    assert durations == {"shard": shards.SHARD_LEASE_SECONDS, "member": int(LEASE)}
