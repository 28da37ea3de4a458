"""Deletion state machine: grace period, final backup, ordered purge.

Tenant data is never a garbage-collection dependent of the Tenant (nothing
the operator creates carries an ownerReference to it), so whatever
propagation policy deletes the Tenant (`--cascade=foreground` included, as
Argo CD does), only this module decides when data goes. Progress is kept in
`status.deletion`, so an operator restarted mid-way resumes where it was.

Each call of `advance` does the next due work and says whether the Tenant can
be released (finalizer removed) or when to look again."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tenant_operator import metrics, naming, spec, status
from tenant_operator.durations import format_duration, parse_duration
from tenant_operator.errors import BackendUnavailable, SpecError
from tenant_operator.ownership import ANNOTATION_SKIP_FINAL_BACKUP, ANNOTATION_UID

log = logging.getLogger(__name__)

# The first and the last purge step; between them, each backend's `data_step`
# in the backends' order. Each step is idempotent and recorded once done.
REVOKE_STEP = "revoke-credentials"
NAMESPACE_STEP = "delete-namespace"


@dataclass
class Step:
    done: bool
    message: str = ""
    retry_after: float = 60.0
    events: list[tuple[str, str, str]] = field(default_factory=list)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso_time(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

# A failed final backup is tried again after `finalBackupRetryInterval`, doubling up to an hour.
FINAL_BACKUP_RETRY_MAX = 3600.0


def tenant_for_deletion(body: dict, cfg) -> tuple[spec.Tenant, bool]:
    """The model of a Tenant being deleted, and whether its spec parsed. An
    invalid spec must not block deletion: fall back to the name, the UID, the
    annotations and the config's defaults. Such a model describes nothing to
    converge; it is used for the grace period and the purge, which work from
    ownership markers, never from the spec."""
    try:
        return spec.parse(body, cfg), True
    except SpecError:
        name = body["metadata"]["name"]
        annotations = body["metadata"].get("annotations") or {}
        raw = body.get("spec")
        deletion = raw.get("deletion") if isinstance(raw, dict) else None
        deletion = deletion if isinstance(deletion, dict) else {}
        policy = deletion.get("policy") if deletion.get("policy") in spec.DELETION_POLICIES else "Delete"
        # Keep the grace period the tenant asked for when that field itself is valid:
        # an unrelated invalid field must not shorten the time data is kept.
        try:
            grace = parse_duration(deletion["gracePeriod"]) if "gracePeriod" in deletion \
                else cfg.default_grace_period
        except ValueError:
            grace = cfg.default_grace_period
        # Where its data is: the servers recorded in status.placement, else the defaults.
        placed = (body.get("status") or {}).get("placement")
        placed = placed if isinstance(placed, dict) else {}
        servers = {b: placed[b] if placed.get(b) in cfg.servers(b) else cfg.default_server(b)
                   for b in ("mysql", "rabbitmq", "objectStorage")}
        return spec.Tenant(name=name, namespace=naming.namespace(name, cfg.namespace_prefix), tier="standard",
                           mysql_server=servers["mysql"], rabbitmq_server=servers["rabbitmq"],
                           object_storage_server=servers["objectStorage"],
                           deletion=spec.Deletion(grace_period=grace, policy=policy),
                           uid=str(body["metadata"].get("uid") or ""),
                           purge_now=spec.flag(annotations, naming.ANNOTATION_PURGE_NOW),
                           skip_final_backup=spec.flag(annotations, ANNOTATION_SKIP_FINAL_BACKUP)), False


def plan(t: spec.Tenant, backends) -> tuple[str, ...]:
    """Credentials first (nothing can write while data goes), then each
    backend's data (policy Delete only), the namespace last."""
    data = () if t.deletion.policy == "Retain" else tuple(b.data_step for b in backends if b.data_step)
    return (REVOKE_STEP, *data, NAMESPACE_STEP)


def advance(state, body: dict, live: dict, now: datetime | None = None) -> Step:
    name = body["metadata"]["name"]
    state.reconciler.begin_deletion(name)
    # Waits for a reconcile that was already running to finish first.
    with state.reconciler.tenant_lock(name):
        return _advance(state, body, live, now)


