"""spec.parse: tier defaults, per-tenant overrides, defaults, and the field path
that starts every SpecError."""

from __future__ import annotations

import copy

import pytest
from tenant_operator import config, naming, spec
from tenant_operator.errors import SpecError
from tenant_operator.tiers import DEFAULT_TIERS

from .samples import PREMIUM

CFG = config.from_dict({
    "mysql": {"servers": {"main": {"host": "mysql-main.db"}, "eu": {"host": "mysql-eu.db"}},
              "default": "main"},
})



def body(**spec_fields) -> dict:
    return {"metadata": {"name": "acme"}, "spec": dict(spec_fields)}


def premium(**changes) -> dict:
    obj = copy.deepcopy(PREMIUM)
    obj["spec"].update(changes)
    return obj


# --- the full example -------------------------------------------------------------------

def test_full_premium_tenant_parses():
    t = spec.parse(PREMIUM, CFG)
    assert t.name == "client-abc"
    assert t.namespace == "tenant-client-abc"
    assert t.tier == "premium"
    assert t.display_name == "Client ABC"
    assert t.generation == 3
    assert t.domains == ("client-abc.example.com",)
    assert t.billing == spec.Billing(id="sub_abc123", cost_center="CC-ABC-001")
    assert t.databases == ("auth", "products", "orders")
    assert t.mysql_server == "main"
    assert t.object_storage == spec.ObjectStorage(buckets=("products", "sav"), quota_gib=150)
    assert t.messaging == spec.Messaging(queues=("auth", "orders"))
    assert t.ingress == spec.Ingress(enabled=True, class_name="nginx", cluster_issuer="letsencrypt-prod",
                                     service="api-gateway", port=8100)
    assert t.admins == (spec.Subject(kind="User", name="alice@client-abc.example.com"),)
    assert t.backup == spec.Backup(enabled=True, schedule="0 2 * * *",
                                   retention=spec.Retention(daily=30, weekly=12, monthly=12))
    assert t.deletion == spec.Deletion(grace_period=720 * 3600, policy="Delete")
    assert t.suspended is False
    assert t.rotate_token == ""
    assert t.purge_now is False


def test_premium_tier_defaults_are_applied():
    t = spec.parse(PREMIUM, CFG)
    tier = DEFAULT_TIERS["premium"]
    expected_quota = {**tier["quota"], "pods": "60"}
    assert t.quota == expected_quota
    assert t.limits == tier["limits"]
    assert t.mysql_max_user_connections == tier["mysql"]["maxUserConnections"] == 50
    assert t.rabbitmq_max_connections == tier["rabbitmq"]["maxConnections"] == 200
    assert t.rabbitmq_max_queues == tier["rabbitmq"]["maxQueues"] == 200
    assert t.pod_security == "restricted"


def test_quota_override_changes_one_key_and_keeps_the_rest():
    t = spec.parse(premium(quota={"pods": 60, "requests.cpu": "6"}), CFG)
    tier_quota = DEFAULT_TIERS["premium"]["quota"]
    assert t.quota["pods"] == "60"          # ints are normalised to strings
    assert t.quota["requests.cpu"] == "6"
    for key, value in tier_quota.items():
        if key not in ("pods", "requests.cpu"):
            assert t.quota[key] == value, key
    assert set(t.quota) == set(tier_quota)


def test_quota_override_can_add_a_new_resource():
    t = spec.parse(premium(quota={"count/configmaps": "100"}), CFG)
    assert t.quota["count/configmaps"] == "100"
    assert t.quota["pods"] == DEFAULT_TIERS["premium"]["quota"]["pods"]


def test_limits_override_changes_one_key_and_keeps_the_rest():
    t = spec.parse(premium(limits={"max": {"memory": "12Gi"}, "min": {"cpu": "10m"}}), CFG)
    tier_limits = DEFAULT_TIERS["premium"]["limits"]
    assert t.limits["max"] == {"cpu": tier_limits["max"]["cpu"], "memory": "12Gi"}
    assert t.limits["min"] == {"cpu": "10m"}
    assert t.limits["default"] == tier_limits["default"]
    assert t.limits["defaultRequest"] == tier_limits["defaultRequest"]


