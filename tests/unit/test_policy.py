"""policy: the platform's rules on what a Tenant may ask for (config `policy`).

For each knob: the default, an allowed value, a refused value (the SpecError
names the Tenant field and the rule), and the config errors."""

from __future__ import annotations

import pytest
from tenant_operator import config, policy, quantities, spec
from tenant_operator.errors import ConfigError, SpecError


def cfg(**rules) -> config.OperatorConfig:
    return config.from_dict({"policy": rules})


DEFAULT = config.from_dict({})


def tenant(**spec_fields) -> dict:
    return {"metadata": {"name": "acme"}, "spec": dict(spec_fields)}


def refused(obj: dict, conf: config.OperatorConfig = DEFAULT) -> SpecError:
    with pytest.raises(SpecError) as info:
        spec.parse(obj, conf)
    return info.value


def config_error(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.from_dict(raw)
    return info.value


# --- the section as a whole --------------------------------------------------------------

def test_defaults():
    rules = DEFAULT.policy
    assert rules.allowed_cluster_issuers == ("letsencrypt-prod", "letsencrypt-staging")
    assert rules.allowed_pod_security == ("restricted", "baseline")
    assert rules.subjects.allowed_kinds == ("User", "Group", "ServiceAccount")
    assert rules.subjects.denied_names == ("system:*",)
    assert rules.subjects.denied_service_accounts == ("system:serviceaccount:kube-*:*",
                                                      "system:serviceaccount:default:*")
    assert rules.max_quota == {}
    assert rules.allowed_domain_suffixes == ()
    assert config.from_dict({"policy": None}).policy == rules
    assert config.OperatorConfig().policy == rules


@pytest.mark.parametrize(("raw", "key"), [
    ({"policy": ["x"]}, "policy"),
    ({"policy": {"allowedClusterIssuer": ["x"]}}, "policy.allowedClusterIssuer"),
    ({"policy": {"subjects": {"deniedName": ["x"]}}}, "policy.subjects.deniedName"),
    ({"policy": {"subjects": "none"}}, "policy.subjects"),
])
def test_a_misspelt_or_misshapen_section_is_refused(raw, key):
    error = config_error(raw)
    assert error.key == key
    assert str(error).startswith(f"config {key}:")


def test_policy_values_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ISSUER", "corp-ca")
    assert cfg(allowedClusterIssuers=["${ISSUER}"]).policy.allowed_cluster_issuers == ("corp-ca",)


# --- allowedClusterIssuers ---------------------------------------------------------------

def with_issuer(issuer: str) -> dict:
    return tenant(domains=["shop.example.com"], ingress={"clusterIssuer": issuer})


@pytest.mark.parametrize("issuer", ["letsencrypt-prod", "letsencrypt-staging"])
def test_default_issuers_are_allowed(issuer):
    assert spec.parse(with_issuer(issuer), DEFAULT).ingress.cluster_issuer == issuer


def test_another_issuer_is_refused_by_default():
    error = refused(with_issuer("internal-ca"))
    assert error.field == "spec.ingress.clusterIssuer"
    assert error.message == ("'internal-ca' is not allowed by policy.allowedClusterIssuers "
                             "(letsencrypt-prod, letsencrypt-staging)")


def test_issuer_patterns_are_shell_patterns():
    conf = cfg(allowedClusterIssuers=["internal-*"])
    assert spec.parse(with_issuer("internal-ca"), conf).ingress.cluster_issuer == "internal-ca"
    assert refused(with_issuer("internal"), conf).field == "spec.ingress.clusterIssuer"
    assert refused(with_issuer("letsencrypt-prod"), conf).field == "spec.ingress.clusterIssuer"


def test_the_default_issuer_is_checked_too_and_said_to_be_the_default():
    conf = cfg(allowedClusterIssuers=["internal-ca"])
    for obj in (tenant(domains=["shop.example.com"]), tenant(domains=["shop.example.com"], ingress={"port": 8080})):
        error = refused(obj, conf)
        assert error.field == "spec.ingress.clusterIssuer"
        assert error.message == ("'letsencrypt-prod' (the operator's defaults.ingress.clusterIssuer, as none is "
                                 "set) is not allowed by policy.allowedClusterIssuers (internal-ca)")


def test_no_ingress_no_issuer_check():
    assert spec.parse(tenant(), cfg(allowedClusterIssuers=["internal-ca"])).ingress is None


@pytest.mark.parametrize("value", [[], "letsencrypt-prod", [""], [3]])
def test_issuers_config_must_be_a_non_empty_list_of_names(value):
    assert config_error({"policy": {"allowedClusterIssuers": value}}).key == "policy.allowedClusterIssuers"


# --- allowedPodSecurity ------------------------------------------------------------------

@pytest.mark.parametrize("level", ["restricted", "baseline"])
def test_restricted_and_baseline_are_allowed_by_default(level):
    assert spec.parse(tenant(podSecurity=level), DEFAULT).pod_security == level


def test_privileged_is_refused_by_default():
    error = refused(tenant(podSecurity="privileged"))
    assert error.field == "spec.podSecurity"
    assert error.message == "'privileged' is not allowed by policy.allowedPodSecurity (restricted, baseline)"


def test_privileged_once_the_platform_allows_it():
    conf = cfg(allowedPodSecurity=["restricted", "baseline", "privileged"])
    assert spec.parse(tenant(podSecurity="privileged"), conf).pod_security == "privileged"


def test_a_policy_of_restricted_only_refuses_baseline():
    error = refused(tenant(podSecurity="baseline"), cfg(allowedPodSecurity=["restricted"]))
    assert error.field == "spec.podSecurity" and "policy.allowedPodSecurity (restricted)" in error.message


def test_a_tier_level_the_policy_refuses_fails_the_config_naming_the_tier():
    error = config_error({"tiers": {"business": {"podSecurity": "privileged"}}})
    assert error.key == "tiers.business.podSecurity"
    assert "'privileged' is not allowed by policy.allowedPodSecurity (restricted, baseline)" in str(error)
    # No tier sets a level of its own: the config's default is what is refused.
    error = config_error({"policy": {"allowedPodSecurity": ["baseline"]}})
    assert error.key == "defaults.podSecurity"


def test_a_tier_level_the_policy_allows_is_the_tenants_default():
    conf = config.from_dict({"tiers": {"business": {"podSecurity": "privileged"}},
                             "policy": {"allowedPodSecurity": ["restricted", "privileged"]}})
    assert spec.parse(tenant(tier="business"), conf).pod_security == "privileged"
    assert spec.parse(tenant(tier="standard"), conf).pod_security == "restricted"


@pytest.mark.parametrize("value", [[], ["lenient"], "restricted"])
def test_pod_security_config_must_list_known_levels(value):
    assert config_error({"policy": {"allowedPodSecurity": value}}).key == "policy.allowedPodSecurity"


# --- subjects ----------------------------------------------------------------------------

def with_admins(*admins: dict) -> dict:
    return tenant(admins=list(admins))


def test_users_groups_and_service_accounts_are_allowed_by_default():
    t = spec.parse(with_admins({"kind": "User", "name": "alice@example.com"}, {"kind": "Group", "name": "acme-ops"},
                               {"kind": "ServiceAccount", "name": "ci", "namespace": "tenant-acme"}), DEFAULT)
    assert [a.kind for a in t.admins] == ["User", "Group", "ServiceAccount"]


@pytest.mark.parametrize("kind", ["Group", "User"])
@pytest.mark.parametrize("name", ["system:authenticated", "system:unauthenticated", "system:masters",
                                  "system:serviceaccounts", "system:anonymous"])
def test_system_users_and_groups_are_denied_by_default(kind, name):
    error = refused(with_admins({"kind": "User", "name": "alice"}, {"kind": kind, "name": name}))
    assert error.field == "spec.admins[1].name"
    assert error.message == f"{name!r} is denied by policy.subjects.deniedNames ('system:*')"


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "default"])
def test_service_accounts_of_system_namespaces_are_denied_by_default(namespace):
    error = refused(with_admins({"kind": "ServiceAccount", "name": "builder", "namespace": namespace}))
    assert error.field == "spec.admins[0].name"
    assert f"ServiceAccount 'system:serviceaccount:{namespace}:builder' is denied by " \
           "policy.subjects.deniedServiceAccounts" in error.message


