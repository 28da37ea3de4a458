"""Egress to the backends: derived from the operator's configuration when it is
loaded (IP, Service name, resolved host, explicit override), rendered as the
`allow-backends` NetworkPolicy of exactly the backends a tenant uses, and
applied and pruned by the reconciler like the other policies."""

from __future__ import annotations

import logging

import pytest
from tenant_operator import config, render
from tenant_operator.errors import ConfigError

from .samples import PREMIUM, parse_with
from .test_reconciler import body_with_status, make_world
from .test_reconciler import tenant as tenant_body

POLICY = "allow-backends"
MYSQL = {"default": "a", "servers": {
    "a": {"host": "10.1.0.5", "port": 3306},
    "b": {"host": "mysql-b.db-b.svc.cluster.local", "port": 3307},
}}
STORE = {"endpoint": "http://minio.storage.svc:9000"}
RABBIT = {"managementUrl": "http://rabbitmq.messaging:15672", "amqpHost": "rabbitmq.messaging", "amqpPort": 5672}
FULL = {"mysql": MYSQL, "objectStorage": STORE, "rabbitmq": RABBIT}


def policies(cfg, **changes) -> dict[str, dict]:
    t = parse_with(PREMIUM, cfg, **changes)
    return {p["metadata"]["name"]: p for p in render.network_policies(t, cfg)}


def backends_policy(cfg, **changes) -> dict:
    return policies(cfg, **changes)[POLICY]


def rules(cfg, **changes) -> list[dict]:
    return backends_policy(cfg, **changes)["spec"]["egress"]


def rule_for_port(cfg, port: int, **changes) -> dict:
    (rule,) = [r for r in rules(cfg, **changes) if {"protocol": "TCP", "port": port} in r["ports"]]
    return rule


# --- derivation --------------------------------------------------------------------------------

def test_ip_literal_becomes_a_single_address_block(resolver):
    cfg = config.from_dict(FULL)
    rule = rule_for_port(cfg, 3306)
    assert rule == {"to": [{"ipBlock": {"cidr": "10.1.0.5/32"}}], "ports": [{"protocol": "TCP", "port": 3306}]}
    assert resolver.asked == []


def test_ipv6_literal_becomes_a_128_block():
    cfg = config.from_dict({"mysql": {"servers": {"a": {"host": "2001:db8::10", "port": 3306}}},
                            "objectStorage": {"endpoint": "https://[2001:db8::20]:9443"}})
    assert rule_for_port(cfg, 3306)["to"] == [{"ipBlock": {"cidr": "2001:db8::10/128"}}]
    assert rule_for_port(cfg, 9443)["to"] == [{"ipBlock": {"cidr": "2001:db8::20/128"}}]


@pytest.mark.parametrize("host", ["mysql-b.db-b.svc.cluster.local", "mysql-b.db-b.svc", "mysql-b.db-b",
                                  "MySQL-B.DB-B.svc.cluster.local."])
def test_service_name_becomes_its_namespace_and_nothing_else(resolver, host):
    cfg = config.from_dict({"mysql": {"servers": {"b": {"host": host, "port": 3307}}}})
    rule = rule_for_port(cfg, 3307)
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db-b"}}}]
    assert resolver.asked == []


