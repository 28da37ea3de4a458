"""RabbitMQBackend against the local RabbitMQ started by `devenv/up.sh rabbitmq`.

Needs RABBITMQ_MGMT_URL, RABBITMQ_AMQP_HOST, RABBITMQ_AMQP_PORT,
RABBITMQ_ADMIN_USER and RABBITMQ_ADMIN_PASSWORD (`source .devenv/env`).
Every test works on its own `it-<random>` tenants and removes them afterwards;
the broker itself is shared and never stopped.
"""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
import requests
from tenant_operator.backends.rabbitmq.client import RabbitMQBackend, amqp_url
from tenant_operator.config import RabbitMQConfig
from tenant_operator.errors import BackendUnavailable

from .conftest import wait_for as _wait_for

ENV = ("RABBITMQ_MGMT_URL", "RABBITMQ_AMQP_HOST", "RABBITMQ_AMQP_PORT",
       "RABBITMQ_ADMIN_USER", "RABBITMQ_ADMIN_PASSWORD")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(not os.environ.get(k) for k in ENV),
                       reason="RabbitMQ devenv not configured (source .devenv/env)"),
]

# The devenv broker emits statistics every 5 s; connections show up in the
# management API only after that.
STATS_WAIT = 30.0


def _cfg(**overrides) -> RabbitMQConfig:
    values = dict(
        management_url=os.environ.get("RABBITMQ_MGMT_URL", "").rstrip("/"),
        amqp_host=os.environ.get("RABBITMQ_AMQP_HOST", ""),
        amqp_port=int(os.environ.get("RABBITMQ_AMQP_PORT", "5672")),
        admin_user=os.environ.get("RABBITMQ_ADMIN_USER", ""),
        admin_password=os.environ.get("RABBITMQ_ADMIN_PASSWORD", ""),
    )
    values.update(overrides)
    return RabbitMQConfig(**values)


def poll(condition, timeout: float = STATS_WAIT, interval: float = 0.2, what: str = "condition"):
    """Return condition()'s first truthy value, failing the test after `timeout` seconds."""
    return _wait_for(condition, timeout, interval, what)

class Mgmt:
    """Direct management API reads, to check what the backend did."""

    def __init__(self):
        self.url = os.environ["RABBITMQ_MGMT_URL"].rstrip("/")
        self.session = requests.Session()
        self.session.auth = (os.environ["RABBITMQ_ADMIN_USER"], os.environ["RABBITMQ_ADMIN_PASSWORD"])

    def get(self, *segments: str, params: dict | None = None):
        path = "/".join(quote(s, safe="") for s in segments)
        resp = self.session.get(f"{self.url}/api/{path}", params=params, timeout=10)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    def user_connections(self, user: str) -> list[dict]:
        return [c for c in self.get("connections", params={"columns": "name,user,vhost"}) or []
                if c.get("user") == user]


class Tenant:
    def __init__(self, name: str):
        self.name = name
        self.vhost = name
        self.user = name
        self.password = secrets.token_urlsafe(18)
        self.exchange = f"{name}.events"
        self.queues = {f"{name}.orders": "orders.#", f"{name}.billing": "billing.#"}


def _params(tenant: Tenant, *, password: str | None = None, vhost: str | None = None) -> pika.URLParameters:
    url = amqp_url(os.environ["RABBITMQ_AMQP_HOST"], int(os.environ["RABBITMQ_AMQP_PORT"]),
                   tenant.user, tenant.password if password is None else password,
                   tenant.vhost if vhost is None else vhost)
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": "integration-test"}
    return params


def connect(tenant: Tenant, **kwargs) -> pika.BlockingConnection:
    return pika.BlockingConnection(_params(tenant, **kwargs))


def _close(conn: pika.BlockingConnection) -> None:
    if conn.is_open:
        try:
            conn.close()
        except pika.exceptions.AMQPError:
            pass


