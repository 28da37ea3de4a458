"""render: every template, from a parsed Tenant to plain dicts, without a cluster."""

from __future__ import annotations

import base64

import pytest
import yaml
from tenant_operator import config, naming, render, spec

from .samples import PREMIUM, parse_with

CFG = config.from_dict({})
CFG_SHARED = config.from_dict({
    "ingressControllerNamespace": "ingress-system",
    "sharedServices": [
        {"namespace": "monitoring", "ports": [9090, 9091]},
        {"cidr": "10.20.0.0/16", "ports": [5432]},
    ],
})


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*", "escalate", "bind",
               "impersonate"}


def tenant(cfg=CFG, **changes) -> spec.Tenant:
    return parse_with(PREMIUM, cfg, **changes)


def by_name(objs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs}


# --- namespace ---------------------------------------------------------------------------------

def test_namespace_labels_and_annotations():
    (ns,) = render.namespace(tenant(), CFG)
    assert ns["apiVersion"] == "v1" and ns["kind"] == "Namespace"
    assert ns["metadata"]["name"] == "tenant-client-abc"
    assert "namespace" not in ns["metadata"]
    labels = ns["metadata"]["labels"]
    assert labels["tenancy.dev/tenant"] == "client-abc"
    assert labels["tenancy.dev/tier"] == "premium"
    assert labels["tenancy.dev/billing-id"] == "sub_abc123"
    assert labels["tenancy.dev/cost-center"] == "CC-ABC-001"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["tenancy.dev/component"] == "namespace"
    assert labels["app.kubernetes.io/managed-by"] == "tenant-operator"
    assert ns["metadata"]["annotations"] == {
        "tenancy.dev/tenant-uid": "",
        "tenancy.dev/display-name": "Client ABC",
        "tenancy.dev/domains": "client-abc.example.com",
    }


def test_namespace_without_billing_has_no_billing_labels():
    (ns,) = render.namespace(tenant(billing=None, podSecurity="baseline"), CFG)
    labels = ns["metadata"]["labels"]
    assert "tenancy.dev/billing-id" not in labels
    assert "tenancy.dev/cost-center" not in labels
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"


def test_domains_annotation_joins_all_domains():
    t = tenant(domains=["a.example.com", "b.example.com"])
    (ns,) = render.namespace(t, CFG)
    assert ns["metadata"]["annotations"]["tenancy.dev/domains"] == "a.example.com,b.example.com"


@pytest.mark.parametrize("display", [
    "a: b\n- c",
    'He said "hi" and \'bye\'',
    "{{ t.name }} {% if x %}",
    "#comment & <tag> | > * ! % @ `",
    "---\n...\n",
    "Société Générale – 中文",
    "tab\there\r\nnul-free \\ backslash",
    "line\u2028sep\u2029para\x85nel",
    "del\x7f and c1\x9f",
    "emoji 😀 flags 🇫🇷 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "a literal \\ud83d\\ude00 is text, not an emoji",
    "",
])
def test_yaml_breaking_display_name_round_trips(display):
    t = tenant(displayName=display)
    assert t.display_name == display
    (ns,) = render.namespace(t, CFG)
    assert ns["metadata"]["annotations"]["tenancy.dev/display-name"] == display
    # Nothing leaked into the structure.
    assert set(ns["metadata"]["annotations"]) == {"tenancy.dev/tenant-uid", "tenancy.dev/display-name",
                                                  "tenancy.dev/domains"}
    assert ns["metadata"]["name"] == "tenant-client-abc"


def test_admin_name_with_yaml_characters_round_trips():
    name = 'eve"\n  - kind: Group\n    name: system:masters'
    t = tenant(admins=[{"kind": "User", "name": name}])
    binding = [o for o in render.rbac(t, CFG) if o["kind"] == "RoleBinding"][0]
    assert binding["subjects"] == [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]


# --- network policies ----------------------------------------------------------------------------

def test_four_network_policies_without_shared_services():
    policies = by_name(render.network_policies(tenant(), CFG))
    assert set(policies) == {"default-deny-all", "allow-same-namespace", "allow-from-ingress-controller",
                             "allow-dns"}
    for p in policies.values():
        assert p["kind"] == "NetworkPolicy"
        assert p["apiVersion"] == "networking.k8s.io/v1"
        assert p["metadata"]["namespace"] == "tenant-client-abc"
        assert p["spec"]["podSelector"] == {}


def test_default_deny_denies_both_directions():
    deny = by_name(render.network_policies(tenant(), CFG))["default-deny-all"]
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def test_same_namespace_policy_selects_only_pods():
    p = by_name(render.network_policies(tenant(), CFG))["allow-same-namespace"]
    assert p["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    assert p["spec"]["egress"] == [{"to": [{"podSelector": {}}]}]


def test_ingress_controller_policy_uses_the_configured_namespace():
    p = by_name(render.network_policies(tenant(), CFG_SHARED))["allow-from-ingress-controller"]
    assert p["spec"]["policyTypes"] == ["Ingress"]
    (peer,) = p["spec"]["ingress"][0]["from"]
    assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-system"}}}


def test_dns_policy_allows_port_53_to_kube_dns():
    p = by_name(render.network_policies(tenant(), CFG))["allow-dns"]
    assert p["spec"]["policyTypes"] == ["Egress"]
    (rule,) = p["spec"]["egress"]
    assert rule["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }]
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)]


