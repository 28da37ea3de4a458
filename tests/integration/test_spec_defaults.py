"""The operator's `defaults` reach Tenants that leave the fields unset, a field
a Tenant sets wins, and changing a default changes the tenants relying on it.

The session's operator is restarted with non-built-in defaults for these
tests, and with its own configuration again afterwards."""

from __future__ import annotations

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException
from tenant_operator import lifecycle

from .conftest import GROUP, PLURAL, VERSION, unique, wait_for

TIMEOUT = 120
DEFAULTS = {
    "tier": "premium",
    "podSecurity": "baseline",
    "ingress": {"className": "traefik", "clusterIssuer": "letsencrypt-staging", "service": "web", "port": 8081},
    "backup": {"schedule": "17 3 * * 1", "retention": {"daily": 9, "weekly": 3, "monthly": 2}},
    "deletion": {"gracePeriod": "3d"},
}


def restart(operator, config):
    operator.stop()
    operator.config = config
    operator.start()


@pytest.fixture
def defaults_operator(operator, tmp_path_factory):
    original = operator.config
    cfg = yaml.safe_load(original.read_text())
    assert "defaults" not in cfg and "defaultGracePeriod" not in cfg     # the built-in defaults otherwise
    cfg["defaults"] = DEFAULTS
    path = tmp_path_factory.mktemp("operator") / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    restart(operator, path)
    yield operator, original
    if operator.config != original:
        restart(operator, original)


def create(custom, tenants, name: str, spec: dict) -> str:
    """A Tenant with exactly this spec (no tier, no grace period added)."""
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name}, "spec": spec})
    tenants.created.append(name)
    return name


def read(fn, *args):
    try:
        return fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def backup_settings(batch, ns: str) -> tuple[str, dict] | None:
    cj = read(batch.read_namespaced_cron_job, "backup-app-db", ns)
    if cj is None:
        return None
    (container,) = cj.spec.job_template.spec.template.spec.containers
    keep = {e.name: e.value for e in container.env or [] if e.name.startswith("BACKUP_KEEP_")}
    return cj.spec.schedule, keep


def test_unset_fields_take_the_config_defaults_and_set_ones_win(defaults_operator, tenants, custom, core):
    operator, original = defaults_operator
    batch = kubernetes.client.BatchV1Api(core.api_client)
    net = kubernetes.client.NetworkingV1Api(core.api_client)
    name = create(custom, tenants, unique("dflt"), {
        "databases": ["app"], "domains": [f"{unique('shop')}.example.com"],
        "ingress": {"className": "nginx"}, "backup": {"retention": {"weekly": 5}}})
    ns = f"tenant-{name}"

    namespace = wait_for(lambda: read(core.read_namespace, ns), TIMEOUT, what=f"namespace {ns}")
    assert namespace.metadata.labels["tenancy.dev/tier"] == "premium"
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
    ing = wait_for(lambda: read(net.read_namespaced_ingress, "tenant-ingress", ns), TIMEOUT, what="Ingress")
    assert ing.spec.ingress_class_name == "nginx"                       # the Tenant's own
    assert ing.metadata.annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-staging"
    backend = ing.spec.rules[0].http.paths[0].backend.service
    assert (backend.name, backend.port.number) == ("web", 8081)
    schedule, keep = wait_for(lambda: backup_settings(batch, ns), TIMEOUT, what="backup CronJob")
    assert schedule == "17 3 * * 1"
    assert keep == {"BACKUP_KEEP_DAILY": "9", "BACKUP_KEEP_WEEKLY": "5", "BACKUP_KEEP_MONTHLY": "2"}

    # Day 2: the operator's defaults change back to the built-in ones; the tenant
    # follows for what it left unset and keeps what it set.
    restart(operator, original)
    wait_for(lambda: backup_settings(batch, ns) == (
        "0 2 * * *", {"BACKUP_KEEP_DAILY": "30", "BACKUP_KEEP_WEEKLY": "5", "BACKUP_KEEP_MONTHLY": "12"}),
        TIMEOUT, what="the backup CronJob to follow the new defaults")
    wait_for(lambda: read(net.read_namespaced_ingress, "tenant-ingress", ns).metadata.annotations[
        "cert-manager.io/cluster-issuer"] == "letsencrypt-prod", TIMEOUT, what="the Ingress to follow")
    assert read(net.read_namespaced_ingress, "tenant-ingress", ns).spec.ingress_class_name == "nginx"


def test_a_tenant_without_a_grace_period_gets_the_configured_one(defaults_operator, tenants, custom, core):
    name = create(custom, tenants, unique("dgrace"), {})
    wait_for(lambda: read(core.read_namespace, f"tenant-{name}"), TIMEOUT, what="namespace")
    tenants.delete(name)
    deletion = wait_for(lambda: (tenants.get(name).get("status") or {}).get("deletion", {}).get("purgeAfter")
                        and tenants.get(name)["status"]["deletion"], TIMEOUT, what="deletion recorded")
    grace = lifecycle.parse_time(deletion["purgeAfter"]) - lifecycle.parse_time(deletion["requestedAt"])
    assert grace.total_seconds() == 3 * 86400
