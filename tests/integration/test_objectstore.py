"""MinioStore against the local MinIO started by `devenv/up.sh minio`.

Needs MINIO_ENDPOINT, MINIO_ACCESS_KEY and MINIO_SECRET_KEY (`source .devenv/env`).
Every test works on its own `it-<random>` tenants and removes their buckets,
users and policies afterwards; the server itself is shared and never stopped.
Tenant access is checked with a plain `Minio` client holding the tenant's keys,
and quotas and versioning are read back with plain admin/S3 clients.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import time
from urllib.parse import urlsplit

import pytest
from minio import Minio, MinioAdmin
from minio.commonconfig import ENABLED, Filter
from minio.credentials import StaticProvider
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.versioningconfig import VersioningConfig
from tenant_operator import naming
from tenant_operator.backends.objectstore.client import (
    BACKUPS_RULE_ID,
    BucketNotEmpty,
    Credentials,
    InvalidBucketName,
    MinioStore,
    backups_rule,
    describe_backups_rule,
    make_objectstore,
)
from tenant_operator.config import ObjectStorageConfig
from tenant_operator.errors import BackendUnavailable

from .conftest import wait_for as _wait_for

ENV = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(not os.environ.get(k) for k in ENV),
                       reason="MinIO devenv not configured (source .devenv/env)"),
]

# IAM changes (new users, policies, status, secrets) can take a moment to apply.
IAM_WAIT = 20.0
GIB = 1 << 30


def poll(condition, timeout: float = IAM_WAIT, interval: float = 0.2, what: str = "condition"):
    """Return condition()'s first truthy value, failing the test after `timeout` seconds."""
    return _wait_for(condition, timeout, interval, what)

def _host() -> tuple[str, bool]:
    url = urlsplit(os.environ["MINIO_ENDPOINT"])
    return url.netloc, url.scheme == "https"


def tenant_client(creds: Credentials) -> Minio:
    host, secure = _host()
    return Minio(host, access_key=creds.access_key, secret_key=creds.secret_key, secure=secure,
                 region="us-east-1")


def root_admin() -> MinioAdmin:
    host, secure = _host()
    creds = StaticProvider(os.environ["MINIO_ACCESS_KEY"], os.environ["MINIO_SECRET_KEY"])
    return MinioAdmin(endpoint=host, secure=secure, credentials=creds)


def root_s3() -> Minio:
    host, secure = _host()
    return Minio(host, access_key=os.environ["MINIO_ACCESS_KEY"], secret_key=os.environ["MINIO_SECRET_KEY"],
                 secure=secure, region="us-east-1")


def error_code(action) -> str | None:
    """Run `action`; None when it succeeds, else the S3 error code."""
    try:
        action()
    except S3Error as exc:
        return exc.code
    return None


def can_list(creds: Credentials, bucket: str) -> bool:
    return error_code(lambda: list(tenant_client(creds).list_objects(bucket))) is None


def denied(creds: Credentials, bucket: str) -> str | None:
    """The error code a list in `bucket` gets with `creds`, or None when it works."""
    return error_code(lambda: list(tenant_client(creds).list_objects(bucket)))


def put(client: Minio, bucket: str, name: str, data: bytes = b"payload") -> None:
    client.put_object(bucket, name, io.BytesIO(data), len(data))


def get(client: Minio, bucket: str, name: str) -> bytes:
    resp = client.get_object(bucket, name)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


@pytest.fixture(scope="module")
def store() -> MinioStore:
    s = MinioStore(os.environ["MINIO_ENDPOINT"], os.environ["MINIO_ACCESS_KEY"],
                   os.environ["MINIO_SECRET_KEY"])
    s.ping()
    return s


class Tenant:
    def __init__(self, name: str, buckets: list[str], creds: Credentials):
        self.name = name
        self.buckets = buckets
        self.creds = creds
        self.user = naming.storage_user(name)
        self.policy = naming.storage_policy(name)