def test_a_user_named_like_a_service_account_is_that_service_account():
    obj = with_admins({"kind": "User", "name": "system:serviceaccount:kube-system:default"})
    assert refused(obj).field == "spec.admins[0].name"          # deniedNames: system:*
    error = refused(obj, cfg(subjects={"deniedNames": []}))
    assert error.field == "spec.admins[0].name"
    assert error.message == ("User 'system:serviceaccount:kube-system:default' is denied by "
                             "policy.subjects.deniedServiceAccounts ('system:serviceaccount:kube-*:*')")


def test_denied_service_accounts_can_name_single_accounts():
    conf = cfg(subjects={"deniedServiceAccounts": ["system:serviceaccount:ci:deployer"]})
    ok = {"kind": "ServiceAccount", "name": "builder", "namespace": "ci"}
    assert spec.parse(with_admins(ok), conf).admins[0].namespace == "ci"
    assert spec.parse(with_admins({**ok, "namespace": "kube-system"}), conf).admins[0].namespace == "kube-system"
    error = refused(with_admins(ok, {**ok, "name": "deployer"}), conf)
    assert error.field == "spec.admins[1].name" and "'system:serviceaccount:ci:deployer'" in error.message


def test_denied_names_apply_to_every_kind():
    conf = cfg(subjects={"deniedNames": ["system:*", "*@contractor.example"]})
    error = refused(with_admins({"kind": "User", "name": "bob@contractor.example"}), conf)
    assert error.field == "spec.admins[0].name"
    assert error.message == "'bob@contractor.example' is denied by policy.subjects.deniedNames ('*@contractor.example')"
    conf = cfg(subjects={"deniedNames": ["ci"]})
    assert refused(with_admins({"kind": "ServiceAccount", "name": "ci", "namespace": "x"}), conf).field == \
        "spec.admins[0].name"


