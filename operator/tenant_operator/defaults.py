"""What a Tenant gets for a field it leaves unset: the config's `defaults`
section, else the built-in values below.

The keys mirror the spec (`defaults.backup.retention.daily` is the default of
`spec.backup.retention.daily`). The CRD gives these fields no OpenAPI default,
or the API server would fill them in and the config could never apply. Values
are checked here with the same rules as the spec, and an error names the
config key, so a bad default stops the operator at start instead of turning
every Tenant that relies on it Invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tenant_operator import contract
from tenant_operator.durations import parse_duration
from tenant_operator.errors import ConfigError
from tenant_operator.policy import POD_SECURITY_LEVELS
from tenant_operator.tiers import TIER_NAMES

SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# Upper bounds of spec.backup.retention.* in the CRD.
RETENTION_MAX = {"daily": 3650, "weekly": 520, "monthly": 120}


@dataclass(frozen=True)
class SpecDefaults:
    tier: str = "standard"
    # A tier's own level (config tiers.<tier>.podSecurity) wins over this one.
    pod_security: str = "restricted"
    ingress_class_name: str = "nginx"
    ingress_cluster_issuer: str = "letsencrypt-prod"
    ingress_service: str = "api-gateway"
    ingress_port: int = 80
    backup_schedule: str = "0 2 * * *"
    drills_enabled: bool = True
    drill_schedule: str = "30 4 * * 0"   # weekly, Sunday 04:30 UTC: after the nightly backup
    retention_daily: int = 30
    retention_weekly: int = 12
    retention_monthly: int = 12
    grace_period: int = 720 * 3600     # seconds
    rotate_every: int = 0              # seconds; 0: only the annotation rotates
    rotation_overlap: int = 3600       # seconds the previous credential keeps working


BUILT_IN = SpecDefaults()

_SECTIONS = {"": {"tier", "podSecurity", "ingress", "backup", "deletion", "credentials"},
             "ingress.": {"className", "clusterIssuer", "service", "port"},
             "backup.": {"schedule", "retention", "drills"},
             "backup.drills.": {"enabled", "schedule"},
             "backup.retention.": {"daily", "weekly", "monthly"},
             "deletion.": {"gracePeriod"},
             "credentials.": {"rotateEvery", "rotationOverlap"}}


def _section(raw, prefix: str) -> dict:
    key = f"defaults.{prefix}".rstrip(".")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a mapping")
    unknown = sorted(set(raw) - _SECTIONS[prefix])
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"is not a default the operator knows "
                                                  f"(known: {', '.join(sorted(_SECTIONS[prefix]))})")
    return raw


def _string(raw: dict, key: str, prefix: str, default: str, valid, what: str) -> str:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not valid(value):
        raise ConfigError(f"defaults.{prefix}{key}", f"{value!r} is not {what}")
    return value


def _integer(raw: dict, key: str, prefix: str, default: int, low: int, high: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"defaults.{prefix}{key}", f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _boolean(raw: dict, key: str, prefix: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"defaults.{prefix}{key}", f"must be true or false, got {value!r}")
    return value


def _grace(raw: dict, legacy) -> int:
    value = raw.get("gracePeriod")
    key = "defaults.deletion.gracePeriod"
    if legacy is not None:
        if value is not None:
            raise ConfigError("defaultGracePeriod", "is the older name of defaults.deletion.gracePeriod: "
                                                    "set only one of them")
        value, key = legacy, "defaultGracePeriod"
    if value is None:
        return BUILT_IN.grace_period
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if seconds > contract.MAX_GRACE_SECONDS:
        raise ConfigError(key, f"{value!r} is longer than the maximum of 3650d (10 years)")
    return seconds


def _duration(raw: dict, key: str, prefix: str, default: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"defaults.{prefix}{key}", str(exc)) from None
    if seconds > contract.MAX_GRACE_SECONDS:
        raise ConfigError(f"defaults.{prefix}{key}", f"{value!r} is longer than the maximum of 3650d (10 years)")
    return seconds


def from_dict(raw, legacy_grace_period=None) -> SpecDefaults:
    """The `defaults` section (None: the built-in values). `legacy_grace_period`
    is the top-level `defaultGracePeriod`, the older name of the grace default."""
    top = _section(raw, "")
    ingress = _section(top.get("ingress"), "ingress.")
    backup = _section(top.get("backup"), "backup.")
    retention = _section(backup.get("retention"), "backup.retention.")
    drills = _section(backup.get("drills"), "backup.drills.")
    deletion = _section(top.get("deletion"), "deletion.")
    credentials = _section(top.get("credentials"), "credentials.")
    b = BUILT_IN

    def dns(v):
        return len(v) <= 253 and bool(contract.DNS_SUBDOMAIN_RE.fullmatch(v))

    out = SpecDefaults(
        tier=_string(top, "tier", "", b.tier, lambda v: v in TIER_NAMES, f"a tier ({', '.join(TIER_NAMES)})"),
        pod_security=_string(top, "podSecurity", "", b.pod_security, lambda v: v in POD_SECURITY_LEVELS,
                             f"a Pod Security level ({', '.join(POD_SECURITY_LEVELS)})"),
        ingress_class_name=_string(ingress, "className", "ingress.", b.ingress_class_name, dns,
                                   "a Kubernetes object name (lowercase letters, digits, '-' and '.')"),
        ingress_cluster_issuer=_string(ingress, "clusterIssuer", "ingress.", b.ingress_cluster_issuer, dns,
                                       "a Kubernetes object name (lowercase letters, digits, '-' and '.')"),
        ingress_service=_string(ingress, "service", "ingress.", b.ingress_service, SERVICE_NAME.fullmatch,
                                "a Service name (a DNS label starting with a letter)"),
        ingress_port=_integer(ingress, "port", "ingress.", b.ingress_port, 1, 65535),
        backup_schedule=_string(backup, "schedule", "backup.", b.backup_schedule,
                                lambda v: len(v) <= 64 and bool(contract.CRON_RE.fullmatch(v)),
                                "a cron schedule (5 fields in range, e.g. '0 2 * * *', or a macro such as "
                                "@daily)"),
        drills_enabled=_boolean(drills, "enabled", "backup.drills.", b.drills_enabled),
        drill_schedule=_string(drills, "schedule", "backup.drills.", b.drill_schedule,
                               lambda v: len(v) <= 64 and bool(contract.CRON_RE.fullmatch(v)),
                               "a cron schedule (5 fields in range, e.g. '30 4 * * 0', or a macro such as "
                               "@weekly)"),
        retention_daily=_integer(retention, "daily", "backup.retention.", b.retention_daily, 0,
                                 RETENTION_MAX["daily"]),
        retention_weekly=_integer(retention, "weekly", "backup.retention.", b.retention_weekly, 0,
                                  RETENTION_MAX["weekly"]),
        retention_monthly=_integer(retention, "monthly", "backup.retention.", b.retention_monthly, 0,
                                   RETENTION_MAX["monthly"]),
        grace_period=_grace(deletion, legacy_grace_period),
        rotate_every=_duration(credentials, "rotateEvery", "credentials.", b.rotate_every),
        rotation_overlap=_duration(credentials, "rotationOverlap", "credentials.", b.rotation_overlap),
    )
    if out.rotate_every and out.rotate_every <= out.rotation_overlap:
        raise ConfigError("defaults.credentials.rotateEvery", "must be longer than defaults.credentials."
                                                              "rotationOverlap (a rotation waits out the overlap "
                                                              "of the one before)")
    if not (out.retention_daily or out.retention_weekly or out.retention_monthly):
        raise ConfigError("defaults.backup.retention", "keeps nothing: set at least one of daily, weekly, monthly")
    return out
