"""Unit tests of the object-storage backend: S3IamStore against botocore's
Stubber (every AWS call and its parameters are spelled out), the shared
helpers, and MinioStore's endpoint and error handling without a server."""

from __future__ import annotations

import datetime
import json
import socket
from urllib.parse import quote

import botocore.session
import pytest
from botocore.stub import ANY, Stubber
from tenant_operator.backends.objectstore import client as objectstore
from tenant_operator.backends.objectstore.client import (
    BACKUPS_RULE_ID,
    BucketListing,
    BucketNotEmpty,
    Credentials,
    InvalidBucketName,
    MinioStore,
    S3IamStore,
    backups_rule,
    describe_backups_rule,
    make_objectstore,
    normalize_policy,
    rule_is_current,
    tenant_policy,
    validate_bucket_name,
)
from tenant_operator.config import ObjectStorageConfig
from tenant_operator.errors import BackendUnavailable, ConfigError

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
USER = "tenant-acme"
POLICY = "tenant-acme"
BUCKETS = ["acme-data", "acme-backups"]
# IAM access key ids are at least 16 characters.
OLD, NEW, ONE, TWO, STRAY, LOST = (f"AKIA{n:0>12}" for n in ("OLD", "NEW", "ONE", "TWO", "STRAY", "LOST"))


_SESSION = botocore.session.get_session()   # one session: loads the service models once


def _client(service: str, region: str = "us-east-1", endpoint: str | None = None):
    return _SESSION.create_client(service, region_name=region, endpoint_url=endpoint,
                                 aws_access_key_id="AKIDTEST", aws_secret_access_key="test-secret")


@pytest.fixture
def aws():
    """An S3IamStore on stubbed clients; the test queues the expected calls."""
    s3, iam = _client("s3"), _client("iam")
    store = S3IamStore(region="us-east-1", s3_client=s3, iam_client=iam)
    with Stubber(s3) as s3_stub, Stubber(iam) as iam_stub:
        store.s3_stub, store.iam_stub = s3_stub, iam_stub
        yield store
        s3_stub.assert_no_pending_responses()
        iam_stub.assert_no_pending_responses()


def _capture(client, operation: str) -> list[dict]:
    """Record the parameters of every `operation` call made through `client`."""
    seen: list[dict] = []
    client.meta.events.register(f"provide-client-params.{client.meta.service_model.endpoint_prefix}.{operation}",
                                lambda params, **_: seen.append(dict(params)))
    return seen


def _user(name: str = USER) -> dict:
    return {"User": {"Path": "/", "UserName": name, "UserId": "AIDAEXAMPLE0000000001",
                     "Arn": f"arn:aws:iam::123456789012:user/{name}", "CreateDate": NOW}}


def _key_meta(key_id: str, status: str = "Active") -> dict:
    return {"UserName": USER, "AccessKeyId": key_id, "Status": status, "CreateDate": NOW}


def _new_key(key_id: str, secret: str) -> dict:
    return {"AccessKey": {"UserName": USER, "AccessKeyId": key_id, "Status": "Active",
                          "SecretAccessKey": secret, "CreateDate": NOW}}


# --- helpers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["abc", "acme-data", "a" * 63, "0-9", "tenant-1-backups"])
def test_valid_bucket_names(name):
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize("name", ["", "ab", "a" * 64, "-abc", "abc-", "Abc", "a_b", "a.b", "a b", "../x",
                                  None])
def test_invalid_bucket_names(name):
    with pytest.raises(InvalidBucketName):
        validate_bucket_name(name)


