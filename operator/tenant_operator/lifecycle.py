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

from tenant_operator import naming, spec, status
from tenant_operator.durations import format_duration, parse_duration
from tenant_operator.errors import BackendUnavailable, SpecError

log = logging.getLogger(__name__)

# Purge order; each step is idempotent and recorded once done.
PURGE_STEPS = ("revoke-credentials", "drop-databases", "delete-buckets", "delete-vhost", "delete-namespace")
DATA_STEPS = {"drop-databases", "delete-buckets", "delete-vhost"}


@dataclass
class Step:
    done: bool
    message: str = ""
    retry_after: float = 60.0
    events: list[tuple[str, str, str]] = field(default_factory=list)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def tenant_for_deletion(body: dict, cfg) -> spec.Tenant:
    """The model of a Tenant being deleted. An invalid spec must not block
    deletion: fall back to the name and the config's defaults."""
    try:
        return spec.parse(body, cfg)
    except SpecError:
        name = body["metadata"]["name"]
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
        return spec.Tenant(name=name, namespace=naming.namespace(name, cfg.namespace_prefix), tier="standard",
                           deletion=spec.Deletion(grace_period=grace, policy=policy))


def plan(t: spec.Tenant) -> tuple[str, ...]:
    if t.deletion.policy == "Retain":
        return tuple(s for s in PURGE_STEPS if s not in DATA_STEPS)
    return PURGE_STEPS


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
    t = tenant_for_deletion(body, cfg)
    current = body.get("status") or {}
    deletion = dict(current.get("deletion") or {})
    events: list[tuple[str, str, str]] = []

    if not deletion.get("requestedAt"):
        # deletionTimestamp is fixed by the API server: the grace period does not
        # restart if the operator restarts before recording it.
        requested = _parse_time(body["metadata"].get("deletionTimestamp") or _iso(now))
        deletion = {
            "requestedAt": _iso(requested),
            "purgeAfter": _iso(requested + timedelta(seconds=t.deletion.grace_period)),
            "policy": t.deletion.policy,
            "completedSteps": [],
        }
        events.append(("Normal", "DeletionRequested",
                       f"tenant suspended; data is kept until {deletion['purgeAfter']} "
                       f"(grace {format_duration(t.deletion.grace_period)}, policy {t.deletion.policy}); "
                       f"annotate {naming.ANNOTATION_PURGE_NOW}=true to purge earlier"))

    # Keep the tenant suspended (credentials locked, ingress gone) throughout.
    suspended = dataclasses.replace(t, suspended=True)
    if not deletion.get("finalBackup"):
        deletion["finalBackup"] = _final_backup(state, suspended)
        if deletion["finalBackup"].get("error"):
            events.append(("Warning", "FinalBackupFailed", deletion["finalBackup"]["error"]))
    purge_after = _parse_time(deletion["purgeAfter"])
    purging = now >= purge_after or t.purge_now
    if purging:
        deletion.setdefault("purgeStartedAt", _iso(now))
        state.reconciler.report_terminating(body, deletion)
    else:
        state.reconciler.reconcile_terminating(body, live, suspended, deletion)
    if not purging:
        remaining = (purge_after - now).total_seconds()
        return Step(False, f"grace period: purge after {deletion['purgeAfter']}",
                    retry_after=max(1.0, min(remaining, cfg.deletion_poll_interval)), events=events)

    completed = list(deletion.get("completedSteps") or [])
    for step in plan(t):
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
        events.append(("Normal", "DataRetained", "retained: " + ", ".join(_retained(state, t)) +
                       "; a new Tenant with the same name adopts them"))
    events.append(("Normal", "Purged", "all tenant resources removed; releasing the Tenant"))
    return Step(True, "purged", events=events)


def _final_backup(state, t: spec.Tenant) -> dict:
    for backend in state.backends:
        hook = getattr(backend, "final_backup", None)
        if hook:
            try:
                return hook(t)
            except BackendUnavailable as exc:
                return {"error": str(exc), "at": status.now_iso()}
    return {"skipped": "no databases to back up", "at": status.now_iso()}


def _run_step(state, t: spec.Tenant, step: str, live: dict) -> tuple[bool, str]:
    if step == "delete-namespace":
        if state.kube.get("Namespace", t.namespace) is None:
            return True, f"namespace {t.namespace} is gone"
        state.kube.delete("Namespace", t.namespace)
        return False, f"waiting for namespace {t.namespace} to finalize"
    done = []
    for backend in state.backends:
        hook = getattr(backend, "purge_step", None)
        if hook:
            detail = hook(t, step)
            if detail:
                done.append(detail)
    return True, "; ".join(done) or "nothing to do"


def _retained(state, t: spec.Tenant) -> list[str]:
    out = []
    for backend in state.backends:
        hook = getattr(backend, "retained", None)
        if hook:
            out.extend(hook(t))
    return out or ["no external data"]
