"""status: conditions, the Ready summary, phases and the minimal status patch."""

from __future__ import annotations

import re

import pytest
from tenant_operator.status import (
    COMPONENT_CONDITIONS,
    Condition,
    desired_status,
    merge_conditions,
    now_iso,
    phase,
    status_patch,
    summary,
)

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T11:00:00Z"
T2 = "2024-05-01T12:00:00Z"


def ok(kind: str) -> Condition:
    return Condition(kind, True, "Ready", f"{kind} is ready")


def all_ok() -> list[Condition]:
    return [ok(k) for k in COMPONENT_CONDITIONS]


def by_type(conditions: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conditions}


# --- conditions -----------------------------------------------------------------------------------

def test_condition_status_strings():
    assert Condition("A", True, "r").status_str == "True"
    assert Condition("A", False, "r").status_str == "False"
    assert Condition("A", None, "r").status_str == "Unknown"


def test_new_conditions_get_now_and_generation():
    out = merge_conditions([], [ok("NamespaceReady")], generation=4, now=T0)
    assert out == [{"type": "NamespaceReady", "status": "True", "reason": "Ready",
                    "message": "NamespaceReady is ready", "lastTransitionTime": T0, "observedGeneration": 4}]


def test_last_transition_time_kept_when_status_unchanged():
    first = merge_conditions([], [ok("NamespaceReady")], 1, T0)
    # Reason, message and generation may change; the status did not.
    again = merge_conditions(first, [Condition("NamespaceReady", True, "Other", "new msg")], 2, T1)
    assert again[0]["lastTransitionTime"] == T0
    assert again[0]["reason"] == "Other" and again[0]["message"] == "new msg"
    assert again[0]["observedGeneration"] == 2


def test_last_transition_time_moves_when_status_flips():
    first = merge_conditions([], [ok("DatabasesReady")], 1, T0)
    flipped = merge_conditions(first, [Condition("DatabasesReady", False, "MySQLDown", "x")], 1, T1)
    assert flipped[0]["lastTransitionTime"] == T1
    assert flipped[0]["status"] == "False"
    unknown = merge_conditions(flipped, [Condition("DatabasesReady", None, "Checking")], 1, T2)
    assert unknown[0]["lastTransitionTime"] == T2
    assert unknown[0]["status"] == "Unknown"
    back = merge_conditions(unknown, [ok("DatabasesReady")], 1, "2024-05-01T13:00:00Z")
    assert back[0]["lastTransitionTime"] == "2024-05-01T13:00:00Z"


def test_conditions_are_ordered_and_stale_ones_dropped():
    current = merge_conditions([], [ok("MessagingReady"), ok("NamespaceReady")], 1, T0)
    new = [ok("BackupsReady"), Condition("Ready", True, "Provisioned"), ok("NamespaceReady"),
           Condition("Custom", True, "x")]
    out = merge_conditions(current, new, 1, T1)
    assert [c["type"] for c in out] == ["Ready", "NamespaceReady", "BackupsReady", "Custom"]
    assert "MessagingReady" not in by_type(out)
    assert by_type(out)["NamespaceReady"]["lastTransitionTime"] == T0
    assert by_type(out)["BackupsReady"]["lastTransitionTime"] == T1


def test_now_iso_is_utc_seconds():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now_iso())


# --- summary --------------------------------------------------------------------------------------

def test_summary_ready_only_when_all_true():
    ready = summary(all_ok(), suspended=False)
    assert ready.type == "Ready" and ready.status is True and ready.reason == "Provisioned"

    for i, kind in enumerate(COMPONENT_CONDITIONS):
        for bad in (False, None):
            comps = all_ok()
            comps[i] = Condition(kind, bad, "Broken", "it broke")
            s = summary(comps, suspended=False)
            assert s.status is False, (kind, bad)
            assert s.reason == "Broken"
            assert kind in s.message and "it broke" in s.message


def test_summary_names_every_failing_component_and_uses_the_first_reason():
    comps = all_ok()
    comps[1] = Condition("NetworkReady", False, "PolicyRejected", "webhook said no")
    comps[4] = Condition("DatabasesReady", None, "MySQLUnavailable", "connection refused")
    s = summary(comps, suspended=False)
    assert s.status is False
    assert s.reason == "PolicyRejected"
    assert "NetworkReady, DatabasesReady" in s.message
    assert "webhook said no" in s.message


def test_summary_when_suspended():
    s = summary(all_ok(), suspended=True)
    assert s.status is True and s.reason == "Suspended"


# --- phase -----------------------------------------------------------------------------------------

READY = Condition("Ready", True, "Provisioned")
NOT_READY = Condition("Ready", False, "X")


