"""What the platform lets a Tenant ask for: the `policy` section of the operator
config, read with the rest of the config (ConfigError naming `policy.<key>`)
and enforced by spec.parse.

The checks are pure functions. Each refusal is a SpecError whose path names the
Tenant field and whose message names the policy rule, e.g.
`spec.podSecurity: 'privileged' is not allowed by policy.allowedPodSecurity (restricted, baseline)`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from tenant_operator import quantities
from tenant_operator.errors import ConfigError, SpecError

POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")
SUBJECT_KINDS = ("User", "Group", "ServiceAccount")

_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")

# A wildcard domain must not cover a public suffix (`*.com`, `*.co.uk`,
# `*.github.io`) or a single label. No public-suffix-list library is installed,
# so this is a conservative approximation of that list: after `*.` come at least
# two labels; with exactly two, the first must not be one of the usual
# second-level labels of country domains (`co.uk`, `com.au`, `ne.jp`, ...); and
# the rest must not be one of a few well-known shared-hosting suffixes. Longer
# public suffixes (`*.pvt.k12.ma.us`) are not recognised.
SECOND_LEVEL_LABELS = frozenset({
    "ac", "ad", "asso", "biz", "co", "com", "ed", "edu", "gob", "go", "gouv", "gov", "govt", "gr", "info",
    "int", "k12", "lg", "ltd", "me", "mil", "mod", "ne", "net", "nhs", "nic", "nom", "or", "org", "plc",
    "police", "res", "sch",
})
SHARED_HOSTING_SUFFIXES = frozenset({
    "amazonaws.com", "appspot.com", "azurewebsites.net", "blogspot.com", "cloudfront.net", "firebaseapp.com",
    "fly.dev", "github.io", "gitlab.io", "herokuapp.com", "netlify.app", "ngrok.io", "onrender.com",
    "pages.dev", "readthedocs.io", "s3.amazonaws.com", "vercel.app", "web.app", "workers.dev",
})


@dataclass(frozen=True)
class SubjectPolicy:
    """Who a Tenant may name in spec.admins."""
    allowed_kinds: tuple[str, ...] = SUBJECT_KINDS
    # Matched against every subject's name: no built-in user or group
    # (system:masters, system:authenticated, system:unauthenticated, ...).
    denied_names: tuple[str, ...] = ("system:*",)
    # Matched against the username a ServiceAccount subject stands for,
    # system:serviceaccount:<namespace>:<name> (and against a User's name,
    # which RBAC treats as the same identity).
    denied_service_accounts: tuple[str, ...] = ("system:serviceaccount:kube-*:*",
                                                "system:serviceaccount:default:*")


@dataclass(frozen=True)
class TenantPolicy:
    allowed_cluster_issuers: tuple[str, ...] = ("letsencrypt-prod", "letsencrypt-staging")
    allowed_pod_security: tuple[str, ...] = ("restricted", "baseline")
    subjects: SubjectPolicy = field(default_factory=SubjectPolicy)
    max_quota: dict[str, str] = field(default_factory=dict)      # ResourceQuota key -> maximum; {}: no limit
    allowed_domain_suffixes: tuple[str, ...] = ()                # (): any domain


def _first_match(name: str, patterns: tuple[str, ...]) -> str:
    """The first shell pattern that `name` matches, or ''."""
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), "")


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(values)


# --- reading the config --------------------------------------------------------------

_KEYS = ("allowedClusterIssuers", "allowedPodSecurity", "subjects", "maxQuota", "allowedDomainSuffixes")
_SUBJECT_KEYS = ("allowedKinds", "deniedNames", "deniedServiceAccounts")


def _mapping(raw, key: str, known: tuple[str, ...]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a mapping")
    for name in raw:
        if name not in known:
            raise ConfigError(f"{key}.{name}", f"unknown key; known keys: {_listed(known)}")
    return raw


def _strings(raw: dict, key: str, path: str, default: tuple[str, ...], *,
             allowed: tuple[str, ...] = (), required: bool = False) -> tuple[str, ...]:
    if key not in raw:
        return default
    values = raw[key]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ConfigError(path, "must be a list of non-empty strings")
    for value in values:
        if allowed and value not in allowed:
            raise ConfigError(path, f"{value!r} is not one of {_listed(allowed)}")
    if required and not values:
        raise ConfigError(path, "must not be empty (it lists what Tenants may use)")
    return tuple(values)


def _max_quota(raw: dict) -> dict[str, str]:
    values = raw.get("maxQuota")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError("policy.maxQuota", "must be a mapping of ResourceQuota key to maximum quantity")
    out = {}
    for key, value in values.items():
        path = f"policy.maxQuota.{key}"
        if not isinstance(key, str) or not quantities.QUOTA_KEYS.match(key):
            raise ConfigError(path, "is not a ResourceQuota resource name (e.g. requests.cpu, pods)")
        try:
            quantities.parse(value)
        except ValueError:
            raise ConfigError(path, f"{value!r} is not a Kubernetes quantity (e.g. 64, 500m, 256Gi)") from None
        out[key] = str(value)
    return out


def _domain_suffixes(raw: dict) -> tuple[str, ...]:
    values = _strings(raw, "allowedDomainSuffixes", "policy.allowedDomainSuffixes", ())
    out = tuple(v.lower() for v in values)
    for value in out:
        if not _DOMAIN.fullmatch(value):
            raise ConfigError("policy.allowedDomainSuffixes",
                              f"{value!r} is not a domain name (write example.com, not *.example.com or .example.com)")
    return out


def _check_defaults(policy: TenantPolicy, defaults) -> None:
    """The config's own defaults must be allowed, like the tiers' (below). The
    built-in issuer is left to the Tenants that use it (Invalid, naming the
    default): a platform may allow only its own issuers and have every Tenant
    name one."""
    if defaults.pod_security not in policy.allowed_pod_security:
        raise ConfigError("defaults.podSecurity",
                          f"{defaults.pod_security!r} is not allowed by policy.allowedPodSecurity "
                          f"({_listed(policy.allowed_pod_security)}): allow it there or change the default")
    issuer = defaults.ingress_cluster_issuer
    built_in = type(defaults)().ingress_cluster_issuer
    if issuer != built_in and not _first_match(issuer, policy.allowed_cluster_issuers):
        raise ConfigError("defaults.ingress.clusterIssuer",
                          f"{issuer!r} is not allowed by policy.allowedClusterIssuers "
                          f"({_listed(policy.allowed_cluster_issuers)}): allow it there or change the default")


def _check_tiers(policy: TenantPolicy, tiers: dict) -> None:
    """Every tier's own defaults must be allowed: a tier the policy refuses would
    make each of its Tenants Invalid for something the Tenant did not ask for."""
    for name, tier in tiers.items():
        level = tier.get("podSecurity")
        if level is not None and level not in policy.allowed_pod_security:
            raise ConfigError(f"tiers.{name}.podSecurity",
                              f"{level!r} is not allowed by policy.allowedPodSecurity "
                              f"({_listed(policy.allowed_pod_security)}): allow it there or change the tier")
        quota = tier.get("quota") or {}
        for key, maximum in policy.max_quota.items():
            path = f"tiers.{name}.quota.{key}"
            if key not in quota:
                raise ConfigError(path, f"is not set, so policy.maxQuota.{key} would not bound this tier's "
                                        "Tenants (a ResourceQuota limits only the keys it lists): set it in the tier")
            try:
                value = quantities.parse(quota[key])
            except ValueError:
                raise ConfigError(path, f"{quota[key]!r} is not a Kubernetes quantity") from None
            if value > quantities.parse(maximum):
                raise ConfigError(path, f"{quota[key]} exceeds policy.maxQuota.{key} ({maximum}): "
                                        "lower the tier or raise the maximum")


def from_dict(raw, tiers: dict, defaults) -> TenantPolicy:
    """The `policy` section of the config (None: the defaults), checked against
    the tiers and the config's `defaults` (defaults.py)."""
    raw = _mapping(raw, "policy", _KEYS)
    default = TenantPolicy()
    subjects_raw = _mapping(raw.get("subjects"), "policy.subjects", _SUBJECT_KEYS)
    subjects = SubjectPolicy(
        allowed_kinds=_strings(subjects_raw, "allowedKinds", "policy.subjects.allowedKinds",
                               default.subjects.allowed_kinds, allowed=SUBJECT_KINDS, required=True),
        denied_names=_strings(subjects_raw, "deniedNames", "policy.subjects.deniedNames",
                              default.subjects.denied_names),
        denied_service_accounts=_strings(subjects_raw, "deniedServiceAccounts",
                                         "policy.subjects.deniedServiceAccounts",
                                         default.subjects.denied_service_accounts),
    )
    policy = TenantPolicy(
        allowed_cluster_issuers=_strings(raw, "allowedClusterIssuers", "policy.allowedClusterIssuers",
                                         default.allowed_cluster_issuers, required=True),
        allowed_pod_security=_strings(raw, "allowedPodSecurity", "policy.allowedPodSecurity",
                                      default.allowed_pod_security, allowed=POD_SECURITY_LEVELS, required=True),
        subjects=subjects,
        max_quota=_max_quota(raw),
        allowed_domain_suffixes=_domain_suffixes(raw),
    )
    _check_defaults(policy, defaults)
    _check_tiers(policy, tiers)
    return policy


