"""A Tenant becomes its Kubernetes objects, converges on change, corrects
drift, and writes nothing when nothing changed (real API server + operator)."""

from __future__ import annotations

import subprocess

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from .conftest import unique, wait_for

PREMIUM = {
    "displayName": "Client ABC", "tier": "premium", "domains": ["app.client.example.com"],
    "billing": {"id": "sub_abc123", "costCenter": "CC-ABC-001"},
    "quota": {"pods": "60"},
    "ingress": {"className": "nginx", "clusterIssuer": "letsencrypt-prod", "service": "api-gateway", "port": 8100},
    "admins": [{"kind": "User", "name": "alice@client.example.com"}],
}


@pytest.fixture(scope="module")
def net(kube_config):
    return kubernetes.client.NetworkingV1Api(kube_config)


@pytest.fixture(scope="module")
def rbac(kube_config):
    return kubernetes.client.RbacAuthorizationV1Api(kube_config)


def _missing(fn, *args) -> bool:
    try:
        fn(*args)
        return False
    except ApiException as exc:
        return exc.status == 404


def test_premium_tenant_objects(tenants, core, net, rbac):
    name = tenants.create(unique("prem"), **PREMIUM)
    t = tenants.wait_phase(name, "Ready")
    ns = f"tenant-{name}"
    assert t["status"]["namespace"] == ns
    # The status says who wrote it: the operator's field manager, not the client library's default.
    status_managers = {m["manager"] for m in t["metadata"]["managedFields"] if m.get("subresource") == "status"}
    assert "tenant-operator" in status_managers and "OpenAPI-Generator" not in status_managers, status_managers
    conds = {c["type"]: c for c in t["status"]["conditions"]}
    for ctype in ("Ready", "NamespaceReady", "NetworkReady", "QuotaReady", "IngressReady"):
        assert conds[ctype]["status"] == "True", conds[ctype]
        assert conds[ctype]["observedGeneration"] == t["metadata"]["generation"]
        assert conds[ctype]["lastTransitionTime"]

    labels = core.read_namespace(ns).metadata.labels
    assert labels["tenancy.dev/tenant"] == name
    assert labels["tenancy.dev/tier"] == "premium"
    assert labels["tenancy.dev/billing-id"] == "sub_abc123"
    assert labels["tenancy.dev/cost-center"] == "CC-ABC-001"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert core.read_namespace(ns).metadata.owner_references is None   # never a GC dependent of the Tenant

    policies = {p.metadata.name for p in net.list_namespaced_network_policy(ns).items}
    assert {"default-deny-all", "allow-same-namespace", "allow-from-ingress-controller", "allow-dns"} <= policies
    quota = core.read_namespaced_resource_quota("tenant-quota", ns)
    assert quota.spec.hard["requests.cpu"] == "4"
    assert quota.spec.hard["limits.memory"] == "16Gi"
    assert quota.spec.hard["pods"] == "60"                     # spec.quota override
    assert quota.spec.hard["services.loadbalancers"] == "1"
    limits = core.read_namespaced_limit_range("tenant-limits", ns).spec.limits[0]
    assert limits.type == "Container" and limits.max["cpu"] == "4"

    role = rbac.read_namespaced_role("tenant-admin", ns)
    for rule in role.rules:
        assert "secrets" not in rule.resources
        assert set(rule.verbs) <= {"get", "list", "watch"}
    binding = rbac.read_namespaced_role_binding("tenant-admin", ns)
    assert [(s.kind, s.name) for s in binding.subjects] == [("User", "alice@client.example.com")]

    ing = net.read_namespaced_ingress("tenant-ingress", ns)
    assert [r.host for r in ing.spec.rules] == ["app.client.example.com"]
    assert ing.spec.tls[0].secret_name == f"{name}-tls"
    assert ing.metadata.annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert ing.spec.rules[0].http.paths[0].backend.service.port.number == 8100

    out = subprocess.run(["kubectl", "get", "tenant", name], capture_output=True, text=True, check=True).stdout
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "TIER", "NAMESPACE", "READY", "PHASE", "AGE"]
    assert row.split()[:5] == [name, "premium", ns, "True", "Ready"]

    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    assert any(e.reason == "Applied" for e in events)


