"""Rotation by overlap: the pure parts (slot choice, due times, the status
record, the alternate names and their limits, the spec fields)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tenant_operator import config, naming, rotation, spec
from tenant_operator.backends.mysql.component import primary_user
from tenant_operator.errors import ConfigError, SpecError
from tenant_operator.lifecycle import iso_time

from .test_naming_collisions import _sample

CFG = config.from_dict({})
NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def tenant(rotate_token: str = "", **credentials) -> spec.Tenant:
    meta = {"name": "acme", "annotations": {naming.ANNOTATION_ROTATE: rotate_token} if rotate_token else {}}
    return spec.parse({"metadata": meta, "spec": {"credentials": credentials} if credentials else {}}, CFG)


def status(**backends) -> dict:
    return {"credentials": backends}


# --- spec and config ---------------------------------------------------------------------

def test_spec_fields_parse_and_default():
    t = tenant(rotateEvery="2160h", rotationOverlap="30m")
    assert (t.credentials.rotate_every, t.credentials.rotation_overlap) == (2160 * 3600, 1800)
    t = tenant()
    assert (t.credentials.rotate_every, t.credentials.rotation_overlap) == (0, 3600)


@pytest.mark.parametrize(("credentials", "field"), [
    ({"rotateEvery": "90 days"}, "spec.credentials.rotateEvery"),
    ({"rotationOverlap": 5}, "spec.credentials.rotationOverlap"),
    ({"rotateEvery": "3651d"}, "spec.credentials.rotateEvery"),
    ({"rotateEvery": "1h", "rotationOverlap": "1h"}, "spec.credentials.rotateEvery"),
])
def test_bad_spec_fields_name_the_field(credentials, field):
    with pytest.raises(SpecError) as exc:
        tenant(**credentials)
    assert str(exc.value).startswith(field), str(exc.value)


def test_operator_defaults_apply_and_are_checked():
    cfg = config.from_dict({"defaults": {"credentials": {"rotateEvery": "90d", "rotationOverlap": "2h"}}})
    t = spec.parse({"metadata": {"name": "acme"}, "spec": {}}, cfg)
    assert (t.credentials.rotate_every, t.credentials.rotation_overlap) == (90 * 86400, 7200)
    with pytest.raises(ConfigError, match="defaults.credentials.rotateEvery"):
        config.from_dict({"defaults": {"credentials": {"rotateEvery": "30m"}}})
    with pytest.raises(ConfigError, match="defaults.credentials.rotationOverlap"):
        config.from_dict({"defaults": {"credentials": {"rotationOverlap": "soon"}}})


# --- slots -------------------------------------------------------------------------------

def test_the_secret_names_the_active_account():
    assert rotation.pick("u", "u_b", "u") == ("u", "u_b")
    assert rotation.pick("u", "u_b", "u_b") == ("u_b", "u")
    # No Secret yet, or one from before the pairs: the first account.
    assert rotation.pick("u", "u_b", "") == ("u", "u_b")
    assert rotation.pick("u", "u_b", "someone") == ("u", "u_b")


def test_primary_user_prefers_derived_then_recorded_names():
    derived = naming.mysql_user("acme", "auth")
    assert primary_user("acme", "auth", []) == derived
    assert primary_user("acme", "auth", [derived, naming.mysql_user_alternate(derived)]) == derived
    # A name recorded under an older scheme stays the first of its pair.
    assert primary_user("acme", "auth", ["old_user", "old_user_b"]) == "old_user"
    assert primary_user("acme", "auth", ["old_user"]) == "old_user"


# --- when to rotate and revoke -------------------------------------------------------------

def test_annotation_requests_once_per_value_and_falls_back_to_the_tenant_wide_record():
    t = tenant("r2")
    assert rotation.due(t, {}, "mysql", None, NOW)
    # Older status: only the tenant-wide record; same token means done.
    assert not rotation.due(tenant("r1"), {"credentials": {"rotationToken": "r1"}}, "mysql", None, NOW)
    assert rotation.due(t, {"credentials": {"rotationToken": "r1"}}, "mysql", None, NOW)
    assert not rotation.due(t, status(mysql={"rotationToken": "r2"}), "mysql", None, NOW)
    assert rotation.due(t, status(mysql={"rotationToken": "r2"}), "rabbitmq", None, NOW)


def test_rotate_every_counts_from_the_last_rotation_else_the_secret():
    t = tenant(rotateEvery="10d", rotationOverlap="1h")
    created = (NOW - timedelta(days=11)).timestamp()
    assert rotation.due(t, {}, "mysql", created, NOW)
    assert not rotation.due(t, {}, "mysql", (NOW - timedelta(days=9)).timestamp(), NOW)
    assert not rotation.due(t, {}, "mysql", None, NOW), "no Secret yet: nothing to rotate"
    recent = status(mysql={"rotatedAt": iso_time(NOW - timedelta(days=2))})
    assert not rotation.due(t, recent, "mysql", created, NOW)
    assert rotation.next_due(t, recent["credentials"]["mysql"], created) == (NOW + timedelta(days=8)).timestamp()


def test_a_rotation_waits_for_the_overlap_of_the_one_before():
    t = tenant("r3")
    record = {"rotationToken": "r2", "previousRevokeAt": iso_time(NOW + timedelta(minutes=5))}
    assert not rotation.due(t, status(mysql=record), "mysql", None, NOW)
    assert rotation.next_due(t, record, None) == (NOW + timedelta(minutes=5)).timestamp()
    assert rotation.due(t, status(mysql=record), "mysql", None, NOW + timedelta(minutes=5))


def test_idle_accounts_are_kept_during_the_overlap_and_revoked_after():
    t = tenant(rotationOverlap="5s")
    record = {"previousRevokeAt": iso_time(NOW + timedelta(seconds=5))}
    assert rotation.previous_policy(t, record, True, NOW) == rotation.KEEP
    assert rotation.previous_policy(t, record, False, NOW) == rotation.KEEP
    assert rotation.previous_policy(t, record, False, NOW + timedelta(seconds=5)) == rotation.REVOKE
    assert rotation.revoke_due(record, NOW + timedelta(seconds=5)) and not rotation.revoke_due(record, NOW)
    # No record (never rotated, or revoked already): nothing may stay usable.
    assert rotation.previous_policy(t, {}, False, NOW) == rotation.REVOKE
    # No overlap asked for: a cut-over.
    assert rotation.previous_policy(tenant(rotationOverlap="0s"), {}, True, NOW) == rotation.REVOKE


def test_the_status_record_after_a_pass():
    t = tenant("r1", rotationOverlap="5s")
    done = rotation.after(t, {}, True, NOW)
    assert done == {"rotatedAt": iso_time(NOW), "rotationToken": "r1",
                    "previousRevokeAt": iso_time(NOW + timedelta(seconds=5))}
    assert rotation.after(t, done, False, NOW + timedelta(seconds=1)) == done, "overlap still running"
    revoked = rotation.after(t, done, False, NOW + timedelta(seconds=5))
    assert revoked == {"rotatedAt": iso_time(NOW), "rotationToken": "r1"}
    assert rotation.after(t, {}, False, NOW) == {}, "a tenant that never rotated records nothing"
    assert rotation.next_due(t, revoked, None) is None


# --- names -------------------------------------------------------------------------------

def test_alternate_names_respect_limits_and_never_meet_a_first_account():
    firsts, seconds = set(), set()
    for tenant_name, service in _sample():
        user = naming.mysql_user(tenant_name, service)
        alt = naming.mysql_user_alternate(user)
        assert len(alt) <= naming.MYSQL_USER_MAX and naming.SQL_IDENTIFIER.fullmatch(alt), alt
        assert alt.endswith("_b") and alt != user
        firsts.add(user)
        seconds.add(alt)
        for name in (naming.storage_user(tenant_name), naming.backup_user(tenant_name)):
            assert naming.storage_alternate(name) == name + "_b" and len(name + "_b") <= 64
        # Tenant names have no '_': the second user is never another tenant's first.
        assert naming.rabbitmq_user_alternate(tenant_name) == tenant_name + "_b"
    assert not firsts & seconds
    assert len(seconds) == len(firsts), "distinct first accounts have distinct second ones"


def test_merged_credentials_keeps_other_backends_and_the_tenant_wide_record_on_failure():
    from tenant_operator.reconciler import merged_credentials
    current = {"rotationToken": "r1", "rotatedAt": "2026-01-01T00:00:00Z", "rabbitmq": {"rotationToken": "r1"}}
    produced = {"mysql": {"rotationToken": "r2"}, "rotationToken": "r2", "rotatedAt": "2026-01-02T00:00:00Z"}
    assert merged_credentials(current, produced, failed=True) == {
        "rotationToken": "r1", "rotatedAt": "2026-01-01T00:00:00Z", "rabbitmq": {"rotationToken": "r1"},
        "mysql": {"rotationToken": "r2"}}
    assert merged_credentials(current, produced, failed=False)["rotationToken"] == "r2"
