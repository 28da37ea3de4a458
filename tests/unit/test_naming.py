"""naming: the platform's name conventions and the system limits they must respect."""

from __future__ import annotations

import random
import re
import string

import pytest
from tenant_operator import naming

LONG_TENANT = "a-very-long-tenant-name-that-goes-on"           # 36 chars
LONG_SERVICE = "notifications-dispatcher"                      # 24 chars, the maximum

# S3 bucket naming rules (the subset that applies to names without dots).
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _random_name(rng: random.Random, pattern: re.Pattern, min_len: int, max_len: int) -> str:
    while True:
        n = rng.randint(min_len, max_len)
        name = rng.choice(string.ascii_lowercase) + "".join(
            rng.choice(string.ascii_lowercase + string.digits + "-") for _ in range(n - 2)
        ) + rng.choice(string.ascii_lowercase + string.digits)
        if pattern.fullmatch(name):
            return name


def _s3_valid(name: str) -> bool:
    return (bool(S3_BUCKET.fullmatch(name)) and ".." not in name
            and not name.startswith(("xn--", "sthree-")) and not name.endswith("-s3alias"))


# --- MySQL ------------------------------------------------------------------------------

@pytest.mark.parametrize(("tenant", "service", "db", "user"), [
    ("client-abc", "auth", "client_abc_auth_db", "client_abc_auth_user"),
    ("acme", "order-history", "acme_order_history_db", "acme_order_history_user"),
    ("x1", "a", "x1_a_db", "x1_a_user"),
])
def test_mysql_names_follow_the_convention(tenant, service, db, user):
    assert naming.tenant_id(tenant) == tenant.replace("-", "_")
    assert naming.mysql_database(tenant, service) == db
    assert naming.mysql_user(tenant, service) == user


def test_long_mysql_names_are_shortened_within_the_limits():
    db = naming.mysql_database(LONG_TENANT, LONG_SERVICE)
    user = naming.mysql_user(LONG_TENANT, LONG_SERVICE)
    assert len(db) <= naming.MYSQL_DB_MAX == 64
    assert len(user) <= naming.MYSQL_USER_MAX == 32
    assert db.endswith("_db")
    assert user.endswith("_user")
    # A readable head of the tenant id survives.
    assert user.startswith("a_very_long")
    assert db.startswith("a_very_long_tenant_name")
    assert naming.SQL_IDENTIFIER.fullmatch(db) and naming.SQL_IDENTIFIER.fullmatch(user)
    # Deterministic.
    assert naming.mysql_database(LONG_TENANT, LONG_SERVICE) == db
    assert naming.mysql_user(LONG_TENANT, LONG_SERVICE) == user


def test_long_mysql_names_differ_when_only_the_tail_differs():
    a = naming.mysql_user(LONG_TENANT, "orders-service-primary")
    b = naming.mysql_user(LONG_TENANT, "orders-service-replica")
    assert a != b
    assert a[:18] == b[:18]           # the same readable head: the hash tells them apart


def test_a_name_exactly_at_the_limit_is_kept():
    tenant = "t" * 26                 # 26 + len("_a_user") == 33 > 32; 25 fits exactly
    assert naming.mysql_user("t" * 25, "a") == "t" * 25 + "_a_user"
    assert len(naming.mysql_user("t" * 25, "a")) == 32
    assert naming.mysql_user(tenant, "a") != tenant + "_a_user"
    assert len(naming.mysql_user(tenant, "a")) == 32


def test_one_thousand_random_long_names_never_collide():
    rng = random.Random(20240501)
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < 1000:
        tenant = _random_name(rng, naming.TENANT_NAME, 30, 40)
        service = _random_name(rng, naming.SERVICE_NAME, 16, 24)
        pairs.add((tenant, service))
    dbs, users, buckets, namespaces = set(), set(), set(), set()
    tenants = {tenant for tenant, _ in pairs}
    for tenant, service in pairs:
        db, user = naming.mysql_database(tenant, service), naming.mysql_user(tenant, service)
        assert len(db) <= 64 and db.endswith("_db"), db
        assert len(user) <= 32 and user.endswith("_user"), user
        assert naming.SQL_IDENTIFIER.fullmatch(db) and naming.SQL_IDENTIFIER.fullmatch(user)
        assert naming.mysql_database(tenant, service) == db       # deterministic
        bucket = naming.bucket(tenant, service)
        assert len(bucket) <= 63 and _s3_valid(bucket), bucket
        ns = naming.namespace(tenant)
        assert len(ns) <= 63 and DNS_LABEL.fullmatch(ns), ns
        dbs.add(db)
        users.add(user)
        buckets.add(bucket)
        namespaces.add(ns)
    assert len(dbs) == len(users) == len(buckets) == 1000
    assert len(namespaces) == len(tenants)


