"""Placement across two RabbitMQ servers (the devenv's `main` and `second`):
a Tenant that names a server gets its vhost there and only there; new Tenants
are spread automatically and the choice is recorded; the API server refuses
to move a Tenant by editing spec.placement."""

from __future__ import annotations

import os

import pytest
import requests
import yaml
from kubernetes.client.rest import ApiException
from tenant_operator import naming, placement

from .conftest import GROUP, PLURAL, VERSION, unique, wait_for
from .test_tenant_backends import amqp_roundtrip, secret_data

pytestmark = pytest.mark.integration

READY_TIMEOUT = 120
MESSAGING = {"queues": ["orders"]}
SERVERS = {
    "main": ("RABBITMQ_MGMT_URL", "RABBITMQ_ADMIN_USER", "RABBITMQ_ADMIN_PASSWORD", "RABBITMQ_AMQP_PORT"),
    "second": ("RABBITMQ2_MGMT_URL", "RABBITMQ2_ADMIN_USER", "RABBITMQ2_ADMIN_PASSWORD", "RABBITMQ2_AMQP_PORT"),
}


@pytest.fixture(autouse=True)
def _two_servers():
    missing = [k for keys in SERVERS.values() for k in keys if not os.environ.get(k)]
    if missing:
        pytest.skip(f"two RabbitMQ servers needed ({', '.join(missing)} unset): DEVENV_RABBITMQ_SERVERS=2 make "
                    "devenv-up, then source .devenv/env")


def vhost_on(server: str, tenant: str) -> bool:
    url, user, password, _port = (os.environ[k] for k in SERVERS[server])
    r = requests.get(f"{url.rstrip('/')}/api/vhosts/{naming.vhost(tenant)}", auth=(user, password), timeout=10)
    if r.status_code == 404:
        return False
    r.raise_for_status()
    return True


def placed(tenants, name: str) -> dict:
    return (tenants.get(name).get("status") or {}).get("placement") or {}


def test_a_tenant_placed_on_the_second_server_gets_its_vhost_there_only(tenants, core):
    name = tenants.create(unique("pl-second"), messaging=MESSAGING, placement={"rabbitmq": "second"})
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    assert placed(tenants, name) == {"rabbitmq": "second"}
    assert vhost_on("second", name)
    assert not vhost_on("main", name)
    creds = secret_data(core, f"tenant-{name}", "rabbitmq-credentials")
    assert creds["RABBITMQ_PORT"] == os.environ["RABBITMQ2_AMQP_PORT"]
    assert creds["RABBITMQ_PORT"] != os.environ["RABBITMQ_AMQP_PORT"]
    # The Secret's address and credentials really reach the vhost on the second server.
    amqp_roundtrip(creds, naming.events_exchange(name), "orders.created", naming.queue(name, "orders"))

    # Deletion purges the vhost on the server the tenant was placed on.
    tenants.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true",
                                                      "tenancy.dev/skip-final-backup": "true"}}})
    tenants.delete(name)
    wait_for(lambda: tenants.gone(name), 120, what=f"tenant {name} purged")
    assert not vhost_on("second", name)


@pytest.fixture
def spreading_operator(operator, tmp_path_factory):
    """The session's operator, restarted with both RabbitMQ servers open to
    automatic placement (the devenv config keeps new Tenants on main)."""
    cfg = yaml.safe_load(operator.config.read_text())
    assert set(cfg["rabbitmq"]["servers"]) == set(SERVERS)
    for server in cfg["rabbitmq"]["servers"].values():
        server["weight"] = 1
    path = tmp_path_factory.mktemp("operator") / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    original = operator.config
    operator.stop()
    operator.config = path
    operator.start()
    yield operator
    operator.stop()
    operator.config = original
    operator.start()


def rabbit_counts(custom) -> dict[str, int]:
    """Tenants recorded on each RabbitMQ server, as the operator counts them."""
    counts = dict.fromkeys(SERVERS, 0)
    for t in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
        server = ((t.get("status") or {}).get("placement") or {}).get("rabbitmq")
        if server in counts:
            counts[server] += 1
    return counts


def test_new_tenants_are_spread_over_both_servers_and_the_choice_is_recorded(spreading_operator, tenants, custom):
    start = rabbit_counts(custom)
    counts = dict(start)
    expected = []
    for _ in range(2):
        choice = placement.choose(dict.fromkeys(SERVERS, 1), counts)
        expected.append(choice)
        counts[choice] += 1
    # Created together: the second choice must count the first before its status is seen.
    names = [tenants.create(unique("pl-auto"), messaging=MESSAGING) for _ in range(2)]
    for name in names:
        tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    chosen = [placed(tenants, name).get("rabbitmq") for name in names]
    assert sorted(chosen) == sorted(expected)
    if abs(start["main"] - start["second"]) <= 1:     # no leftovers tipping the balance
        assert set(chosen) == {"main", "second"}
    for name, server in zip(names, chosen, strict=True):
        other = next(s for s in SERVERS if s != server)
        assert vhost_on(server, name) and not vhost_on(other, name)

    # A recorded choice wins: naming the other server afterwards moves nothing.
    name, server = names[0], chosen[0]
    other = next(s for s in SERVERS if s != server)
    tenants.patch(name, {"spec": {"placement": {"rabbitmq": other}}})
    t = tenants.wait_phase(name, "Invalid", READY_TIMEOUT)
    message = next(c["message"] for c in t["status"]["conditions"] if c["type"] == "SpecValid")
    assert message.startswith("spec.placement.rabbitmq:") and f"placed on {server!r}" in message
    assert placed(tenants, name) == {"rabbitmq": server}
    assert vhost_on(server, name) and not vhost_on(other, name)


@pytest.mark.parametrize(("backend", "first", "then"), [
    ("rabbitmq", "second", "main"),
    ("objectStorage", "default", "elsewhere"),
    ("mysql", "main", "other"),
])
def test_changing_spec_placement_is_refused_by_the_api_server(tenants, backend, first, then):
    name = tenants.create(unique("pl-move"), placement={backend: first})
    # Handled by the operator first: the clean-up then deletes it through the operator's finalizer.
    tenants.wait_phase(name, "Ready", READY_TIMEOUT)
    for patch in ({"spec": {"placement": {backend: then}}}, {"spec": {"placement": {backend: None}}}):
        with pytest.raises(ApiException) as info:
            tenants.patch(name, patch)
        assert info.value.status == 422
        assert f"spec.placement.{backend} is immutable" in str(info.value.body)
    assert tenants.get(name)["spec"]["placement"] == {backend: first}
