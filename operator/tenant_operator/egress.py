"""Egress from the tenant namespaces to the backends, derived from the
operator's own configuration when it is loaded.

Tenant pods and the backup Jobs (which run in the tenant namespace) connect to
the addresses their Secrets carry: a MySQL server's `publicHost` (else `host`)
and `port`, the object storage's `publicEndpoint` (else `endpoint`), RabbitMQ's
`publicHost` (else `amqpHost`) and `amqpPort`. Each address becomes one
`EgressTarget`:

- an IP literal: that address alone (`/32`, or `/128` for IPv6);
- an in-cluster Service name (`<svc>.<ns>`, `<svc>.<ns>.svc` or
  `<svc>.<ns>.svc.<clusterDomain>`): every pod of namespace `<ns>` (a
  NetworkPolicy sees the pods behind a Service, never its ClusterIP);
- any other name: its addresses now, resolved once here (a warning says to pin
  them with an explicit `egress`); a name that does not resolve stops the
  operator with a ConfigError naming the field.

An explicit `egress: {cidr: ...}` or `egress: {namespace: ..., podSelector: ...}`
next to the address replaces the derivation. Rendering only reads the result:
no lookup ever happens while a tenant is rendered.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tenant_operator.errors import ConfigError

log = logging.getLogger(__name__)

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_LABEL = re.compile(_LABEL)
OVERRIDE_KEYS = ("cidr", "namespace", "podSelector", "ports")


@dataclass(frozen=True)
class EgressTarget:
    """Where tenant pods may connect for one backend: `cidrs`, or the pods of
    `namespace` (narrowed by `pod_selector`), on TCP `ports`."""
    ports: tuple[int, ...]
    cidrs: tuple[str, ...] = ()
    namespace: str = ""
    pod_selector: dict = field(default_factory=dict)
    source: str = ""    # the config field it was derived from, or `<...>.egress` for an override

    def rule(self) -> tuple:
        """What the rendered rule depends on (not where it came from)."""
        return (self.ports, self.cidrs, self.namespace, sorted(self.pod_selector.items()))


def resolve_host(host: str) -> list[str]:
    """The host's current addresses (A and AAAA), or [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [info[4][0].split("%", 1)[0] for info in infos]


def _cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def service_namespace(host: str, cluster_domain: str) -> str:
    """The namespace of an in-cluster Service name, or "" for any other name."""
    suffix = rf"(\.svc(\.{re.escape(cluster_domain)})?)?" if cluster_domain else r"(\.svc)?"
    m = re.fullmatch(rf"(?P<svc>{_LABEL})\.(?P<ns>{_LABEL}){suffix}\.?", host.lower())
    return m.group("ns") if m else ""


def derive(host: str, ports: tuple[int, ...], key: str, cluster_domain: str) -> EgressTarget:
    """The target for `host` (the value of config field `key`) on `ports`."""
    override = key.rsplit(".", 1)[0] + ".egress"
    bare = host.strip().strip("[]")
    try:
        return EgressTarget(ports=ports, cidrs=(_cidr(bare),), source=key)
    except ValueError:
        pass
    namespace = service_namespace(bare, cluster_domain)
    if namespace:
        return EgressTarget(ports=ports, namespace=namespace, source=key)
    found = sorted({ipaddress.ip_address(a) for a in resolve_host(bare)}, key=lambda ip: (ip.version, ip))
    if not found:
        raise ConfigError(key, f"{host!r} does not resolve, so the tenants' egress to it cannot be derived: "
                               f"name a Service as <service>.<namespace>.svc, or set {override} "
                               "({cidr: <CIDR>} or {namespace: <namespace>, podSelector: {...}})")
    cidrs = tuple(_cidr(str(ip)) for ip in found)
    log.warning("config %s: tenant egress to %s allowed to the addresses it has now, %s; they are not looked up "
                "again. Pin them with %s ({cidr: ...} or {namespace: ...}), or name a Service as "
                "<service>.<namespace>.svc", key, host, ", ".join(cidrs), override)
    return EgressTarget(ports=ports, cidrs=cidrs, source=key)