def _advance(state, body: dict, live: dict, now: datetime | None) -> Step:
    cfg = state.cfg
    now = now or datetime.now(UTC)
    # The handler's copy can predate our own status writes of the previous pass;
    # progress must be read from the source of truth, or steps would repeat.
    fresh = state.kube.get("Tenant", body["metadata"]["name"])
    if fresh is None:
        return Step(True, "already gone")
    body = fresh
    t, valid = tenant_for_deletion(body, cfg)
    current = body.get("status") or {}
    deletion = dict(current.get("deletion") or {})
    events: list[tuple[str, str, str]] = []

    if not deletion.get("requestedAt"):
        held = _inventory(state, t)
        if held == []:
            # Nothing carries this Tenant's UID anywhere (it was never provisioned,
            # e.g. Invalid throughout): no data to keep, nothing to create or back up.
            events.append(("Normal", "Released", "nothing was ever provisioned for this Tenant (no namespace, "
                                                 "database, bucket, storage user, vhost or RabbitMQ user carries "
                                                 "its UID); released at once, without a grace period"))
            return Step(True, "nothing provisioned", events=events)
        # deletionTimestamp is fixed by the API server: the grace period does not
        # restart if the operator restarts before recording it.
        requested = parse_time(body["metadata"].get("deletionTimestamp") or iso_time(now))
        deletion = {
            "requestedAt": iso_time(requested),
            "purgeAfter": iso_time(requested + timedelta(seconds=t.deletion.grace_period)),
            "policy": t.deletion.policy,
            "completedSteps": [],
        }
        events.append(("Normal", "DeletionRequested",
                       f"tenant suspended; data is kept until {deletion['purgeAfter']} "
                       f"(grace {format_duration(t.deletion.grace_period)}, policy {t.deletion.policy}); "
                       f"annotate {naming.ANNOTATION_PURGE_NOW}=true to purge earlier"))

    # Keep the tenant suspended (credentials locked, ingress gone) throughout.
    suspended = dataclasses.replace(t, suspended=True)
    metrics.set_phase(t.name, "Terminating")
    backup_retry = _ensure_final_backup(state, suspended, deletion, now, events)
    fb = deletion.get("finalBackup") or {}
    # Read back from the record, so a restarted operator reports a failing final backup too.
    metrics.FINAL_BACKUP_FAILURES.labels(t.name).set(int(fb.get("attempts") or 0) if fb.get("error") else 0)
    purge_after = parse_time(deletion["purgeAfter"])
    purging = now >= purge_after or t.purge_now
    if purging:
        deletion.setdefault("purgeStartedAt", iso_time(now))
        state.reconciler.report_terminating(body, deletion)
    elif valid:
        # Converging a terminating tenant only locks it: nothing is destroyed or
        # downgraded (the components know they are terminating).
        state.reconciler.reconcile_terminating(body, live, suspended, deletion)
    else:
        # A spec that no longer parses describes nothing to converge: report only.
        state.reconciler.report_terminating(body, deletion)
    if not purging:
        remaining = (purge_after - now).total_seconds()
        retry = min(remaining, cfg.deletion_poll_interval, backup_retry or remaining)
        return Step(False, f"grace period: purge after {deletion['purgeAfter']}",
                    retry_after=max(1.0, retry), events=events)

    if backup_retry is not None:
        # No purge without a final backup, unless a person said so explicitly.
        fb = deletion["finalBackup"]
        deletion["waitingOn"] = (f"final backup has not succeeded ({fb.get('error', 'not taken yet')}); next try at "
                                 f"{fb.get('nextAttemptAt')}. Annotate {ANNOTATION_SKIP_FINAL_BACKUP}=true "
                                 "to purge without it")
        state.reconciler.report_terminating(body, deletion)
        return Step(False, deletion["waitingOn"], retry_after=max(1.0, backup_retry), events=events)

    completed = list(deletion.get("completedSteps") or [])
    for step in plan(t, state.backends):
        if step in completed:
            continue
        try:
            finished, detail = _run_step(state, t, step, live)
        except BackendUnavailable as exc:
            deletion["waitingOn"] = f"{step}: {exc}"
            state.reconciler.report_terminating(body, deletion)
            return Step(False, f"purge step {step} waits on {exc}", retry_after=30.0, events=events)
        if not finished:
            deletion["waitingOn"] = f"{step}: {detail}"
            state.reconciler.report_terminating(body, deletion)
            return Step(False, f"purge step {step}: {detail}", retry_after=5.0, events=events)
        completed.append(step)
        deletion["completedSteps"] = completed
        deletion.pop("waitingOn", None)
        events.append(("Normal", "PurgeStep", f"{step}: {detail}"))
        state.reconciler.report_terminating(body, deletion)

    if t.deletion.policy == "Retain":
        kept = [item for backend in state.backends for item in backend.retain(t)]
        events.append(("Normal", "DataRetained", "retained: " + (", ".join(kept) or "no external data") +
                       "; a new Tenant with the same name adopts them"))
    events.append(("Normal", "Purged", "all tenant resources removed; releasing the Tenant"))
    return Step(True, "purged", events=events)


