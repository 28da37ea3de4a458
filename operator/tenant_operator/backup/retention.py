"""Which backups to keep: the newest backup of each of the last N days, N ISO
weeks and N months (UTC) that have a backup, the three sets united.

"Last N that have a backup" (not "the N calendar days before now"): when
backups stop, for a suspended tenant or a broken job, the old ones are not
aged out by the calendar; the newest backup is always kept.

Only keys that parse exactly as `mysql/<service>/<YYYYMMDDTHHMMSSZ>.sql.gz`
(and its `.manifest.json`) are ever considered; anything else under the
prefix is reported as ignored and never touched. A dump without a manifest is
an incomplete run: it never counts as a backup, and it is deleted once it is
more than `ORPHAN_GRACE` older than the newest complete backup (a run still
uploading is never that old). A manifest whose dump is gone is deleted.

`plan` is pure; `apply` lists the bucket, plans and deletes (each backup's
manifest before its dump, so an interruption leaves at worst an incomplete
dump, which a later run removes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tenant_operator import backup
from tenant_operator.backup import BackupError, SettingsError

log = logging.getLogger(__name__)

ORPHAN_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class Policy:
    daily: int = 30
    weekly: int = 12
    monthly: int = 12

    def __post_init__(self):
        for name in ("daily", "weekly", "monthly"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SettingsError(f"retention {name} must be a non-negative integer, got {value!r}")
        if not (self.daily or self.weekly or self.monthly):
            raise SettingsError("retention keeps nothing: set at least one of daily, weekly, monthly")


@dataclass
class Plan:
    keep: list[str] = field(default_factory=list)        # dump keys of the backups kept, newest first
    delete: list[str] = field(default_factory=list)      # keys to delete, in order
    ignored: list[str] = field(default_factory=list)     # keys under the prefix that are not ours
    incomplete: list[str] = field(default_factory=list)  # dumps without a manifest that are kept (recent)
    reasons: dict[str, list[str]] = field(default_factory=dict)   # kept dump key -> why


def _rules(policy: Policy) -> list[tuple[str, int, Callable[[datetime], Hashable]]]:
    return [
        ("daily", policy.daily, lambda t: t.date()),
        ("weekly", policy.weekly, lambda t: t.isocalendar()[:2]),
        ("monthly", policy.monthly, lambda t: (t.year, t.month)),
    ]


def select(times: Iterable[datetime], policy: Policy) -> dict[datetime, list[str]]:
    """The times to keep, each with the rules that keep it."""
    ordered = sorted(set(times), reverse=True)
    kept: dict[datetime, list[str]] = {}
    for name, count, period in _rules(policy):
        seen: set = set()
        for when in ordered:
            if len(seen) >= count:
                break
            bucket = period(when)
            if bucket not in seen:
                seen.add(bucket)
                kept.setdefault(when, []).append(name)
    return kept


def plan(keys: Iterable[str], service: str, policy: Policy) -> Plan:
    out = Plan()
    dumps: dict[datetime, str] = {}
    manifests: dict[datetime, str] = {}
    for key in keys:
        parsed = backup.parse_key(service, key)
        if parsed is None:
            out.ignored.append(key)
            continue
        when, is_manifest = parsed
        (manifests if is_manifest else dumps)[when] = key

    complete = [t for t in dumps if t in manifests]
    kept = select(complete, policy)
    newest = max(complete) if complete else None
    for when in sorted(dumps, reverse=True):
        key = dumps[when]
        if when in kept:
            out.keep.append(key)
            out.reasons[key] = kept[when]
        elif when in manifests:
            out.delete.extend([manifests[when], key])
        elif newest is not None and when < newest - ORPHAN_GRACE:
            out.delete.append(key)
        else:
            out.incomplete.append(key)
    for when in sorted(manifests, reverse=True):
        if when not in dumps:
            out.delete.append(manifests[when])
    return out


def apply(store, service: str, policy: Policy, *, dry_run: bool = False) -> Plan:
    """Plan against the bucket's current objects and delete what the plan says."""
    result = plan([o.key for o in store.list(backup.prefix(service))], service, policy)
    for key in result.ignored:
        log.info("retention %s: ignoring %s (not a backup key)", service, key)
    failures = []
    for key in result.delete:
        if dry_run:
            log.info("retention %s: would delete %s", service, key)
            continue
        try:
            store.delete(key)
            log.info("retention %s: deleted %s", service, key)
        except BackupError as exc:
            failures.append(str(exc))
    log.info("retention %s: kept %d backup(s), deleted %d object(s)", service, len(result.keep),
             len(result.delete) - len(failures))
    if failures:
        raise BackupError(f"retention could not delete {len(failures)} object(s): {failures[0]}")
    return result
