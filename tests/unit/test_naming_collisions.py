"""naming: a shortened name never equals the name derived for another (tenant, service).

A property test over generated names. `hypothesis` is not installed in the venv, so the
names come from a seeded generator (the same 20,000 pairs on every run) plus adversarial
pairs built from the shortened names themselves: for each shortened `<head>_<hash>_user`
(or `_db`), the tenant whose id is `<head>` and the services that look most like `<hash>`.
Under the old scheme (a plain 8-hex hash) that construction hit a real collision about
every third time the hash began with a-f; the scheme is reproduced below so the tests
show they would catch it.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import string

import pytest
from tenant_operator import naming

SEED = 20241130
N_PAIRS = 20_000

S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAMESPACE_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]{0,20})?")     # what config.from_dict accepts
MYSQL_HASH = re.compile(r"^[0-9][0-9a-f]{8}$")                    # the hash segment of a shortened MySQL name

Pair = tuple[str, str]


# --- the scheme before the fix (plain 8-hex hash), to show the tests catch it --------------

def _old_shorten(name: str, limit: int, keep_suffix: str) -> str:
    if len(name) <= limit:
        return name
    base = name[: len(name) - len(keep_suffix)]
    tail = "_" + hashlib.sha256(name.encode()).hexdigest()[:8] + keep_suffix
    return base[: limit - len(tail)].rstrip("-_") + tail


def _old_mysql_user(tenant: str, service: str) -> str:
    return _old_shorten(f"{naming.tenant_id(tenant)}_{service}_user", 32, "_user")


def _old_mysql_database(tenant: str, service: str) -> str:
    full, limit = f"{naming.tenant_id(tenant)}_{service}_db", 64
    name = _old_shorten(full, limit, "_db")
    while len(name) + name.count("_") > 64:
        limit -= 1
        name = _old_shorten(full, limit, "_db")
    return name


NEW = {"user": (naming.mysql_user, "_user"), "db": (naming.mysql_database, "_db")}
OLD = {"user": (_old_mysql_user, "_user"), "db": (_old_mysql_database, "_db")}


# --- generated names -----------------------------------------------------------------------

def _tenant(rng: random.Random) -> str:
    """A valid tenant name, mostly long, sometimes dense with '-' (each one counts twice
    in the escaped database name, which shortens the head below the 40-char tenant limit)."""
    n = rng.choice((rng.randint(1, 40), rng.randint(20, 40), rng.randint(30, 40)))
    dash = rng.choice((0.0, 0.1, 0.3, 0.5))
    middle = "".join("-" if rng.random() < dash else rng.choice(string.ascii_lowercase + string.digits)
                     for _ in range(n - 2))
    name = rng.choice(string.ascii_lowercase) + (middle + rng.choice(string.ascii_lowercase + string.digits)
                                                 if n > 1 else "")
    assert naming.TENANT_NAME.fullmatch(name), name
    return name


def _service(rng: random.Random) -> str:
    n = rng.choice((rng.randint(1, 24), rng.randint(12, 24)))
    alphabet = rng.choice((string.ascii_lowercase + string.digits, "abcdef0123456789"))   # hash-like, too
    name = rng.choice(string.ascii_lowercase) + "".join(rng.choice(alphabet) for _ in range(n - 1))
    assert naming.SERVICE_NAME.fullmatch(name), name
    return name


@functools.lru_cache(maxsize=1)
def _sample() -> tuple[Pair, ...]:
    """N_PAIRS distinct pairs; tenants and services are reused so pairs share parts."""
    rng = random.Random(SEED)
    tenants: list[str] = []
    services: list[str] = []
    pairs: dict[Pair, None] = {}
    while len(pairs) < N_PAIRS:
        tenant = rng.choice(tenants) if tenants and rng.random() < 0.3 else _tenant(rng)
        service = rng.choice(services) if services and rng.random() < 0.3 else _service(rng)
        tenants.append(tenant)
        services.append(service)
        pairs[(tenant, service)] = None
    return tuple(pairs)


def _split(name: str, suffix: str) -> tuple[str, str]:
    """`<head>_<segment><suffix>` -> (head, segment): the segment is the service of an
    unshortened name and the hash of a shortened one."""
    assert name.endswith(suffix), name
    head, _, segment = name[: -len(suffix)].rpartition("_")
    return head, segment


def _adversaries(name: str, suffix: str) -> list[Pair]:
    """The valid pairs whose unshortened name comes closest to a shortened `name`: the
    tenant whose id is the head, with the hash segment as the service (were it valid),
    the segment with its leading digit swapped for each letter, with a letter in front,
    and without its first character."""
    head, segment = _split(name, suffix)
    tenant = head.replace("_", "-")
    if not naming.TENANT_NAME.fullmatch(tenant):
        return []
    candidates = [segment, segment[1:], *(c + segment[1:] for c in string.ascii_lowercase),
                  *(c + segment for c in "aefz")]
    return [(tenant, s) for s in candidates if naming.SERVICE_NAME.fullmatch(s)]


def _collisions(pairs, scheme) -> list[tuple[str, str, Pair, Pair]]:
    """(kind, name, pair, other pair) for every name two different pairs share, the pairs
    including the adversaries of every shortened name."""
    found = []
    for kind, (derive, suffix) in scheme.items():
        owner: dict[str, Pair] = {}
        todo = list(pairs)
        for tenant, service in pairs:
            name = derive(tenant, service)
            if name != f"{naming.tenant_id(tenant)}_{service}{suffix}":
                todo.extend(_adversaries(name, suffix))
        for pair in dict.fromkeys(todo):
            name = derive(*pair)
            if owner.setdefault(name, pair) != pair:
                found.append((kind, name, owner[name], pair))
    return found


# --- properties ------------------------------------------------------------------------------

def test_the_sample_exercises_shortening_and_adversaries():
    pairs = _sample()
    assert len(pairs) == N_PAIRS
    short_users = [p for p in pairs if naming.mysql_user(*p) != f"{naming.tenant_id(p[0])}_{p[1]}_user"]
    short_dbs = [p for p in pairs if naming.mysql_database(*p) != f"{naming.tenant_id(p[0])}_{p[1]}_db"]
    assert len(short_users) > N_PAIRS // 4
    assert len(short_dbs) > N_PAIRS // 100
    # Database heads short enough to be a tenant id exist too, or the db check would be empty.
    assert sum(bool(_adversaries(naming.mysql_database(*p), "_db")) for p in short_dbs) > 50


def test_every_derived_name_respects_its_limit_and_pattern():
    prefix21 = "tenant-prefix-twenty-"
    assert NAMESPACE_PREFIX.fullmatch(prefix21) and len(prefix21) == 21
    for tenant, service in _sample():
        user = naming.mysql_user(tenant, service)
        db = naming.mysql_database(tenant, service)
        assert len(user) <= naming.MYSQL_USER_MAX and naming.SQL_IDENTIFIER.fullmatch(user), user
        assert len(db) + db.count("_") <= naming.MYSQL_DB_MAX and naming.SQL_IDENTIFIER.fullmatch(db), db
        for name, suffix in ((user, "_user"), (db, "_db")):
            full = f"{naming.tenant_id(tenant)}_{service}{suffix}"
            if name != full:
                head, segment = _split(name, suffix)
                assert MYSQL_HASH.fullmatch(segment), name          # a digit first: never a service
                assert head and not head.endswith("_") and full.startswith(head), name
                assert name == naming.mysql_user(tenant, service) or name == naming.mysql_database(tenant, service)
        b = naming.bucket(tenant, service)
        assert len(b) <= naming.BUCKET_MAX and S3_BUCKET.fullmatch(b) and ".." not in b, b
        assert len(naming.backups_bucket(tenant)) <= naming.BUCKET_MAX
        # Within the limits a tenant (40) and a valid prefix (21) allow, these never shorten.
        assert naming.namespace(tenant) == "tenant-" + tenant and DNS_LABEL.fullmatch(naming.namespace(tenant))
        assert naming.namespace(tenant, prefix21) == prefix21 + tenant
        assert DNS_LABEL.fullmatch(naming.namespace(tenant, prefix21))
        assert naming.storage_user(tenant) == naming.storage_policy(tenant) == "tenant-" + tenant


def test_a_shortened_mysql_name_never_equals_the_name_of_another_pair():
    assert _collisions(_sample(), NEW) == []


def test_the_same_check_finds_the_collisions_of_the_old_scheme():
    """The check above is not vacuous: on the very same sample, the old plain-hex hash
    gives hundreds of names that two different valid pairs share."""
    found = _collisions(_sample(), OLD)
    assert {kind for kind, *_ in found} == {"user", "db"}
    assert len(found) > 100
    kind, name, (t1, s1), (t2, s2) = found[0]
    assert OLD[kind][0](t1, s1) == OLD[kind][0](t2, s2) == name
    assert NEW[kind][0](t1, s1) != NEW[kind][0](t2, s2)


def test_shortened_names_of_different_pairs_differ():
    """Equal shortened names would need equal ~35-bit hashes: none in the sample."""
    for kind, (derive, suffix) in NEW.items():
        shortened: dict[str, Pair] = {}
        for tenant, service in _sample():
            name = derive(tenant, service)
            if name != f"{naming.tenant_id(tenant)}_{service}{suffix}":
                assert shortened.setdefault(name, (tenant, service)) == (tenant, service), (kind, name)


def test_buckets_are_never_ambiguous():
    """A shortened bucket keeps a 54-char head, longer than any tenant: `<head>-<hash>`
    can never be read as `<tenant>-<bucket>`, so the plain hex hash stays (and existing
    buckets keep their names)."""
    owner: dict[str, Pair] = {}
    for tenant, service in _sample():
        b = naming.bucket(tenant, service)
        assert owner.setdefault(b, (tenant, service)) == (tenant, service), b
        if b != f"{tenant}-{service}":
            head, _, segment = b.rpartition("-")
            assert len(head) > 40 and not naming.TENANT_NAME.fullmatch(head), b
            assert re.fullmatch(r"[0-9a-f]{8}", segment), b


# --- regressions: pairs that shared a name under the old scheme --------------------------------

@pytest.mark.parametrize(("kind", "victim", "intruder", "old_name"), [
    ("user", ("acme-xxxxxxxxxxxxxxxx", "billing"), ("acme-xxxxxxxxxxxxx", "ac4e85cd"),
     "acme_xxxxxxxxxxxxx_ac4e85cd_user"),
    ("user", ("acme-xxxxxxxxxxxxxx", "payments"), ("acme-xxxxxxxxxxxxx", "d954c7cf"),
     "acme_xxxxxxxxxxxxx_d954c7cf_user"),
    ("db", ("ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-a", "orders"),
     ("ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-a", "c491b237"), "ab_ab_ab_ab_ab_ab_ab_ab_ab_ab_ab_ab_a_c491b237_db"),
])
def test_old_collisions_are_gone(kind, victim, intruder, old_name):
    old, new = OLD[kind][0], NEW[kind][0]
    for tenant, service in (victim, intruder):
        assert naming.TENANT_NAME.fullmatch(tenant) and naming.SERVICE_NAME.fullmatch(service)
    # Two valid tenants used to get the same MySQL user / database...
    assert old(*victim) == old(*intruder) == old_name
    # ...the intruder's name is unchanged (it fits), the victim's hash now starts with a digit.
    assert new(*intruder) == old_name
    assert new(*victim) != new(*intruder)
    assert MYSQL_HASH.fullmatch(_split(new(*victim), OLD[kind][1])[1])


def test_a_hash_segment_is_never_a_service_name():
    """The property the fix rests on: whatever the digest, the segment starts with a digit."""
    for i in range(2000):
        segment = naming._mysql_hash(str(i))
        assert MYSQL_HASH.fullmatch(segment) and not naming.SERVICE_NAME.fullmatch(segment), segment