def test_shared_services_policy_with_namespace_and_cidr():
    policies = by_name(render.network_policies(tenant(), CFG_SHARED))
    assert len(policies) == 5
    shared = policies["allow-shared-services"]
    assert shared["spec"]["policyTypes"] == ["Egress"]
    ns_rule, cidr_rule = shared["spec"]["egress"]
    assert ns_rule["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert ns_rule["ports"] == [{"protocol": "TCP", "port": 9090}, {"protocol": "TCP", "port": 9091}]
    assert cidr_rule["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert cidr_rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert shared["metadata"]["labels"]["tenancy.dev/component"] == "network"


def _namespace_selectors(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "namespaceSelector":
                yield value
            yield from _namespace_selectors(value)
    elif isinstance(node, list):
        for item in node:
            yield from _namespace_selectors(item)


CFG_BACKENDS = config.from_dict({
    "mysql": {"servers": {"main": {"host": "mysql.databases.svc.cluster.local"}}},
    "objectStorage": {"endpoint": "http://minio.storage.svc:9000"},
    "rabbitmq": {"managementUrl": "http://rabbitmq.messaging:15672", "amqpHost": "rabbitmq.messaging"},
})


@pytest.mark.parametrize("cfg", [CFG, CFG_SHARED, CFG_BACKENDS], ids=["plain", "shared-services", "backends"])
def test_no_policy_selects_other_namespaces(cfg):
    backends = [cfg.object_storage, cfg.rabbitmq, *cfg.mysql_servers.values()]
    allowed = {cfg.ingress_controller_namespace, "kube-system",
               *(s.namespace for s in cfg.shared_services if s.namespace),
               *(b.egress.namespace for b in backends if b is not None and b.egress and b.egress.namespace)}
    selectors = list(_namespace_selectors(render.network_policies(tenant(cfg), cfg)))
    assert selectors, "expected at least the ingress controller and DNS selectors"
    for sel in selectors:
        # Exactly one label match on the namespace name: never {} or a label other tenants could carry.
        assert set(sel) == {"matchLabels"}, sel
        assert list(sel["matchLabels"]) == ["kubernetes.io/metadata.name"], sel
        assert sel["matchLabels"]["kubernetes.io/metadata.name"] in allowed, sel


# --- quota ----------------------------------------------------------------------------------------

def test_resource_quota_hard_is_the_effective_quota():
    t = tenant()
    objs = render.quota(t, CFG)
    assert [o["kind"] for o in objs] == ["ResourceQuota", "LimitRange"]
    rq = objs[0]
    assert rq["metadata"]["name"] == naming.RESOURCE_QUOTA
    assert rq["metadata"]["namespace"] == t.namespace
    assert rq["spec"]["hard"] == t.quota
    assert rq["spec"]["hard"]["pods"] == "60"
    assert all(isinstance(v, str) for v in rq["spec"]["hard"].values())


def test_limit_range_sections():
    t = tenant(limits={"max": {"memory": "12Gi"}, "min": {"cpu": "10m"}})
    lr = render.quota(t, CFG)[1]
    assert lr["metadata"]["name"] == naming.LIMIT_RANGE
    (limits,) = lr["spec"]["limits"]
    assert limits["type"] == "Container"
    assert limits["default"] == {"cpu": "1", "memory": "1Gi"}
    assert limits["defaultRequest"] == {"cpu": "250m", "memory": "256Mi"}
    assert limits["max"] == {"cpu": "4", "memory": "12Gi"}
    assert limits["min"] == {"cpu": "10m"}
    assert set(limits) == {"type", "default", "defaultRequest", "max", "min"}


# --- RBAC ------------------------------------------------------------------------------------------

def test_role_is_read_only_and_excludes_secrets():
    role = [o for o in render.rbac(tenant(), CFG) if o["kind"] == "Role"][0]
    assert role["metadata"]["name"] == naming.ADMIN_ROLE
    assert role["metadata"]["namespace"] == "tenant-client-abc"
    assert role["rules"]
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not WRITE_VERBS & set(rule["verbs"]), rule
        assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_no_role_binding_without_admins():
    objs = render.rbac(tenant(admins=None), CFG)
    assert [o["kind"] for o in objs] == ["Role"]
    assert [o["kind"] for o in render.rbac(tenant(admins=[]), CFG)] == ["Role"]


def test_role_binding_subjects():
    t = tenant(admins=[
        {"kind": "User", "name": "alice@client-abc.example.com"},
        {"kind": "Group", "name": "client-abc-ops"},
        {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},
    ])
    binding = [o for o in render.rbac(t, CFG) if o["kind"] == "RoleBinding"][0]
    assert binding["metadata"]["namespace"] == "tenant-client-abc"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": naming.ADMIN_ROLE}
    user, group, sa = binding["subjects"]
    assert user == {"kind": "User", "name": "alice@client-abc.example.com",
                    "apiGroup": "rbac.authorization.k8s.io"}
    assert group == {"kind": "Group", "name": "client-abc-ops", "apiGroup": "rbac.authorization.k8s.io"}
    assert sa == {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}
    assert "apiGroup" not in sa


# --- ingress ---------------------------------------------------------------------------------------

def test_ingress_one_rule_per_domain():
    domains = ["client-abc.example.com", "www.client-abc.example.com", "api.client-abc.example.com"]
    (ing,) = render.ingress(tenant(domains=domains), CFG)
    assert ing["kind"] == "Ingress" and ing["apiVersion"] == "networking.k8s.io/v1"
    assert ing["metadata"]["name"] == naming.INGRESS
    assert ing["metadata"]["namespace"] == "tenant-client-abc"
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": domains, "secretName": "client-abc-tls"}]
    assert [r["host"] for r in ing["spec"]["rules"]] == domains
    for rule in ing["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        assert path["path"] == "/" and path["pathType"] == "Prefix"
        assert path["backend"] == {"service": {"name": "api-gateway", "port": {"number": 8100}}}


def test_ingress_uses_the_spec_issuer_and_class():
    cfg = config.from_dict({"policy": {"allowedClusterIssuers": ["letsencrypt-*", "internal-ca"]}})
    t = tenant(cfg, ingress={"className": "traefik", "clusterIssuer": "internal-ca", "service": "web"})
    (ing,) = render.ingress(t, CFG)
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "internal-ca"
    assert ing["spec"]["ingressClassName"] == "traefik"
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "web", "port": {"number": 80}}


@pytest.mark.parametrize("changes", [
    {"suspended": True},
    {"ingress": {"enabled": False}},
    {"domains": []},
    {"domains": None, "ingress": None},
], ids=["suspended", "disabled", "no-domains", "no-ingress"])
def test_no_ingress(changes):
    t = tenant(**changes)
    assert render.ingress(t, CFG) == []
    assert all(o["kind"] != "Ingress" for o in render.render_tenant(t, CFG))


# --- secrets -----------------------------------------------------------------------------------------

def test_secret_data_is_base64():
    data = {"DB_PASSWORD": "p@ss: w\"ord\n{{x}}", "DB_USER": "client_abc_auth_user", "EMPTY": ""}
    s = render.secret(tenant(), "auth-db-credentials", "databases", data)
    assert s["kind"] == "Secret" and s["type"] == "Opaque"
    assert s["metadata"]["name"] == "auth-db-credentials"
    assert s["metadata"]["namespace"] == "tenant-client-abc"
    assert s["metadata"]["labels"]["tenancy.dev/component"] == "databases"
    assert set(s["data"]) == set(data)
    for key, value in data.items():
        assert base64.b64decode(s["data"][key], validate=True).decode() == value
    assert s["data"]["DB_USER"] == base64.b64encode(b"client_abc_auth_user").decode()
    assert "stringData" not in s


# --- all objects ----------------------------------------------------------------------------------------

def _all_objects(t, cfg):
    return [*render.render_tenant(t, cfg), render.secret(t, "x-credentials", "messaging", {"A": "b"})]


@pytest.mark.parametrize("cfg", [CFG, CFG_SHARED], ids=["plain", "shared-services"])
def test_every_object_has_the_common_labels(cfg):
    t = tenant(cfg)
    objs = _all_objects(t, cfg)
    kinds = {o["kind"] for o in objs}
    assert kinds == {"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "Role", "RoleBinding",
                     "Ingress", "Secret"}
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["tenancy.dev/tenant"] == "client-abc", obj["metadata"]
        assert labels["tenancy.dev/component"], obj["metadata"]
        assert labels["app.kubernetes.io/managed-by"] == "tenant-operator", obj["metadata"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == t.namespace


def test_render_tenant_order_and_unique_keys():
    objs = render.render_tenant(tenant(), CFG_SHARED)
    assert objs[0]["kind"] == "Namespace"
    keys = [render.object_key(o) for o in objs]
    assert len(keys) == len(set(keys))
    assert ("v1", "Namespace", "", "tenant-client-abc") in keys
    assert ("networking.k8s.io/v1", "Ingress", "tenant-client-abc", naming.INGRESS) in keys
    components = [o["metadata"]["labels"]["tenancy.dev/component"] for o in objs]
    assert components == sorted(components, key=["namespace", "network", "quota", "rbac", "ingress"].index)


def test_rendering_is_deterministic():
    assert render.render_tenant(tenant(), CFG_SHARED) == render.render_tenant(tenant(), CFG_SHARED)


def test_every_unicode_text_round_trips_through_the_templates():
    """Seeded random text over all of Unicode (every plane, controls, BOM,
    private use; no lone surrogates, which no UTF-8 JSON can carry)."""
    import random

    from tenant_operator.render import _json
    rng = random.Random(20261130)
    planes = [(0x0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    for _ in range(2000):
        text = "".join(chr(rng.randint(*rng.choice(planes))) for _ in range(rng.randint(0, 12)))
        out = _json(text, sort_keys=True, ensure_ascii=True)
        assert out.isascii()
        assert yaml.load(out, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) == text, repr(text)
