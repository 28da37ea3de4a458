"""Operator configuration: a YAML file (Helm renders it into a Secret) plus
`${VAR}` references resolved from the environment, so credentials can come
from Secrets mounted as env vars instead of living in the file."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from tenant_operator import defaults as defaults_mod
from tenant_operator import egress as egress_mod
from tenant_operator.defaults import SpecDefaults
from tenant_operator.durations import parse_duration
from tenant_operator.egress import EgressTarget
from tenant_operator.errors import ConfigError
from tenant_operator.policy import TenantPolicy
from tenant_operator.policy import from_dict as policy_from_dict
from tenant_operator.tiers import DEFAULT_TIERS, TIER_NAMES, merge

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")


def _duration(value, key: str) -> int:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _expand(value, key: str):
    if isinstance(value, str):
        def repl(m):
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(key, f"refers to ${{{name}}}, which is not set in the environment")
            return os.environ[name]
        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


@dataclass(frozen=True)
class MySQLServer:
    name: str
    host: str
    port: int = 3306
    admin_user: str = "root"
    admin_password: str = field(default="", repr=False)
    # Host part of the tenant users' accounts ('%': any client host).
    user_host: str = "%"
    # Address given to tenants in their Secret (defaults to host).
    public_host: str = ""
    # Egress the tenants placed here get to it (egress.py); None: none.
    egress: EgressTarget | None = None
    # Share of new tenants the automatic placement gives this server (placement.py); 0: none.
    weight: int = 1

    @property
    def tenant_host(self) -> str:
        return self.public_host or self.host


@dataclass(frozen=True)
class ObjectStorageConfig:
    backend: str = "minio"          # minio | s3
    endpoint: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    public_endpoint: str = ""       # endpoint given to tenants (defaults to endpoint)
    egress: EgressTarget | None = None   # egress tenants with buckets or backups get to it
    name: str = "default"           # key in objectStorage.servers; `default` for the single-server form
    weight: int = 1

    @property
    def tenant_endpoint(self) -> str:
        return self.public_endpoint or self.endpoint


@dataclass(frozen=True)
class RabbitMQConfig:
    management_url: str = ""
    amqp_host: str = ""
    amqp_port: int = 5672
    admin_user: str = ""
    admin_password: str = field(default="", repr=False)
    public_host: str = ""
    egress: EgressTarget | None = None   # egress tenants with a vhost get to its AMQP port
    name: str = "default"           # key in rabbitmq.servers; `default` for the single-server form
    weight: int = 1

    @property
    def tenant_host(self) -> str:
        return self.public_host or self.amqp_host


@dataclass(frozen=True)
class SharedService:
    """Extra egress every tenant namespace may use: a namespace (by name) or a
    CIDR, and ports. The backends' egress is derived (egress.py), not listed here."""
    ports: tuple[int, ...]
    namespace: str = ""
    cidr: str = ""


@dataclass(frozen=True)
class Sharding:
    """Several replicas share the tenants through Leases (shards.py)."""
    shards: int = 16
    name: str = "tenant-operator"     # prefix of the Lease names; replicas with the same one share
    namespace: str = ""               # where the Leases live: the operator's namespace
    lease_seconds: float = 15.0
    renew_seconds: float = 5.0


