"""PURE rendering: Tenant model -> desired Kubernetes objects (plain dicts).

No I/O here: the same functions feed the operator, `tenant-operator render`
(GitOps review) and the unit tests. Every string reaches YAML through the
`tojson` filter, so no spec value can inject YAML structure.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache

import jinja2
import yaml

from tenant_operator import naming
from tenant_operator.config import OperatorConfig
from tenant_operator.egress import EgressTarget
from tenant_operator.spec import Tenant

# A UTF-16 surrogate pair as JSON writes a character beyond the BMP (an emoji),
# not itself escaped by a preceding backslash.
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _astral(match: re.Match) -> str:
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return f"{match.group(1)}\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def _json(value, **kwargs) -> str:
    """JSON that is also a safe YAML double-quoted scalar: YAML refuses raw C0/C1
    control characters and DEL, and folds NEL/U+2028/U+2029 as line breaks, so
    everything outside printable ASCII is written as a \\u escape. YAML has no
    surrogates: a character beyond the BMP (an emoji) is written as \\UXXXXXXXX."""
    text = json.dumps(value, **kwargs).replace("\x7f", "\\u007f")
    return _SURROGATE_PAIR.sub(_astral, text) if "\\ud" in text else text


def _b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode()


@cache
def _env() -> jinja2.Environment:
    # YAML, not HTML: every value goes through `tojson`, so HTML escaping would only corrupt it.
    env = jinja2.Environment(  # nosec B701
        loader=jinja2.PackageLoader("tenant_operator.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        # The templates ship with the code: never stat them again. With the default,
        # every render checked each template's file, which was 40% of a restarted
        # operator's CPU at 1000 tenants.
        auto_reload=False,
    )
    env.filters["b64"] = _b64
    env.policies["json.dumps_function"] = _json
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": True}
    return env


# libyaml's safe loader parses the same documents several times faster than the
# pure-Python one; rendering every tenant at startup is dominated by parsing.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _render(template: str, **context) -> list[dict]:
    text = _env().get_template(template).render(names=naming, **context)
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc]


def namespace(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    return _render("namespace.yaml.j2", t=t, cfg=cfg)


def backend_egress(t: Tenant, cfg: OperatorConfig) -> list[EgressTarget]:
    """Egress to the backends the tenant's Secrets point at, as the config load
    derived it (config.py, egress.py), of the servers the tenant is placed on
    (no other server): MySQL when it has databases, the object store when it
    has buckets or backups, RabbitMQ when it has a vhost. Its pods and its backup
    Jobs connect there; nothing else in a tenant namespace reaches a backend."""
    targets: list[EgressTarget | None] = []
    if t.databases and t.mysql_server in cfg.mysql_servers:
        targets.append(cfg.mysql_servers[t.mysql_server].egress)
    if t.uses_object_storage and t.object_storage_server in cfg.object_storage_servers:
        targets.append(cfg.object_storage_servers[t.object_storage_server].egress)
    if t.messaging is not None and t.rabbitmq_server in cfg.rabbitmq_servers:
        targets.append(cfg.rabbitmq_servers[t.rabbitmq_server].egress)
    out: list[EgressTarget] = []
    for target in targets:
        # Two backends behind the same peer and ports need one rule, whatever they were derived from.
        if target is not None and not any(target.rule() == seen.rule() for seen in out):
            out.append(target)
    return out


def network_policies(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    return _render("networkpolicies.yaml.j2", t=t, cfg=cfg, backends=backend_egress(t, cfg))


def quota(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    return _render("quota.yaml.j2", t=t, cfg=cfg)


def rbac(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    return _render("rbac.yaml.j2", t=t, cfg=cfg)


def ingress(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    # A suspended tenant keeps nothing routable; the Ingress is removed.
    if t.ingress is None or not t.ingress.enabled or not t.domains or t.suspended:
        return []
    return _render("ingress.yaml.j2", t=t, cfg=cfg)


def secret(t: Tenant, name: str, component: str, data: dict[str, str]) -> dict:
    """A credentials Secret; values are base64-encoded here so the desired
    object compares directly with what the API server returns."""
    (obj,) = _render("secret.yaml.j2", t=t, name=name, component=component, data=data)
    return obj


# Component name -> renderer, in apply order (the namespace first).
COMPONENTS = {
    "namespace": namespace,
    "network": network_policies,
    "quota": quota,
    "rbac": rbac,
    "ingress": ingress,
}


def render_tenant(t: Tenant, cfg: OperatorConfig) -> list[dict]:
    """All Kubernetes objects of a tenant that do not depend on backend state."""
    out: list[dict] = []
    for fn in COMPONENTS.values():
        out.extend(fn(t, cfg))
    return out


def object_key(obj: dict) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
