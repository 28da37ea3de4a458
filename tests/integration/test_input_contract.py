"""The input contract on the local platform: each malformed Tenant of
tests/unit/contract_cases.py is refused by the API server (server-side dry run)
with the field named, or, where only the operator can know, turns Invalid with
the field named before anything is written anywhere; each valid edge is
admitted and parsed. The operator process never restarts meanwhile."""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenant_operator import GROUP, PLURAL, VERSION, naming
from unit.contract_cases import MALFORMED, VALID

from .conftest import tenant_body, unique, wait_for
from .test_tenant_backends import READY_TIMEOUT, admin_s3, conditions, database_exists, vhost_exists
from .test_tenant_deletion import namespace_gone

pytestmark = pytest.mark.integration

REFUSED = [c for c in MALFORMED if c.api is not None]
OPERATOR_ONLY = [c for c in MALFORMED if c.api is None]


def _body(case, name: str) -> dict:
    body = tenant_body(case.name or name)
    body["spec"] = dict(case.spec)
    return body


def dry_run(custom, body: dict) -> str | None:
    """None when the API server admits `body`, else its refusal."""
    try:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    except ApiException as exc:
        assert exc.status in (400, 422), (exc.status, exc.body)
        return json.loads(exc.body).get("message", "")
    return None


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_the_api_server_refuses_each_malformed_tenant_naming_the_field(custom, crd, case):
    refusal = dry_run(custom, _body(case, unique("ct")))
    assert refusal is not None, f"{case.id}: admitted"
    assert case.api in refusal, refusal


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_the_api_server_admits_each_valid_edge(custom, crd, case):
    assert dry_run(custom, _body(case, unique("ct"))) is None


def test_valid_schedules_are_schedules_a_cronjob_takes(core, crd):
    batch = k8s.BatchV1Api()
    for case in VALID:
        schedule = case.spec.get("backup", {}).get("schedule")
        if not schedule:
            continue
        job = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "probe"},
               "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}
        batch.create_namespaced_cron_job("default", job, dry_run="All")   # raises on a schedule it refuses


def untouched_namespace(core, ns: str) -> bool:
    """Absent, or (the operator's own namespace) without anything of a tenant's."""
    if namespace_gone(core, ns):
        return True
    annotations = core.read_namespace(ns).metadata.annotations or {}
    policies = k8s.NetworkingV1Api().list_namespaced_network_policy(ns, label_selector=naming.LABEL_TENANT)
    return "tenancy.dev/tenant-uid" not in annotations and not policies.items


def test_what_only_the_operator_knows_is_invalid_before_any_write(tenants, core, operator):
    pid = operator.proc.pid
    backends = {"databases": ["auth"], "objectStorage": {"buckets": ["media"]}, "messaging": {"queues": ["orders"]}}
    names = {}
    for case in OPERATOR_ONLY:
        name = case.name or unique("ct-op")
        spec = {**backends, **case.spec}
        tenants.create(name, **spec)
        names[case.id] = name
    for case in OPERATOR_ONLY:
        name = names[case.id]
        t = tenants.wait_phase(name, "Invalid", READY_TIMEOUT)
        message = conditions(t)["SpecValid"]["message"]
        assert message.startswith(case.field + ": "), (case.id, message)
        # Nothing was written anywhere.
        assert untouched_namespace(core, naming.namespace(name, "tenant-")), case.id
        assert not database_exists(naming.mysql_database(name, "auth")), case.id
        assert not admin_s3().bucket_exists(naming.bucket(name, "media")), case.id
        assert not vhost_exists(naming.vhost(name)), case.id
    for name in names.values():
        tenants.delete(name)
    for name in names.values():
        wait_for(lambda n=name: tenants.gone(n), 60, what=f"never-provisioned {name} released")
    assert operator.proc.poll() is None and operator.proc.pid == pid, "the operator restarted"


def test_an_emoji_display_name_is_provisioned(tenants, core):
    case = next(c for c in VALID if c.id == "emoji-display-name")
    name = tenants.create(unique("ct-emoji"), **case.spec)
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    ns = core.read_namespace(f"tenant-{name}")
    assert ns.metadata.annotations["tenancy.dev/display-name"] == case.spec["displayName"]