def test_overrides_do_not_leak_into_the_config_tiers():
    spec.parse(premium(quota={"pods": "61"}, limits={"max": {"cpu": "7"}}), CFG)
    assert CFG.tiers["premium"]["quota"]["pods"] == "50"
    assert CFG.tiers["premium"]["limits"]["max"]["cpu"] == "4"


# --- defaults ------------------------------------------------------------------------------

def test_minimal_tenant_gets_the_defaults():
    t = spec.parse({"metadata": {"name": "acme"}, "spec": {}}, CFG)
    assert t.tier == "standard"
    assert t.quota == DEFAULT_TIERS["standard"]["quota"]
    assert t.limits == DEFAULT_TIERS["standard"]["limits"]
    assert t.deletion.grace_period == 720 * 3600
    assert t.deletion.policy == "Delete"
    assert t.backup.enabled is True
    assert t.backup.schedule == "0 2 * * *"
    assert t.backup.retention == spec.Retention(daily=30, weekly=12, monthly=12)   # the seed design
    assert t.databases == ()
    assert t.object_storage is None
    assert t.messaging is None
    assert t.ingress is None                 # no domains, no ingress section
    assert t.admins == ()
    assert t.generation == 0
    assert t.mysql_server == "main"


def test_default_grace_period_comes_from_the_config():
    cfg = config.from_dict({"defaultGracePeriod": "48h"})
    t = spec.parse(body(), cfg)
    assert t.deletion.grace_period == 48 * 3600
    # An explicit value wins over the config.
    t = spec.parse(body(deletion={"gracePeriod": "1h30m"}), cfg)
    assert t.deletion.grace_period == 5400


def test_domains_without_ingress_section_get_a_default_ingress():
    t = spec.parse(body(domains=["Shop.Example.COM"]), CFG)
    assert t.domains == ("shop.example.com",)
    assert t.ingress == spec.Ingress()


def test_object_storage_quota_defaults_to_the_tier():
    t = spec.parse(body(tier="business", objectStorage={"buckets": ["media"]}), CFG)
    assert t.object_storage.quota_gib == DEFAULT_TIERS["business"]["objectStorage"]["quotaGiB"]


def test_placement_selects_a_configured_mysql_server():
    t = spec.parse(body(databases=["auth"], placement={"mysql": "eu"}), CFG)
    assert t.mysql_server == "eu"


def test_namespace_uses_the_configured_prefix():
    cfg = config.from_dict({"namespacePrefix": "saas-"})
    assert spec.parse(body(), cfg).namespace == "saas-acme"


def test_retain_policy_and_suspension_are_read():
    t = spec.parse(body(deletion={"policy": "Retain", "gracePeriod": "30d"}, suspended=True), CFG)
    assert t.deletion == spec.Deletion(grace_period=30 * 86400, policy="Retain")
    assert t.suspended is True


# --- annotations ---------------------------------------------------------------------------

def test_rotate_credentials_annotation_is_read():
    obj = premium()
    obj["metadata"]["annotations"] = {naming.ANNOTATION_ROTATE: "2024-05-01T10:00:00Z"}
    assert naming.ANNOTATION_ROTATE == "tenancy.dev/rotate-credentials"
    assert spec.parse(obj, CFG).rotate_token == "2024-05-01T10:00:00Z"


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("True", True), ("false", False),
                                                 ("yes", False), ("", False)])
def test_purge_now_annotation_is_read(value, expected):
    obj = premium()
    obj["metadata"]["annotations"] = {"tenancy.dev/purge-now": value}
    assert spec.parse(obj, CFG).purge_now is expected


# --- invalid input ---------------------------------------------------------------------------

