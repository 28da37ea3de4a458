"""`tenant-operator verify TENANT`: prove from inside the platform that a tenant
is isolated. Uses only the tenant's own Secrets (what its workloads get), and
another tenant's names as targets:

- its MySQL credentials work on its database and are refused on the other's;
- its S3 keys work on its bucket and are refused on the other's;
- its AMQP credentials work on its vhost and are refused on the other's;
- the NetworkPolicies that fence the namespace are present.

Prints a pass/fail table; exits 1 when any check fails."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import urlparse

from tenant_operator import naming
from tenant_operator.components import live_secret_data
from tenant_operator.kube.client import Kube

REQUIRED_POLICIES = ("default-deny-all", "allow-same-namespace", "allow-from-ingress-controller", "allow-dns")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _secret(kube: Kube, ns: str, name: str) -> dict[str, str]:
    return live_secret_data(kube.get("Secret", name, ns))


def _mysql_checks(kube: Kube, ns: str, other: str, other_status: dict) -> list[Check]:
    import pymysql
    out = []
    secrets = [s for s in kube.list("Secret", ns, f"{naming.LABEL_COMPONENT}=mysql")]
    if not secrets:
        return [Check("mysql", True, "no databases provisioned (nothing to check)")]
    data = live_secret_data(secrets[0])
    service = secrets[0]["metadata"]["name"].removesuffix("-db-credentials")
    other_db = naming.mysql_database(other, service)

    def connect(database: str):
        return pymysql.connect(host=data["DB_HOST"], port=int(data["DB_PORT"]), user=data["DB_USERNAME"],
                               password=data["DB_PASSWORD"], database=database, connect_timeout=5)
    try:
        connect(data["DB_DATABASE"]).close()
        out.append(Check("mysql: own database", True, f"{data['DB_USERNAME']} -> {data['DB_DATABASE']}"))
    except pymysql.MySQLError as exc:
        out.append(Check("mysql: own database", False, f"login failed: {exc.args[0]}"))
    try:
        connect(other_db).close()
        out.append(Check("mysql: other tenant's database refused", False, f"{other_db} is reachable"))
    except pymysql.MySQLError as exc:
        out.append(Check("mysql: other tenant's database refused", True, f"{other_db}: error {exc.args[0]}"))
    return out


def _s3_checks(kube: Kube, ns: str, other: str) -> list[Check]:
    from minio import Minio
    from minio.error import S3Error
    data = _secret(kube, ns, naming.OBJECTSTORE_SECRET)
    if not data:
        return [Check("s3", True, "no object storage provisioned (nothing to check)")]
    url = urlparse(data["S3_ENDPOINT"])
    client = Minio(url.netloc, access_key=data["AWS_ACCESS_KEY_ID"], secret_key=data["AWS_SECRET_ACCESS_KEY"],
                   secure=url.scheme == "https", region=data.get("S3_REGION") or None)
    own = data["S3_BACKUPS_BUCKET"]
    other_bucket = naming.backups_bucket(other)
    out = []
    try:
        next(iter(client.list_objects(own)), None)
        out.append(Check("s3: own bucket", True, own))
    except S3Error as exc:
        out.append(Check("s3: own bucket", False, f"{own}: {exc.code}"))
    try:
        next(iter(client.list_objects(other_bucket)), None)
        out.append(Check("s3: other tenant's bucket refused", False, f"{other_bucket} is listable"))
    except S3Error as exc:
        out.append(Check("s3: other tenant's bucket refused", exc.code in ("AccessDenied", "NoSuchBucket"),
                         f"{other_bucket}: {exc.code}"))
    return out


def _amqp_checks(kube: Kube, ns: str, other: str) -> list[Check]:
    import pika
    data = _secret(kube, ns, naming.RABBITMQ_SECRET)
    if not data:
        return [Check("amqp", True, "no messaging provisioned (nothing to check)")]

    def connect(vhost: str):
        params = pika.ConnectionParameters(
            host=data["RABBITMQ_HOST"], port=int(data["RABBITMQ_PORT"]), virtual_host=vhost,
            credentials=pika.PlainCredentials(data["RABBITMQ_USERNAME"], data["RABBITMQ_PASSWORD"]),
            connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5)
        pika.BlockingConnection(params).close()
    out = []
    try:
        connect(data["RABBITMQ_VHOST"])
        out.append(Check("amqp: own vhost", True, data["RABBITMQ_VHOST"]))
    except pika.exceptions.AMQPError as exc:
        out.append(Check("amqp: own vhost", False, type(exc).__name__))
    try:
        connect(naming.vhost(other))
        out.append(Check("amqp: other tenant's vhost refused", False, f"{naming.vhost(other)} accepted"))
    except pika.exceptions.AMQPError as exc:
        out.append(Check("amqp: other tenant's vhost refused", True, f"{naming.vhost(other)}: {type(exc).__name__}"))
    return out


def _network_checks(kube: Kube, ns: str) -> list[Check]:
    present = {p["metadata"]["name"] for p in kube.list("NetworkPolicy", ns)}
    missing = [p for p in REQUIRED_POLICIES if p not in present]
    return [Check("network policies present", not missing,
                  "missing: " + ", ".join(missing) if missing else ", ".join(REQUIRED_POLICIES))]


def run_checks(kube: Kube, tenant: str, other: str) -> list[Check]:
    body = kube.get("Tenant", tenant)
    if body is None:
        return [Check("tenant exists", False, f"no Tenant {tenant}")]
    other_body = kube.get("Tenant", other) or {}
    ns = (body.get("status") or {}).get("namespace")
    if not ns:
        return [Check("tenant provisioned", False, "status.namespace is not set yet")]
    checks = _network_checks(kube, ns)
    checks += _mysql_checks(kube, ns, other, other_body.get("status") or {})
    checks += _s3_checks(kube, ns, other)
    checks += _amqp_checks(kube, ns, other)
    return checks


def cmd_verify(args) -> int:
    kube = Kube.from_environment("tenant-operator-verify")
    other = args.against
    if not other:
        others = [t["metadata"]["name"] for t in kube.list("Tenant") if t["metadata"]["name"] != args.tenant]
        if not others:
            print("error: no other tenant to test isolation against (use --against)", file=sys.stderr)
            return 2
        other = sorted(others)[0]
    checks = run_checks(kube, args.tenant, other)
    width = max(len(c.name) for c in checks)
    print(f"isolation of tenant {args.tenant} (against {other})")
    for c in checks:
        print(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
    failed = sum(not c.ok for c in checks)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


def add_command(sub) -> None:
    p = sub.add_parser("verify", help="check from inside the platform that a tenant is isolated")
    p.add_argument("tenant")
    p.add_argument("--against", default="", help="the other tenant to try (default: any other tenant)")
    p.set_defaults(func=cmd_verify)