def test_allowed_kinds():
    conf = cfg(subjects={"allowedKinds": ["User"]})
    assert spec.parse(with_admins({"kind": "User", "name": "alice"}), conf).admins[0].name == "alice"
    error = refused(with_admins({"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"}), conf)
    assert error.field == "spec.admins[1].kind"
    assert error.message == "'Group' is not allowed by policy.subjects.allowedKinds (User)"


@pytest.mark.parametrize(("subjects", "key"), [
    ({"allowedKinds": []}, "policy.subjects.allowedKinds"),
    ({"allowedKinds": ["Robot"]}, "policy.subjects.allowedKinds"),
    ({"deniedNames": "system:*"}, "policy.subjects.deniedNames"),
    ({"deniedNames": [""]}, "policy.subjects.deniedNames"),
    ({"deniedServiceAccounts": [None]}, "policy.subjects.deniedServiceAccounts"),
])
def test_subjects_config_errors(subjects, key):
    assert config_error({"policy": {"subjects": subjects}}).key == key


def test_empty_deny_lists_deny_nothing():
    conf = cfg(subjects={"deniedNames": [], "deniedServiceAccounts": []})
    obj = with_admins({"kind": "Group", "name": "system:authenticated"},
                      {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"})
    assert len(spec.parse(obj, conf).admins) == 2


# --- maxQuota ----------------------------------------------------------------------------

def test_no_maximum_by_default():
    t = spec.parse(tenant(quota={"requests.cpu": "1000", "pods": 100000}), DEFAULT)
    assert t.quota["requests.cpu"] == "1000" and t.quota["pods"] == "100000"


MAX = cfg(maxQuota={"requests.cpu": "64", "limits.memory": "256Gi", "pods": "1e3"})


@pytest.mark.parametrize(("key", "value"), [
    ("requests.cpu", "64"), ("requests.cpu", "64000m"), ("requests.cpu", "7"),     # "7" > "64" as text only
    ("limits.memory", "0.25Ti"), ("limits.memory", "256Gi"), ("pods", "1k"), ("pods", 999),
])
def test_quota_up_to_the_maximum_is_allowed(key, value):
    assert spec.parse(tenant(quota={key: value}), MAX).quota[key] == str(value)


@pytest.mark.parametrize(("key", "value", "maximum"), [
    ("requests.cpu", "65", "64"), ("requests.cpu", "64001m", "64"),
    ("limits.memory", "257Gi", "256Gi"), ("limits.memory", "1Ti", "256Gi"), ("pods", 1001, "1e3"),
])
def test_quota_above_the_maximum_is_refused(key, value, maximum):
    error = refused(tenant(quota={key: value}), MAX)
    assert error.field == f"spec.quota.{key}"
    assert error.message == f"{value} exceeds policy.maxQuota.{key} ({maximum})"


def test_the_effective_quota_is_checked_tier_and_overrides_together():
    conf = cfg(maxQuota={"pods": "200"})
    assert spec.parse(tenant(tier="business"), conf).quota["pods"] == "200"     # the tier's own figure
    assert spec.parse(tenant(quota={"requests.cpu": "100"}), conf).quota["pods"] == "20"
    error = refused(tenant(tier="business", quota={"pods": "201"}), conf)
    assert (error.field, error.message) == ("spec.quota.pods", "201 exceeds policy.maxQuota.pods (200)")


def test_quantities_are_compared_as_numbers():
    assert quantities.parse("500m") < quantities.parse("1")
    assert quantities.parse("1Gi") > quantities.parse("1G")
    assert quantities.parse("1e3") == quantities.parse("1k") == 1000


@pytest.mark.parametrize(("max_quota", "key"), [
    ({"requests.cpu": "lots"}, "policy.maxQuota.requests.cpu"),
    ({"requests.cpu": "-1"}, "policy.maxQuota.requests.cpu"),
    ({"Bad_Key": "1"}, "policy.maxQuota.Bad_Key"),
    (["requests.cpu"], "policy.maxQuota"),
])
def test_max_quota_config_errors(max_quota, key):
    error = config_error({"policy": {"maxQuota": max_quota}})
    assert error.key == key
    assert str(error).startswith(f"config {key}:")


def test_a_tier_above_a_maximum_fails_the_config():
    error = config_error({"policy": {"maxQuota": {"requests.cpu": "8"}}})
    assert error.key == "tiers.business.quota.requests.cpu"
    assert "16 exceeds policy.maxQuota.requests.cpu (8)" in str(error)


def test_a_maximum_no_tier_sets_fails_the_config():
    error = config_error({"policy": {"maxQuota": {"count/secrets": "50"}}})
    assert error.key == "tiers.standard.quota.count/secrets"
    assert "would not bound" in str(error)
    tiers = {name: {"quota": {"count/secrets": "20"}} for name in ("standard", "premium", "business")}
    conf = config.from_dict({"tiers": tiers, "policy": {"maxQuota": {"count/secrets": "50"}}})
    assert conf.policy.max_quota == {"count/secrets": "50"}


# --- domains -----------------------------------------------------------------------------

def with_domains(*domains: str) -> dict:
    return tenant(domains=list(domains))


def test_any_domain_by_default():
    assert spec.parse(with_domains("shop.acme.org", "*.acme.io"), DEFAULT).domains == ("shop.acme.org", "*.acme.io")


SUFFIXES = cfg(allowedDomainSuffixes=["example.com", "Tenants.Example.NET"])


@pytest.mark.parametrize("domain", ["shop.example.com", "example.com", "*.shop.example.com", "*.example.com",
                                    "acme.tenants.example.net", "a.b.tenants.example.net"])
def test_domains_under_an_allowed_suffix(domain):
    assert spec.parse(with_domains(domain), SUFFIXES).domains == (domain,)


@pytest.mark.parametrize("domain", ["evilexample.com", "example.com.evil.net", "example.net", "tenants.example.org",
                                    "xtenants.example.net"])
def test_domains_elsewhere_are_refused(domain):
    error = refused(with_domains("shop.example.com", domain), SUFFIXES)
    assert error.field == "spec.domains[1]"
    assert error.message == (f"{domain!r} is not under a domain allowed by policy.allowedDomainSuffixes "
                             "(example.com, tenants.example.net)")


@pytest.mark.parametrize("domain", ["*.co.uk", "*.com.au", "*.ne.jp", "*.github.io", "*.herokuapp.com",
                                    "*.s3.amazonaws.com"])
def test_wildcards_over_a_public_suffix_are_always_refused(domain):
    for conf in (DEFAULT, cfg(allowedDomainSuffixes=[domain[2:]])):
        error = refused(with_domains(domain), conf)
        assert error.field == "spec.domains[0]"
        assert error.message.startswith(f"{domain!r} is a wildcard over a public suffix or a single label")


def test_a_wildcard_over_a_single_label_is_refused():
    assert policy.wildcard_too_broad("*.com") and policy.wildcard_too_broad("*.internal")
    assert refused(with_domains("*.com")).field == "spec.domains[0]"


@pytest.mark.parametrize("domain", ["*.example.com", "*.example.co.uk", "*.shop.example.co.uk", "*.acme.github.io"])
def test_wildcards_over_a_registrable_domain_are_allowed(domain):
    assert not policy.wildcard_too_broad(domain)
    assert spec.parse(with_domains(domain), DEFAULT).domains == (domain,)


@pytest.mark.parametrize("value", [["*.example.com"], [".example.com"], ["exa mple.com"], "example.com"])
def test_domain_suffixes_config_errors(value):
    assert config_error({"policy": {"allowedDomainSuffixes": value}}).key == "policy.allowedDomainSuffixes"


def test_domain_suffixes_are_lowercased():
    assert SUFFIXES.policy.allowed_domain_suffixes == ("example.com", "tenants.example.net")
