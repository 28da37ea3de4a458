"""Shard assignment and the Lease plan (pure parts of shards.py)."""

from __future__ import annotations

import pytest
from tenant_operator import config
from tenant_operator.errors import ConfigError
from tenant_operator.shards import lease_name, plan, shard_of


def test_shard_of_is_stable_and_spreads():
    uids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1600)]
    assert [shard_of(u, 16) for u in uids] == [shard_of(u, 16) for u in uids]
    counts = [0] * 16
    for u in uids:
        counts[shard_of(u, 16)] += 1
    assert min(counts) > 60 and max(counts) < 140, counts


def test_alone_a_replica_takes_every_free_shard():
    p = plan(4, "a", {0: "", 1: "", 2: "", 3: ""}, set(), members=1, releasing=set())
    assert (p.share, p.acquire, p.renew, p.release, p.surplus) == (4, [0, 1, 2, 3], [], [], [])


def test_a_new_member_makes_the_holder_give_back_its_surplus():
    holders = {s: "a" for s in range(4)}
    p = plan(4, "a", holders, set(), members=2, releasing=set())
    assert (p.share, p.renew, p.surplus, p.acquire) == (2, [0, 1], [2, 3], [])
    # Next tick: the surplus is released (it stopped being used the tick before).
    p2 = plan(4, "a", holders, set(), members=2, releasing={2, 3})
    assert (p2.release, p2.renew, p2.acquire) == ([2, 3], [0, 1], [])
    # The newcomer sees held shards it cannot take until they are free.
    assert plan(4, "b", holders, set(), members=2, releasing=set()).acquire == []
    assert plan(4, "b", {0: "a", 1: "a", 2: "", 3: ""}, set(), members=2, releasing=set()).acquire == [2, 3]


def test_a_dead_holders_expired_shards_are_taken_up_to_the_share():
    holders = {0: "a", 1: "a", 2: "b", 3: "b"}
    p = plan(4, "a", holders, expired={2, 3}, members=1, releasing=set())
    assert (p.renew, p.acquire) == ([0, 1], [2, 3])
    # With three live members the share is 2: nothing more for "a".
    assert plan(4, "a", holders, expired={2, 3}, members=3, releasing=set()).acquire == []


def test_lease_names_are_valid_object_names():
    name = lease_name("tenant-operator", "member", "Pod_Name.With.Dots-" + "x" * 80)
    assert len(name) <= 63 and name == name.lower() and not name.endswith("-")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_sharding_config():
    assert config.from_dict({}).sharding is None
    s = config.from_dict({"sharding": {}, "operatorNamespace": "ops"}).sharding
    assert (s.shards, s.namespace, s.lease_seconds, s.renew_seconds) == (16, "ops", 15.0, 5.0)
    with pytest.raises(ConfigError, match="sharding.renewInterval"):
        config.from_dict({"sharding": {"leaseDuration": "10s", "renewInterval": "6s"}})
    with pytest.raises(ConfigError, match="sharding.shards"):
        config.from_dict({"sharding": {"shards": 0}})
    with pytest.raises(ConfigError, match="sharding.name"):
        config.from_dict({"sharding": {"name": "Bad_Name"}})