@dataclass(frozen=True)
class OperatorConfig:
    namespace_prefix: str = "tenant-"
    field_manager: str = "tenant-operator"
    ingress_controller_namespace: str = "ingress-nginx"
    # DNS domain of the cluster: `<svc>.<ns>.svc.<clusterDomain>` names a Service.
    cluster_domain: str = "cluster.local"
    shared_services: tuple[SharedService, ...] = ()
    # What a Tenant gets for a field it leaves unset (config `defaults`, defaults.py).
    defaults: SpecDefaults = field(default_factory=SpecDefaults)
    drift_interval: float = 60.0            # seconds between drift checks of each tenant
    # Seconds between full passes of a quiet tenant, backend calls included: the cost is
    # N / interval backend passes per second, the bound on how long backend drift can go unseen.
    backend_resync_interval: float = 6 * 3600.0
    deletion_poll_interval: float = 60.0    # how often a terminating tenant re-checks its grace period
    final_backup_retry_interval: float = 30.0   # first retry of a failed final backup; doubles up to an hour
    workers: int = 8                         # tenants reconciled in parallel
    backup_image: str = "ghcr.io/tenancy-dev/tenant-operator:0.1.0"
    backups_bucket_retention_days: int = 90
    # What is left of a purged tenant (its backups, final backup, archived buckets) is kept this long.
    archive_retention_days: int = 7 * 365
    tiers: dict = field(default_factory=lambda: merge(DEFAULT_TIERS, {}))
    mysql_servers: dict[str, MySQLServer] = field(default_factory=dict)
    mysql_default: str = ""
    # Object stores and RabbitMQ servers by name. The single-server forms of the
    # config give one server named `default`. `object_storage` and `rabbitmq`
    # are the default servers (`<backend>.default`): where a Tenant provisioned
    # before placement existed lives.
    object_storage_servers: dict[str, ObjectStorageConfig] = field(default_factory=dict)
    object_storage_default: str = ""
    rabbitmq_servers: dict[str, RabbitMQConfig] = field(default_factory=dict)
    rabbitmq_default: str = ""
    object_storage: ObjectStorageConfig | None = None
    rabbitmq: RabbitMQConfig | None = None
    # Where the operator itself runs; no Tenant may take this namespace.
    operator_namespace: str = "tenant-operator"
    # Namespaces (shell patterns) and backend user names no Tenant may take.
    reserved_namespaces: tuple[str, ...] = ("default", "kube-*")
    reserved_users: tuple[str, ...] = ("guest", "root", "admin", "mysql.*", "mariadb.sys")
    # What a Tenant may ask for (cluster issuers, Pod Security levels, admins, quota, domains).
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    sharding: Sharding | None = None   # None: this replica reconciles every tenant

    @property
    def default_grace_period(self) -> int:
        """Seconds between deletion and purge for a Tenant that sets none."""
        return self.defaults.grace_period

    def reserved_namespace_patterns(self) -> tuple[str, ...]:
        return (*self.reserved_namespaces, self.operator_namespace)

    def reserved_user_patterns(self) -> tuple[str, ...]:
        """The configured names plus every admin user the operator itself uses."""
        admins = [s.admin_user for s in self.mysql_servers.values()]
        admins += [s.admin_user for s in self.rabbitmq_servers.values() if s.admin_user]
        admins += [s.access_key for s in self.object_storage_servers.values() if s.access_key]
        if self.rabbitmq and self.rabbitmq.admin_user and self.rabbitmq.admin_user not in admins:
            admins.append(self.rabbitmq.admin_user)
        if self.object_storage and self.object_storage.access_key and self.object_storage.access_key not in admins:
            admins.append(self.object_storage.access_key)
        return (*self.reserved_users, *dict.fromkeys(admins))

    def mysql_server(self, name: str | None) -> MySQLServer:
        key = name or self.mysql_default
        if key not in self.mysql_servers:
            known = ", ".join(sorted(self.mysql_servers)) or "none configured"
            raise ConfigError("mysql.servers", f"no MySQL server named {key!r} (known: {known})")
        return self.mysql_servers[key]

    def rabbitmq_server(self, name: str | None) -> RabbitMQConfig:
        return _lookup(self.rabbitmq_servers, name or self.rabbitmq_default, "rabbitmq.servers", "RabbitMQ server")

    def object_storage_server(self, name: str | None) -> ObjectStorageConfig:
        return _lookup(self.object_storage_servers, name or self.object_storage_default, "objectStorage.servers",
                       "object store")

    def servers(self, backend: str) -> dict:
        """Servers of a backend by name (`mysql`, `rabbitmq`, `objectStorage`)."""
        return {"mysql": self.mysql_servers, "rabbitmq": self.rabbitmq_servers,
                "objectStorage": self.object_storage_servers}[backend]

    def default_server(self, backend: str) -> str:
        return {"mysql": self.mysql_default, "rabbitmq": self.rabbitmq_default,
                "objectStorage": self.object_storage_default}[backend]