def test_service_name_under_another_cluster_domain(resolver):
    resolver.answers["mysql.db.svc.cluster.local"] = ["10.96.0.20"]
    cfg = config.from_dict({"clusterDomain": "corp.internal",
                            "mysql": {"servers": {"a": {"host": "mysql.db.svc.corp.internal"}}}})
    assert rule_for_port(cfg, 3306)["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}}}]
    # The default domain is then an ordinary name, looked up like any other.
    cfg = config.from_dict({"clusterDomain": "corp.internal",
                            "mysql": {"servers": {"a": {"host": "mysql.db.svc.cluster.local"}}}})
    assert rule_for_port(cfg, 3306)["to"] == [{"ipBlock": {"cidr": "10.96.0.20/32"}}]


def test_other_host_is_resolved_at_load_with_a_warning(resolver, caplog):
    resolver.answers["db.example.net"] = ["10.2.0.8", "10.2.0.7", "2001:db8::7", "10.2.0.7"]
    with caplog.at_level(logging.WARNING):
        cfg = config.from_dict({"mysql": {"servers": {"a": {"host": "db.example.net"}}}})
    assert resolver.asked == ["db.example.net"]
    assert rule_for_port(cfg, 3306)["to"] == [{"ipBlock": {"cidr": "10.2.0.7/32"}},
                                              {"ipBlock": {"cidr": "10.2.0.8/32"}},
                                              {"ipBlock": {"cidr": "2001:db8::7/128"}}]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "mysql.servers.a.host" in message and "db.example.net" in message
    assert "mysql.servers.a.egress" in message            # recommends the override
    # Rendering looks nothing up: the addresses are the ones found at load.
    resolver.answers["db.example.net"] = ["10.9.9.9"]
    asked = len(resolver.asked)
    assert rule_for_port(cfg, 3306)["to"][0] == {"ipBlock": {"cidr": "10.2.0.7/32"}}
    assert len(resolver.asked) == asked


def test_public_address_is_what_tenants_reach(resolver):
    # The Secrets carry publicHost / publicEndpoint: the egress follows them, not the admin address.
    resolver.answers["s3.example.com"] = ["198.51.100.4"]
    cfg = config.from_dict({
        "mysql": {"servers": {"a": {"host": "10.1.0.5", "publicHost": "mysql.public-db.svc"}}},
        "objectStorage": {"endpoint": "http://10.3.0.1:9000", "publicEndpoint": "https://s3.example.com"},
        "rabbitmq": {**RABBIT, "publicHost": "192.0.2.50"},
    })
    assert rule_for_port(cfg, 3306)["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "public-db"}}}]
    assert rule_for_port(cfg, 443)["to"] == [{"ipBlock": {"cidr": "198.51.100.4/32"}}]
    assert rule_for_port(cfg, 5672)["to"] == [{"ipBlock": {"cidr": "192.0.2.50/32"}}]
    assert not [r for r in rules(cfg) if {"protocol": "TCP", "port": 9000} in r["ports"]]


@pytest.mark.parametrize(("store", "port"), [
    ({"endpoint": "https://10.3.0.1"}, 443),
    ({"endpoint": "http://10.3.0.1"}, 80),
    ({"endpoint": "10.3.0.1"}, 443),                 # no scheme: https, as the clients assume
    ({"endpoint": "http://10.3.0.1:9000"}, 9000),
    ({"endpoint": "https://10.3.0.1:8443/"}, 8443),
])
def test_object_storage_port_from_the_endpoint(store, port):
    cfg = config.from_dict({"objectStorage": store})
    assert rule_for_port(cfg, port)["to"] == [{"ipBlock": {"cidr": "10.3.0.1/32"}}]
    assert len(rules(cfg)) == 1


def test_s3_without_endpoint_is_aws_s3_of_the_region(resolver):
    resolver.answers["s3.eu-west-3.amazonaws.com"] = ["52.95.154.1"]
    cfg = config.from_dict({"objectStorage": {"backend": "s3", "region": "eu-west-3"}})
    assert rule_for_port(cfg, 443)["to"] == [{"ipBlock": {"cidr": "52.95.154.1/32"}}]


# --- override ----------------------------------------------------------------------------------

def test_cidr_override_beats_derivation(resolver):
    cfg = config.from_dict({"mysql": {"servers": {"a": {
        "host": "db.example.net", "port": 3306, "egress": {"cidr": ["10.8.0.0/24", "2001:db8:8::/64"]}}}}})
    assert resolver.asked == []                     # not even looked up
    assert rule_for_port(cfg, 3306)["to"] == [{"ipBlock": {"cidr": "10.8.0.0/24"}},
                                              {"ipBlock": {"cidr": "2001:db8:8::/64"}}]


def test_namespace_override_with_pod_selector_and_ports(resolver):
    cfg = config.from_dict({
        "mysql": {"servers": {"a": {"host": "10.1.0.5", "egress": {
            "namespace": "databases", "podSelector": {"matchLabels": {"app": "mariadb"}}}}}},
        "rabbitmq": {**RABBIT, "amqpHost": "amqp.example.com", "egress": {"namespace": "messaging", "ports": [5671]}},
    })
    assert rule_for_port(cfg, 3306)["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
        "podSelector": {"matchLabels": {"app": "mariadb"}}}]   # one peer: those pods of that namespace
    assert rule_for_port(cfg, 5671)["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "messaging"}}}]
    assert resolver.asked == []


@pytest.mark.parametrize(("egress", "key"), [
    ({}, "mysql.servers.a.egress"),
    ("10.0.0.0/8", "mysql.servers.a.egress"),
    ({"cidr": "10.0.0.0/8", "namespace": "db"}, "mysql.servers.a.egress"),
    ({"cidr": "10.0.0.1/8"}, "mysql.servers.a.egress.cidr"),
    ({"cidr": ["10.0.0.0/8", "nope"]}, "mysql.servers.a.egress.cidr[1]"),
    ({"cidr": []}, "mysql.servers.a.egress.cidr"),
    ({"cidr": "10.0.0.0/8", "podSelector": {}}, "mysql.servers.a.egress.podSelector"),
    ({"namespace": "Not_A_Namespace"}, "mysql.servers.a.egress.namespace"),
    ({"namespace": "db", "podSelector": {"app": "x"}}, "mysql.servers.a.egress.podSelector"),
    ({"namespace": "db", "podSelector": {"matchLabels": {"app": 1}}},
     "mysql.servers.a.egress.podSelector.matchLabels"),
    ({"namespace": "db", "ports": []}, "mysql.servers.a.egress.ports"),
    ({"namespace": "db", "ports": [0]}, "mysql.servers.a.egress.ports"),
    ({"namespace": "db", "cidrs": ["10.0.0.0/8"]}, "mysql.servers.a.egress.cidrs"),
])
def test_bad_override_names_the_field(egress, key):
    with pytest.raises(ConfigError) as info:
        config.from_dict({"mysql": {"servers": {"a": {"host": "10.1.0.5", "egress": egress}}}})
    assert info.value.key == key


@pytest.mark.parametrize(("raw", "key"), [
    ({"mysql": {"servers": {"a": {"host": "db.nowhere.invalid"}}}}, "mysql.servers.a.host"),
    ({"mysql": {"servers": {"a": {"host": "10.1.0.5", "publicHost": "db.nowhere.invalid"}}}},
     "mysql.servers.a.publicHost"),
    ({"objectStorage": {"endpoint": "https://s3.nowhere.invalid"}}, "objectStorage.endpoint"),
    ({"objectStorage": {"endpoint": "http://10.3.0.1:9000", "publicEndpoint": "https://s3.nowhere.invalid"}},
     "objectStorage.publicEndpoint"),
    ({"rabbitmq": {**RABBIT, "amqpHost": "amqp.nowhere.invalid"}}, "rabbitmq.amqpHost"),
    ({"rabbitmq": {**RABBIT, "publicHost": "amqp.nowhere.invalid"}}, "rabbitmq.publicHost"),
])
def test_unresolvable_host_is_a_config_error_naming_the_field(resolver, raw, key):
    with pytest.raises(ConfigError) as info:
        config.from_dict(raw)
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"config {key}:") and "nowhere.invalid" in message and "does not resolve" in message
    assert key.rsplit(".", 1)[0] + ".egress" in message     # suggests the override


def test_unresolvable_host_is_fine_with_an_override(resolver):
    cfg = config.from_dict({"mysql": {"servers": {"a": {"host": "db.nowhere.invalid",
                                                        "egress": {"cidr": "10.5.0.0/16"}}}}})
    assert cfg.mysql_server("a").egress.cidrs == ("10.5.0.0/16",)


def test_bad_endpoint_and_cluster_domain_are_config_errors():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"objectStorage": {"endpoint": "ftp://10.3.0.1"}})
    assert info.value.key == "objectStorage.endpoint"
    with pytest.raises(ConfigError) as info:
        config.from_dict({"clusterDomain": "not a domain"})
    assert info.value.key == "clusterDomain"