# --- checking a Tenant ---------------------------------------------------------------

def wildcard_too_broad(domain: str) -> bool:
    """True for a wildcard domain over a public suffix or a single label (see
    SECOND_LEVEL_LABELS for the approximation used)."""
    if not domain.startswith("*."):
        return False
    rest = domain[2:]
    labels = rest.split(".")
    if len(labels) < 2 or rest in SHARED_HOSTING_SUFFIXES:
        return True
    return len(labels) == 2 and labels[0] in SECOND_LEVEL_LABELS


def _under(domain: str, suffix: str) -> bool:
    """`domain` is `suffix` or a name below it (label boundaries: evilexample.com is not under example.com)."""
    return domain == suffix or domain.endswith("." + suffix)


def check_domains(domains: tuple[str, ...], policy: TenantPolicy) -> None:
    for i, domain in enumerate(domains):
        path = f"spec.domains[{i}]"
        if wildcard_too_broad(domain):
            raise SpecError(path, f"{domain!r} is a wildcard over a public suffix or a single label; "
                                  "a wildcard must cover a domain of your own (e.g. *.shop.example.com)")
        suffixes = policy.allowed_domain_suffixes
        if suffixes and not any(_under(domain, s) for s in suffixes):
            raise SpecError(path, f"{domain!r} is not under a domain allowed by policy.allowedDomainSuffixes "
                                  f"({_listed(suffixes)})")