def test_tenant_policy_is_scoped_to_the_buckets():
    doc = tenant_policy(["acme-data", "acme-backups", "acme-data"])
    resources = {r for st in doc["Statement"] for r in st["Resource"]}
    assert resources == {"arn:aws:s3:::acme-backups", "arn:aws:s3:::acme-data",
                         "arn:aws:s3:::acme-backups/*", "arn:aws:s3:::acme-data/*"}
    actions = {a for st in doc["Statement"] for a in st["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectVersion",
            "s3:DeleteObjectVersion", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
            "s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"} <= actions
    assert all(a.startswith("s3:") and "*" not in a for a in actions)
    assert "s3:CreateBucket" not in actions and "s3:DeleteBucket" not in actions
    assert all(st["Effect"] == "Allow" for st in doc["Statement"])
    bucket_st = next(st for st in doc["Statement"] if "s3:ListBucket" in st["Action"])
    assert all(not r.endswith("/*") for r in bucket_st["Resource"])
    object_st = next(st for st in doc["Statement"] if "s3:GetObject" in st["Action"])
    assert all(r.endswith("/*") for r in object_st["Resource"])


def test_tenant_policy_lets_no_one_delete_a_version_of_a_protected_bucket():
    doc = tenant_policy(["acme-data", "acme-backups"], protected=("acme-backups",))
    grants: dict[str, set[str]] = {}
    denied: dict[str, set[str]] = {}
    for st in doc["Statement"]:
        for resource in st["Resource"]:
            (grants if st["Effect"] == "Allow" else denied).setdefault(resource, set()).update(st["Action"])
    assert denied == {"arn:aws:s3:::acme-backups/*": {"s3:DeleteObjectVersion"}}
    assert "s3:DeleteObjectVersion" in grants["arn:aws:s3:::acme-data/*"]
    assert "s3:DeleteObjectVersion" not in grants["arn:aws:s3:::acme-backups/*"]
    # Writing, reading, soft-deleting (a delete marker) and listing versions stay allowed.
    assert {"s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject"} <= grants[
        "arn:aws:s3:::acme-backups/*"]
    assert "s3:ListBucketVersions" in grants["arn:aws:s3:::acme-backups"]
    # Unchanged when nothing is protected.
    assert normalize_policy(tenant_policy(["acme-data", "acme-backups"])) != normalize_policy(doc)


def test_the_application_only_reads_its_read_only_buckets():
    doc = tenant_policy(["acme-data", "acme-backups"], read_only=("acme-backups", "not-listed"))
    grants: dict[str, set[str]] = {}
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        for resource in st["Resource"]:
            grants.setdefault(resource, set()).update(st["Action"])
    assert grants["arn:aws:s3:::acme-backups/*"] == {"s3:GetObject", "s3:GetObjectVersion"}
    assert "s3:ListBucket" in grants["arn:aws:s3:::acme-backups"]
    assert {"s3:PutObject", "s3:DeleteObject"} <= grants["arn:aws:s3:::acme-data/*"]
    # A read-only bucket must be one of the user's buckets: nothing else is granted.
    assert not any("not-listed" in r for r in grants)


def test_tenant_policy_without_buckets_grants_nothing():
    doc = tenant_policy([])
    assert [st["Effect"] for st in doc["Statement"]] == ["Deny"]


def test_tenant_policy_rejects_bad_bucket_names():
    with pytest.raises(InvalidBucketName):
        tenant_policy(["acme-data", "*"])


def test_normalize_policy_ignores_order_and_encoding():
    doc = tenant_policy(BUCKETS)
    shuffled = {"Version": "2012-10-17", "Statement": [
        {**st, "Action": list(reversed(st["Action"])), "Resource": list(reversed(st["Resource"]))}
        for st in reversed(doc["Statement"])]}
    assert normalize_policy(json.dumps(shuffled)) == normalize_policy(doc)
    single = {"Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::x/*"}}
    assert normalize_policy(single) == normalize_policy(
        {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::x/*"]}]})
    assert normalize_policy(tenant_policy(["acme-data"])) != normalize_policy(doc)


def test_credentials_repr_hides_the_secret():
    creds = Credentials("AKID", "very-secret-value")
    assert "very-secret-value" not in repr(creds)
    assert "very-secret-value" not in str(creds)


def test_generated_secrets_are_long_and_distinct():
    a, b = objectstore.generate_secret(), objectstore.generate_secret()
    assert a != b and 32 <= len(a) <= 40


# --- make_objectstore / MinioStore without a server --------------------------------------

def test_make_objectstore_picks_the_backend():
    minio = make_objectstore(ObjectStorageConfig(backend="minio", endpoint="http://127.0.0.1:9000",
                                                 access_key="admin", secret_key="admin-secret"))
    assert isinstance(minio, MinioStore) and minio.backend == "minio" and minio.supports_quota
    s3 = make_objectstore(ObjectStorageConfig(backend="s3", region="eu-west-1",
                                              access_key="AKID", secret_key="secret"))
    assert isinstance(s3, S3IamStore) and s3.backend == "s3" and not s3.supports_quota
    assert "eu-west-1" in s3.endpoint
    with pytest.raises(ConfigError):
        make_objectstore(ObjectStorageConfig(backend="gcs", endpoint="x"))
    with pytest.raises(ConfigError):
        make_objectstore(ObjectStorageConfig(backend="minio", endpoint=""))


@pytest.mark.parametrize("endpoint,host,secure", [
    ("http://127.0.0.1:9000", "127.0.0.1:9000", False),
    ("https://minio.example.com", "minio.example.com", True),
    ("https://minio.example.com/", "minio.example.com", True),
    ("minio.internal:9000", "minio.internal:9000", True),
])
def test_endpoint_parsing(endpoint, host, secure):
    assert objectstore._endpoint_parts(endpoint) == (host, secure)


@pytest.mark.parametrize("endpoint", ["ftp://x", "http://x/some/path", "http://user:pw@x:9000", "http://"])
def test_bad_endpoints(endpoint):
    with pytest.raises(ConfigError):
        MinioStore(endpoint, "a", "b")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_minio_unreachable_names_the_endpoint_and_hides_the_secret():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = MinioStore(endpoint, "admin", "the-admin-secret", retries=0)
    with pytest.raises(BackendUnavailable) as info:
        store.ping()
    assert info.value.backend == "objectstorage"
    assert endpoint in str(info.value) and "the-admin-secret" not in str(info.value)


def test_minio_checks_names_before_calling():
    store = MinioStore(f"http://127.0.0.1:{_closed_port()}", "admin", "secret", retries=0)
    with pytest.raises(InvalidBucketName):
        store.ensure_bucket("Bad_Name", quota_bytes=None, versioning=False)
    with pytest.raises(ValueError):
        store.ensure_user("x", "tenant-x", ["acme-data"], enabled=True, current=None)
    with pytest.raises(ValueError):
        store.ensure_backups_lifecycle("acme-backups", 0)


# --- S3IamStore: buckets --------------------------------------------------------------------

def test_s3_ensure_bucket_creates_bucket_and_enables_versioning(aws):
    aws.s3_stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404,
                                 expected_params={"Bucket": "acme-backups"})
    aws.s3_stub.add_response("create_bucket", {"Location": "/acme-backups"}, {"Bucket": "acme-backups"})
    aws.s3_stub.add_response("get_bucket_versioning", {}, {"Bucket": "acme-backups"})
    aws.s3_stub.add_response("put_bucket_versioning", {},
                             {"Bucket": "acme-backups", "VersioningConfiguration": {"Status": "Enabled"}})
    changes = aws.ensure_bucket("acme-backups", quota_bytes=10 << 30, versioning=True)
    assert changes == ["bucket acme-backups created", "bucket acme-backups versioning enabled"]


def test_s3_ensure_bucket_outside_us_east_1_sets_the_location():
    s3, iam = _client("s3", "eu-west-1"), _client("iam")
    store = S3IamStore(region="eu-west-1", s3_client=s3, iam_client=iam)
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
        stub.add_response("create_bucket", {}, {
            "Bucket": "acme-data", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}})
        stub.add_response("get_bucket_versioning", {}, {"Bucket": "acme-data"})
        changes = store.ensure_bucket("acme-data", quota_bytes=None, versioning=False)
        assert changes == ["bucket acme-data created"]
        stub.assert_no_pending_responses()


def test_s3_ensure_bucket_repeat_makes_no_writes(aws):
    aws.s3_stub.add_response("head_bucket", {}, {"Bucket": "acme-backups"})
    aws.s3_stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, {"Bucket": "acme-backups"})
    assert aws.ensure_bucket("acme-backups", quota_bytes=None, versioning=True) == []


def test_s3_ensure_bucket_suspends_unwanted_versioning(aws):
    aws.s3_stub.add_response("head_bucket", {}, {"Bucket": "acme-data"})
    aws.s3_stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, {"Bucket": "acme-data"})
    aws.s3_stub.add_response("put_bucket_versioning", {},
                             {"Bucket": "acme-data", "VersioningConfiguration": {"Status": "Suspended"}})
    assert aws.ensure_bucket("acme-data", quota_bytes=None, versioning=False) == [
        "bucket acme-data versioning suspended"]


def test_s3_errors_become_backend_unavailable(aws):
    aws.s3_stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
    with pytest.raises(BackendUnavailable) as info:
        aws.ensure_bucket("acme-data", quota_bytes=None, versioning=False)
    assert "s3.us-east-1.amazonaws.com" in str(info.value)
    aws.s3_stub.add_client_error("list_buckets", service_error_code="AccessDenied",
                                 service_message="Access Denied", http_status_code=403)
    with pytest.raises(BackendUnavailable, match="AccessDenied"):
        aws.ping()


def test_s3_unreachable_endpoint():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = S3IamStore(region="us-east-1", endpoint=endpoint, access_key="AKID", secret_key="the-secret-key",
                       connect_timeout=1)
    with pytest.raises(BackendUnavailable) as info:
        store.ping()
    assert endpoint in str(info.value) and "the-secret-key" not in str(info.value)


def test_s3_bucket_is_empty_counts_versions(aws):
    aws.s3_stub.add_response("list_object_versions", {
        "DeleteMarkers": [{"Key": "a", "VersionId": "v2", "IsLatest": True}]},
        {"Bucket": "acme-backups", "MaxKeys": 1})
    assert aws.bucket_is_empty("acme-backups") is False
    aws.s3_stub.add_response("list_object_versions", {}, {"Bucket": "acme-backups", "MaxKeys": 1})
    assert aws.bucket_is_empty("acme-backups") is True


def test_s3_delete_bucket_refuses_non_empty_without_purge(aws):
    aws.s3_stub.add_response("head_bucket", {}, {"Bucket": "acme-data"})
    aws.s3_stub.add_response("list_object_versions", {"Versions": [{"Key": "a", "VersionId": "null"}]},
                             {"Bucket": "acme-data", "MaxKeys": 1})
    with pytest.raises(BucketNotEmpty):
        aws.delete_bucket("acme-data", purge=False)


def test_s3_delete_bucket_purges_all_versions(aws):
    aws.s3_stub.add_response("head_bucket", {}, {"Bucket": "acme-backups"})
    aws.s3_stub.add_response("list_object_versions", {
        "Versions": [{"Key": "db/1", "VersionId": "v1"}, {"Key": "db/1", "VersionId": "v2"}],
        "DeleteMarkers": [{"Key": "db/1", "VersionId": "v3"}]}, {"Bucket": "acme-backups", "MaxKeys": 1000})
    aws.s3_stub.add_response("delete_objects", {}, {"Bucket": "acme-backups", "Delete": {
        "Quiet": True, "Objects": [{"Key": "db/1", "VersionId": "v1"}, {"Key": "db/1", "VersionId": "v2"},
                                   {"Key": "db/1", "VersionId": "v3"}]}})
    aws.s3_stub.add_response("delete_bucket", {}, {"Bucket": "acme-backups"})
    assert aws.delete_bucket("acme-backups", purge=True) is True


def test_s3_delete_missing_bucket(aws):
    aws.s3_stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    assert aws.delete_bucket("acme-data", purge=True) is False


def test_s3_list_buckets_by_prefix(aws):
    aws.s3_stub.add_response("list_buckets", {"Buckets": [
        {"Name": "acme-data"}, {"Name": "other-data"}, {"Name": "acme-backups"}]})
    assert aws.list_buckets("acme-") == ["acme-backups", "acme-data"]


def test_backups_rule_while_live_and_after_purge():
    live = backups_rule(90, purged=False)
    assert live["Expiration"] == {"ExpiredObjectDeleteMarker": True}     # current backups follow retention
    assert live["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    purged = backups_rule(90, purged=True)
    assert purged["Expiration"] == {"Days": 90}
    assert purged["ID"] == live["ID"] == BACKUPS_RULE_ID
    assert "recoverable for 90 days" in describe_backups_rule(live)
    assert "expires 90 days after" in describe_backups_rule(purged)
    for bad in (0, -1, 1.5, True, "90"):
        with pytest.raises(ValueError, match="positive number of days"):
            backups_rule(bad, purged=False)
        with pytest.raises(ValueError, match="positive number of days"):
            backups_rule(90, purged=True, archive_days=bad)


def test_a_purged_tenants_archive_has_its_own_retention():
    rule = backups_rule(90, purged=True, archive_days=2555)
    assert rule["Expiration"] == {"Days": 2555}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert "expires 2555 days after" in describe_backups_rule(rule)
    # A live tenant's rule ignores the archive retention.
    assert backups_rule(90, purged=False, archive_days=2555) == backups_rule(90, purged=False)


def test_rule_is_current_compares_only_our_rule():
    wanted = backups_rule(30, purged=False)
    other = {"ID": "platform-archive", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
             "Expiration": {"Days": 1}}
    assert rule_is_current([other, wanted], wanted)
    assert not rule_is_current([other], wanted)
    assert not rule_is_current([backups_rule(31, purged=False)], wanted)
    assert not rule_is_current([backups_rule(30, purged=True)], wanted)
    assert not rule_is_current([{**wanted, "Status": "Disabled"}], wanted)
    assert rule_is_current([{**wanted, "Filter": {}}], wanted)    # an absent prefix is the empty prefix


def test_s3_backups_lifecycle_is_set_once_and_keeps_other_rules(aws):
    other = {"ID": "platform-archive", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
             "Expiration": {"Days": 1}}
    wanted = backups_rule(90, purged=False)
    aws.s3_stub.add_response("get_bucket_lifecycle_configuration", {"Rules": [other]}, {"Bucket": "acme-backups"})
    aws.s3_stub.add_response("put_bucket_lifecycle_configuration", {}, {
        "Bucket": "acme-backups", "LifecycleConfiguration": {"Rules": [other, wanted]}})
    assert aws.ensure_backups_lifecycle("acme-backups", 90) == [describe_backups_rule(wanted)]
    aws.s3_stub.add_response("get_bucket_lifecycle_configuration", {"Rules": [other, wanted]},
                             {"Bucket": "acme-backups"})
    assert aws.ensure_backups_lifecycle("acme-backups", 90) == []
    aws.s3_stub.assert_no_pending_responses()


def test_s3_backups_lifecycle_on_bucket_without_rules(aws):
    purged = backups_rule(7, purged=True)
    aws.s3_stub.add_client_error("get_bucket_lifecycle_configuration",
                                 service_error_code="NoSuchLifecycleConfiguration", http_status_code=404)
    aws.s3_stub.add_response("put_bucket_lifecycle_configuration", {}, {
        "Bucket": "acme-backups", "LifecycleConfiguration": {"Rules": [purged]}})
    assert aws.ensure_backups_lifecycle("acme-backups", 7, purged=True) == [describe_backups_rule(purged)]


# --- S3IamStore: users ----------------------------------------------------------------------

def test_iam_ensure_user_creates_user_policy_and_key(aws):
    iam = aws.iam_stub
    puts = _capture(aws._iam, "PutUserPolicy")
    iam.add_client_error("get_user", service_error_code="NoSuchEntity", http_status_code=404,
                         expected_params={"UserName": USER})
    iam.add_response("create_user", _user(), {"UserName": USER})
    iam.add_response("put_user_policy", {}, {"UserName": USER, "PolicyName": POLICY, "PolicyDocument": ANY})
    iam.add_response("list_access_keys", {"AccessKeyMetadata": []}, {"UserName": USER})
    iam.add_response("create_access_key", _new_key(NEW, "new-secret"), {"UserName": USER})

    creds, changes = aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=None)
    assert creds == Credentials(NEW, "new-secret")
    assert changes == [f"user {USER} created", f"policy {POLICY} attached to user {USER}",
                       f"access key {NEW} of user {USER} created"]

    doc = json.loads(puts[0]["PolicyDocument"])
    resources = sorted(r for st in doc["Statement"] for r in st["Resource"])
    assert resources == ["arn:aws:s3:::acme-backups", "arn:aws:s3:::acme-backups/*",
                         "arn:aws:s3:::acme-data", "arn:aws:s3:::acme-data/*"]
    actions = {a for st in doc["Statement"] for a in st["Action"]}
    assert "s3:CreateBucket" not in actions and not any(a.endswith("*") for a in actions)


def _existing_user(iam, keys: list[dict], policy: dict | None = None) -> None:
    iam.add_response("get_user", _user(), {"UserName": USER})
    document = quote(json.dumps(policy or tenant_policy(BUCKETS)))
    iam.add_response("get_user_policy", {"UserName": USER, "PolicyName": POLICY, "PolicyDocument": document},
                     {"UserName": USER, "PolicyName": POLICY})
    iam.add_response("list_access_keys", {"AccessKeyMetadata": keys}, {"UserName": USER})


def test_iam_ensure_user_repeat_makes_no_writes(aws):
    _existing_user(aws.iam_stub, [_key_meta(OLD)])
    current = Credentials(OLD, "old-secret")
    assert aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=current) == (current, [])


def test_iam_ensure_user_updates_a_changed_policy(aws):
    iam = aws.iam_stub
    iam.add_response("get_user", _user(), {"UserName": USER})
    iam.add_response("get_user_policy", {"UserName": USER, "PolicyName": POLICY,
                                         "PolicyDocument": quote(json.dumps(tenant_policy(["acme-data"])))},
                     {"UserName": USER, "PolicyName": POLICY})
    iam.add_response("put_user_policy", {}, {"UserName": USER, "PolicyName": POLICY,
                                             "PolicyDocument": json.dumps(tenant_policy(BUCKETS))})
    iam.add_response("list_access_keys", {"AccessKeyMetadata": [_key_meta(OLD)]}, {"UserName": USER})
    current = Credentials(OLD, "old-secret")
    assert aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=current) == (
        current, [f"policy {POLICY} updated for user {USER}"])


def test_iam_disable_deactivates_keys(aws):
    iam = aws.iam_stub
    _existing_user(iam, [_key_meta(OLD, "Active")])
    iam.add_response("update_access_key", {}, {"UserName": USER, "AccessKeyId": OLD, "Status": "Inactive"})
    current = Credentials(OLD, "old-secret")
    creds, changes = aws.ensure_user(USER, POLICY, BUCKETS, enabled=False, current=current)
    assert creds == current
    assert changes == [f"access key {OLD} of user {USER} set Inactive"]

    _existing_user(iam, [_key_meta(OLD, "Inactive")])
    iam.add_response("update_access_key", {}, {"UserName": USER, "AccessKeyId": OLD, "Status": "Active"})
    creds, changes = aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=current)
    assert changes == [f"access key {OLD} of user {USER} set Active"]


def test_iam_unknown_current_key_is_replaced_and_old_keys_deleted(aws):
    iam = aws.iam_stub
    _existing_user(iam, [_key_meta(ONE), _key_meta(TWO)])
    iam.add_response("delete_access_key", {}, {"UserName": USER, "AccessKeyId": ONE})
    iam.add_response("delete_access_key", {}, {"UserName": USER, "AccessKeyId": TWO})
    iam.add_response("create_access_key", _new_key(NEW, "new-secret"), {"UserName": USER})
    creds, changes = aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=Credentials(LOST, "x"))
    assert creds == Credentials(NEW, "new-secret")
    assert changes[-1] == f"access key {NEW} of user {USER} created"


def test_iam_new_key_of_a_disabled_user_is_inactive(aws):
    iam = aws.iam_stub
    _existing_user(iam, [])
    iam.add_response("create_access_key", _new_key(NEW, "new-secret"), {"UserName": USER})
    iam.add_response("update_access_key", {}, {"UserName": USER, "AccessKeyId": NEW, "Status": "Inactive"})
    creds, _ = aws.ensure_user(USER, POLICY, BUCKETS, enabled=False, current=None)
    assert creds.access_key == NEW


def test_iam_rotate_replaces_the_key(aws):
    iam = aws.iam_stub
    iam.add_response("list_access_keys", {"AccessKeyMetadata": [_key_meta(OLD), _key_meta(STRAY)]},
                     {"UserName": USER})
    iam.add_response("delete_access_key", {}, {"UserName": USER, "AccessKeyId": STRAY})
    iam.add_response("create_access_key", _new_key(NEW, "new-secret"), {"UserName": USER})
    iam.add_response("delete_access_key", {}, {"UserName": USER, "AccessKeyId": OLD})
    assert aws.rotate(USER, Credentials(OLD, "old")) == Credentials(NEW, "new-secret")


def test_iam_delete_user(aws):
    iam = aws.iam_stub
    iam.add_response("get_user", _user(), {"UserName": USER})
    iam.add_response("list_access_keys", {"AccessKeyMetadata": [_key_meta(OLD)]}, {"UserName": USER})
    iam.add_response("delete_access_key", {}, {"UserName": USER, "AccessKeyId": OLD})
    iam.add_response("list_user_policies", {"PolicyNames": [POLICY]}, {"UserName": USER})
    iam.add_response("delete_user_policy", {}, {"UserName": USER, "PolicyName": POLICY})
    iam.add_response("list_attached_user_policies", {"AttachedPolicies": []}, {"UserName": USER})
    iam.add_response("delete_user", {}, {"UserName": USER})
    assert aws.delete_user(USER, POLICY) is True
    iam.add_client_error("get_user", service_error_code="NoSuchEntity", http_status_code=404)
    assert aws.delete_user(USER, POLICY) is False


def test_iam_errors_name_the_iam_endpoint(aws):
    aws.iam_stub.add_client_error("get_user", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(BackendUnavailable, match=r"ensuring user tenant-acme failed at https://iam\.amazonaws\.com"):
        aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=None)


# --- BucketListing ---------------------------------------------------------------------------

class _CountingStore:
    def __init__(self, names):
        self.names, self.calls = list(names), 0

    def list_buckets(self, prefix):
        self.calls += 1
        return sorted(n for n in self.names if n.startswith(prefix))


def test_bucket_listing_is_shared_until_it_is_stale():
    now = [100.0]
    store = _CountingStore(["acme-data", "acme-backups", "other-data"])
    listing = BucketListing(store, max_age=5.0, clock=lambda: now[0])
    assert listing.names("acme-") == ["acme-backups", "acme-data"]
    store.names.append("acme-late")              # created by someone else meanwhile
    now[0] += 4.0
    assert listing.names("other-") == ["other-data"]
    assert listing.names("acme-") == ["acme-backups", "acme-data"]
    assert store.calls == 1
    now[0] += 1.5
    assert listing.names("acme-") == ["acme-backups", "acme-data", "acme-late"]
    assert store.calls == 2


def test_bucket_listing_applies_this_process_changes_at_once():
    store = _CountingStore(["acme-data", "acme-old"])
    listing = BucketListing(store, max_age=60.0, clock=lambda: 0.0)
    assert listing.names("acme-") == ["acme-data", "acme-old"]
    listing.discard("acme-old")
    listing.add(["acme-new"])
    assert listing.names("acme-") == ["acme-data", "acme-new"]
    assert store.calls == 1


# --- ownership of storage users ------------------------------------------------------------

UID = "6f1c2a3b-0d4e-4f5a-9b8c-7d6e5f4a3b2c"


def test_the_policy_of_a_tenants_user_carries_its_uid():
    from tenant_operator import ownership
    doc = tenant_policy(BUCKETS, owner_uid=UID)
    assert ownership.policy_owner(doc) == UID.replace("-", "")
    (marker,) = [st for st in doc["Statement"] if st["Sid"].startswith(ownership.POLICY_SID_PREFIX)]
    assert marker["Effect"] == "Deny" and marker["Action"] == ["s3:CreateBucket"]   # grants nothing
    assert ownership.policy_owner(tenant_policy([], owner_uid=UID)) == UID.replace("-", "")
    assert ownership.policy_owner(tenant_policy(BUCKETS)) == ""
    assert ownership.policy_owner(json.dumps(doc)) == UID.replace("-", "")     # as MinIO returns it
    assert ownership.policy_owner(None) == ownership.policy_owner("junk") == ""
    # Another owner is another document: the policy is rewritten, never silently kept.
    assert normalize_policy(tenant_policy(BUCKETS, owner_uid=UID)) != normalize_policy(
        tenant_policy(BUCKETS, owner_uid="0" * 32))


def test_iam_user_is_tagged_as_it_is_created(aws):
    iam = aws.iam_stub
    iam.add_client_error("get_user", service_error_code="NoSuchEntity", http_status_code=404,
                         expected_params={"UserName": USER})
    iam.add_response("create_user", _user(), {"UserName": USER,
                                              "Tags": [{"Key": "tenancy.dev/tenant-uid", "Value": UID}]})
    iam.add_response("put_user_policy", {}, {"UserName": USER, "PolicyName": POLICY, "PolicyDocument": ANY})
    iam.add_response("list_access_keys", {"AccessKeyMetadata": []}, {"UserName": USER})
    iam.add_response("create_access_key", _new_key(NEW, "new-secret"), {"UserName": USER})
    creds, _ = aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=None, owner_uid=UID)
    assert creds == Credentials(NEW, "new-secret")
    iam.assert_no_pending_responses()


def test_an_iam_user_not_marked_for_the_tenant_is_left_alone(aws):
    from tenant_operator.ownership import NameConflict
    iam = aws.iam_stub
    foreign = _user()
    foreign["User"]["Tags"] = [{"Key": "tenancy.dev/tenant-uid", "Value": "another-uid"}]
    iam.add_response("get_user", foreign, {"UserName": USER})
    with pytest.raises(NameConflict, match=f"storage user {USER} already exists"):
        aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=None, owner_uid=UID)
    iam.add_response("get_user", _user(), {"UserName": USER})      # unmarked: someone else's too
    with pytest.raises(NameConflict):
        aws.ensure_user(USER, POLICY, BUCKETS, enabled=True, current=None, owner_uid=UID)
    iam.add_response("get_user", foreign, {"UserName": USER})
    assert aws.user_owner(USER, POLICY) == (True, "anotheruid")
    iam.assert_no_pending_responses()     # nothing was written
