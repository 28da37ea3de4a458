"""Tenant object -> a frozen, validated model with the tier's defaults applied.

The CRD schema lets the API server reject most bad input first; this module
re-checks everything (a Tenant can be rendered offline with `tenant-operator
render`, and defence in depth costs nothing). Every error is a SpecError whose
message starts with the field path, e.g. `spec.databases[2]: ...`. The platform's
policy (config `policy`: issuers, Pod Security levels, admins, quota maxima,
domains) is enforced here too, by the pure checks of policy.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tenant_operator import contract, naming, ownership, quantities
from tenant_operator.config import OperatorConfig
from tenant_operator.defaults import BUILT_IN, SERVICE_NAME, SpecDefaults
from tenant_operator.durations import parse_duration
from tenant_operator.errors import SpecError
from tenant_operator.policy import (
    POD_SECURITY_LEVELS,
    SUBJECT_KINDS,
    TenantPolicy,
    check_cluster_issuer,
    check_domains,
    check_pod_security,
    check_quota,
    check_subject,
)
from tenant_operator.quantities import QUOTA_KEYS
from tenant_operator.tiers import TIER_NAMES, merge

DNS_NAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
CRON = contract.CRON_RE
DELETION_POLICIES = ("Delete", "Retain")


@dataclass(frozen=True)
class Billing:
    id: str = ""
    cost_center: str = ""


@dataclass(frozen=True)
class ObjectStorage:
    buckets: tuple[str, ...] = ()
    quota_gib: int = 0


@dataclass(frozen=True)
class Messaging:
    queues: tuple[str, ...] = ()


# The model's defaults are the built-in ones (defaults.py); parse() fills unset
# fields from the config's `defaults` instead.
@dataclass(frozen=True)
class Ingress:
    enabled: bool = True
    class_name: str = BUILT_IN.ingress_class_name
    cluster_issuer: str = BUILT_IN.ingress_cluster_issuer
    service: str = BUILT_IN.ingress_service
    port: int = BUILT_IN.ingress_port


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class Retention:
    daily: int = BUILT_IN.retention_daily
    weekly: int = BUILT_IN.retention_weekly
    monthly: int = BUILT_IN.retention_monthly


@dataclass(frozen=True)
class Drills:
    """Scheduled recovery drills: the latest backups restored into scratch databases."""
    enabled: bool = BUILT_IN.drills_enabled
    schedule: str = BUILT_IN.drill_schedule


@dataclass(frozen=True)
class Backup:
    enabled: bool = True
    schedule: str = BUILT_IN.backup_schedule
    retention: Retention = field(default_factory=Retention)
    drills: Drills = field(default_factory=Drills)

    @property
    def drilled(self) -> bool:
        return self.enabled and self.drills.enabled


@dataclass(frozen=True)
class Deletion:
    grace_period: int = BUILT_IN.grace_period
    policy: str = "Delete"


@dataclass(frozen=True)
class Credentials:
    rotate_every: int = BUILT_IN.rotate_every           # seconds; 0: only the annotation rotates
    rotation_overlap: int = BUILT_IN.rotation_overlap   # seconds the previous credential keeps working


@dataclass(frozen=True)
class Tenant:
    name: str
    namespace: str
    tier: str
    display_name: str = ""
    domains: tuple[str, ...] = ()
    billing: Billing = field(default_factory=Billing)
    quota: dict[str, str] = field(default_factory=dict)        # effective ResourceQuota hard
    limits: dict[str, dict[str, str]] = field(default_factory=dict)  # effective LimitRange
    pod_security: str = "restricted"
    databases: tuple[str, ...] = ()
    # Servers (config names) the tenant is placed on (placement.py): spec.placement,
    # else status.placement, else the config's default server.
    mysql_server: str = ""
    rabbitmq_server: str = ""
    object_storage_server: str = ""
    mysql_max_user_connections: int = 20
    object_storage: ObjectStorage | None = None
    messaging: Messaging | None = None
    rabbitmq_max_connections: int = 50
    rabbitmq_max_queues: int = 50
    ingress: Ingress | None = None
    admins: tuple[Subject, ...] = ()
    backup: Backup = field(default_factory=Backup)
    suspended: bool = False
    deletion: Deletion = field(default_factory=Deletion)
    credentials: Credentials = field(default_factory=Credentials)
    generation: int = 0
    rotate_token: str = ""       # value of the rotate-credentials annotation
    purge_now: bool = False
    uid: str = ""                # metadata.uid: what every ownership marker records
    adopt_existing: bool = False  # annotation: adopt unmarked resources of the derived names
    skip_final_backup: bool = False   # annotation: purge even without a successful final backup

    @property
    def uses_object_storage(self) -> bool:
        """Buckets of its own, or a backups bucket for its databases' backups."""
        return self.object_storage is not None or (bool(self.databases) and self.backup.enabled)