# --- which backends a tenant gets --------------------------------------------------------------

def test_premium_tenant_gets_all_three_backends():
    cfg = config.from_dict(FULL)
    ports = sorted(p["port"] for r in rules(cfg) for p in r["ports"])
    assert ports == [3306, 5672, 9000]
    assert rule_for_port(cfg, 9000)["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}]
    assert rule_for_port(cfg, 5672)["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "messaging"}}}]


def test_tenant_without_vhost_or_buckets_gets_no_rule_for_them():
    cfg = config.from_dict(FULL)
    only_db = rules(cfg, messaging=None, objectStorage=None, backup={"enabled": False})
    assert [p["port"] for r in only_db for p in r["ports"]] == [3306]
    # Without a vhost but with backups: the object storage stays (the backup Jobs write there).
    no_vhost = rules(cfg, messaging=None, objectStorage=None)
    assert sorted(p["port"] for r in no_vhost for p in r["ports"]) == [3306, 9000]
    # Buckets but no databases: no MySQL.
    no_db = rules(cfg, databases=[], messaging=None)
    assert [p["port"] for r in no_db for p in r["ports"]] == [9000]


def test_tenant_using_no_backend_gets_no_policy():
    cfg = config.from_dict(FULL)
    assert POLICY not in policies(cfg, databases=[], messaging=None, objectStorage=None)
    # Nor when the operator has no backend configured at all.
    assert POLICY not in policies(config.from_dict({}))


def test_tenant_on_server_b_gets_no_egress_to_server_a():
    cfg = config.from_dict(FULL)
    on_b = backends_policy(cfg, placement={"mysql": "b"})
    text = repr(on_b)
    assert "10.1.0.5" not in text and "3306" not in text
    assert rule_for_port(cfg, 3307, placement={"mysql": "b"})["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db-b"}}}]
    on_a = backends_policy(cfg, placement={"mysql": "a"})
    assert "db-b" not in repr(on_a) and "3307" not in repr(on_a)
    assert backends_policy(cfg) == on_a                     # no placement: mysql.default (a)


