"""The config's `defaults` section: parsing, errors naming the key, and the
precedence a Tenant field set > config default > built-in default."""

from __future__ import annotations

import pytest
from tenant_operator import config, defaults, spec
from tenant_operator.errors import ConfigError

CUSTOM = {
    "tier": "premium",
    "podSecurity": "baseline",
    "ingress": {"className": "traefik", "clusterIssuer": "letsencrypt-staging", "service": "web", "port": 8080},
    "backup": {"schedule": "30 3 * * 0", "retention": {"daily": 5, "weekly": 2, "monthly": 1}},
    "deletion": {"gracePeriod": "7d"},
}
CFG = config.from_dict({"defaults": CUSTOM})


def body(**fields) -> dict:
    return {"metadata": {"name": "acme"}, "spec": fields}


def test_built_in_defaults_follow_the_seed_design():
    d = config.from_dict({}).defaults
    assert d == defaults.BUILT_IN
    assert (d.backup_schedule, d.retention_daily, d.retention_weekly, d.retention_monthly) == ("0 2 * * *", 30, 12, 12)
    assert (d.tier, d.pod_security, d.grace_period) == ("standard", "restricted", 720 * 3600)
    assert (d.ingress_class_name, d.ingress_cluster_issuer, d.ingress_service, d.ingress_port) == (
        "nginx", "letsencrypt-prod", "api-gateway", 80)


def test_every_default_is_read_from_the_config():
    assert CFG.defaults == defaults.SpecDefaults(
        tier="premium", pod_security="baseline", ingress_class_name="traefik",
        ingress_cluster_issuer="letsencrypt-staging", ingress_service="web", ingress_port=8080,
        backup_schedule="30 3 * * 0", retention_daily=5, retention_weekly=2, retention_monthly=1,
        grace_period=7 * 86400)
    assert CFG.default_grace_period == 7 * 86400


def test_a_partial_section_keeps_the_other_built_in_defaults():
    d = config.from_dict({"defaults": {"backup": {"retention": {"daily": 3}}}}).defaults
    assert (d.retention_daily, d.retention_weekly, d.retention_monthly) == (3, 12, 12)
    assert d.backup_schedule == "0 2 * * *" and d.tier == "standard"


def test_a_tenant_without_the_fields_gets_the_config_defaults():
    t = spec.parse(body(domains=["shop.example.com"], databases=["auth"]), CFG)
    assert t.tier == "premium"
    assert t.quota == CFG.tiers["premium"]["quota"]
    assert t.pod_security == "baseline"
    assert t.ingress == spec.Ingress(enabled=True, class_name="traefik", cluster_issuer="letsencrypt-staging",
                                     service="web", port=8080)
    assert t.backup == spec.Backup(enabled=True, schedule="30 3 * * 0",
                                   retention=spec.Retention(daily=5, weekly=2, monthly=1))
    assert t.deletion.grace_period == 7 * 86400


def test_a_field_the_tenant_sets_wins_over_the_config_default():
    t = spec.parse(body(
        tier="business", podSecurity="restricted", domains=["shop.example.com"],
        ingress={"className": "nginx", "clusterIssuer": "letsencrypt-prod", "service": "api", "port": 81},
        backup={"schedule": "@daily", "retention": {"daily": 40, "weekly": 0, "monthly": 6}},
        deletion={"gracePeriod": "1h"}), CFG)
    assert (t.tier, t.pod_security) == ("business", "restricted")
    assert t.ingress == spec.Ingress(enabled=True, class_name="nginx", cluster_issuer="letsencrypt-prod",
                                     service="api", port=81)
    assert t.backup.schedule == "@daily"
    assert t.backup.retention == spec.Retention(daily=40, weekly=0, monthly=6)
    assert t.deletion.grace_period == 3600


def test_fields_merge_one_by_one():
    """Setting one retention count or one ingress setting keeps the config's others."""
    t = spec.parse(body(domains=["shop.example.com"], ingress={"port": 9000},
                        backup={"retention": {"weekly": 8}}), CFG)
    assert (t.ingress.class_name, t.ingress.port) == ("traefik", 9000)
    assert t.backup.retention == spec.Retention(daily=5, weekly=8, monthly=1)