def test_spec_change_converges_and_prunes(tenants, core, net, rbac):
    name = tenants.create(unique("chg"), **PREMIUM)
    tenants.wait_phase(name, "Ready")
    ns = f"tenant-{name}"
    tenants.patch(name, {"spec": {"tier": "business", "domains": ["app.client.example.com", "shop.client.example.com"],
                                  "quota": None}})
    tenants.wait_phase(name, "Ready")
    wait_for(lambda: core.read_namespaced_resource_quota("tenant-quota", ns).spec.hard["requests.cpu"] == "16",
             30, what="quota of the business tier")
    assert core.read_namespaced_resource_quota("tenant-quota", ns).spec.hard["pods"] == "200"
    assert core.read_namespace(ns).metadata.labels["tenancy.dev/tier"] == "business"
    hosts = [r.host for r in net.read_namespaced_ingress("tenant-ingress", ns).spec.rules]
    assert hosts == ["app.client.example.com", "shop.client.example.com"]

    # Emptying admins and domains prunes the RoleBinding and the Ingress (found by label).
    tenants.patch(name, {"spec": {"admins": [], "domains": [], "ingress": None}})
    tenants.wait_phase(name, "Ready")
    wait_for(lambda: _missing(rbac.read_namespaced_role_binding, "tenant-admin", ns), 30, what="RoleBinding pruned")
    wait_for(lambda: _missing(net.read_namespaced_ingress, "tenant-ingress", ns), 30, what="Ingress pruned")
    assert tenants.condition(name, "IngressReady")["reason"] == "NotRequested"


def test_drift_is_corrected(tenants, core, net):
    name = tenants.create(unique("drift"), **PREMIUM)
    tenants.wait_phase(name, "Ready")
    ns = f"tenant-{name}"
    net.delete_namespaced_network_policy("default-deny-all", ns)
    core.patch_namespaced_resource_quota("tenant-quota", ns, {"spec": {"hard": {"requests.cpu": "999"}}})
    wait_for(lambda: not _missing(net.read_namespaced_network_policy, "default-deny-all", ns), 60,
             what="deleted NetworkPolicy restored")
    wait_for(lambda: core.read_namespaced_resource_quota("tenant-quota", ns).spec.hard["requests.cpu"] == "4", 60,
             what="edited ResourceQuota restored")


def _versions(tenants, core, net, rbac, name: str) -> dict:
    ns = f"tenant-{name}"
    out = {"tenant": tenants.get(name)["metadata"]["resourceVersion"],
           "namespace": core.read_namespace(ns).metadata.resource_version}
    for p in net.list_namespaced_network_policy(ns).items:
        out[f"np/{p.metadata.name}"] = p.metadata.resource_version
    for q in core.list_namespaced_resource_quota(ns).items:
        out[f"quota/{q.metadata.name}"] = q.metadata.resource_version   # status usage excluded: spec only changes
    for lr in core.list_namespaced_limit_range(ns).items:
        out[f"limits/{lr.metadata.name}"] = lr.metadata.resource_version
    for s in core.list_namespaced_secret(ns).items:
        out[f"secret/{s.metadata.name}"] = s.metadata.resource_version
    for r in rbac.list_namespaced_role_binding(ns).items:
        out[f"rb/{r.metadata.name}"] = r.metadata.resource_version
    for i in net.list_namespaced_ingress(ns).items:
        out[f"ing/{i.metadata.name}"] = i.metadata.resource_version
    return out


