"""PURE: the watch cache's indexes, kopf-style (each object contributes
{key: value} to a named index; `index[key]` is the values of every object
under that key), kept current from list and watch events."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Indexer:
    """What one watched kind contributes to one index. `reduce` turns a whole
    object into {key: value} (or {} to leave it out); `essence` is the part of a
    value whose change matters, so an event that moved nothing else wakes nobody."""
    index: str
    reduce: Callable[[dict], dict]
    essence: Callable[[object], object] = lambda value: value
    wakes: str = ""   # whom a changed key wakes (a name in the cache's table of wakers); "" nobody


class Index(Mapping):
    """key -> the values stored under it (one per object)."""

    def __init__(self) -> None:
        self._by_key: dict[object, dict[str, object]] = {}

    def __getitem__(self, key) -> list:
        return list(self._by_key[key].values())

    def __iter__(self) -> Iterator:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, key, uid: str, value) -> None:
        self._by_key.setdefault(key, {})[uid] = value

    def drop(self, key, uid: str) -> None:
        store = self._by_key.get(key)
        if store is not None:
            store.pop(uid, None)
            if not store:
                del self._by_key[key]


class IndexSet:
    """The indexes fed by one watched kind's objects, keyed by object UID."""

    def __init__(self, indexers: list[Indexer], indexes: dict[str, Index]):
        self.indexers = indexers
        self.indexes = indexes
        self._entries: dict[str, dict[str, dict]] = {}   # uid -> index -> {key: value}

    def reduce(self, obj: dict) -> dict[str, dict]:
        """What an object contributes (done where the object was parsed: a thread)."""
        return {ix.index: ix.reduce(obj) for ix in self.indexers}

    def put(self, uid: str, entry: dict[str, dict] | None) -> set[tuple[str, object]]:
        """Store (or with None, remove) one object's contribution. Returns what to
        wake, as (waker, key): the keys of waking indexes whose essence changed."""
        old = self._entries.pop(uid, None) or {}
        if entry:
            self._entries[uid] = entry
        woken = set()
        for ix in self.indexers:
            before, after = old.get(ix.index) or {}, (entry or {}).get(ix.index) or {}
            index = self.indexes[ix.index]
            for key in before.keys() - after.keys():
                index.drop(key, uid)
            for key, value in after.items():
                index.put(key, uid, value)
            if ix.wakes:
                woken |= {(ix.wakes, key) for key in before.keys() | after.keys()
                          if key not in before or key not in after
                          or ix.essence(before[key]) != ix.essence(after[key])}
        return woken

    def replace(self, entries: dict[str, dict[str, dict]]) -> set[tuple[str, object]]:
        """A fresh list: everything not in it is gone. Returns what to wake, as in put."""
        woken = set()
        for uid in set(self._entries) - set(entries):
            woken |= self.put(uid, None)
        for uid, entry in entries.items():
            woken |= self.put(uid, entry)
        return woken