def test_random_names_with_dashes_stay_within_limits():
    rng = random.Random(7)
    for _ in range(1000):
        tenant = _random_name(rng, naming.TENANT_NAME, 2, 40)
        service = _random_name(rng, naming.SERVICE_NAME, 2, 24)
        assert len(naming.mysql_database(tenant, service)) <= 64
        assert len(naming.mysql_user(tenant, service)) <= 32
        assert naming.mysql_user(tenant, service).endswith("_user")
        bucket = naming.bucket(tenant, service)
        assert len(bucket) <= 63 and S3_BUCKET.fullmatch(bucket) and ".." not in bucket, bucket
        assert len(naming.backups_bucket(tenant)) <= 63
        assert len(naming.namespace(tenant, "tenant-prefix-twenty-")) <= 63
        assert len(naming.backup_cronjob(service)) <= naming.CRONJOB_NAME_MAX


def test_names_of_different_tenants_never_collide():
    """Service and bucket names carry no separator, so the pair that would collide
    (tenant a-b + service c vs tenant a + service b-c) cannot be expressed, and every
    valid (tenant, service) pair maps to its own database, user and bucket."""
    assert not naming.SERVICE_NAME.fullmatch("b-c")
    assert not naming.SERVICE_NAME.fullmatch("b-backups")
    tenants = ["a", "b", "a-b", "ab", "a-b-c", "a-bc", "ab-c", "abc"]
    services = ["b", "c", "bc", "abc", "backups"]
    seen_db, seen_user, seen_bucket = {}, {}, {}
    for tenant in tenants:
        for service in services:
            pair = (tenant, service)
            for seen, name in ((seen_db, naming.mysql_database(tenant, service)),
                               (seen_user, naming.mysql_user(tenant, service)),
                               (seen_bucket, naming.bucket(tenant, service))):
                assert seen.setdefault(name, pair) == pair, (name, seen[name], pair)


# --- namespaces and buckets ------------------------------------------------------------------

def test_namespace_uses_the_prefix_and_fits_a_dns_label():
    assert naming.namespace("client-abc") == "tenant-client-abc"
    assert naming.namespace("client-abc", "saas-") == "saas-client-abc"
    longest = naming.namespace("a" * 40, "p" * 21 + "-")     # 62 chars: fits unchanged
    assert longest == "p" * 21 + "-" + "a" * 40
    shortened = naming.namespace("a" * 40, "p" * 30 + "-")   # not a valid prefix, but never over 63
    assert len(shortened) <= 63 and DNS_LABEL.fullmatch(shortened)


def test_bucket_names():
    assert naming.bucket("client-abc", "products") == "client-abc-products"
    assert naming.backups_bucket("client-abc") == "client-abc-backups"
    long_bucket = naming.bucket("t" * 40, "s" * 24)
    assert len(long_bucket) <= 63
    assert _s3_valid(long_bucket)
    assert long_bucket != naming.bucket("t" * 40, "s" * 23 + "x")


def test_shorten_strips_separators_before_the_hash():
    # The cut falls right after a '-': the head must not end in '-' (no '--' before the hash).
    name = "a" * 53 + "-" + "b" * 20
    out = naming.shorten(name, 63)
    assert len(out) <= 63
    assert "--" not in out
    assert out.startswith("a" * 53 + "-")
    assert re.fullmatch(r"a{53}-[0-9a-f]{8}", out)


def test_other_names():
    assert naming.tls_secret("client-abc") == "client-abc-tls"
    assert naming.db_secret("auth") == "auth-db-credentials"
    assert naming.backup_cronjob("auth") == "backup-auth-db"
    assert naming.bucket_env_key("sav-archive") == "S3_BUCKET_SAV_ARCHIVE"
    assert naming.queue("client-abc", "orders") == "client-abc.orders"
    assert naming.events_exchange("client-abc") == "client-abc.events"
    assert naming.tenant_labels("acme", "rbac") == {
        "tenancy.dev/tenant": "acme", "tenancy.dev/component": "rbac",
        "app.kubernetes.io/managed-by": "tenant-operator",
    }


# --- SQL identifiers -------------------------------------------------------------------------

def test_quote_sql_identifier_accepts_generated_names():
    name = naming.mysql_database(LONG_TENANT, LONG_SERVICE)
    assert naming.quote_sql_identifier(name) == f"`{name}`"
    assert naming.quote_sql_identifier("client_abc_auth_db") == "`client_abc_auth_db`"
    assert naming.quote_sql_identifier("a" * 64) == "`" + "a" * 64 + "`"


@pytest.mark.parametrize("bad", ["a`b", "x; DROP TABLE y", "", "a" * 65, "a-b", "a b", "a'b", "a\nb",
                                 "é", "a\x00"])
def test_quote_sql_identifier_rejects_unsafe_names(bad):
    with pytest.raises(ValueError, match="unsafe SQL identifier"):
        naming.quote_sql_identifier(bad)


@pytest.mark.parametrize("tenant", ["xn--shop", "sthree-shop", "amzn-s3-demo-x"])
def test_tenant_names_with_s3_reserved_prefixes_are_refused(tenant):
    from tenant_operator import config, spec
    with pytest.raises(ValueError, match=r"^metadata\.name: .*reserves"):
        spec.parse({"metadata": {"name": tenant}, "spec": {"tier": "standard"}}, config.from_dict({}))