@pytest.fixture
def make_tenant(store):
    """Factory: provision an `it-<random>` tenant (data bucket with quota, versioned
    backups bucket, scoped user); everything created is removed at teardown."""
    created: list[Tenant] = []
    extra_buckets: list[str] = []

    def make(quota_bytes: int = GIB) -> Tenant:
        name = f"it-{secrets.token_hex(4)}"
        data, backups = naming.bucket(name, "data"), naming.backups_bucket(name)
        user, policy = naming.storage_user(name), naming.storage_policy(name)
        t = Tenant(name, [data, backups], Credentials(user, ""))
        created.append(t)
        store.ensure_bucket(data, quota_bytes=quota_bytes, versioning=False)
        store.ensure_bucket(backups, quota_bytes=quota_bytes, versioning=True)
        creds, changes = store.ensure_user(user, policy, [data, backups], enabled=True, current=None)
        assert f"user {user} created" in changes
        t.creds = creds
        poll(lambda: can_list(creds, data), what=f"{user} to be usable")
        return t

    make.extra_buckets = extra_buckets
    yield make
    for t in created:
        store.delete_user(t.user, t.policy)
        for b in t.buckets:
            store.delete_bucket(b, purge=True)
    for b in extra_buckets:
        store.delete_bucket(b, purge=True)


def test_buckets_quota_versioning_and_isolation(store, make_tenant):
    a, b = make_tenant(quota_bytes=2 * GIB), make_tenant(quota_bytes=GIB)
    admin, s3 = root_admin(), root_s3()

    for t, quota in ((a, 2 * GIB), (b, GIB)):
        for bucket in t.buckets:
            assert s3.bucket_exists(bucket)
            q = json.loads(admin.bucket_quota_get(bucket))
            assert q["quotatype"] == "hard"
            assert (q.get("size") or q.get("quota")) == quota
            assert store.bucket_quota(bucket) == quota
        assert s3.get_bucket_versioning(naming.backups_bucket(t.name)).status == "Enabled"
        assert s3.get_bucket_versioning(naming.bucket(t.name, "data")).status != "Enabled"

    assert a.creds.access_key == a.user
    assert len(a.creds.secret_key) >= 32
    assert a.creds.secret_key not in repr(a.creds)

    client = tenant_client(a.creds)
    for bucket in a.buckets:
        put(client, bucket, "dir/hello.txt", b"hello " + bucket.encode())
        assert get(client, bucket, "dir/hello.txt") == b"hello " + bucket.encode()
        assert [o.object_name for o in client.list_objects(bucket, recursive=True)] == ["dir/hello.txt"]
        client.remove_object(bucket, "dir/hello.txt")

    b_data = naming.bucket(b.name, "data")
    put(tenant_client(b.creds), b_data, "secret.txt")
    assert error_code(lambda: list(client.list_objects(b_data))) == "AccessDenied"
    assert error_code(lambda: get(client, b_data, "secret.txt")) == "AccessDenied"
    assert error_code(lambda: put(client, b_data, "intrusion.txt")) == "AccessDenied"
    assert error_code(lambda: client.remove_object(b_data, "secret.txt")) == "AccessDenied"
    rogue = f"it-rogue-{secrets.token_hex(4)}"
    make_tenant.extra_buckets.append(rogue)
    assert error_code(lambda: client.make_bucket(rogue)) == "AccessDenied"
    assert not s3.bucket_exists(rogue)
    assert error_code(lambda: client.set_bucket_versioning(a.buckets[0], VersioningConfig(ENABLED))) \
        == "AccessDenied"


def test_repeat_calls_change_nothing(store, make_tenant):
    a = make_tenant()
    data, backups = a.buckets
    assert store.ensure_bucket(data, quota_bytes=GIB, versioning=False) == []
    assert store.ensure_bucket(backups, quota_bytes=GIB, versioning=True) == []
    creds, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=True, current=a.creds)
    assert (creds, changes) == (a.creds, [])
    # Same buckets in another order: still the same policy.
    _, changes = store.ensure_user(a.user, a.policy, list(reversed(a.buckets)), enabled=True, current=a.creds)
    assert changes == []


def test_bucket_settings_follow_the_input(store, make_tenant):
    a = make_tenant()
    data = a.buckets[0]
    assert store.ensure_bucket(data, quota_bytes=3 * GIB, versioning=False) == [
        f"bucket {data} quota set to {3 * GIB} bytes"]
    assert store.bucket_quota(data) == 3 * GIB
    assert store.ensure_bucket(data, quota_bytes=None, versioning=True) == [
        f"bucket {data} versioning enabled", f"bucket {data} quota removed"]
    assert store.bucket_quota(data) == 0
    assert store.ensure_bucket(data, quota_bytes=0, versioning=True) == []
    assert store.ensure_bucket(data, quota_bytes=None, versioning=False) == [
        f"bucket {data} versioning suspended"]
    assert root_s3().get_bucket_versioning(data).status == "Suspended"