@pytest.fixture(scope="module")
def backend():
    b = RabbitMQBackend(_cfg(), timeout=10.0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def mgmt():
    return Mgmt()


@pytest.fixture
def new_tenant(backend):
    made: list[Tenant] = []

    def make() -> Tenant:
        t = Tenant(f"it-{secrets.token_hex(4)}")
        made.append(t)
        return t

    yield make
    for t in made:
        backend.delete_user(t.user)
        backend.delete_vhost(t.vhost)


def provision(backend: RabbitMQBackend, t: Tenant, *, enabled: bool = True):
    changes = backend.ensure_vhost(t.vhost, max_connections=7, max_queues=11)
    changes += backend.ensure_user(t.user, t.password, t.vhost, enabled=enabled)
    topo, kept = backend.ensure_topology(t.vhost, t.exchange, t.queues)
    return changes + topo, kept


@pytest.fixture
def tenant(backend, new_tenant) -> Tenant:
    t = new_tenant()
    provision(backend, t)
    return t


# --- provisioning ---------------------------------------------------------------------

def test_provision_creates_vhost_user_permissions_limits_and_topology(backend, mgmt, new_tenant):
    t = new_tenant()
    changes, kept = provision(backend, t)
    assert kept == []
    assert f"vhost {t.vhost} created" in changes
    assert f"user {t.user} created" in changes
    assert f"queue {t.name}.orders bound to {t.exchange} with orders.#" in changes

    assert mgmt.get("vhosts", t.vhost)["name"] == t.vhost
    user = mgmt.get("users", t.user)
    assert user["tags"] in ([], "")
    assert backend.password_matches(t.user, t.password)
    assert not backend.password_matches(t.user, t.password + "x")

    perms = mgmt.get("users", t.user, "permissions")
    assert perms == [{"vhost": t.vhost, "user": t.user, "configure": ".*", "write": ".*", "read": ".*"}]

    limits = mgmt.get("vhost-limits", t.vhost)
    assert limits[0]["value"] == {"max-connections": 7, "max-queues": 11}

    ex = mgmt.get("exchanges", t.vhost, t.exchange)
    assert ex["type"] == "topic" and ex["durable"] is True and ex["auto_delete"] is False

    queues = {q["name"]: q for q in mgmt.get("queues", t.vhost)}
    assert set(queues) == set(t.queues)
    assert all(q["durable"] and not q["auto_delete"] for q in queues.values())

    bindings = {(b["destination"], b["routing_key"])
                for b in mgmt.get("exchanges", t.vhost, t.exchange, "bindings", "source")}
    assert bindings == set(t.queues.items())


def test_repeat_calls_change_nothing(backend, mgmt, tenant):
    before = mgmt.get("users", tenant.user)["password_hash"]
    assert backend.ensure_vhost(tenant.vhost, max_connections=7, max_queues=11) == []
    assert backend.ensure_user(tenant.user, tenant.password, tenant.vhost, enabled=True) == []
    assert backend.ensure_topology(tenant.vhost, tenant.exchange, tenant.queues) == ([], [])
    # A rewritten password would carry a fresh salt.
    assert mgmt.get("users", tenant.user)["password_hash"] == before


def test_limits_follow_the_spec(backend, mgmt, tenant):
    changes = backend.ensure_vhost(tenant.vhost, max_connections=3, max_queues=11)
    assert changes == [f"vhost {tenant.vhost} limit max-connections set to 3"]
    assert mgmt.get("vhost-limits", tenant.vhost)[0]["value"] == {"max-connections": 3, "max-queues": 11}


# --- what the tenant can do -------------------------------------------------------------

def test_tenant_publishes_to_its_exchange_and_consumes_from_its_queue(tenant):
    conn = connect(tenant)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(tenant.exchange, "orders.created", b'{"id": 1}', mandatory=True)
        method, _props, body = ch.basic_get(f"{tenant.name}.orders", auto_ack=True)
        assert method is not None and body == b'{"id": 1}'
        # Routed by key: nothing landed in the billing queue.
        assert ch.basic_get(f"{tenant.name}.billing", auto_ack=True)[0] is None
    finally:
        _close(conn)


def test_credentials_are_refused_on_another_tenants_vhost(backend, new_tenant):
    a, b = new_tenant(), new_tenant()
    provision(backend, a)
    provision(backend, b)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        connect(a, vhost=b.vhost)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(a, password=b.password)
    _close(connect(b))


def test_password_change_refuses_old_and_accepts_new(backend, mgmt, tenant):
    old = tenant.password
    new = "n3w/p@ss:word?" + secrets.token_hex(4)
    changes = backend.ensure_user(tenant.user, new, tenant.vhost, enabled=True)
    assert changes == [f"user {tenant.user} password changed"]
    assert backend.password_matches(tenant.user, new)
    assert not backend.password_matches(tenant.user, old)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(tenant, password=old)
    tenant.password = new
    _close(connect(tenant))
    assert backend.ensure_user(tenant.user, new, tenant.vhost, enabled=True) == []


def test_suspension_closes_connections_and_refuses_new_ones(backend, mgmt, tenant):
    conn = connect(tenant)
    try:
        poll(lambda: mgmt.user_connections(tenant.user), what="the tenant's connection in the management API")
        changes = backend.ensure_user(tenant.user, tenant.password, tenant.vhost, enabled=False)
        assert f"user {tenant.user} permissions on vhost {tenant.vhost} revoked" in changes
        assert f"closed 1 connection(s) of user {tenant.user}" in changes

        def closed() -> bool:
            try:
                conn.process_data_events(time_limit=0.2)
            except pika.exceptions.AMQPConnectionError:
                return True
            return conn.is_closed
        poll(closed, timeout=10, interval=0, what="the tenant's connection to be closed by the broker")
    finally:
        _close(conn)

    assert mgmt.get("users", tenant.user, "permissions") == []
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        connect(tenant)
    poll(lambda: not mgmt.user_connections(tenant.user), what="no connection of the tenant listed")
    assert backend.ensure_user(tenant.user, tenant.password, tenant.vhost, enabled=False) == []

    changes = backend.ensure_user(tenant.user, tenant.password, tenant.vhost, enabled=True)
    assert changes == [f"user {tenant.user} granted full permissions on vhost {tenant.vhost}"]
    conn = connect(tenant)
    try:
        conn.channel().basic_publish(tenant.exchange, "orders.created", b"back")
    finally:
        _close(conn)


def test_permissions_elsewhere_are_revoked(backend, mgmt, new_tenant):
    a, b = new_tenant(), new_tenant()
    provision(backend, a)
    provision(backend, b)
    # Someone granted A access to B's vhost by hand.
    resp = mgmt.session.put(f"{mgmt.url}/api/permissions/{b.vhost}/{a.user}",
                            json={"configure": "", "write": ".*", "read": ".*"}, timeout=10)
    assert resp.status_code in (201, 204)
    changes = backend.ensure_user(a.user, a.password, a.vhost, enabled=True)
    assert changes == [f"user {a.user} permissions on vhost {b.vhost} revoked"]
    assert [p["vhost"] for p in mgmt.get("users", a.user, "permissions")] == [a.vhost]


# --- topology changes -----------------------------------------------------------------------

def test_removed_queue_is_deleted_when_empty_and_kept_while_it_holds_messages(backend, mgmt, tenant):
    orders, billing = f"{tenant.name}.orders", f"{tenant.name}.billing"
    conn = connect(tenant)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(tenant.exchange, "billing.invoice", b"unpaid", mandatory=True)
        # A queue of the tenant's own, outside the operator's naming: never touched.
        ch.queue_declare("scratch", durable=True)
    finally:
        _close(conn)

    changes, kept = backend.ensure_topology(tenant.vhost, tenant.exchange, {orders: "orders.#"})
    assert kept == [billing]
    assert changes == [f"queue {billing} unbound from {tenant.exchange} (billing.#); kept: it holds messages"]
    names = {q["name"] for q in mgmt.get("queues", tenant.vhost)}
    assert names == {orders, billing, "scratch"}
    bindings = {(b["destination"], b["routing_key"])
                for b in mgmt.get("exchanges", tenant.vhost, tenant.exchange, "bindings", "source")}
    assert bindings == {(orders, "orders.#")}
    # Still kept (and reported) on the next pass, without further changes.
    assert backend.ensure_topology(tenant.vhost, tenant.exchange, {orders: "orders.#"}) == ([], [billing])

    conn = connect(tenant)
    try:
        assert conn.channel().basic_get(billing, auto_ack=True)[2] == b"unpaid"
    finally:
        _close(conn)
    changes, kept = backend.ensure_topology(tenant.vhost, tenant.exchange, {orders: "orders.#"})
    assert (changes, kept) == ([f"queue {billing} deleted (no longer wanted, empty)"], [])
    assert {q["name"] for q in mgmt.get("queues", tenant.vhost)} == {orders, "scratch"}


def test_new_queue_and_changed_routing_key(backend, mgmt, tenant):
    orders, audit = f"{tenant.name}.orders", f"{tenant.name}.audit"
    wanted = {orders: "orders.created", f"{tenant.name}.billing": "billing.#", audit: "#"}
    changes, kept = backend.ensure_topology(tenant.vhost, tenant.exchange, wanted)
    assert kept == []
    assert changes == [
        f"queue {audit} created",
        f"queue {audit} bound to {tenant.exchange} with #",
        f"queue {orders} bound to {tenant.exchange} with orders.created",
        f"queue {orders} unbound from {tenant.exchange} (orders.#)",
    ]
    bindings = {(b["destination"], b["routing_key"])
                for b in mgmt.get("exchanges", tenant.vhost, tenant.exchange, "bindings", "source")}
    assert bindings == set(wanted.items())


def test_steady_state_opens_no_amqp_connection_so_a_full_vhost_is_fine(backend, tenant):
    backend.ensure_vhost(tenant.vhost, max_connections=1, max_queues=11)
    conn = connect(tenant)
    try:
        def limit_enforced() -> bool:
            try:
                _close(connect(tenant))
            except pika.exceptions.ProbableAccessDeniedError:
                return True
            return False
        poll(limit_enforced, timeout=10, what="the vhost's connection limit to refuse a second connection")

        assert backend.ensure_topology(tenant.vhost, tenant.exchange, tenant.queues) == ([], [])
        wanted = {**tenant.queues, f"{tenant.name}.audit": "#"}
        with pytest.raises(BackendUnavailable, match="connection limit"):
            backend.ensure_topology(tenant.vhost, tenant.exchange, wanted)
    finally:
        _close(conn)


# --- deletion ---------------------------------------------------------------------------------

def test_delete_is_idempotent(backend, mgmt, tenant):
    assert backend.delete_user(tenant.user) is True
    assert backend.delete_user(tenant.user) is False
    assert mgmt.get("users", tenant.user) is None
    assert backend.delete_vhost(tenant.vhost) is True
    assert backend.delete_vhost(tenant.vhost) is False
    assert mgmt.get("vhosts", tenant.vhost) is None


def test_delete_user_closes_its_connections(backend, mgmt, tenant):
    conn = connect(tenant)
    try:
        poll(lambda: mgmt.user_connections(tenant.user), what="the tenant's connection in the management API")
        assert backend.delete_user(tenant.user) is True
        poll(lambda: not mgmt.user_connections(tenant.user), what="the deleted user's connections to go")
    finally:
        _close(conn)


# --- failures -----------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_management_api_raises_backend_unavailable():
    url = f"http://127.0.0.1:{_closed_port()}"
    b = RabbitMQBackend(_cfg(management_url=url), timeout=2.0)
    try:
        with pytest.raises(BackendUnavailable) as err:
            b.ping()
        assert err.value.backend == "rabbitmq"
        assert url in str(err.value)
        assert os.environ["RABBITMQ_ADMIN_PASSWORD"] not in str(err.value)
        with pytest.raises(BackendUnavailable, match=url):
            b.ensure_vhost("it-unreachable", max_connections=1, max_queues=1)
    finally:
        b.close()


def test_wrong_admin_password_raises_backend_unavailable():
    b = RabbitMQBackend(_cfg(admin_password="definitely-wrong"), timeout=5.0)
    try:
        with pytest.raises(BackendUnavailable, match="authentication failed"):
            b.ping()
    finally:
        b.close()


def test_unreachable_amqp_port_raises_backend_unavailable(backend, tenant):
    port = _closed_port()
    b = RabbitMQBackend(_cfg(amqp_port=port), timeout=2.0)
    try:
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
            b.ensure_topology(tenant.vhost, tenant.exchange, {f"{tenant.name}.new": "new.#"})
    finally:
        b.close()