def _lookup(servers: dict, key: str, path: str, what: str):
    if key not in servers:
        known = ", ".join(sorted(servers)) or "none configured"
        raise ConfigError(path, f"no {what} named {key!r} (known: {known})")
    return servers[key]


# Names of rabbitmq/objectStorage servers: they appear in spec.placement (a CRD string of at most 63 chars).
_SERVER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _weight(raw: dict, path: str) -> int:
    weight = _int(raw, "weight", 1, path)
    if weight < 0:
        raise ConfigError(f"{path}weight", f"must be 0 or more (0: never chosen automatically), got {weight}")
    return weight


def _servers(raw: dict, section: str, parse_one) -> tuple[dict, str]:
    """`<section>.servers` (name -> server) or the single-server form (the
    section itself is the server, named `default`), and the default server."""
    if "servers" not in raw:
        return {"default": parse_one(raw, f"{section}.", "default")}, "default"
    servers_raw = raw["servers"]
    if not isinstance(servers_raw, dict) or not servers_raw:
        raise ConfigError(f"{section}.servers", "must map server names to their settings")
    extra = sorted(set(raw) - {"servers", "default"})
    if extra:
        raise ConfigError(f"{section}.{extra[0]}", "belongs under a server in "
                                                   f"{section}.servers.<name> once servers are listed")
    servers = {}
    for name, srv in servers_raw.items():
        path = f"{section}.servers.{name}."
        if not isinstance(name, str) or not _SERVER_NAME.fullmatch(name):
            raise ConfigError(f"{section}.servers.{name}", "server names are lowercase letters, digits and '-', "
                                                            "at most 63 chars")
        if not isinstance(srv, dict):
            raise ConfigError(f"{section}.servers.{name}", "must be a mapping of the server's settings")
        servers[name] = parse_one(srv, path, name)
    default = raw.get("default") or sorted(servers)[0]
    if default not in servers:
        raise ConfigError(f"{section}.default", f"names no server in {section}.servers ({default!r})")
    return servers, default


def _int(raw: dict, key: str, default: int, path: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}{key}", f"must be an integer, got {value!r}")
    return value


def _sharding(raw, operator_namespace: str) -> Sharding:
    """`sharding: {}` turns it on with the defaults."""
    if not isinstance(raw, dict):
        raise ConfigError("sharding", "must be a map (e.g. `sharding: {shards: 16}`)")
    shards = _int(raw, "shards", 16, "sharding.")
    if not 1 <= shards <= 1024:
        raise ConfigError("sharding.shards", f"must be between 1 and 1024, got {shards}")
    name = str(raw.get("name", "tenant-operator"))
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", name):
        raise ConfigError("sharding.name", "must be lowercase letters, digits and '-', at most 40 chars")
    lease = float(_duration(raw.get("leaseDuration", "15s"), "sharding.leaseDuration"))
    renew = float(_duration(raw.get("renewInterval", "5s"), "sharding.renewInterval"))
    if not 0 < renew * 2 <= lease:
        raise ConfigError("sharding.renewInterval", f"must be at most half of leaseDuration ({lease:g}s), "
                                                    f"so one missed renewal does not lose the shards")
    return Sharding(shards=shards, name=name, namespace=str(raw.get("namespace") or operator_namespace),
                    lease_seconds=lease, renew_seconds=renew)


