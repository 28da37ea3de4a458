"""backup.retention: which backups survive, and that nothing else is touched."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from tenant_operator import backup
from tenant_operator.backup import SettingsError, retention
from tenant_operator.backup.retention import Policy, plan, select


def at(y: int, m: int, d: int, hh: int = 2, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def dump(when: datetime, service: str = "auth") -> str:
    return backup.backup_key(service, when)


def full(when: datetime, service: str = "auth") -> list[str]:
    key = dump(when, service)
    return [key, backup.manifest_key(key)]


# --- key parsing ----------------------------------------------------------------------------

def test_keys_round_trip_and_strict_parsing():
    key = backup.backup_key("auth", at(2024, 2, 4, 2, 0))
    assert key == "mysql/auth/20240204T020000Z.sql.gz"
    assert backup.parse_key("auth", key) == (at(2024, 2, 4), False)
    assert backup.parse_key("auth", key + ".manifest.json") == (at(2024, 2, 4), True)
    for other in ("mysql/auth/20240204T020000Z.sql", "mysql/auth/20240204T020000Z.sql.gz.bak",
                  "mysql/auth/20240204T020000.sql.gz", "mysql/auth/20241304T020000Z.sql.gz",
                  "mysql/auth/20240230T020000Z.sql.gz", "mysql/auth/x/20240204T020000Z.sql.gz",
                  "mysql/authx/20240204T020000Z.sql.gz", "mysql/orders/20240204T020000Z.sql.gz",
                  "mysql/auth/20240204T020000Z.manifest.json", "mysql/auth/ 20240204T020000Z.sql.gz",
                  "mysql/auth/20240204T020000Z.sql.gz.manifest.json.tmp", "mysql/auth/", "notes.txt"):
        assert backup.parse_key("auth", other) is None, other


def test_backup_key_is_utc():
    from datetime import timezone
    paris = timezone(timedelta(hours=2))
    assert backup.backup_key("a", datetime(2024, 6, 1, 1, 30, tzinfo=paris)) == "mysql/a/20240531T233000Z.sql.gz"


# --- 400 daily backups ----------------------------------------------------------------------

def test_400_daily_backups_keep_7_daily_4_weekly_12_monthly():
    first = at(2023, 1, 1)
    times = [first + timedelta(days=i) for i in range(400)]
    assert times[-1] == at(2024, 2, 4)          # a Sunday: ISO week 2024-W05 ends with it
    keys = [k for t in times for k in full(t)]

    result = plan(keys, "auth", Policy(daily=7, weekly=4, monthly=12))

    expected_days = [
        # daily: the last 7 days
        date(2024, 2, 4), date(2024, 2, 3), date(2024, 2, 2), date(2024, 2, 1),
        date(2024, 1, 31), date(2024, 1, 30), date(2024, 1, 29),
        # weekly: newest of W05 (Feb 4, already kept), W04, W03, W02
        date(2024, 1, 28), date(2024, 1, 21), date(2024, 1, 14),
        # monthly: newest of Feb 2024 (Feb 4) and Jan 2024 (Jan 31), both already kept, then back to March 2023
        date(2023, 12, 31), date(2023, 11, 30), date(2023, 10, 31), date(2023, 9, 30), date(2023, 8, 31),
        date(2023, 7, 31), date(2023, 6, 30), date(2023, 5, 31), date(2023, 4, 30), date(2023, 3, 31),
    ]
    expected = [dump(at(d.year, d.month, d.day)) for d in sorted(expected_days, reverse=True)]
    assert result.keep == expected
    assert len(result.keep) == 20
    survivors = set(expected) | {backup.manifest_key(k) for k in expected}
    assert set(result.delete) == set(keys) - survivors
    assert len(result.delete) == 2 * (400 - 20)
    assert result.ignored == [] and result.incomplete == []
    assert result.reasons[dump(at(2024, 2, 4))] == ["daily", "weekly", "monthly"]
    assert result.reasons[dump(at(2024, 1, 28))] == ["weekly"]
    assert result.reasons[dump(at(2023, 3, 31))] == ["monthly"]
    # Each deleted backup goes manifest first, then its dump.
    for i in range(0, len(result.delete), 2):
        assert result.delete[i] == backup.manifest_key(result.delete[i + 1])


def test_unparseable_and_foreign_keys_are_never_touched():
    times = [at(2024, 1, 1) + timedelta(days=i) for i in range(30)]
    foreign = ["mysql/auth/notes.txt", "mysql/auth/20240101T020000Z.sql.gz.bak", "mysql/auth/latest.sql.gz",
               "mysql/auth/20241301T020000Z.sql.gz", "mysql/auth/2024-01-01.sql.gz",
               "mysql/auth/sub/20240101T020000Z.sql.gz", "mysql/auth/20240101T020000Z.SQL.GZ",
               "mysql/orders/20240101T020000Z.sql.gz", "mysql/orders/20240101T020000Z.sql.gz.manifest.json"]
    keys = [k for t in times for k in full(t)] + foreign
    result = plan(keys, "auth", Policy(daily=1, weekly=0, monthly=0))
    assert result.keep == [dump(times[-1])]
    assert sorted(result.ignored) == sorted(foreign)
    assert not set(result.delete) & set(foreign)
    assert len(result.delete) == 2 * 29


# --- rules ------------------------------------------------------------------------------------

def test_several_backups_a_day_keep_the_newest_of_each_day():
    times = [at(2024, 3, d, h) for d in (1, 2, 3) for h in (0, 6, 12, 18)]
    kept = select(times, Policy(daily=2, weekly=0, monthly=0))
    assert sorted(kept) == [at(2024, 3, 2, 18), at(2024, 3, 3, 18)]


def test_periods_count_only_periods_that_have_a_backup():
    # Backups stopped months ago (suspended tenant): nothing ages out by the calendar.
    times = [at(2023, 5, 1), at(2023, 5, 20), at(2023, 6, 2), at(2023, 6, 3)]
    kept = select(times, Policy(daily=3, weekly=0, monthly=0))
    assert sorted(kept) == [at(2023, 5, 20), at(2023, 6, 2), at(2023, 6, 3)]


def test_iso_weeks_across_the_year_boundary():
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53; 2021-01-04 starts 2021-W01.
    times = [at(2020, 12, 27), at(2020, 12, 31), at(2021, 1, 3), at(2021, 1, 4)]
    kept = select(times, Policy(daily=0, weekly=3, monthly=0))
    assert sorted(kept) == [at(2020, 12, 27), at(2021, 1, 3), at(2021, 1, 4)]


def test_months_keep_the_newest_of_the_month():
    times = [at(2024, m, d) for m in (1, 2, 3) for d in (1, 15, 28)]
    kept = select(times, Policy(daily=0, weekly=0, monthly=2))
    assert sorted(kept) == [at(2024, 2, 28), at(2024, 3, 28)]


def test_the_newest_backup_is_always_kept():
    times = [at(2024, 1, 1) + timedelta(hours=7 * i) for i in range(100)]
    for policy in (Policy(1, 0, 0), Policy(0, 1, 0), Policy(0, 0, 1)):
        assert max(times) in select(times, policy)


def test_policy_must_keep_something():
    with pytest.raises(SettingsError):
        Policy(0, 0, 0)
    with pytest.raises(SettingsError):
        Policy(-1, 4, 12)


# --- incomplete runs ---------------------------------------------------------------------------

def test_incomplete_dumps_and_orphan_manifests():
    complete = [at(2024, 4, d) for d in range(1, 11)]
    keys = [k for t in complete for k in full(t)]
    old_incomplete = dump(at(2024, 3, 20))            # failed run long before the newest complete one
    recent_incomplete = dump(at(2024, 4, 10, 2, 30))  # newer than the newest complete one: maybe still running
    orphan_manifest = backup.manifest_key(dump(at(2024, 3, 1)))
    keys += [old_incomplete, recent_incomplete, orphan_manifest]

    result = plan(keys, "auth", Policy(daily=30, weekly=0, monthly=0))
    assert result.keep == [dump(t) for t in sorted(complete, reverse=True)]   # an incomplete run never counts
    assert result.delete == [old_incomplete, orphan_manifest]
    assert result.incomplete == [recent_incomplete]


def test_incomplete_dumps_are_kept_when_there_is_no_complete_backup():
    keys = [dump(at(2024, 1, 1)), dump(at(2024, 2, 1))]
    result = plan(keys, "auth", Policy())
    assert result.keep == [] and result.delete == [] and sorted(result.incomplete) == sorted(keys)


# --- apply --------------------------------------------------------------------------------------

class FakeStore:
    def __init__(self, keys):
        self.keys = list(keys)
        self.deleted: list[str] = []

    def list(self, prefix):
        from tenant_operator.backup.store import ObjectInfo
        return [ObjectInfo(k, 1, None) for k in self.keys if k.startswith(prefix)]

    def delete(self, key, version_id=None):
        assert version_id is None        # retention deletes the current version only (a delete marker)
        self.deleted.append(key)
        self.keys.remove(key)


def test_apply_deletes_exactly_the_plan():
    times = [at(2024, 1, 1) + timedelta(days=i) for i in range(10)]
    foreign = ["mysql/auth/keep-me.txt", "mysql/orders/20240101T020000Z.sql.gz", "other/file"]
    store = FakeStore([k for t in times for k in full(t)] + foreign)
    result = retention.apply(store, "auth", Policy(daily=3, weekly=0, monthly=0))
    assert store.deleted == result.delete
    assert sorted(store.keys) == sorted([k for t in times[-3:] for k in full(t)] + foreign)

    dry = FakeStore([k for t in times for k in full(t)])
    retention.apply(dry, "auth", Policy(daily=3, weekly=0, monthly=0), dry_run=True)
    assert dry.deleted == []