def test_policy_follows_the_bucket_list(store, make_tenant):
    a = make_tenant()
    data, backups = a.buckets
    creds, changes = store.ensure_user(a.user, a.policy, [backups], enabled=True, current=a.creds)
    assert creds == a.creds
    assert changes == [f"policy {a.policy} updated"]
    poll(lambda: denied(a.creds, data) == "AccessDenied", what="access to the dropped bucket to end")
    assert can_list(a.creds, backups)
    _, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=True, current=a.creds)
    assert changes == [f"policy {a.policy} updated"]
    poll(lambda: can_list(a.creds, data), what="access to the re-added bucket")


def test_disable_and_enable(store, make_tenant):
    a = make_tenant()
    data = a.buckets[0]
    creds, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=False, current=a.creds)
    assert creds == a.creds
    assert changes == [f"user {a.user} disabled"]
    poll(lambda: denied(a.creds, data) is not None, what="disabled keys to be refused")
    assert denied(a.creds, data) in ("InvalidAccessKeyId", "AccessDenied")
    assert store.ensure_user(a.user, a.policy, a.buckets, enabled=False, current=a.creds) == (a.creds, [])

    creds, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=True, current=a.creds)
    assert creds == a.creds
    assert changes == [f"user {a.user} enabled"]
    poll(lambda: can_list(a.creds, data), what="re-enabled keys to work")


def test_new_credentials_for_a_disabled_user_stay_disabled(store, make_tenant):
    a = make_tenant()
    store.ensure_user(a.user, a.policy, a.buckets, enabled=False, current=a.creds)
    creds, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=False, current=None)
    assert creds.secret_key != a.creds.secret_key
    assert changes == [f"user {a.user} credentials replaced", f"user {a.user} disabled"]
    assert json.loads(root_admin().user_info(a.user))["status"] == "disabled"
    poll(lambda: denied(creds, a.buckets[0]) is not None, what="new keys of a disabled user to be refused")


def test_rotate(store, make_tenant):
    a = make_tenant()
    data = a.buckets[0]
    new = store.rotate(a.user, a.creds)
    assert new.access_key == a.user
    assert new.secret_key != a.creds.secret_key and len(new.secret_key) >= 32
    poll(lambda: denied(a.creds, data) == "SignatureDoesNotMatch", what="the old secret to be refused")
    poll(lambda: can_list(new, data), what="the new secret to work")
    # The reconciler then passes the new credentials and nothing changes.
    assert store.ensure_user(a.user, a.policy, a.buckets, enabled=True, current=new) == (new, [])


def test_stale_or_missing_credentials_are_replaced(store, make_tenant):
    a = make_tenant()
    data = a.buckets[0]
    creds, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=True, current=None)
    assert changes == [f"user {a.user} credentials replaced"]
    assert creds.access_key == a.user and creds.secret_key != a.creds.secret_key
    poll(lambda: can_list(creds, data), what="the new credentials to work")
    poll(lambda: denied(a.creds, data) == "SignatureDoesNotMatch", what="the old secret to be refused")

    # Credentials the server no longer accepts (e.g. a Secret restored from an old backup).
    stale = Credentials(a.user, "x" * 40)
    fresh, changes = store.ensure_user(a.user, a.policy, a.buckets, enabled=True, current=stale)
    assert changes == [f"user {a.user} credentials replaced"]
    assert fresh != stale
    poll(lambda: can_list(fresh, data), what="the replaced credentials to work")


def test_delete_bucket_guards_data(store, make_tenant):
    a = make_tenant()
    data, backups = a.buckets
    client = tenant_client(a.creds)
    put(client, backups, "db/dump-1.sql.gz", b"v1")
    put(client, backups, "db/dump-1.sql.gz", b"v2")
    assert not store.bucket_is_empty(backups)

    with pytest.raises(BucketNotEmpty):
        store.delete_bucket(backups, purge=False)
    assert get(client, backups, "db/dump-1.sql.gz") == b"v2"

    # Only a delete marker and old versions left: still not empty.
    client.remove_object(backups, "db/dump-1.sql.gz")
    assert list(client.list_objects(backups, recursive=True)) == []
    assert not store.bucket_is_empty(backups)
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket(backups, purge=False)

    assert store.delete_bucket(backups, purge=True) is True
    assert not store.bucket_exists(backups)
    assert store.delete_bucket(backups, purge=True) is False

    assert store.bucket_is_empty(data)
    assert store.delete_bucket(data, purge=False) is True
    assert not root_s3().bucket_exists(data)