def _inventory(state, t: spec.Tenant) -> list[str] | None:
    """What carries this Tenant's UID marker, everywhere; None when that cannot
    be proven (no UID, a backend that cannot answer): then the full grace applies."""
    if not t.uid:
        return None
    found = []
    try:
        ns = state.kube.get("Namespace", t.namespace)
        if ns is not None and (ns["metadata"].get("annotations") or {}).get(ANNOTATION_UID) == t.uid:
            found.append(f"namespace {t.namespace}")
        for backend in state.backends:
            found.extend(backend.inventory(t))
    except Exception as exc:  # noqa: BLE001 - any doubt means the data may exist: keep the grace period
        log.info("tenant %s: cannot list what it owns (%s); the grace period applies", t.name, exc)
        return None
    return found


def _ensure_final_backup(state, t: spec.Tenant, deletion: dict, now: datetime,
                         events: list) -> float | None:
    """Take the final backup, or try it again once its backoff is over. Returns
    None when it succeeded (or is explicitly skipped), else seconds to the next try."""
    fb = dict(deletion.get("finalBackup") or {})
    if fb and not fb.get("error"):
        return None
    if deletion.get("completedSteps"):
        # The purge only starts after a final backup (or its override): never again.
        return None
    if t.skip_final_backup:
        # Kept as "overridden", not as success: the record shows what happened.
        fb.pop("nextAttemptAt", None)
        fb["overridden"] = fb.pop("error", "not taken")
        fb["skipped"] = f"annotation {ANNOTATION_SKIP_FINAL_BACKUP}=true"
        deletion["finalBackup"] = fb
        events.append(("Warning", "FinalBackupSkipped", "purge allowed without a successful final backup: "
                                                        f"{ANNOTATION_SKIP_FINAL_BACKUP}=true"))
        return None
    due = fb.get("nextAttemptAt")
    if due and now < parse_time(due):
        return (parse_time(due) - now).total_seconds()
    attempts = int(fb.get("attempts") or 0) + 1
    result = _final_backup(state, t)
    if not result.get("error"):
        deletion["finalBackup"] = {**result, "attempts": attempts}
        if attempts > 1:
            events.append(("Normal", "FinalBackupSucceeded", f"final backup taken on attempt {attempts}"))
        return None
    delay = min(FINAL_BACKUP_RETRY_MAX, state.cfg.final_backup_retry_interval * 2 ** (attempts - 1))
    next_attempt = iso_time(now + timedelta(seconds=delay))
    deletion["finalBackup"] = {**result, "attempts": attempts, "nextAttemptAt": next_attempt}
    events.append(("Warning", "FinalBackupFailed", f"attempt {attempts}: {result['error']}; "
                                                   f"next try in {format_duration(int(delay))}"))
    return delay


def _final_backup(state, t: spec.Tenant) -> dict:
    """Every backend's part of the final backup (database dumps, archived
    buckets), merged; an error in any part fails the whole attempt."""
    at, objects, errors, skipped = status.now_iso(), [], [], []
    for backend in state.backends:
        try:
            part = backend.final_backup(t)
        except BackendUnavailable as exc:
            part = {"error": str(exc)}
        objects.extend(part.get("objects") or [])
        if part.get("error"):
            errors.append(part["error"])
        if part.get("skipped"):
            skipped.append(part["skipped"])
    out: dict = {"at": at, "objects": objects}
    if errors:
        out["error"] = "; ".join(errors)
    elif not objects:
        out["skipped"] = "; ".join(skipped) or "no data to back up"
    return out


def _run_step(state, t: spec.Tenant, step: str, live: dict) -> tuple[bool, str]:
    # Right before anything is removed: only while this replica holds the tenant's shard.
    state.kube.check_owner()
    if step == NAMESPACE_STEP:
        ns = state.kube.get("Namespace", t.namespace)
        if ns is None:
            return True, f"namespace {t.namespace} is gone"
        marker = (ns["metadata"].get("annotations") or {}).get(ANNOTATION_UID, "")
        if not t.uid or marker != t.uid:
            return True, f"namespace {t.namespace} is not this Tenant's (no marker for its UID); left in place"
        state.kube.delete("Namespace", t.namespace)
        return False, f"waiting for namespace {t.namespace} to finalize"
    if step == REVOKE_STEP:
        done = [backend.revoke(t) for backend in state.backends]
    else:
        done = [backend.purge(t) for backend in state.backends if backend.data_step == step]
    return True, "; ".join(d for d in done if d) or "nothing to do"