INVALID = [
    # (field path the message must start with, object)
    ("metadata.name", {"metadata": {"name": "Client_ABC"}, "spec": {}}),
    ("metadata.name", {"metadata": {"name": "a" * 41}, "spec": {}}),
    ("metadata.name", {"metadata": {}, "spec": {}}),
    ("spec", {"metadata": {"name": "acme"}}),
    ("spec.tier", body(tier="gold")),
    ("spec.tier", body(tier=3)),
    ("spec.domains[1]", body(domains=["ok.example.com", "not a domain"])),
    ("spec.domains[1]", body(domains=["ok.example.com", "OK.example.com"])),
    ("spec.billing.id", body(billing={"id": "has space"})),
    ("spec.billing.costCenter", body(billing={"costCenter": "x" * 64})),
    ("spec.databases[1]", body(databases=["auth", "Bad_Name"])),
    ("spec.databases[2]", body(databases=["auth", "orders", "auth"])),
    ("spec.databases[0]", body(databases=["a" * 25])),
    ("spec.databases", body(databases="auth")),
    ("spec.placement.mysql", body(databases=["auth"], placement={"mysql": "nowhere"})),
    ("spec.messaging.queues[0]", body(messaging={"queues": ["Orders"]})),
    ("spec.podSecurity", body(podSecurity="lenient")),
    ("spec.displayName", body(displayName="x" * 129)),
    ("spec.displayName", body(displayName=["list"])),
    ("spec.quota.pods", body(quota={"pods": "lots"})),
    ("spec.quota.pods", body(quota={"pods": "-1"})),
    ("spec.quota.pods", body(quota={"pods": "inf"})),
    ("spec.quota.requests.cpu", body(quota={"requests.cpu": "1_000"})),
    ("spec.quota.requests.memory", body(quota={"requests.memory": "4GB"})),
    ("spec.quota.Bad_Key", body(quota={"Bad_Key": "1"})),
    ("spec.limits.maximum", body(limits={"maximum": {"cpu": "1"}})),
    ("spec.limits.max", body(limits={"max": "1"})),
    ("spec.limits.max.gpu", body(limits={"max": {"gpu": "1"}})),
    ("spec.limits.default.cpu", body(limits={"default": {"cpu": "one"}})),
    ("spec.objectStorage.buckets", body(objectStorage={"buckets": ["media", "backups"]})),
    ("spec.objectStorage.buckets[0]", body(objectStorage={"buckets": ["my.bucket"]})),
    ("spec.objectStorage.quotaGiB", body(objectStorage={"quotaGiB": -1})),
    ("spec.objectStorage.quotaGiB", body(objectStorage={"quotaGiB": True})),
    ("spec.ingress.port", body(domains=["a.example.com"], ingress={"port": 70000})),
    ("spec.ingress.port", body(domains=["a.example.com"], ingress={"port": "80"})),
    ("spec.ingress.service", body(domains=["a.example.com"], ingress={"service": "Api_Gateway"})),
    ("spec.admins[0].namespace", body(admins=[{"kind": "ServiceAccount", "name": "ci"}])),
    ("spec.admins[1].kind", body(admins=[{"name": "bob"}, {"kind": "Robot", "name": "r2"}])),
    ("spec.admins[0].name", body(admins=[{"kind": "User"}])),
    ("spec.admins[0]", body(admins=["alice"])),
    ("spec.backup.schedule", body(backup={"schedule": "daily"})),
    ("spec.backup.schedule", body(backup={"schedule": "0 2 * * * *"})),
    ("spec.backup.retention.daily", body(backup={"retention": {"daily": 5000}})),
    ("spec.backup.retention", body(backup={"retention": {"daily": 0, "weekly": 0, "monthly": 0}})),
    ("spec.deletion.gracePeriod", body(deletion={"gracePeriod": "forever"})),
    ("spec.deletion.gracePeriod", body(deletion={"gracePeriod": -5})),
    ("spec.deletion.policy", body(deletion={"policy": "Orphan"})),
    ("spec.suspended", body(suspended="yes")),
]


@pytest.mark.parametrize(("path", "obj"), INVALID, ids=[f"{p}-{i}" for i, (p, _) in enumerate(INVALID)])
def test_invalid_input_names_the_field(path, obj):
    with pytest.raises(SpecError) as info:
        spec.parse(obj, CFG)
    message = str(info.value)
    assert message.startswith(path + ":"), message
    assert info.value.field == path
    assert info.value.message                      # a reason follows the path


def test_invalid_cases_cover_enough_distinct_fields():
    assert len({p for p, _ in INVALID}) >= 15


def test_unknown_placement_is_accepted_when_no_database_is_requested():
    # Without databases the placement is irrelevant and must not block the tenant.
    t = spec.parse(body(placement={"mysql": "nowhere"}), CFG)
    assert t.databases == ()


def test_invalid_input_raises_a_value_error_subclass():
    with pytest.raises(ValueError, match=r"^spec\.tier: "):
        spec.parse(body(tier="gold"), CFG)
