"""PURE: what a Job's status says, and the status of a TenantBackup or
TenantRestore built from it.

A request's status: `phase` (Pending, Running, Complete, Failed), `tenant`,
`startedAt`, `completedAt`, what it did (the backup keys written, or the key
restored with its verified checksum) and conditions: `Accepted` (the
request was checked against the Tenant and its bucket; False names the field
at fault) and, once it ended, `Complete` or `Failed`."""

from __future__ import annotations

import re

from tenant_operator import naming
from tenant_operator.status import Condition, merge_conditions

RUNNING, COMPLETE, FAILED = "Running", "Complete", "Failed"

# Exit codes of `tenant-operator backup|restore|drill` (backup/cli.py) that fail a Job at once.
_EXIT_REASONS = {"2": "InvalidSettings", "3": "IntegrityCheckFailed", "4": "NoBackup"}


def job_view(obj: dict) -> dict:
    """What the watch cache keeps of a Job: who it runs for and how it ended."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    st = obj.get("status") or {}
    state, reason, message, ended = RUNNING, "", "", ""
    for cond in st.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == COMPLETE:
            state, reason, message = COMPLETE, "Completed", cond.get("message") or ""
            ended = st.get("completionTime") or cond.get("lastTransitionTime") or ""
        elif cond.get("type") == FAILED:
            state, reason, message = FAILED, failure_reason(cond), cond.get("message") or ""
            ended = cond.get("lastTransitionTime") or ""
    return {"name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""), "created": meta.get("creationTimestamp") or "",
            "operation": labels.get(naming.LABEL_OPERATION, ""), "request": labels.get(naming.LABEL_REQUEST, ""),
            "service": labels.get(naming.LABEL_SERVICE, ""), "tenant": labels.get(naming.LABEL_TENANT, ""),
            "startTime": st.get("startTime") or "", "completionTime": st.get("completionTime") or "",
            "state": state, "reason": reason, "message": message[:300], "ended": ended}


def failure_reason(cond: dict) -> str:
    """A Failed Job condition as a reason: the CLI's exit code when the pod
    failure policy ended it, else the Job controller's reason."""
    if cond.get("reason") == "PodFailurePolicy":
        m = re.search(r"exit code (\d+)", cond.get("message") or "")
        if m and m.group(1) in _EXIT_REASONS:
            return _EXIT_REASONS[m.group(1)]
    return {"DeadlineExceeded": "DeadlineExceeded", "BackoffLimitExceeded": "JobFailed"}.get(
        cond.get("reason") or "", cond.get("reason") or "JobFailed")


def overall(jobs: list[dict]) -> tuple[str, str, str]:
    """(state, reason, message) of a request from its Jobs' views: Failed as
    soon as one failed, Complete when all completed, else Running."""
    failed = [j for j in jobs if j["state"] == FAILED]
    if failed:
        return FAILED, failed[0]["reason"], "; ".join(
            f"Job {j['name']} ({j['service']}) failed: {j['reason']}" + (f": {j['message']}" if j["message"] else "")
            for j in failed)
    if jobs and all(j["state"] == COMPLETE for j in jobs):
        return COMPLETE, "Completed", f"{len(jobs)} Job(s) completed"
    return RUNNING, "JobsRunning", f"{sum(j['state'] == COMPLETE for j in jobs)}/{len(jobs)} Job(s) completed"


def latest_completion(jobs: list[dict]) -> str:
    return max((j["ended"] for j in jobs if j["ended"]), default="")


def conditions(current: dict, conds: list[Condition], generation: int, now: str) -> list[dict]:
    return merge_conditions(current.get("conditions") or [], conds, generation, now)


def refused_status(current: dict, exc, tenant: str, generation: int, now: str) -> dict:
    """Failed before anything ran: the field at fault is in the message."""
    return {"phase": FAILED, "tenant": tenant or None, "completedAt": now, "observedGeneration": generation,
            "conditions": conditions(current, [Condition("Accepted", False, exc.reason, str(exc)),
                                               Condition(FAILED, True, exc.reason, str(exc))], generation, now)}


def accepted_status(current: dict, tenant: str, generation: int, now: str, message: str, **fields) -> dict:
    return {"phase": RUNNING, "tenant": tenant, "startedAt": now, "observedGeneration": generation, **fields,
            "conditions": conditions(current, [Condition("Accepted", True, "Accepted", message)], generation, now)}


def ended_status(current: dict, state: str, reason: str, message: str, completed_at: str, generation: int,
                 now: str, **fields) -> dict:
    accepted = next((c for c in current.get("conditions") or [] if c.get("type") == "Accepted"), None)
    kept = [Condition("Accepted", True, accepted.get("reason") or "Accepted", accepted.get("message") or "")] \
        if accepted else []
    return {"phase": state, "completedAt": completed_at or now, **fields,
            "conditions": conditions(current, [*kept, Condition(state, True, reason, message)], generation, now)}