# --- small typed readers ---------------------------------------------------------

def _get(obj: dict, key: str, path: str, kind: type | tuple, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, (int,)):
        raise SpecError(f"{path}.{key}", f"must be an integer, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        want = {"str": "a string", "list": "a list", "dict": "an object", "int": "an integer",
                "bool": "true or false"}.get(names, names)
        raise SpecError(f"{path}.{key}", f"must be {want}, got {type(value).__name__}")
    return value


def _at_most(values, path: str) -> None:
    limit = contract.MAX_ITEMS.get(path)
    if limit is not None and len(values) > limit:
        raise SpecError(path, f"has {len(values)} entries, at most {limit} are allowed")


def _names(values: list, path: str, pattern: re.Pattern, what: str) -> tuple[str, ...]:
    _at_most(values, path)
    seen: set[str] = set()
    for i, value in enumerate(values):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise SpecError(f"{path}[{i}]", f"{value!r} is not a valid {what}")
        if value in seen:
            raise SpecError(f"{path}[{i}]", f"duplicate entry {value!r}")
        seen.add(value)
    return tuple(values)


def _quantity(value: Any, path: str) -> Decimal:
    """The value of a Kubernetes quantity, comparable with another one."""
    try:
        return quantities.parse(value)
    except ValueError:
        raise SpecError(path, f"{value!r} is not a valid Kubernetes quantity (e.g. 500m, 2, 4Gi)") from None


# --- sections ----------------------------------------------------------------------

def _quota(spec: dict, tier_quota: dict, policy: TenantPolicy) -> dict[str, str]:
    overrides = _get(spec, "quota", "spec", dict, {})
    _at_most(overrides, "spec.quota")
    for key, value in overrides.items():
        if not QUOTA_KEYS.match(key):
            raise SpecError(f"spec.quota.{key}", "is not a ResourceQuota resource name")
        _quantity(value, f"spec.quota.{key}")
    quota = {k: str(v) for k, v in merge(tier_quota, overrides).items()}
    check_quota(quota, policy)
    return quota


def _limits(spec: dict, tier_limits: dict) -> dict[str, dict[str, str]]:
    overrides = _get(spec, "limits", "spec", dict, {})
    for section, values in overrides.items():
        if section not in ("default", "defaultRequest", "max", "min"):
            raise SpecError(f"spec.limits.{section}", "must be one of default, defaultRequest, max, min")
        if not isinstance(values, dict):
            raise SpecError(f"spec.limits.{section}", "must be an object of resource: quantity")
        for res, q in values.items():
            if res not in ("cpu", "memory", "ephemeral-storage"):
                raise SpecError(f"spec.limits.{section}.{res}", "must be cpu, memory or ephemeral-storage")
            _quantity(q, f"spec.limits.{section}.{res}")
    out = merge(tier_limits, overrides)
    _limits_in_order(out, overrides)
    return {s: {r: str(q) for r, q in v.items()} for s, v in out.items()}


# A LimitRange must hold min <= defaultRequest <= default <= max for each resource.
_LIMIT_ORDER = (("min", "defaultRequest"), ("min", "default"), ("defaultRequest", "default"),
                ("defaultRequest", "max"), ("default", "max"), ("min", "max"))


