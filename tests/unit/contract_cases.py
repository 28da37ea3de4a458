"""The input contract, as data: Tenant specs and where each must be stopped.

Shared by tests/unit/test_contract.py (the operator's parser refuses each
malformed spec, naming the field) and tests/integration/test_input_contract.py
(the API server refuses the same spec with a server-side dry run, or, where
only the operator can know, the Tenant turns Invalid before any write).

`api` is a text the API server's refusal must contain (the field as the API
server names it); None marks what only the operator can know (operator
config: servers, reserved names, policy, the tier's own limits)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    spec: dict
    field: str                    # SpecError path the operator reports
    api: str | None               # in the API server's refusal; None: the operator's alone
    name: str = ""                # metadata.name override (default: a unique name)
    extra: dict = field(default_factory=dict)


def _spec(**fields) -> dict:
    return {"tier": "standard", **fields}


MALFORMED: list[Case] = [
    # names
    Case("name-uppercase", _spec(), "metadata.name", "metadata.name", name="Client-ABC"),
    Case("name-too-long", _spec(), "metadata.name", "at most 40 characters", name="a" * 41),
    Case("name-s3-reserved-prefix", _spec(), "metadata.name", "xn--", name="xn--acme"),
    # wrong types
    Case("tier-number", _spec(tier=3), "spec.tier", "spec.tier"),
    Case("tier-unknown", _spec(tier="gold"), "spec.tier", "spec.tier"),
    Case("databases-string", _spec(databases="auth"), "spec.databases", "spec.databases"),
    Case("display-name-list", _spec(displayName=["x"]), "spec.displayName", "spec.displayName"),
    Case("suspended-string", _spec(suspended="yes"), "spec.suspended", "spec.suspended"),
    Case("quota-giB-bool", _spec(objectStorage={"quotaGiB": True}), "spec.objectStorage.quotaGiB",
         "spec.objectStorage.quotaGiB"),
    Case("port-string", _spec(domains=["a.example.com"], ingress={"port": "80"}), "spec.ingress.port",
         "spec.ingress.port"),
    Case("admin-string", _spec(admins=["alice"]), "spec.admins[0]", "spec.admins[0]"),
    Case("limits-section-string", _spec(limits={"max": "1"}), "spec.limits.max", "spec.limits.max"),
    # huge lists
    Case("databases-21", _spec(databases=[f"s{i}" for i in range(21)]), "spec.databases", "spec.databases"),
    Case("domains-51", _spec(domains=[f"h{i}.example.com" for i in range(51)]), "spec.domains", "spec.domains"),
    Case("queues-51", _spec(messaging={"queues": [f"q{i}" for i in range(51)]}), "spec.messaging.queues",
         "spec.messaging.queues"),
    Case("admins-51", _spec(admins=[{"name": f"u{i}"} for i in range(51)]), "spec.admins", "spec.admins"),
    Case("quota-31-keys", _spec(quota={f"count/k{i}.example": "1" for i in range(31)}), "spec.quota", "spec.quota"),
    # long and non-ASCII text
    Case("display-name-129", _spec(displayName="x" * 129), "spec.displayName", "spec.displayName"),
    Case("display-name-129-non-ascii", _spec(displayName="é" * 129), "spec.displayName", "spec.displayName"),
    Case("billing-id-non-ascii", _spec(billing={"id": "café"}), "spec.billing.id", "spec.billing.id"),
    Case("cost-center-64", _spec(billing={"costCenter": "x" * 64}), "spec.billing.costCenter",
         "spec.billing.costCenter"),
    # invalid names
    Case("database-name", _spec(databases=["auth", "Bad_Name"]), "spec.databases[1]", "spec.databases[1]"),
    Case("database-duplicate", _spec(databases=["auth", "orders", "auth"]), "spec.databases[2]",
         "spec.databases[2]"),
    Case("database-25-chars", _spec(databases=["a" * 25]), "spec.databases[0]", "spec.databases[0]"),
    Case("domain-space", _spec(domains=["ok.example.com", "not a domain"]), "spec.domains[1]", "spec.domains[1]"),
    Case("domain-duplicate", _spec(domains=["a.example.com", "a.example.com"]), "spec.domains[1]",
         "spec.domains[1]"),
    Case("queue-uppercase", _spec(messaging={"queues": ["Orders"]}), "spec.messaging.queues[0]",
         "spec.messaging.queues[0]"),
    Case("bucket-dot", _spec(objectStorage={"buckets": ["my.bucket"]}), "spec.objectStorage.buckets[0]",
         "spec.objectStorage.buckets[0]"),
    Case("bucket-backups", _spec(objectStorage={"buckets": ["media", "backups"]}), "spec.objectStorage.buckets",
         "'backups' is reserved"),
    Case("service-name", _spec(domains=["a.example.com"], ingress={"service": "Api_Gateway"}),
         "spec.ingress.service", "spec.ingress.service"),
    Case("ingress-class", _spec(domains=["a.example.com"], ingress={"className": "Bad Class!"}),
         "spec.ingress.className", "spec.ingress.className"),
    Case("cluster-issuer", _spec(domains=["a.example.com"], ingress={"clusterIssuer": "Bad Issuer"}),
         "spec.ingress.clusterIssuer", "spec.ingress.clusterIssuer"),
    Case("admin-kind", _spec(admins=[{"name": "bob"}, {"kind": "Robot", "name": "r2"}]), "spec.admins[1].kind",
         "spec.admins[1].kind"),
    Case("admin-no-name", _spec(admins=[{"kind": "User"}]), "spec.admins[0].name", "spec.admins[0].name"),
    Case("admin-sa-no-namespace", _spec(admins=[{"kind": "ServiceAccount", "name": "ci"}]),
         "spec.admins[0].namespace", "needs a namespace"),
    Case("admin-sa-bad-name", _spec(admins=[{"kind": "ServiceAccount", "name": "Bad Name!", "namespace": "ci"}]),
         "spec.admins[0].name", "valid ServiceAccount name"),
    Case("admin-sa-bad-namespace", _spec(admins=[{"kind": "ServiceAccount", "name": "ci", "namespace": "CI!"}]),
         "spec.admins[0].namespace", "spec.admins[0].namespace"),
    # bad quantities
    Case("quota-word", _spec(quota={"pods": "lots"}), "spec.quota.pods", "spec.quota.pods"),
    Case("quota-negative-string", _spec(quota={"pods": "-1"}), "spec.quota.pods", "spec.quota.pods"),
    Case("quota-negative-int", _spec(quota={"pods": -5}), "spec.quota.pods", "spec.quota.pods"),
    Case("quota-unknown-key", _spec(quota={"foo": "1"}), "spec.quota.foo", "spec.quota"),
    Case("quota-limits-storage", _spec(quota={"limits.storage": "1Gi"}), "spec.quota.limits.storage", "spec.quota"),
    Case("quota-key-case", _spec(quota={"Bad_Key": "1"}), "spec.quota.Bad_Key", "spec.quota"),
    Case("limit-word", _spec(limits={"default": {"cpu": "one"}}), "spec.limits.default.cpu",
         "spec.limits.default.cpu"),
    Case("limit-negative-int", _spec(limits={"max": {"cpu": -1}}), "spec.limits.max.cpu", "spec.limits.max.cpu"),
    Case("limit-min-above-max", _spec(limits={"min": {"memory": "2Gi"}, "max": {"memory": "1Gi"}}),
         "spec.limits.min.memory", "min must not be above max"),
    Case("bucket-quota-negative", _spec(objectStorage={"quotaGiB": -1}), "spec.objectStorage.quotaGiB",
         "spec.objectStorage.quotaGiB"),
    Case("port-70000", _spec(domains=["a.example.com"], ingress={"port": 70000}), "spec.ingress.port",
         "spec.ingress.port"),
    Case("retention-5000", _spec(backup={"retention": {"daily": 5000}}), "spec.backup.retention.daily",
         "spec.backup.retention.daily"),
    Case("retention-nothing", _spec(backup={"retention": {"daily": 0, "weekly": 0, "monthly": 0}}),
         "spec.backup.retention", "retention keeps nothing"),
    # bad cron
    Case("cron-word", _spec(backup={"schedule": "daily"}), "spec.backup.schedule", "spec.backup.schedule"),
    Case("cron-six-fields", _spec(backup={"schedule": "0 2 * * * *"}), "spec.backup.schedule",
         "spec.backup.schedule"),
    Case("cron-out-of-range", _spec(backup={"schedule": "99 99 * * *"}), "spec.backup.schedule",
         "spec.backup.schedule"),
    Case("cron-hour-24", _spec(backup={"schedule": "0 24 * * *"}), "spec.backup.schedule", "spec.backup.schedule"),
    Case("cron-step-0", _spec(backup={"schedule": "*/0 * * * *"}), "spec.backup.schedule", "spec.backup.schedule"),
    # bad durations
    Case("grace-word", _spec(deletion={"gracePeriod": "forever"}), "spec.deletion.gracePeriod",
         "spec.deletion.gracePeriod"),
    Case("grace-negative-int", _spec(deletion={"gracePeriod": -5}), "spec.deletion.gracePeriod",
         "spec.deletion.gracePeriod"),
    Case("grace-empty", _spec(deletion={"gracePeriod": ""}), "spec.deletion.gracePeriod",
         "spec.deletion.gracePeriod"),
    Case("grace-overflow", _spec(deletion={"gracePeriod": "99999999d"}), "spec.deletion.gracePeriod",
         "spec.deletion.gracePeriod"),
    Case("grace-over-ten-years", _spec(deletion={"gracePeriod": "3651d"}), "spec.deletion.gracePeriod",
         "at most 3650d"),
    Case("grace-hours-over-ten-years", _spec(deletion={"gracePeriod": "87600h1s"}), "spec.deletion.gracePeriod",
         "at most 3650d"),
    Case("deletion-policy", _spec(deletion={"policy": "Orphan"}), "spec.deletion.policy", "spec.deletion.policy"),
    Case("rotate-every-word", _spec(credentials={"rotateEvery": "quarterly"}), "spec.credentials.rotateEvery",
         "spec.credentials.rotateEvery"),
    Case("rotation-overlap-number", _spec(credentials={"rotationOverlap": 5}), "spec.credentials.rotationOverlap",
         "spec.credentials.rotationOverlap"),
    Case("rotate-every-over-ten-years", _spec(credentials={"rotateEvery": "3651d"}), "spec.credentials.rotateEvery",
         "at most 3650d"),
    Case("pod-security", _spec(podSecurity="lenient"), "spec.podSecurity", "spec.podSecurity"),
    # only the operator can know (its config)
    Case("placement-unknown", _spec(databases=["auth"], placement={"mysql": "decommissioned"}),
         "spec.placement.mysql", None),
    Case("reserved-operator-namespace", _spec(), "metadata.name", None, name="operator"),
    Case("limits-against-the-tier", _spec(limits={"min": {"cpu": "3"}}), "spec.limits.min.cpu", None),
    Case("policy-cluster-issuer", _spec(domains=["a.example.com"], ingress={"clusterIssuer": "internal-ca"}),
         "spec.ingress.clusterIssuer", None),
    Case("policy-privileged", _spec(podSecurity="privileged"), "spec.podSecurity", None),
    Case("policy-system-group", _spec(admins=[{"kind": "Group", "name": "system:unauthenticated"}]),
         "spec.admins[0].name", None),
    Case("policy-public-suffix-wildcard", _spec(domains=["*.co.uk"]), "spec.domains[0]", None),
    # Durations compared with each other (and with the operator's default overlap): the operator's check.
    Case("rotate-every-within-overlap", _spec(credentials={"rotateEvery": "30m"}), "spec.credentials.rotateEvery",
         None),
]

# Admitted by the API server and parsed by the operator: edges a careless
# validator would refuse.
VALID: list[Case] = [
    Case("emoji-display-name", _spec(displayName="Café 😀 — 東京 🚀"), "", ""),
    Case("display-name-128-non-ascii", _spec(displayName="é" * 128), "", ""),
    Case("extended-resource-quota", _spec(quota={"requests.nvidia.com/gpu": "2", "count/jobs.batch": 5,
                                                 "requests.hugepages-2Mi": "1Gi"}), "", ""),
    Case("quantity-exponent", _spec(quota={"requests.memory": "1e9", "limits.cpu": "+4"}), "", ""),
    Case("cron-names-and-question-mark", _spec(backup={"schedule": "30 1 ? JAN,jul mon-fri"}), "", ""),
    Case("grace-ten-years", _spec(deletion={"gracePeriod": "3650d"}), "", ""),
    Case("grace-mixed-units", _spec(deletion={"gracePeriod": "1d12h30m15s"}), "", ""),
    Case("rotation-90-days-overlap-30m", _spec(credentials={"rotateEvery": "2160h", "rotationOverlap": "30m"}),
         "", ""),
    Case("user-with-spaces", _spec(admins=[{"kind": "User", "name": "Alice Smith"}]), "", ""),
    Case("limits-in-order", _spec(limits={"min": {"cpu": "50m"}, "defaultRequest": {"cpu": "100m"},
                                          "default": {"cpu": 1}, "max": {"cpu": "2"}}), "", ""),
]
