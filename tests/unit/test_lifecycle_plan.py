"""lifecycle's pure helpers: the purge plan, the deletion model fallback, time parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tenant_operator import config, lifecycle, spec
from tenant_operator.backends import build_backends

CFG = config.from_dict({"defaultGracePeriod": "48h", "namespacePrefix": "saas-"})


def tenant(policy: str) -> spec.Tenant:
    return spec.parse({"metadata": {"name": "acme"},
                       "spec": {"databases": ["auth"], "deletion": {"policy": policy}}}, CFG)


BACKENDS = build_backends(CFG, None)
DATA_STEPS = {b.data_step for b in BACKENDS if b.data_step}


def test_delete_plan_has_five_steps_in_order():
    assert lifecycle.plan(tenant("Delete"), BACKENDS) == (
        "revoke-credentials", "drop-databases", "delete-buckets", "delete-vhost", "delete-namespace")


def test_the_plan_is_built_from_the_backends():
    class Queue:
        data_step = "delete-queues"

    class NoData:
        data_step = ""
    assert lifecycle.plan(tenant("Delete"), [Queue(), NoData()]) == (
        "revoke-credentials", "delete-queues", "delete-namespace")


def test_retain_plan_keeps_all_data():
    steps = lifecycle.plan(tenant("Retain"), BACKENDS)
    assert steps == ("revoke-credentials", "delete-namespace")
    assert DATA_STEPS == {"drop-databases", "delete-buckets", "delete-vhost"}
    assert not set(steps) & DATA_STEPS


def test_every_plan_revokes_first_and_deletes_the_namespace_last():
    for policy in ("Delete", "Retain"):
        steps = lifecycle.plan(tenant(policy), BACKENDS)
        assert steps[0] == "revoke-credentials"
        assert steps[-1] == "delete-namespace"
        assert len(steps) == len(set(steps))


def test_tenant_for_deletion_parses_a_valid_spec():
    body = {"metadata": {"name": "acme"},
            "spec": {"tier": "premium", "databases": ["auth"], "deletion": {"gracePeriod": "2h",
                                                                           "policy": "Retain"}}}
    t, valid = lifecycle.tenant_for_deletion(body, CFG)
    assert valid
    assert t.tier == "premium"
    assert t.databases == ("auth",)
    assert t.deletion == spec.Deletion(grace_period=7200, policy="Retain")
    assert t.namespace == "saas-acme"


DEFAULT_GRACE = 48 * 3600


@pytest.mark.parametrize(("spec_body", "policy", "grace"), [
    # A valid gracePeriod is kept even when another field is invalid.
    ({"tier": "gold", "deletion": {"policy": "Retain", "gracePeriod": "1h"}}, "Retain", 3600),
    ({"databases": ["Bad_Name"], "deletion": {"policy": "Delete"}}, "Delete", DEFAULT_GRACE),
    ({"deletion": {"policy": "Orphan"}}, "Delete", DEFAULT_GRACE),
    ({"deletion": {"gracePeriod": "forever"}}, "Delete", DEFAULT_GRACE),
    ({"deletion": "Retain"}, "Delete", DEFAULT_GRACE),
    ({"deletion": {"policy": ["Retain"]}}, "Delete", DEFAULT_GRACE),
    (None, "Delete", DEFAULT_GRACE),
    (["not", "an", "object"], "Delete", DEFAULT_GRACE),
], ids=["bad-tier-retain", "bad-db", "bad-policy", "bad-grace", "deletion-not-an-object",
        "policy-not-a-string", "no-spec", "spec-not-an-object"])
def test_tenant_for_deletion_falls_back_when_the_spec_is_invalid(spec_body, policy, grace):
    body = {"metadata": {"name": "acme", "uid": "uid-1",
                         "annotations": {"tenancy.dev/purge-now": "true", "tenancy.dev/skip-final-backup": "TRUE"}}}
    if spec_body is not None:
        body["spec"] = spec_body
    with pytest.raises(ValueError):
        spec.parse(body, CFG)                         # the spec really is invalid
    t, valid = lifecycle.tenant_for_deletion(body, CFG)
    assert not valid
    assert t.name == "acme"
    # What the purge needs never depends on the spec: the UID and the annotations.
    assert t.uid == "uid-1" and t.purge_now and t.skip_final_backup
    assert t.databases == () and t.object_storage is None
    assert t.namespace == "saas-acme"
    assert t.tier == "standard"
    assert t.deletion.policy == policy
    assert CFG.default_grace_period == DEFAULT_GRACE
    assert t.deletion.grace_period == grace
    assert lifecycle.plan(t, BACKENDS)[-1] == "delete-namespace"


def test_fallback_never_shortens_a_valid_grace_period():
    body = {"metadata": {"name": "acme"},
            "spec": {"databases": ["auth"], "placement": {"mysql": "decommissioned"},
                     "deletion": {"gracePeriod": "8760h"}}}
    cfg = config.from_dict({"mysql": {"servers": {"main": {"host": "db"}}}})
    with pytest.raises(ValueError, match=r"^spec\.placement\.mysql"):
        spec.parse(body, cfg)
    assert lifecycle.tenant_for_deletion(body, cfg)[0].deletion.grace_period >= 8760 * 3600


def test_fallback_for_retain_still_retains_data():
    body = {"metadata": {"name": "acme"}, "spec": {"tier": "gold", "deletion": {"policy": "Retain"}}}
    t, _valid = lifecycle.tenant_for_deletion(body, CFG)
    assert lifecycle.plan(t, BACKENDS) == ("revoke-credentials", "delete-namespace")


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)),
    ("2024-05-01T10:00:00+00:00", datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)),
    ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)),
])
def test_parse_time(text, expected):
    parsed = lifecycle.parse_time(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None
    assert parsed + timedelta(seconds=3600) > expected


def test_iso_round_trips_with_parse_time():
    when = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    text = lifecycle.iso_time(when)
    assert text == "2024-05-01T10:00:00Z"
    assert lifecycle.parse_time(text) == when.replace(microsecond=0)