def _limits_in_order(effective: dict, overrides: dict) -> None:
    """The tier's limits with the Tenant's overrides must still make a valid
    LimitRange; the field named is the override that breaks it."""
    for low, high in _LIMIT_ORDER:
        for res in ("cpu", "memory", "ephemeral-storage"):
            a, b = (effective.get(low) or {}).get(res), (effective.get(high) or {}).get(res)
            if a is None or b is None or quantities.parse(a) <= quantities.parse(b):
                continue
            section = high if res in (overrides.get(high) or {}) else low
            raise SpecError(f"spec.limits.{section}.{res}", f"{low} {a} is above {high} {b} (a LimitRange needs "
                                                            "min <= defaultRequest <= default <= max)")


def _object_storage(spec: dict, tier: dict) -> ObjectStorage | None:
    raw = _get(spec, "objectStorage", "spec", dict)
    if raw is None:
        return None
    buckets = _names(_get(raw, "buckets", "spec.objectStorage", list, []),
                     "spec.objectStorage.buckets", naming.SERVICE_NAME,
                     "bucket name (a-z then a-z/0-9, at most 24 chars)")
    if "backups" in buckets:
        raise SpecError("spec.objectStorage.buckets", "'backups' is reserved for the backups bucket")
    quota = _get(raw, "quotaGiB", "spec.objectStorage", int, tier["objectStorage"]["quotaGiB"])
    if quota < 0:
        raise SpecError("spec.objectStorage.quotaGiB", "must be >= 0 (0 means no quota)")
    return ObjectStorage(buckets=buckets, quota_gib=quota)


def _ingress(spec: dict, domains: tuple[str, ...], policy: TenantPolicy, defaults: SpecDefaults) -> Ingress | None:
    raw = _get(spec, "ingress", "spec", dict)
    if raw is None:
        if not domains:
            return None
        raw = {}
    port = _get(raw, "port", "spec.ingress", int, defaults.ingress_port)
    if not 0 < port < 65536:
        raise SpecError("spec.ingress.port", f"must be between 1 and 65535, got {port}")
    svc = _get(raw, "service", "spec.ingress", str, defaults.ingress_service)
    if not SERVICE_NAME.fullmatch(svc):
        raise SpecError("spec.ingress.service", f"{svc!r} is not a valid Service name")
    issuer = _get(raw, "clusterIssuer", "spec.ingress", str, defaults.ingress_cluster_issuer)
    class_name = _get(raw, "className", "spec.ingress", str, defaults.ingress_class_name)
    for field_name, value in (("clusterIssuer", issuer), ("className", class_name)):
        if len(value) > 253 or not contract.DNS_SUBDOMAIN_RE.fullmatch(value):
            raise SpecError(f"spec.ingress.{field_name}", f"{value!r} is not a valid Kubernetes object name "
                                                          "(lowercase letters, digits, '-' and '.')")
    check_cluster_issuer(issuer, policy, defaulted=raw.get("clusterIssuer") is None)
    return Ingress(
        enabled=_get(raw, "enabled", "spec.ingress", bool, True),
        class_name=class_name,
        cluster_issuer=issuer,
        service=svc, port=port,
    )


def _admins(spec: dict, policy: TenantPolicy) -> tuple[Subject, ...]:
    out = []
    admins = _get(spec, "admins", "spec", list, [])
    _at_most(admins, "spec.admins")
    for i, raw in enumerate(admins):
        path = f"spec.admins[{i}]"
        if not isinstance(raw, dict):
            raise SpecError(path, "must be an object with kind and name")
        kind = raw.get("kind", "User")
        if kind not in SUBJECT_KINDS:
            raise SpecError(f"{path}.kind", f"must be one of {', '.join(SUBJECT_KINDS)}, got {kind!r}")
        name = raw.get("name")
        if not isinstance(name, str) or not name or len(name) > 253:
            raise SpecError(f"{path}.name", "is required (a user, group or service account name)")
        ns = raw.get("namespace", "")
        if kind == "ServiceAccount" and not ns:
            raise SpecError(f"{path}.namespace", "is required for a ServiceAccount subject")
        if kind == "ServiceAccount" and not contract.DNS_SUBDOMAIN_RE.fullmatch(name):
            raise SpecError(f"{path}.name", f"{name!r} is not a valid ServiceAccount name")
        if ns and (not isinstance(ns, str) or len(ns) > 63 or not contract.DNS_LABEL_RE.fullmatch(ns)):
            raise SpecError(f"{path}.namespace", f"{ns!r} is not a valid namespace name")
        check_subject(i, kind, name, ns, policy)
        out.append(Subject(kind=kind, name=name, namespace=ns))
    return tuple(out)