def from_dict(raw: dict | None) -> OperatorConfig:
    raw = _expand(dict(raw or {}), "")
    kwargs: dict = {}
    if "namespacePrefix" in raw:
        prefix = str(raw["namespacePrefix"])
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,20})?", prefix):
            raise ConfigError("namespacePrefix", "must be lowercase letters, digits and '-', at most 21 chars")
        kwargs["namespace_prefix"] = prefix
    for src, dst in (("fieldManager", "field_manager"),
                     ("ingressControllerNamespace", "ingress_controller_namespace"),
                     ("backupImage", "backup_image")):
        if src in raw:
            kwargs[dst] = str(raw[src])
    cluster_domain = str(raw.get("clusterDomain", "cluster.local")).strip(".").lower()
    if not _DOMAIN.fullmatch(cluster_domain):
        raise ConfigError("clusterDomain", f"{raw['clusterDomain']!r} is not a DNS domain (e.g. cluster.local)")
    kwargs["cluster_domain"] = cluster_domain
    kwargs["defaults"] = defaults_mod.from_dict(raw.get("defaults"), raw.get("defaultGracePeriod"))
    for src, dst in (("driftInterval", "drift_interval"),
                     ("backendResyncInterval", "backend_resync_interval"),
                     ("deletionPollInterval", "deletion_poll_interval"),
                     ("finalBackupRetryInterval", "final_backup_retry_interval")):
        if src in raw:
            kwargs[dst] = float(_duration(raw[src], src))
    if "workers" in raw:
        kwargs["workers"] = _int(raw, "workers", 8, "")
    if "backupsBucketRetentionDays" in raw:
        kwargs["backups_bucket_retention_days"] = _int(raw, "backupsBucketRetentionDays", 90, "")
    if "archiveRetentionDays" in raw:
        kwargs["archive_retention_days"] = _int(raw, "archiveRetentionDays", 7 * 365, "")
    for key, attr in (("backupsBucketRetentionDays", "backups_bucket_retention_days"),
                      ("archiveRetentionDays", "archive_retention_days")):
        if kwargs.get(attr, 1) < 1:
            raise ConfigError(key, f"must be a positive number of days, got {kwargs[attr]}")

    if "operatorNamespace" in raw or os.environ.get("POD_NAMESPACE"):
        kwargs["operator_namespace"] = str(raw.get("operatorNamespace") or os.environ["POD_NAMESPACE"])
    for src, dst in (("reservedNamespaces", "reserved_namespaces"), ("reservedUsers", "reserved_users")):
        if src in raw:
            values = raw[src]
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise ConfigError(src, "must be a list of names or shell patterns (e.g. kube-*)")
            kwargs[dst] = tuple(values)

    services = []
    for i, svc in enumerate(raw.get("sharedServices") or []):
        path = f"sharedServices[{i}]"
        if not isinstance(svc, dict) or not (svc.get("namespace") or svc.get("cidr")):
            raise ConfigError(path, "needs `namespace` or `cidr`")
        ports = svc.get("ports") or []
        if not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise ConfigError(f"{path}.ports", "must be a list of TCP ports")
        services.append(SharedService(ports=tuple(ports), namespace=svc.get("namespace", ""),
                                      cidr=svc.get("cidr", "")))
    kwargs["shared_services"] = tuple(services)

    tiers = merge(DEFAULT_TIERS, {})
    for name, override in (raw.get("tiers") or {}).items():
        if name not in TIER_NAMES:
            raise ConfigError(f"tiers.{name}", f"unknown tier; known tiers: {', '.join(TIER_NAMES)}")
        tiers[name] = merge(tiers[name], override or {})
    kwargs["tiers"] = tiers
    kwargs["policy"] = policy_from_dict(raw.get("policy"), tiers, kwargs["defaults"])

    mysql = raw.get("mysql") or {}
    servers = {}
    for name, srv in (mysql.get("servers") or {}).items():
        path = f"mysql.servers.{name}."
        if not isinstance(srv, dict) or not srv.get("host"):
            raise ConfigError(f"{path}host", "is required")
        server = MySQLServer(
            name=name, host=str(srv["host"]), port=_int(srv, "port", 3306, path),
            admin_user=str(srv.get("adminUser", "root")),
            admin_password=str(srv.get("adminPassword", "")),
            user_host=str(srv.get("userHost", "%")),
            public_host=str(srv.get("publicHost", "")),
            weight=_weight(srv, path),
        )
        # Tenants (and their backup Jobs) connect to the address their Secret carries.
        servers[name] = replace(server, egress=egress_mod.target(
            srv, "publicHost" if server.public_host else "host", server.tenant_host, (server.port,), path,
            cluster_domain))
    if servers:
        default = mysql.get("default") or sorted(servers)[0]
        if default not in servers:
            raise ConfigError("mysql.default", f"names no server in mysql.servers ({default!r})")
        kwargs["mysql_servers"] = servers
        kwargs["mysql_default"] = default

    store = raw.get("objectStorage")
    if store:
        servers, default = _servers(store, "objectStorage", functools.partial(_object_store, cluster_domain))
        kwargs.update(object_storage_servers=servers, object_storage_default=default,
                      object_storage=servers[default])

    rabbit = raw.get("rabbitmq")
    if rabbit:
        servers, default = _servers(rabbit, "rabbitmq", functools.partial(_rabbitmq, cluster_domain))
        kwargs.update(rabbitmq_servers=servers, rabbitmq_default=default, rabbitmq=servers[default])
    if raw.get("sharding") is not None:
        kwargs["sharding"] = _sharding(raw["sharding"], kwargs.get("operator_namespace", "tenant-operator"))
    return OperatorConfig(**kwargs)