def test_idle_operator_writes_nothing(tenants, core, net, rbac, operator):
    name = tenants.create(unique("idle"), **PREMIUM)
    tenants.wait_phase(name, "Ready")
    ns = f"tenant-{name}"
    # The quota controller fills in usage once; let that settle before measuring.
    wait_for(lambda: core.read_namespaced_resource_quota("tenant-quota", ns).status.used is not None, 30,
             what="quota usage computed")
    before = _versions(tenants, core, net, rbac, name)
    writes_before = operator.metric("tenant_operator_api_writes_total")
    skipped_before = operator.metric("tenant_operator_skipped_passes_total")
    events_before = len(core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items)
    # Idle window: at least three drift checks of the tenant (drift interval 5 s in tests), each
    # answered by the fingerprint of its last pass (a resync pass may come too: it writes nothing either).
    wait_for(lambda: operator.metric("tenant_operator_skipped_passes_total") >= skipped_before + 3, 60,
             what="three idle drift checks")
    assert operator.metric("tenant_operator_api_writes_total") == writes_before
    assert _versions(tenants, core, net, rbac, name) == before
    events_after = len(core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items)
    assert events_after == events_before


def _selects(selector, labels: dict) -> bool:
    if selector is None:
        return True
    for k, v in (selector.match_labels or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.match_expressions or []:
        if expr.operator == "In" and labels.get(expr.key) not in expr.values:
            return False
        if expr.operator == "Exists" and expr.key not in labels:
            return False
    return True


def test_two_tenants_are_isolated(tenants, core, net):
    a = tenants.create(unique("iso-a"), tier="standard")
    b = tenants.create(unique("iso-b"), tier="standard")
    tenants.wait_phase(a, "Ready")
    tenants.wait_phase(b, "Ready")
    for me, other in ((a, b), (b, a)):
        ns = f"tenant-{me}"
        other_labels = core.read_namespace(f"tenant-{other}").metadata.labels
        policies = net.list_namespaced_network_policy(ns).items
        deny = next(p for p in policies if p.metadata.name == "default-deny-all")
        assert sorted(deny.spec.policy_types) == ["Egress", "Ingress"] and not deny.spec.ingress
        for p in policies:
            for rule in p.spec.ingress or []:
                for peer in rule._from or []:
                    # A bare podSelector means "this namespace"; any namespaceSelector must not match the other tenant.
                    if peer.namespace_selector is not None:
                        assert not _selects(peer.namespace_selector, other_labels), (p.metadata.name, peer)
            for rule in p.spec.egress or []:
                for peer in rule.to or []:
                    if peer.namespace_selector is not None:
                        assert not _selects(peer.namespace_selector, other_labels), (p.metadata.name, peer)


def test_suspend_and_resume(tenants, net):
    name = tenants.create(unique("susp"), **PREMIUM)
    tenants.wait_phase(name, "Ready")
    ns = f"tenant-{name}"
    tenants.patch(name, {"spec": {"suspended": True}})
    tenants.wait_phase(name, "Suspended")
    wait_for(lambda: _missing(net.read_namespaced_ingress, "tenant-ingress", ns), 30, what="ingress removed")
    assert tenants.condition(name, "IngressReady")["reason"] == "Suspended"
    tenants.patch(name, {"spec": {"suspended": False}})
    tenants.wait_phase(name, "Ready")
    wait_for(lambda: not _missing(net.read_namespaced_ingress, "tenant-ingress", ns), 30, what="ingress restored")


def test_operator_rejects_what_schema_cannot(tenants):
    """placement.mysql names a server the config does not have: status says which field."""
    name = tenants.create(unique("inv"), tier="standard", databases=["auth"], placement={"mysql": "nope"})
    t = tenants.wait_phase(name, "Invalid")
    ready = next(c for c in t["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.placement.mysql" in ready["message"]


def test_a_status_write_from_a_stale_view_is_refused(tenants):
    """The reconciler's status writes carry the resourceVersion they were
    computed from; the API server must refuse one the Tenant has moved past."""
    from tenant_operator.kube.client import Kube
    name = tenants.create(unique("stale"))
    seen = tenants.wait_phase(name, "Ready")
    tenants.patch(name, {"metadata": {"labels": {"example.com/touched": "yes"}}})
    with pytest.raises(ApiException) as refused:
        Kube.from_environment("tenant-operator").patch_status(
            "Tenant", name, {"phase": "Degraded"}, resource_version=seen["metadata"]["resourceVersion"])
    assert refused.value.status == 409
    assert tenants.get(name)["status"]["phase"] == "Ready"