def _backup(spec: dict, defaults: SpecDefaults) -> Backup:
    raw = _get(spec, "backup", "spec", dict, {})
    schedule = _get(raw, "schedule", "spec.backup", str, defaults.backup_schedule)
    if not CRON.fullmatch(schedule):
        raise SpecError("spec.backup.schedule", f"{schedule!r} is not a cron schedule: 5 fields in range "
                                                "(minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC, "
                                                "weekday 0-7 or SUN-SAT) or a macro such as @daily")
    ret = _get(raw, "retention", "spec.backup", dict, {})
    values = {}
    for key, default in (("daily", defaults.retention_daily), ("weekly", defaults.retention_weekly),
                         ("monthly", defaults.retention_monthly)):
        v = _get(ret, key, "spec.backup.retention", int, default)
        if not 0 <= v <= 3650:
            raise SpecError(f"spec.backup.retention.{key}", f"must be between 0 and 3650, got {v}")
        values[key] = v
    if not any(values.values()):
        raise SpecError("spec.backup.retention", "keeps nothing: set at least one of daily, weekly, monthly")
    drills = _get(raw, "drills", "spec.backup", dict, {})
    drill_schedule = _get(drills, "schedule", "spec.backup.drills", str, defaults.drill_schedule)
    if not CRON.fullmatch(drill_schedule):
        raise SpecError("spec.backup.drills.schedule", f"{drill_schedule!r} is not a cron schedule: 5 fields in "
                                                       "range or a macro such as @weekly")
    return Backup(enabled=_get(raw, "enabled", "spec.backup", bool, True),
                  schedule=schedule, retention=Retention(**values),
                  drills=Drills(enabled=_get(drills, "enabled", "spec.backup.drills", bool, defaults.drills_enabled),
                                schedule=drill_schedule))


