"""In the event loop: runs the controller's steps in the worker threads, one
at a time per request, again when a change came in while one ran, and after
the delay a step asks for. Woken by the request's own watch events (kopf)
and by its Jobs' (the watch cache)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tenant_operator import naming
from tenant_operator.operations import BACKUP_KIND, RESTORE_KIND, outcome

log = logging.getLogger(__name__)

JOBS_INDEX = "operation_jobs"
DRILL_JOBS_INDEX = "drill_jobs"
ERROR_RETRY = 30.0
_KIND_OF = {"backup": BACKUP_KIND, "restore": RESTORE_KIND}
JOB_SELECTOR = f"{naming.LABEL_TENANT},{naming.LABEL_OPERATION}"


def request_jobs(obj: dict) -> dict:
    """(kind, namespace, request) -> the view of a TenantBackup's or TenantRestore's Job."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    kind = _KIND_OF.get(labels.get(naming.LABEL_OPERATION, ""))
    if not kind or not labels.get(naming.LABEL_REQUEST):
        return {}
    return {(kind, obj["metadata"].get("namespace", ""), labels[naming.LABEL_REQUEST]): outcome.job_view(obj)}


def drill_jobs(obj: dict) -> dict:
    """tenant -> the view of one of its drill Jobs."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(naming.LABEL_OPERATION) != "drill":
        return {}
    return {labels[naming.LABEL_TENANT]: outcome.job_view(obj)}


def job_essence(view: dict):
    """Only a Job's end (or its start) is news; its pods' comings and goings are not."""
    return view["state"], view["ended"], view["startTime"] != ""


class Runner:
    def __init__(self, step: Callable[..., float | None], executor, views: Callable[[tuple], list]):
        self.step, self.executor, self.views = step, executor, views
        self._running: set[tuple] = set()
        self._again: set[tuple] = set()

    def wake(self, key: tuple) -> None:
        if key in self._running:
            self._again.add(key)
            return
        self._running.add(key)
        asyncio.get_running_loop().create_task(self._run(key))

    async def _run(self, key: tuple) -> None:
        loop = asyncio.get_running_loop()
        retry = None
        try:
            while True:
                self._again.discard(key)
                views = [dict(v) for v in self.views(key)]   # copied here, in the loop that updates them
                try:
                    retry = await loop.run_in_executor(self.executor, self.step, *key, views)
                except Exception as exc:  # noqa: BLE001 - logged, tried again
                    log.error("%s %s/%s: %s: %s", *key, type(exc).__name__, str(exc)[:300])
                    log.debug("traceback", exc_info=True)
                    retry = ERROR_RETRY
                if key not in self._again:
                    break
        finally:
            self._running.discard(key)
        if retry:
            loop.call_later(retry, self.wake, key)