def check_pod_security(level: str, policy: TenantPolicy) -> None:
    if level not in policy.allowed_pod_security:
        raise SpecError("spec.podSecurity", f"{level!r} is not allowed by policy.allowedPodSecurity "
                                            f"({_listed(policy.allowed_pod_security)})")


def check_quota(quota: dict[str, str], policy: TenantPolicy) -> None:
    """`quota` is the effective one (tier and spec.quota merged)."""
    for key, value in quota.items():
        maximum = policy.max_quota.get(key)
        if maximum is not None and quantities.parse(value) > quantities.parse(maximum):
            raise SpecError(f"spec.quota.{key}", f"{value} exceeds policy.maxQuota.{key} ({maximum})")


def check_cluster_issuer(issuer: str, policy: TenantPolicy, *, defaulted: bool = False) -> None:
    if not _first_match(issuer, policy.allowed_cluster_issuers):
        what = repr(issuer)
        if defaulted:
            what += " (the operator's defaults.ingress.clusterIssuer, as none is set)"
        raise SpecError("spec.ingress.clusterIssuer", f"{what} is not allowed by policy.allowedClusterIssuers "
                                                      f"({_listed(policy.allowed_cluster_issuers)})")


def service_account_username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def check_subject(index: int, kind: str, name: str, namespace: str, policy: TenantPolicy) -> None:
    rules = policy.subjects
    path = f"spec.admins[{index}]"
    if kind not in rules.allowed_kinds:
        raise SpecError(f"{path}.kind", f"{kind!r} is not allowed by policy.subjects.allowedKinds "
                                        f"({_listed(rules.allowed_kinds)})")
    pattern = _first_match(name, rules.denied_names)
    if pattern:
        raise SpecError(f"{path}.name", f"{name!r} is denied by policy.subjects.deniedNames ({pattern!r})")
    username = service_account_username(namespace, name) if kind == "ServiceAccount" else name
    if kind != "Group":
        pattern = _first_match(username, rules.denied_service_accounts)
        if pattern:
            raise SpecError(f"{path}.name", f"{kind} {username!r} is denied by "
                                            f"policy.subjects.deniedServiceAccounts ({pattern!r})")
