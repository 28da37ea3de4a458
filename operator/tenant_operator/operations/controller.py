"""The side effects of TenantBackup and TenantRestore, one level-triggered
step at a time (run again on every change of the request or of its Jobs):

1. no phase yet: find the Tenant of the namespace, check the request against
   it (model.py) and against its backups bucket, with the operator's
   object-store client: the key and its manifest must exist. A restore into a
   new database creates that database, recorded for the Tenant's UID and
   granted to the service's user. Anything refused is written as Failed with
   the field named, and nothing was touched: no Job exists. Else the plan
   (keys, checksum, Job names) is written to status (phase Running) BEFORE
   any Job is created, so a step cut off in between creates the same Jobs.
2. Running: each Job's state (from the watch cache, else read) decides the
   phase; a missing Job is created (deterministic name, owned by the request).
   When all Jobs completed, a backup's keys are found by the request's UID in
   their manifests.

Status is written with the resourceVersion read (a conditional patch): two
replicas never both accept a request."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from kubernetes.client.rest import ApiException

from tenant_operator import backup, naming, ownership, spec
from tenant_operator.backup import BackupError
from tenant_operator.backup.restore import complete_backups
from tenant_operator.errors import BackendUnavailable, SpecError
from tenant_operator.operations import BACKUP_KIND, TERMINAL, jobs, model, outcome
from tenant_operator.operations.model import Refused
from tenant_operator.ownership import NameConflict
from tenant_operator.status import now_iso

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
CLOCK_SKEW = timedelta(minutes=10)   # a manifest's start time is the pod's clock


class Operations:
    def __init__(self, cfg, kube, backends, *, owns=lambda tenant_body: True, tenant_lock=None):
        self.cfg, self.kube = cfg, kube
        by_name = {b.component: b for b in backends}
        self.mysql, self.backup = by_name.get("mysql"), by_name.get("backup")
        self.owns = owns                  # whether this replica holds the tenant's shard
        self.tenant_lock = tenant_lock    # (tenant) -> the reconciler's lock: grants never race a pass

    # --- the Tenant -------------------------------------------------------------------------

    def tenant_of(self, namespace: str) -> tuple[spec.Tenant, dict]:
        """The Tenant whose namespace this is, proven by the namespace's UID marker
        (the namespace is the operator's; a tenant cannot edit it)."""
        ns = self.kube.get("Namespace", namespace) or {}
        meta = ns.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        name = labels.get(naming.LABEL_TENANT, "")
        uid = annotations.get(ownership.ANNOTATION_UID, "")
        body = self.kube.get("Tenant", name) if name and uid and \
            labels.get(naming.LABEL_MANAGED_BY) == naming.MANAGED_BY else None
        if body is None or body["metadata"].get("uid") != uid:
            raise Refused("metadata.namespace", "NotATenantNamespace",
                          f"namespace {namespace} is not the namespace of a Tenant")
        if body["metadata"].get("deletionTimestamp"):
            raise Refused("metadata.namespace", "TenantTerminating", f"Tenant {name} is being deleted")
        try:
            t = spec.parse(body, self.cfg)
        except SpecError as exc:
            raise Refused("metadata.namespace", "TenantInvalid", f"Tenant {name} is invalid: {exc}") from None
        if t.namespace != namespace:
            raise Refused("metadata.namespace", "NotATenantNamespace",
                          f"namespace {namespace} is not the namespace of Tenant {name} ({t.namespace})")
        return t, body

    # --- one step ---------------------------------------------------------------------------

    def step(self, kind: str, namespace: str, name: str, job_views: list[dict]) -> float | None:
        """Move one request on; returns seconds until it should be looked at again
        (None: its Jobs' or its own watch events will wake it)."""
        obj = self.kube.get(kind, name, namespace)
        if obj is None or (obj.get("status") or {}).get("phase") in TERMINAL:
            return None
        try:
            t, tenant_body = self.tenant_of(namespace)
        except Refused as exc:
            if (obj.get("status") or {}).get("phase"):
                return RETRY_SECONDS   # accepted earlier: the Tenant may be back; its Jobs go on
            return self._refuse(kind, obj, exc, "")
        if not self.owns(tenant_body):
            return None   # another replica's tenant
        try:
            if not (obj.get("status") or {}).get("phase"):
                return self._accept(kind, obj, t)
            return self._follow(kind, obj, t, job_views)
        except Refused as exc:
            return self._refuse(kind, obj, exc, t.name)
        except (BackendUnavailable, BackupError) as exc:
            log.warning("%s %s/%s: %s; again in %.0fs", kind, namespace, name, exc, RETRY_SECONDS)
            return RETRY_SECONDS

    def _write(self, kind: str, obj: dict, status: dict) -> bool:
        meta = obj["metadata"]
        try:
            self.kube.patch_status(kind, meta["name"], status, meta["namespace"],
                                   resource_version=meta["resourceVersion"])
        except ApiException as exc:
            if exc.status in (404, 409):
                return False   # gone, or moved on: the next step reads it again
            raise
        return True

    def _refuse(self, kind: str, obj: dict, exc: Refused, tenant: str) -> float | None:
        generation = int(obj["metadata"].get("generation") or 0)
        log.info("%s %s/%s refused: %s", kind, obj["metadata"]["namespace"], obj["metadata"]["name"], exc)
        written = self._write(kind, obj, outcome.refused_status(obj.get("status") or {}, exc, tenant, generation,
                                                                now_iso()))
        return None if written else 1.0

    # --- acceptance ---------------------------------------------------------------------------

    def _accept(self, kind: str, obj: dict, t: spec.Tenant) -> float | None:
        generation = int(obj["metadata"].get("generation") or 0)
        current = obj.get("status") or {}
        if kind == BACKUP_KIND:
            req = model.parse_backup(obj, t)
            store = self.backup.store_for(t)   # the bucket is there and reachable before a Job runs
            planned = jobs.backup_jobs(req, t, self.cfg)
            status = outcome.accepted_status(
                current, t.name, generation, now_iso(),
                f"backing up {', '.join(req.services)} into s3://{store.bucket}",
                services=list(req.services), jobs=[j["metadata"]["name"] for j in planned])
        else:
            req = model.parse_restore(obj, t)
            key, manifest = self._checked_key(t, req)
            database = req.new_database or naming.mysql_database(t.name, req.service)
            if req.new_database:
                self._new_database(t, req)
            planned = [jobs.restore_job(req, key, t, self.cfg)]
            status = outcome.accepted_status(
                current, t.name, generation, now_iso(),
                f"restoring {key} (sha256 {manifest['sha256']}) into database {database}",
                service=req.service, backup=key, sha256=manifest["sha256"], database=database,
                job=planned[0]["metadata"]["name"])
        if not self._write(kind, obj, status):
            return 1.0
        for job in planned:
            self._create(job, obj)
        return None

    def _checked_key(self, t: spec.Tenant, req: model.RestoreRequest) -> tuple[str, dict]:
        """The dump key to restore and its manifest, both read from the bucket now."""
        store = self.backup.store_for(t)
        key = req.key
        if not key:
            found = complete_backups(store, req.service)
            if not found:
                raise Refused("spec.backup", "BackupNotFound",
                              f"\"latest\": no complete backup of {req.service} in s3://{store.bucket}/"
                              f"{backup.prefix(req.service)}")
            key = found[0]
        if store.stat(key) is None:
            raise Refused("spec.backup", "BackupNotFound", f"no backup {key} in s3://{store.bucket}")
        manifest = store.get_json(backup.manifest_key(key))
        if manifest is None:
            raise Refused("spec.backup", "BackupIncomplete",
                          f"{key} has no manifest in s3://{store.bucket}: it is not a complete backup")
        sha = manifest.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or manifest.get("key") not in (None, key):
            raise Refused("spec.backup", "BackupIncomplete", f"the manifest of {key} is not valid")
        return key, manifest

    def _new_database(self, t: spec.Tenant, req: model.RestoreRequest) -> None:
        secret = self.kube.get("Secret", naming.db_secret(req.service), t.namespace)
        from tenant_operator.components import live_secret_data
        user = live_secret_data(secret).get("DB_USERNAME", "")
        if not user:
            raise BackupError(f"Secret {naming.db_secret(req.service)} has no DB_USERNAME yet")
        lock = self.tenant_lock(t.name) if self.tenant_lock else None
        try:
            if lock is not None:
                lock.acquire()
            self.mysql.restore_database(t, req.service, req.new_database, user)
        except NameConflict as exc:
            raise Refused("spec.target.newDatabase", "NameConflict", str(exc)) from None
        finally:
            if lock is not None:
                lock.release()

    def _create(self, job: dict, owner: dict) -> None:
        """POST the Job; one of that name must be this request's (its owner UID)."""
        try:
            self.kube.create(job)
        except ApiException as exc:
            if exc.status != 409:
                raise
            meta = job["metadata"]
            found = self.kube.get("Job", meta["name"], meta["namespace"]) or {}
            uids = {r.get("uid") for r in (found.get("metadata") or {}).get("ownerReferences") or []}
            if owner["metadata"]["uid"] not in uids:
                raise Refused("metadata.name", "NameConflict",
                              f"Job {meta['name']} exists and does not belong to this request") from None

    # --- following the Jobs -----------------------------------------------------------------

    def _views(self, kind: str, obj: dict, t: spec.Tenant, job_views: list[dict]) -> list[dict]:
        """One view per planned Job: from the cache, else read; a missing one is created."""
        st = obj.get("status") or {}
        names = st.get("jobs") or ([st["job"]] if st.get("job") else [])
        seen = {v["name"]: v for v in job_views}
        out = []
        for name in names:
            if name in seen:
                out.append(seen[name])
                continue
            found = self.kube.get("Job", name, t.namespace)
            if found is None:
                self._create(self._replan(kind, obj, t, name), obj)
                found = self.kube.get("Job", name, t.namespace) or {"metadata": {"name": name}}
            out.append(outcome.job_view(found))
        return out

    def _replan(self, kind: str, obj: dict, t: spec.Tenant, name: str) -> dict:
        st = obj.get("status") or {}
        if kind == BACKUP_KIND:
            req = model.parse_backup(obj, t)
            return next(j for j in jobs.backup_jobs(req, t, self.cfg) if j["metadata"]["name"] == name)
        req = model.parse_restore(obj, t)
        return jobs.restore_job(req, st["backup"], t, self.cfg)   # the key pinned when it was accepted

    def _follow(self, kind: str, obj: dict, t: spec.Tenant, job_views: list[dict]) -> float | None:
        views = self._views(kind, obj, t, job_views)
        state, reason, message = outcome.overall(views)
        if state == outcome.RUNNING:
            return None
        st = obj.get("status") or {}
        generation = int(obj["metadata"].get("generation") or 0)
        fields: dict = {}
        if state == outcome.COMPLETE and kind == BACKUP_KIND:
            written, missing = self._written(t, obj)
            fields["backups"] = written
            if missing:
                state, reason = outcome.FAILED, "ManifestNotFound"
                message = f"the Job(s) completed but no manifest of this request was found for {', '.join(missing)}"
            else:
                message = "wrote " + ", ".join(f"{b['key']} (sha256 {b['sha256']})" for b in written)
        elif state == outcome.COMPLETE:
            fields["verified"] = True
            message = f"restored {st.get('backup')} into {st.get('database')}; its sha256 {st.get('sha256')} " \
                      "matched the manifest before anything was executed"
        self._write(kind, obj, outcome.ended_status(st, state, reason, message, outcome.latest_completion(views),
                                                    generation, now_iso(), **fields))
        return None

    def _written(self, t: spec.Tenant, obj: dict) -> tuple[list[dict], list[str]]:
        """The manifests that carry this request's UID, per service; and the services without one."""
        st = obj.get("status") or {}
        since = datetime.fromisoformat(st.get("startedAt", "1970-01-01T00:00:00Z").replace("Z", "+00:00"))
        store = self.backup.store_for(t)
        written, missing = [], []
        for service in st.get("services") or []:
            entry = None
            for key in complete_backups(store, service):
                parsed = backup.parse_key(service, key)
                if parsed is None or parsed[0] < since - CLOCK_SKEW:
                    break   # newest first: nothing older can be this request's
                manifest = store.get_json(backup.manifest_key(key)) or {}
                if manifest.get("request") == obj["metadata"]["uid"]:
                    entry = {"service": service, "key": key, "sha256": manifest.get("sha256", ""),
                             "size": manifest.get("size", 0)}
                    break
            if entry:
                written.append(entry)
            else:
                missing.append(service)
        return written, missing