def test_backends_sharing_one_target_get_one_rule():
    cfg = config.from_dict({"mysql": {"servers": {"a": {"host": "10.1.0.5", "port": 9000}}},
                            "objectStorage": {"endpoint": "http://10.1.0.5:9000"}})
    assert rules(cfg) == [{"to": [{"ipBlock": {"cidr": "10.1.0.5/32"}}],
                           "ports": [{"protocol": "TCP", "port": 9000}]}]


def test_policy_is_egress_only_for_every_pod_with_the_same_ownership_labels():
    cfg = config.from_dict(FULL)
    found = policies(cfg)
    p = found[POLICY]
    assert p["apiVersion"] == "networking.k8s.io/v1" and p["kind"] == "NetworkPolicy"
    assert p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Egress"]
    assert "ingress" not in p["spec"]
    deny = found["default-deny-all"]
    assert p["metadata"]["labels"] == deny["metadata"]["labels"]
    assert p["metadata"]["labels"]["tenancy.dev/component"] == "network"
    assert p["metadata"]["namespace"] == deny["metadata"]["namespace"]
    # Shared services stay a policy of their own, for extra targets.
    shared = config.from_dict({**FULL, "sharedServices": [{"namespace": "monitoring", "ports": [9090]}]})
    assert {"allow-shared-services", POLICY} <= set(policies(shared))


# --- reconciler: applied and pruned like the other policies ----------------------------------

def test_reconciler_applies_then_prunes_the_policy():
    kube, rec, _ = make_world()       # MySQL server `main` at db.shared: the Service's namespace `shared`
    key = ("networking.k8s.io/v1", "NetworkPolicy", "tenant-acme", POLICY)
    rec.reconcile(tenant_body(), {})
    assert ("apply", "NetworkPolicy", POLICY) in kube.writes
    assert kube.objects[key]["spec"]["egress"][0]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shared"}}}]
    kube.writes.clear()
    rec.reconcile(body_with_status(kube, tenant_body()), dict(kube.objects))
    assert ("apply", "NetworkPolicy", POLICY) not in kube.writes       # unchanged: not sent again

    for backend in rec.backends:
        backend.forget("acme")
    rec.reconcile(body_with_status(kube, tenant_body(databases=[])), dict(kube.objects))
    assert ("delete", "NetworkPolicy", POLICY) in kube.writes
    assert key not in kube.objects
    assert ("networking.k8s.io/v1", "NetworkPolicy", "tenant-acme", "default-deny-all") in kube.objects


# --- several RabbitMQ servers and object stores: only the placed ones -------------------------------

SEVERAL = {"mysql": MYSQL,
           "objectStorage": {"servers": {"one": {"endpoint": "http://10.3.0.1:9000"},
                                         "two": {"endpoint": "http://10.3.0.2:9002"}}},
           "rabbitmq": {"servers": {"a": {"managementUrl": "http://10.2.0.1:15672", "amqpHost": "10.2.0.1"},
                                    "b": {"managementUrl": "http://10.2.0.2:15672", "amqpHost": "10.2.0.2",
                                          "amqpPort": 5673}}}}


def _policy_for(cfg, placed: dict, recorded: dict | None = None) -> str:
    from tenant_operator import spec as spec_mod

    from .samples import PREMIUM
    obj = {**PREMIUM, "spec": {**PREMIUM["spec"], "placement": placed}}
    if recorded is not None:
        obj["status"] = {"placement": recorded}
    t = spec_mod.parse(obj, cfg)
    return repr({p["metadata"]["name"]: p for p in render.network_policies(t, cfg)}[POLICY])


def test_tenant_gets_egress_only_to_its_placed_rabbitmq_and_object_store():
    cfg = config.from_dict(SEVERAL)
    on_b = _policy_for(cfg, {"rabbitmq": "b", "objectStorage": "two"})
    assert "10.2.0.2/32" in on_b and "5673" in on_b and "10.3.0.2/32" in on_b and "9002" in on_b
    assert "10.2.0.1/32" not in on_b and "10.3.0.1/32" not in on_b
    # The defaults (first by name) without any placement.
    default = _policy_for(cfg, {})
    assert "10.2.0.1/32" in default and "10.3.0.1/32" in default
    assert "10.2.0.2" not in default and "10.3.0.2" not in default


def test_egress_follows_the_recorded_placement():
    cfg = config.from_dict(SEVERAL)
    recorded = _policy_for(cfg, {}, {"rabbitmq": "b", "objectStorage": "two", "mysql": "b"})
    assert "10.2.0.2/32" in recorded and "10.3.0.2/32" in recorded and "db-b" in recorded
    assert "10.2.0.1/32" not in recorded and "10.3.0.1/32" not in recorded and "10.1.0.5" not in recorded