def endpoint_host_port(endpoint: str, key: str) -> tuple[str, int]:
    """`http(s)://host[:port]` (no scheme: https) -> (host, port), the port
    defaulting to 443 for https and 80 for http."""
    url = endpoint if "://" in endpoint else "https://" + endpoint
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be http(s)://host[:port], got {endpoint!r}")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _ports(raw, key: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw or \
            not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in raw):
        raise ConfigError(key, "must be a non-empty list of TCP ports")
    return tuple(raw)


def _pod_selector(raw, key: str) -> dict:
    if not isinstance(raw, dict) or not set(raw) <= {"matchLabels", "matchExpressions"}:
        raise ConfigError(key, "must be a label selector: {matchLabels: {...}, matchExpressions: [...]}")
    labels = raw.get("matchLabels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ConfigError(f"{key}.matchLabels", "must map label names to string values")
    exprs = raw.get("matchExpressions", [])
    if not isinstance(exprs, list) or not all(
            isinstance(e, dict) and isinstance(e.get("key"), str)
            and e.get("operator") in ("In", "NotIn", "Exists", "DoesNotExist")
            and all(isinstance(v, str) for v in e.get("values") or []) for e in exprs):
        raise ConfigError(f"{key}.matchExpressions", "must be a list of {key, operator, values}")
    return {k: v for k, v in raw.items() if v}


def override(raw, key: str, default_ports: tuple[int, ...]) -> EgressTarget:
    """An explicit `egress` entry (config field `key`): `cidr` (one CIDR or a
    list) or `namespace` (with an optional `podSelector`), and optional `ports`
    (default: the backend's own port)."""
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be {cidr: <CIDR or list>} or {namespace: <name>, podSelector: {...}}")
    for name in raw:
        if name not in OVERRIDE_KEYS:
            raise ConfigError(f"{key}.{name}", f"unknown key (known: {', '.join(OVERRIDE_KEYS)})")
    if ("cidr" in raw) == ("namespace" in raw):
        raise ConfigError(key, "needs exactly one of cidr or namespace")
    ports = _ports(raw["ports"], f"{key}.ports") if "ports" in raw else default_ports
    if "cidr" in raw:
        if "podSelector" in raw:
            raise ConfigError(f"{key}.podSelector", "goes with namespace, not cidr")
        values = raw["cidr"] if isinstance(raw["cidr"], list) else [raw["cidr"]]
        cidrs = []
        for i, value in enumerate(values):
            where = f"{key}.cidr[{i}]" if isinstance(raw["cidr"], list) else f"{key}.cidr"
            try:
                cidrs.append(str(ipaddress.ip_network(str(value))))
            except ValueError as exc:
                raise ConfigError(where, f"{value!r} is not a CIDR: {exc}") from None
        if not cidrs:
            raise ConfigError(f"{key}.cidr", "must name at least one CIDR")
        return EgressTarget(ports=ports, cidrs=tuple(cidrs), source=key)
    namespace = raw["namespace"]
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise ConfigError(f"{key}.namespace", f"{namespace!r} is not a namespace name")
    selector = _pod_selector(raw["podSelector"], f"{key}.podSelector") if "podSelector" in raw else {}
    return EgressTarget(ports=ports, namespace=namespace, pod_selector=selector, source=key)


def target(section: dict, address_key: str, host: str, ports: tuple[int, ...], path: str,
           cluster_domain: str) -> EgressTarget:
    """The section's `egress` override if it has one, else the derivation from
    `host` (the value of `<path><address_key>`)."""
    if "egress" in section:
        return override(section["egress"], f"{path}egress", ports)
    return derive(host, ports, f"{path}{address_key}", cluster_domain)
