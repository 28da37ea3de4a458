"""PURE status computation, following the Kubernetes API conventions:
conditions with type/status/reason/message/lastTransitionTime/observedGeneration,
a summary `Ready`, `observedGeneration`, and a `phase` for the printer column.

`lastTransitionTime` only moves when a condition's status flips, and the
operator writes status only when `status_patch` returns something, so a
reconcile that changes nothing writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# The order conditions appear in, and the components the summary waits on.
COMPONENT_CONDITIONS = (
    "NamespaceReady", "NetworkReady", "QuotaReady", "IngressReady",
    "DatabasesReady", "ObjectStorageReady", "MessagingReady", "BackupsReady",
)
# Reported with the others, after them, but not part of Ready: what they say
# (the recovery drills' verdict on the backups) does not make the tenant unusable.
INFORMATIONAL_CONDITIONS = ("BackupsVerified",)
PHASES = ("Provisioning", "Ready", "Degraded", "Suspended", "Terminating", "Invalid")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None          # None -> "Unknown"
    reason: str
    message: str = ""

    @property
    def status_str(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def merge_conditions(current: list[dict], new: list[Condition], generation: int, now: str) -> list[dict]:
    """Render `new` as API conditions, keeping lastTransitionTime from `current`
    for every condition whose status did not change. Conditions not in `new`
    are dropped (a component the tenant no longer has)."""
    by_type = {c.get("type"): c for c in current or []}
    out = []
    for cond in new:
        old = by_type.get(cond.type)
        ltt = old.get("lastTransitionTime") if old and old.get("status") == cond.status_str else now
        out.append({
            "type": cond.type,
            "status": cond.status_str,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": ltt or now,
            "observedGeneration": generation,
        })
    order = {t: i for i, t in enumerate(("Ready", *COMPONENT_CONDITIONS, *INFORMATIONAL_CONDITIONS))}
    return sorted(out, key=lambda c: order.get(c["type"], len(order)))


def summary(components: list[Condition], suspended: bool) -> Condition:
    failing = [c for c in components if c.status is not True]
    if not failing:
        if suspended:
            return Condition("Ready", True, "Suspended", "tenant is suspended: ingress removed, credentials locked")
        return Condition("Ready", True, "Provisioned", "all components are ready")
    first = failing[0]
    names = ", ".join(c.type for c in failing)
    return Condition("Ready", False, first.reason, f"not ready: {names}. {first.type}: {first.message}".strip())


def phase(ready: Condition, suspended: bool, previous_phase: str | None, invalid: bool = False,
          terminating: bool = False) -> str:
    if terminating:
        return "Terminating"
    if invalid:
        return "Invalid"
    if ready.status is True:
        return "Suspended" if suspended else "Ready"
    # Once a tenant has been Ready, losing a component is a degradation, not provisioning.
    if previous_phase in ("Ready", "Degraded", "Suspended"):
        return "Degraded"
    return "Provisioning"


def desired_status(current: dict, *, generation: int, namespace: str, conditions: list[Condition],
                   suspended: bool, extra: dict | None = None, invalid: bool = False,
                   deletion: dict | None = None, now: str | None = None) -> dict:
    """The full status the tenant should have (operator-owned fields only)."""
    now = now or now_iso()
    ready = summary([c for c in conditions if c.type not in INFORMATIONAL_CONDITIONS], suspended)
    if deletion is not None:
        waiting = f" Waiting: {deletion['waitingOn']}." if deletion.get("waitingOn") else ""
        ready = Condition("Ready", False, "Terminating",
                          f"deleted at {deletion['requestedAt']}; data is purged after {deletion['purgeAfter']} "
                          f"(policy {deletion.get('policy', 'Delete')}).{waiting}")
    status = {
        "observedGeneration": generation,
        "phase": phase(ready, suspended, current.get("phase"), invalid, terminating=deletion is not None),
        "namespace": namespace,
        "conditions": merge_conditions(current.get("conditions") or [], [ready, *conditions], generation, now),
    }
    status.update(extra or {})
    return status


def status_patch(current: dict, desired: dict) -> dict:
    """The merge patch that turns `current` into `desired` ({} when equal).
    Only operator-owned top-level keys are compared; others are left alone.
    Below them everything is the operator's: a key gone from a nested object
    is removed with null, or a merge patch would keep it forever."""
    return {k: _merge_patch(current.get(k), v) for k, v in desired.items() if current.get(k) != v}


def _merge_patch(current, desired):
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    out = {k: _merge_patch(current.get(k), v) for k, v in desired.items() if current.get(k) != v}
    out.update({k: None for k in current if k not in desired})
    return out