def _object_store(cluster_domain: str, store: dict, path: str, name: str) -> ObjectStorageConfig:
    backend = store.get("backend", "minio")
    if backend not in ("minio", "s3"):
        raise ConfigError(f"{path}backend", f"must be minio or s3, got {backend!r}")
    if backend == "minio" and not store.get("endpoint"):
        raise ConfigError(f"{path}endpoint", "is required for the minio backend")
    cfg_store = ObjectStorageConfig(
        backend=backend, endpoint=str(store.get("endpoint", "")),
        region=str(store.get("region", "us-east-1")),
        access_key=str(store.get("accessKey", "")), secret_key=str(store.get("secretKey", "")),
        public_endpoint=str(store.get("publicEndpoint", "")), name=name, weight=_weight(store, path),
    )
    # No endpoint (backend s3): AWS S3 in the region, over https.
    key = "publicEndpoint" if cfg_store.public_endpoint else "endpoint"
    host, port = egress_mod.endpoint_host_port(
        cfg_store.tenant_endpoint or f"https://s3.{cfg_store.region}.amazonaws.com", f"{path}{key}")
    return replace(cfg_store, egress=egress_mod.target(store, key, host, (port,), path, cluster_domain))


def _rabbitmq(cluster_domain: str, rabbit: dict, path: str, name: str) -> RabbitMQConfig:
    if not rabbit.get("managementUrl"):
        raise ConfigError(f"{path}managementUrl", "is required")
    cfg_rabbit = RabbitMQConfig(
        management_url=str(rabbit["managementUrl"]).rstrip("/"),
        amqp_host=str(rabbit.get("amqpHost", "")), amqp_port=_int(rabbit, "amqpPort", 5672, path),
        admin_user=str(rabbit.get("adminUser", "")), admin_password=str(rabbit.get("adminPassword", "")),
        public_host=str(rabbit.get("publicHost", "")), name=name, weight=_weight(rabbit, path),
    )
    # Without an AMQP address tenants are given none, and get no egress to derive from it.
    if cfg_rabbit.tenant_host or "egress" in rabbit:
        cfg_rabbit = replace(cfg_rabbit, egress=egress_mod.target(
            rabbit, "publicHost" if cfg_rabbit.public_host else "amqpHost", cfg_rabbit.tenant_host,
            (cfg_rabbit.amqp_port,), path, cluster_domain))
    return cfg_rabbit


def load(path: str | Path) -> OperatorConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("file", f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("file", f"{path} must hold a mapping at the top level")
    return from_dict(raw)
