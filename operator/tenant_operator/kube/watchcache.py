"""The operator's watch cache: each watched kind listed in pages, then watched
from the list's resourceVersion, in a thread of its own; what is kept of each
object is what its indexers reduce it to (kube/indexes.py), never the object.

Why not kopf's indexes: kopf gives every watched object a worker and a memory,
and holds each one, with its whole raw body, until every index is populated.
At 1000 tenants (about 17,000 owned objects) that was most of a restarted
operator's memory and start-up time. Here an object is reduced as soon as it
is parsed, and a kind counts as synced when its first list is complete, which
is the moment a reconcile may trust what the cache says."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tenant_operator.kube.client import KINDS, Kube
from tenant_operator.kube.indexes import Index, Indexer, IndexSet

log = logging.getLogger(__name__)

# Objects per list page. Every kind is listed at once at start-up, each holding
# a page of whole objects until it is reduced: 14 pages of 500 were the peak of
# a restarted operator's memory.
PAGE_SIZE = 100
WATCH_SECONDS = 290        # the server ends each watch after this; we watch again from where it stopped
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Watched:
    kind: str                  # a kind of kube/client.KINDS
    label_selector: str
    indexers: tuple[Indexer, ...]


class WatchCache:
    def __init__(self, kube: Kube, watched: list[Watched], wakers: dict[str, Callable[[object], None]]):
        """`wakers`: for each name an Indexer's `wakes` gives, what to call with a changed key."""
        self.kube, self.watched, self.wakers = kube, watched, wakers
        self.indexes: dict[str, Index] = {ix.index: Index() for w in watched for ix in w.indexers}
        self._sets = {w.kind: IndexSet(list(w.indexers), self.indexes) for w in watched}
        self._stop = threading.Event()
        self._responses: dict[str, object] = {}
        self._unsynced = {w.kind for w in watched}
        self._synced: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # (waker, key) -> how many times it was woken: equal counts mean nothing
        # indexed under the key changed in between (a cheap test of a fingerprint).
        self.changes: dict[tuple[str, object], int] = {}

    def start(self) -> None:
        """Start one thread per kind (from the event loop that will read the indexes)."""
        self._loop = asyncio.get_running_loop()
        self._synced = asyncio.Event()
        for w in self.watched:
            threading.Thread(target=self._run, args=(w,), name=f"watch-{w.kind}", daemon=True).start()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def stop(self) -> None:
        self._stop.set()
        for resp in list(self._responses.values()):
            try:
                resp.shutdown()   # unblocks the thread reading it
            except Exception:  # noqa: BLE001 - best effort at shutdown  # nosec B110
                pass

    # -- in the event loop ------------------------------------------------

    def _replaced(self, kind: str, entries: dict) -> None:
        self._wake(self._sets[kind].replace(entries))
        if kind in self._unsynced:
            self._unsynced.discard(kind)
            log.info("watch cache: %s listed (%d objects)", kind, len(entries))
            if not self._unsynced:
                self._synced.set()

    def _changed(self, kind: str, uid: str, entry: dict | None) -> None:
        self._wake(self._sets[kind].put(uid, entry))

    def _wake(self, woken: set[tuple[str, object]]) -> None:
        for waker, key in woken:
            self.changes[waker, key] = self.changes.get((waker, key), 0) + 1
            self.wakers[waker](key)

    # -- in the kind's thread -----------------------------------------------

    def _post(self, fn, *args) -> None:
        self._loop.call_soon_threadsafe(fn, *args)

    def _run(self, w: Watched) -> None:
        version, delay = None, 1.0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(w)
                version = self._watch(w, version)
                delay = 1.0
            except Exception as exc:  # noqa: BLE001 - an outage: retry, keep the cache as it was
                if self._stop.is_set():
                    return
                if isinstance(exc, ApiException) and exc.status == 410:
                    version = None   # too old to watch from: list again
                log.warning("watch of %s failed (%s: %s); again in %.0fs", w.kind, type(exc).__name__,
                            str(exc)[:200], delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _list(self, w: Watched) -> str:
        """List every page, reduce as it comes; hand the whole set over at once."""
        entries: dict = {}
        query = {"limit": str(PAGE_SIZE), **({"labelSelector": w.label_selector} if w.label_selector else {})}
        while True:
            try:
                page = self.kube.list_page(w.kind, query)
            except ApiException as exc:
                if exc.status == 410 and "continue" in query:   # the continue token expired: start over
                    entries, query = {}, {k: v for k, v in query.items() if k != "continue"}
                    continue
                raise
            for obj in page.get("items") or []:
                # List items come without their kind (watch events carry it).
                obj.setdefault("kind", w.kind)
                obj.setdefault("apiVersion", KINDS[w.kind].api_version)
                entries[obj["metadata"]["uid"]] = self._sets[w.kind].reduce(obj)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                self._post(self._replaced, w.kind, entries)
                return meta["resourceVersion"]
            query["continue"] = meta["continue"]

    def _watch(self, w: Watched, version: str) -> str | None:
        """Follow events from `version`; returns where it stopped, or None when
        that version is too old (410 Gone) and the kind must be listed again."""
        query = {"resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS),
                 **({"labelSelector": w.label_selector} if w.label_selector else {})}
        resp = self.kube.watch(w.kind, query, read_timeout=WATCH_SECONDS + 30)
        self._responses[w.kind] = resp
        try:
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    return version
                if not line:
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = obj["metadata"]["resourceVersion"]
                if etype == "BOOKMARK":
                    continue
                uid = obj["metadata"]["uid"]
                self._post(self._changed, w.kind, uid, None if etype == "DELETED" else self._sets[w.kind].reduce(obj))
            return version
        finally:
            self._responses.pop(w.kind, None)
            resp.release_conn()