def _duration_field(raw: dict, key: str, path: str, default: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    field_path = f"{path}.{key}"
    if not isinstance(value, str) or not (value and contract.GRACE_PERIOD_RE.fullmatch(value)):
        raise SpecError(field_path, f"invalid duration {value!r}: use e.g. 2160h, 90d, 1h30m, 45s")
    seconds = parse_duration(value)
    if seconds > contract.MAX_GRACE_SECONDS:
        raise SpecError(field_path, f"{value!r} is longer than the maximum of 3650d (10 years)")
    return seconds


def _credentials(spec: dict, defaults: SpecDefaults) -> Credentials:
    raw = _get(spec, "credentials", "spec", dict, {})
    every = _duration_field(raw, "rotateEvery", "spec.credentials", defaults.rotate_every)
    overlap = _duration_field(raw, "rotationOverlap", "spec.credentials", defaults.rotation_overlap)
    if every and every <= overlap:
        raise SpecError("spec.credentials.rotateEvery", f"must be longer than rotationOverlap ({overlap}s): a "
                                                        "rotation waits out the overlap of the one before")
    return Credentials(rotate_every=every, rotation_overlap=overlap)


def _deletion(spec: dict, config: OperatorConfig) -> Deletion:
    raw = _get(spec, "deletion", "spec", dict, {})
    grace = raw.get("gracePeriod")
    if grace is None:
        seconds = config.default_grace_period
    else:
        if isinstance(grace, str) and not (grace and contract.GRACE_PERIOD_RE.fullmatch(grace)):
            raise SpecError("spec.deletion.gracePeriod", f"invalid duration {grace!r}: use e.g. 720h, 30d, "
                                                         "1h30m, 45s")
        try:
            seconds = parse_duration(grace)
        except ValueError as exc:
            raise SpecError("spec.deletion.gracePeriod", str(exc)) from None
        if seconds > contract.MAX_GRACE_SECONDS:
            raise SpecError("spec.deletion.gracePeriod", f"{grace!r} is longer than the maximum of 3650d (10 years)")
    policy = _get(raw, "policy", "spec.deletion", str, "Delete")
    if policy not in DELETION_POLICIES:
        raise SpecError("spec.deletion.policy", f"must be Delete or Retain, got {policy!r}")
    return Deletion(grace_period=seconds, policy=policy)


_SERVER_KIND = {"mysql": "MySQL server", "rabbitmq": "RabbitMQ server", "objectStorage": "object store"}


def _server(placement: dict, recorded: dict, backend: str, used: bool, config: OperatorConfig) -> str:
    """The server of `backend` (placement.py): spec.placement, else the one
    recorded in status.placement, else the config's default. Checked only when
    the tenant uses the backend."""
    requested = _get(placement, backend, "spec.placement", str, "")
    kept = recorded.get(backend) if isinstance(recorded.get(backend), str) else ""
    name = requested or kept or config.default_server(backend)
    servers = config.servers(backend)
    if not used or not servers:
        return name
    if requested and kept and requested != kept:
        raise SpecError(f"spec.placement.{backend}", f"names {requested!r}, but the tenant is placed on {kept!r} "
                                                     f"(status.placement.{backend}); moving between servers is "
                                                     "not automatic")
    if name not in servers:
        path = "status.placement" if kept and not requested else "spec.placement"
        raise SpecError(f"{path}.{backend}", f"no {_SERVER_KIND[backend]} named {name!r} is configured "
                                             f"(known: {', '.join(sorted(servers))})")
    return name


def parse(obj: dict, config: OperatorConfig) -> Tenant:
    """Parse a Tenant object (as returned by the API) into the model."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not isinstance(name, str) or not naming.TENANT_NAME.fullmatch(name):
        raise SpecError("metadata.name", f"{name!r} must be a DNS label of at most 40 chars "
                                         "(lowercase letters, digits, '-', starting with a letter)")
    if name.startswith(naming.RESERVED_TENANT_PREFIXES):
        raise SpecError("metadata.name", f"{name!r} starts with a prefix S3 reserves for bucket names "
                                         f"({', '.join(naming.RESERVED_TENANT_PREFIXES)})")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise SpecError("spec", "is required")

    tier_name = _get(spec, "tier", "spec", str, config.defaults.tier)
    if tier_name not in TIER_NAMES:
        raise SpecError("spec.tier", f"must be one of {', '.join(TIER_NAMES)}, got {tier_name!r}")
    tier = config.tiers[tier_name]

    domains = tuple(d.lower() if isinstance(d, str) else d for d in _get(spec, "domains", "spec", list, []))
    domains = _names(list(domains), "spec.domains", DNS_NAME, "DNS name")
    check_domains(domains, config.policy)

    billing_raw = _get(spec, "billing", "spec", dict, {})
    billing = Billing(id=_get(billing_raw, "id", "spec.billing", str, ""),
                      cost_center=_get(billing_raw, "costCenter", "spec.billing", str, ""))
    for key, value in (("id", billing.id), ("costCenter", billing.cost_center)):
        if value and not LABEL_VALUE.fullmatch(value):
            raise SpecError(f"spec.billing.{key}", f"{value!r} must be usable as a label value "
                                                   "(letters, digits, '-', '_', '.', at most 63 chars)")

    databases = _names(_get(spec, "databases", "spec", list, []), "spec.databases",
                       naming.SERVICE_NAME, "service name (a-z then a-z/0-9, at most 24 chars)")
    placement = _get(spec, "placement", "spec", dict, {})
    recorded = (obj.get("status") or {}).get("placement")
    recorded = recorded if isinstance(recorded, dict) else {}
    mysql_server = _server(placement, recorded, "mysql", bool(databases), config)

    messaging_raw = _get(spec, "messaging", "spec", dict)
    messaging = None
    if messaging_raw is not None:
        messaging = Messaging(queues=_names(_get(messaging_raw, "queues", "spec.messaging", list, []),
                                            "spec.messaging.queues", naming.QUEUE_NAME, "queue name"))

    # The tier's own level (config tiers.<tier>.podSecurity) is more specific than the config's default.
    pod_security = _get(spec, "podSecurity", "spec", str, tier.get("podSecurity") or config.defaults.pod_security)
    if pod_security not in POD_SECURITY_LEVELS:
        raise SpecError("spec.podSecurity", f"must be restricted, baseline or privileged, got {pod_security!r}")
    check_pod_security(pod_security, config.policy)

    display = _get(spec, "displayName", "spec", str, "")
    if len(display) > 128:
        raise SpecError("spec.displayName", "must be at most 128 characters")

    object_storage = _object_storage(spec, tier)
    backup = _backup(spec, config.defaults)
    rabbitmq_server = _server(placement, recorded, "rabbitmq", messaging is not None, config)
    object_storage_server = _server(placement, recorded, "objectStorage", object_storage is not None or (
        bool(databases) and backup.enabled), config)

    namespace = naming.namespace(name, config.namespace_prefix)
    pattern = ownership.reserved(namespace, config.reserved_namespace_patterns())
    if pattern:
        raise SpecError("metadata.name", f"its namespace {namespace!r} is reserved by the operator "
                                         f"configuration ({pattern!r} in reservedNamespaces or operatorNamespace)")
    if messaging is not None:
        pattern = ownership.reserved(naming.rabbitmq_user(name), config.reserved_user_patterns())
        if pattern:
            raise SpecError("metadata.name", f"its RabbitMQ user {naming.rabbitmq_user(name)!r} is reserved "
                                             f"({pattern!r}: reservedUsers or an admin user of the operator)")
    for i, service in enumerate(databases):
        pattern = ownership.reserved(naming.mysql_user(name, service), config.reserved_user_patterns())
        if pattern:
            raise SpecError(f"spec.databases[{i}]", f"its MySQL user {naming.mysql_user(name, service)!r} "
                                                    f"is reserved ({pattern!r})")

    annotations = meta.get("annotations") or {}
    return Tenant(
        name=name,
        namespace=namespace,
        tier=tier_name,
        display_name=display,
        domains=domains,
        billing=billing,
        quota=_quota(spec, tier["quota"], config.policy),
        limits=_limits(spec, tier["limits"]),
        pod_security=pod_security,
        databases=databases,
        mysql_server=mysql_server,
        rabbitmq_server=rabbitmq_server,
        object_storage_server=object_storage_server,
        mysql_max_user_connections=int(tier["mysql"]["maxUserConnections"]),
        object_storage=object_storage,
        messaging=messaging,
        rabbitmq_max_connections=int(tier["rabbitmq"]["maxConnections"]),
        rabbitmq_max_queues=int(tier["rabbitmq"]["maxQueues"]),
        ingress=_ingress(spec, domains, config.policy, config.defaults),
        admins=_admins(spec, config.policy),
        backup=backup,
        suspended=_get(spec, "suspended", "spec", bool, False),
        deletion=_deletion(spec, config),
        credentials=_credentials(spec, config.defaults),
        generation=int(meta.get("generation") or 0),
        rotate_token=str(annotations.get(naming.ANNOTATION_ROTATE, "")),
        purge_now=flag(annotations, naming.ANNOTATION_PURGE_NOW),
        uid=str(meta.get("uid") or ""),
        adopt_existing=flag(annotations, ownership.ANNOTATION_ADOPT),
        skip_final_backup=flag(annotations, ownership.ANNOTATION_SKIP_FINAL_BACKUP),
    )


def flag(annotations: dict, key: str) -> bool:
    """An annotation set to "true" (any case)."""
    return str((annotations or {}).get(key, "")).lower() == "true"