def test_a_tiers_own_pod_security_level_wins_over_the_config_default():
    cfg = config.from_dict({"defaults": {"podSecurity": "baseline"},
                            "tiers": {"business": {"podSecurity": "restricted"}}})
    assert spec.parse(body(tier="business"), cfg).pod_security == "restricted"
    assert spec.parse(body(tier="standard"), cfg).pod_security == "baseline"
    assert spec.parse(body(tier="standard"), config.from_dict({})).pod_security == "restricted"


def test_the_older_default_grace_period_key_still_works_but_not_with_the_new_one():
    assert config.from_dict({"defaultGracePeriod": "48h"}).defaults.grace_period == 48 * 3600
    with pytest.raises(ConfigError) as err:
        config.from_dict({"defaultGracePeriod": "48h", "defaults": {"deletion": {"gracePeriod": "2d"}}})
    assert err.value.key == "defaultGracePeriod"


@pytest.mark.parametrize(("raw", "key", "words"), [
    ({"tier": "gold"}, "defaults.tier", "is not a tier"),
    ({"podSecurity": "lenient"}, "defaults.podSecurity", "is not a Pod Security level"),
    ({"podSecurity": "privileged"}, "defaults.podSecurity", "not allowed by policy.allowedPodSecurity"),
    ({"ingress": {"className": "Nginx"}}, "defaults.ingress.className", "is not a Kubernetes object name"),
    ({"ingress": {"clusterIssuer": "lets_encrypt"}}, "defaults.ingress.clusterIssuer", "object name"),
    ({"ingress": {"service": "9gw"}}, "defaults.ingress.service", "is not a Service name"),
    ({"ingress": {"port": 0}}, "defaults.ingress.port", "from 1 to 65535"),
    ({"ingress": {"port": "80"}}, "defaults.ingress.port", "must be an integer"),
    ({"backup": {"schedule": "0 25 * * *"}}, "defaults.backup.schedule", "is not a cron schedule"),
    ({"backup": {"schedule": 5}}, "defaults.backup.schedule", "is not a cron schedule"),
    ({"backup": {"retention": {"daily": -1}}}, "defaults.backup.retention.daily", "from 0 to 3650"),
    ({"backup": {"retention": {"weekly": 521}}}, "defaults.backup.retention.weekly", "from 0 to 520"),
    ({"backup": {"retention": {"monthly": True}}}, "defaults.backup.retention.monthly", "must be an integer"),
    ({"backup": {"retention": {"daily": 0, "weekly": 0, "monthly": 0}}}, "defaults.backup.retention",
     "keeps nothing"),
    ({"deletion": {"gracePeriod": "soon"}}, "defaults.deletion.gracePeriod", "soon"),
    ({"deletion": {"gracePeriod": "3651d"}}, "defaults.deletion.gracePeriod", "maximum of 3650d"),
    ({"backup": {"keep": 3}}, "defaults.backup.keep", "is not a default the operator knows"),
    ({"suspended": True}, "defaults.suspended", "is not a default the operator knows"),
    ({"ingress": "nginx"}, "defaults.ingress", "must be a mapping"),
    ("standard", "defaults", "must be a mapping"),
])
def test_a_bad_default_stops_the_config_naming_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        config.from_dict({"defaults": raw})
    assert err.value.key == key
    assert words in str(err.value) and str(err.value).startswith(f"config {key}:")


def test_a_configured_default_issuer_the_policy_refuses_stops_the_config():
    with pytest.raises(ConfigError) as err:
        config.from_dict({"defaults": {"ingress": {"clusterIssuer": "internal-ca"}}})
    assert err.value.key == "defaults.ingress.clusterIssuer"
    assert "not allowed by policy.allowedClusterIssuers" in str(err.value)
    cfg = config.from_dict({"defaults": {"ingress": {"clusterIssuer": "internal-ca"}},
                            "policy": {"allowedClusterIssuers": ["internal-*"]}})
    assert spec.parse(body(domains=["shop.example.com"]), cfg).ingress.cluster_issuer == "internal-ca"