def test_list_buckets_by_prefix(store, make_tenant):
    a, b = make_tenant(), make_tenant()
    assert store.list_buckets(f"{a.name}-") == sorted(a.buckets)
    assert store.list_buckets(f"{b.name}-") == sorted(b.buckets)


def test_backups_lifecycle_is_idempotent_and_keeps_platform_rules(store, make_tenant):
    a = make_tenant()
    backups = a.buckets[1]
    assert store.ensure_backups_lifecycle(backups, 30) == [describe_backups_rule(backups_rule(30, purged=False))]
    assert store.ensure_backups_lifecycle(backups, 30) == []
    (rule,) = root_s3().get_bucket_lifecycle(backups).rules
    assert (rule.rule_id, rule.rule_filter.prefix) == (BACKUPS_RULE_ID, "")
    assert rule.expiration.expired_object_delete_marker is True and rule.expiration.days is None
    assert rule.noncurrent_version_expiration.noncurrent_days == 30

    # A rule the platform added is kept when ours changes (here: the tenant is purged).
    platform = Rule(ENABLED, rule_filter=Filter(prefix="tmp/"), rule_id="platform-tmp", expiration=Expiration(days=1))
    root_s3().set_bucket_lifecycle(backups, LifecycleConfig([rule, platform]))
    assert store.ensure_backups_lifecycle(backups, 30, purged=True) == [
        describe_backups_rule(backups_rule(30, purged=True))]
    rules = {r.rule_id: r for r in root_s3().get_bucket_lifecycle(backups).rules}
    assert set(rules) == {BACKUPS_RULE_ID, "platform-tmp"}
    assert rules[BACKUPS_RULE_ID].expiration.days == 30
    assert rules["platform-tmp"].rule_filter.prefix == "tmp/"
    assert store.ensure_backups_lifecycle(backups, 30, purged=True) == []


def test_delete_user(store, make_tenant):
    a = make_tenant()
    assert store.delete_user(a.user, a.policy) is True
    poll(lambda: denied(a.creds, a.buckets[0]) == "InvalidAccessKeyId",
         what="the deleted user's keys to be refused")
    assert store.delete_user(a.user, a.policy) is False
    assert a.policy not in json.loads(root_admin().policy_list())


def test_make_objectstore_from_config():
    cfg = ObjectStorageConfig(backend="minio", endpoint=os.environ["MINIO_ENDPOINT"],
                              access_key=os.environ["MINIO_ACCESS_KEY"],
                              secret_key=os.environ["MINIO_SECRET_KEY"])
    store = make_objectstore(cfg)
    assert store.backend == "minio" and store.supports_quota
    store.ping()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = MinioStore(endpoint, "nobody", "not-a-real-secret-123")
    started = time.monotonic()
    for call in (store.ping,
                 lambda: store.ensure_bucket("it-unreachable", quota_bytes=GIB, versioning=False),
                 lambda: store.ensure_user("tenant-it-x", "tenant-it-x", ["it-unreachable"], enabled=True,
                                           current=None)):
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert info.value.backend == "objectstorage"
        assert endpoint in str(info.value)
        assert "not-a-real-secret-123" not in str(info.value)
    assert time.monotonic() - started < 30


def test_wrong_admin_secret_is_backend_unavailable():
    secret = "wrong-secret-" + secrets.token_hex(8)
    store = MinioStore(os.environ["MINIO_ENDPOINT"], os.environ["MINIO_ACCESS_KEY"], secret)
    with pytest.raises(BackendUnavailable) as info:
        store.ping()
    assert os.environ["MINIO_ENDPOINT"] in str(info.value)
    assert secret not in str(info.value)


def test_invalid_bucket_names_are_refused_before_any_call():
    store = MinioStore(f"http://127.0.0.1:{_closed_port()}", "nobody", "nothing-at-all")
    for name in ("ab", "-abc", "abc-", "ABC", "a_b", "a.b", "x" * 64, "../etc"):
        with pytest.raises(InvalidBucketName):
            store.ensure_bucket(name, quota_bytes=None, versioning=False)
        with pytest.raises(InvalidBucketName):
            store.delete_bucket(name, purge=True)