@pytest.mark.parametrize(("ready", "suspended", "previous", "invalid", "terminating", "expected"), [
    (NOT_READY, False, None, False, False, "Provisioning"),
    (NOT_READY, False, "Provisioning", False, False, "Provisioning"),
    (READY, False, "Provisioning", False, False, "Ready"),
    (NOT_READY, False, "Ready", False, False, "Degraded"),
    (NOT_READY, False, "Degraded", False, False, "Degraded"),
    (NOT_READY, True, "Suspended", False, False, "Degraded"),
    (READY, False, "Degraded", False, False, "Ready"),
    (READY, True, "Ready", False, False, "Suspended"),
    (READY, False, "Ready", True, False, "Invalid"),
    (READY, False, "Ready", True, True, "Terminating"),
    (NOT_READY, False, None, False, True, "Terminating"),
])
def test_phase(ready, suspended, previous, invalid, terminating, expected):
    assert phase(ready, suspended, previous, invalid, terminating=terminating) == expected


def test_phase_transitions_provisioning_ready_degraded():
    pending = [*all_ok()[:-1], Condition("BackupsReady", False, "Pending", "first backup not run")]
    s1 = desired_status({}, generation=1, namespace="tenant-acme", conditions=pending, suspended=False,
                        now=T0)
    assert s1["phase"] == "Provisioning"
    assert by_type(s1["conditions"])["Ready"]["status"] == "False"

    s2 = desired_status(s1, generation=1, namespace="tenant-acme", conditions=all_ok(), suspended=False,
                        now=T1)
    assert s2["phase"] == "Ready"
    assert by_type(s2["conditions"])["Ready"]["status"] == "True"
    assert by_type(s2["conditions"])["Ready"]["lastTransitionTime"] == T1
    assert by_type(s2["conditions"])["NamespaceReady"]["lastTransitionTime"] == T0

    broken = [Condition("NamespaceReady", True, "Ready"), Condition("DatabasesReady", False, "Down", "boom")]
    s3 = desired_status(s2, generation=2, namespace="tenant-acme", conditions=broken, suspended=False, now=T2)
    assert s3["phase"] == "Degraded"
    assert s3["observedGeneration"] == 2
    assert by_type(s3["conditions"])["Ready"]["lastTransitionTime"] == T2
    assert by_type(s3["conditions"])["DatabasesReady"]["lastTransitionTime"] == T2
    assert by_type(s3["conditions"])["NamespaceReady"]["lastTransitionTime"] == T0
    assert [c["type"] for c in s3["conditions"]] == ["Ready", "NamespaceReady", "DatabasesReady"]


def test_desired_status_terminating_when_deletion_given():
    current = desired_status({}, generation=1, namespace="tenant-acme", conditions=all_ok(),
                             suspended=False, now=T0)
    deletion = {"requestedAt": T0, "purgeAfter": "2024-05-31T10:00:00Z", "policy": "Retain",
                "waitingOn": "drop-databases: MySQL unavailable"}
    s = desired_status(current, generation=1, namespace="tenant-acme", conditions=all_ok(), suspended=True,
                       deletion=deletion, extra={"deletion": deletion}, now=T1)
    assert s["phase"] == "Terminating"
    ready = by_type(s["conditions"])["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "Terminating"
    assert "2024-05-31T10:00:00Z" in ready["message"] and "Retain" in ready["message"]
    assert "drop-databases" in ready["message"]
    assert s["deletion"] == deletion


def test_desired_status_fields_and_extra():
    s = desired_status({}, generation=7, namespace="tenant-acme", conditions=all_ok(), suspended=False,
                       extra={"databases": ["auth"]}, now=T0)
    assert s["observedGeneration"] == 7
    assert s["namespace"] == "tenant-acme"
    assert s["databases"] == ["auth"]
    assert all(c["observedGeneration"] == 7 for c in s["conditions"])


def test_invalid_status_phase():
    s = desired_status({"phase": "Ready"}, generation=2, namespace="tenant-acme",
                       conditions=[Condition("SpecValid", False, "InvalidSpec", "spec.tier: bad")],
                       suspended=False, invalid=True, now=T0)
    assert s["phase"] == "Invalid"


# --- patch -------------------------------------------------------------------------------------------

def test_status_patch_empty_when_equal():
    s = desired_status({}, generation=1, namespace="tenant-acme", conditions=all_ok(), suspended=False,
                       now=T0)
    again = desired_status(s, generation=1, namespace="tenant-acme", conditions=all_ok(), suspended=False,
                           now=T2)
    assert again == s                  # a later reconcile with nothing new changes nothing
    assert status_patch(s, again) == {}


def test_status_patch_contains_only_changed_keys():
    current = {"phase": "Ready", "observedGeneration": 1, "namespace": "tenant-acme", "foreign": "kept"}
    desired = {"phase": "Degraded", "observedGeneration": 1, "namespace": "tenant-acme"}
    assert status_patch(current, desired) == {"phase": "Degraded"}
    assert status_patch({}, desired) == desired


def test_status_patch_removes_nested_keys_that_are_gone():
    current = {"pendingRemovals": {"databases": [{"service": "billing"}], "buckets": [{"bucket": "acme-old"}]},
               "deletion": {"requestedAt": "t", "waitingOn": "mysql down"}}
    desired = {"pendingRemovals": {"databases": [{"service": "billing"}]}, "deletion": {"requestedAt": "t"}}
    assert status_patch(current, desired) == {"pendingRemovals": {"buckets": None},
                                              "deletion": {"waitingOn": None}}
    assert status_patch(current, {"pendingRemovals": None}) == {"pendingRemovals": None}
