"""The Argo CD health check for Tenants (examples/argocd/tenant-health.lua),
run in Lua 5.1 (the dialect of Argo CD's gopher-lua) through lupa, against
hand-written objects and against statuses computed by the operator's own
status module."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenant_operator import status as status_mod
from tenant_operator.status import Condition

try:
    from lupa import lua51 as lupa_rt
except ImportError:  # pragma: no cover - a lupa build without 5.1
    import lupa as lupa_rt

LUA = (Path(__file__).resolve().parents[2] / "examples" / "argocd" / "tenant-health.lua").read_text()


def health(obj: dict) -> tuple[str, str]:
    """Run the check the way Argo CD does: the resource as the global `obj`."""
    lua = lupa_rt.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(LUA)
    return hs["status"], hs["message"]


def tenant(generation: int = 1, status: dict | None = None, **meta) -> dict:
    obj = {"apiVersion": "tenancy.dev/v1alpha1", "kind": "Tenant",
           "metadata": {"name": "acme", "generation": generation, **meta},
           "spec": {"tier": "premium"}}
    if status is not None:
        obj["status"] = status
    return obj


def ready(state: str, reason: str, message: str, generation: int = 1) -> dict:
    return {"type": "Ready", "status": state, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}


def st(phase: str, cond: dict | None, observed: int | None = 1, extra: list | None = None) -> dict:
    out: dict = {"phase": phase, "namespace": "tenant-acme", "conditions": ([cond] if cond else []) + (extra or [])}
    if observed is not None:
        out["observedGeneration"] = observed
    return out


DB_PENDING = "not ready: DatabasesReady. DatabasesReady: waiting for MySQL server main"
CASES = {
    "no status yet": (
        tenant(), ("Progressing", "Waiting for the operator to process the Tenant")),
    "empty status": (
        tenant(status={}), ("Progressing", "Waiting for the operator to process the Tenant")),
    "provisioning": (
        tenant(status=st("Provisioning", ready("False", "Pending", DB_PENDING))),
        ("Progressing", DB_PENDING)),
    "ready": (
        tenant(generation=3, status=st("Ready", ready("True", "Provisioned", "all components are ready", 3), 3,
                                       extra=[{"type": "NamespaceReady", "status": "True", "reason": "Applied"}])),
        ("Healthy", "all components are ready")),
    "ready but spec changed since": (
        tenant(generation=4, status=st("Ready", ready("True", "Provisioned", "all components are ready", 3), 3)),
        ("Progressing", "Waiting for the operator to observe generation 4")),
    "ready without observedGeneration": (
        tenant(generation=2, status=st("Ready", ready("True", "Provisioned", "all components are ready"), None)),
        ("Progressing", "Waiting for the operator to observe generation 2")),
    "ready phase without Ready condition": (
        tenant(status=st("Ready", None)), ("Progressing", "Tenant is Ready")),
    "suspended": (
        tenant(status=st("Suspended", ready("True", "Suspended", "tenant is suspended: ingress removed"))),
        ("Suspended", "tenant is suspended: ingress removed")),
    "degraded": (
        tenant(status=st("Degraded", ready("False", "ConnectionRefused", "not ready: MessagingReady."))),
        ("Degraded", "not ready: MessagingReady.")),
    "invalid": (
        tenant(status=st("Invalid", ready("False", "InvalidSpec", "spec.databases[0]: 'A' is not valid"))),
        ("Degraded", "spec.databases[0]: 'A' is not valid")),
    "InvalidSpec in another phase": (
        tenant(status=st("Provisioning", ready("False", "InvalidSpec", "spec.tier: must be one of ..."))),
        ("Degraded", "spec.tier: must be one of ...")),
    "degraded without message": (
        tenant(status=st("Degraded", ready("False", "Unknown", ""))), ("Degraded", "Tenant is Degraded")),
    "terminating": (
        tenant(status=st("Terminating", ready("False", "Terminating", "deleted at X; data is purged after Y")),
               deletionTimestamp="2026-01-01T00:00:00Z"),
        ("Progressing", "deleted at X; data is purged after Y")),
    "deleted, not yet seen by the operator": (
        tenant(status=st("Ready", ready("True", "Provisioned", "all components are ready")),
               deletionTimestamp="2026-01-01T00:00:00Z"),
        ("Progressing", "Tenant is being deleted")),
}


@pytest.mark.parametrize("obj,expected", list(CASES.values()), ids=list(CASES))
def test_health(obj: dict, expected: tuple[str, str]):
    assert health(obj) == expected


# --- against the statuses the operator writes ----------------------------------------------

OK = [Condition("NamespaceReady", True, "Applied", "namespace tenant-acme"),
      Condition("DatabasesReady", True, "Provisioned", "3 databases")]
FAILING = [Condition("NamespaceReady", True, "Applied", "namespace tenant-acme"),
           Condition("DatabasesReady", False, "ServerUnavailable", "MySQL server main is unreachable")]


def operator_status(conditions, generation=2, current=None, **kwargs) -> dict:
    return status_mod.desired_status(current or {}, generation=generation, namespace="tenant-acme",
                                     conditions=conditions, now="2026-01-01T00:00:00Z", **kwargs)


def test_operator_status_ready_is_healthy():
    s = operator_status(OK, suspended=False)
    assert health(tenant(generation=2, status=s)) == ("Healthy", "all components are ready")


def test_operator_status_first_provisioning_is_progressing():
    s = operator_status(FAILING, suspended=False)
    state, message = health(tenant(generation=2, status=s))
    assert state == "Progressing" and "DatabasesReady" in message


def test_operator_status_lost_component_is_degraded():
    s = operator_status(FAILING, suspended=False, current={"phase": "Ready"})
    state, message = health(tenant(generation=2, status=s))
    assert state == "Degraded" and "MySQL server main is unreachable" in message


def test_operator_status_suspended():
    s = operator_status(OK, suspended=True)
    assert health(tenant(generation=2, status=s))[0] == "Suspended"


def test_operator_status_invalid_spec_is_degraded():
    s = operator_status([Condition("SpecValid", False, "InvalidSpec", "spec.tier: must be one of ...")],
                        suspended=False, invalid=True)
    assert health(tenant(generation=2, status=s)) == ("Degraded", s["conditions"][0]["message"])


def test_operator_status_terminating_is_progressing():
    deletion = {"requestedAt": "2026-01-01T00:00:00Z", "purgeAfter": "2026-01-31T00:00:00Z", "policy": "Delete"}
    s = operator_status(OK, suspended=True, deletion=deletion)
    state, message = health(tenant(generation=2, status=s, deletionTimestamp="2026-01-01T00:00:00Z"))
    assert state == "Progressing" and "2026-01-31T00:00:00Z" in message


def test_operator_status_of_an_older_generation_is_progressing():
    s = operator_status(OK, suspended=False, generation=2)
    assert health(tenant(generation=3, status=s)) == (
        "Progressing", "Waiting for the operator to observe generation 3")
