"""RabbitMQBackend without a broker: hashing, URLs, name checks and the HTTP
calls it makes (against a scripted fake session)."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import unquote

import pytest
import requests
from tenant_operator.backends.rabbitmq import client as rabbitmq
from tenant_operator.backends.rabbitmq.client import (
    RabbitMQBackend,
    amqp_url,
    hash_password,
    validate_name,
    verify_password,
)
from tenant_operator.config import RabbitMQConfig
from tenant_operator.errors import BackendUnavailable

CFG = RabbitMQConfig(management_url="http://rabbit.example:15672", amqp_host="rabbit.example",
                     admin_user="admin", admin_password="s3cret-admin")


# --- password hashes ---------------------------------------------------------------------

def test_hash_matches_the_documented_sha256_vector():
    # rabbitmq.com/docs/passwords: salt 908D C60A, password "test12".
    salt = bytes.fromhex("908DC60A")
    assert hash_password("test12", salt) == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def test_hash_matches_an_independently_computed_vector():
    salt = bytes.fromhex("01020304")
    password = "pässwörd:@/"
    expected = base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode()
    assert hash_password(password, salt) == expected
    assert verify_password(password, expected)
    assert not verify_password(password + " ", expected)


@pytest.mark.parametrize("algorithm,digest", [
    ("rabbit_password_hashing_sha512", hashlib.sha512),
    ("rabbit_password_hashing_md5", hashlib.md5),
])
def test_other_hashing_algorithms_verify(algorithm, digest):
    salt = b"\xca\xd5\x08\x9b"
    stored = base64.b64encode(salt + digest(salt + b"simon").digest()).decode()
    assert verify_password("simon", stored, algorithm)
    assert not verify_password("simon", stored)  # wrong algorithm: length mismatch


def test_documented_md5_vector():
    assert verify_password("simon", "ytUIm8s3AnKsXQjptplKFytfVxI=", "rabbit_password_hashing_md5")


@pytest.mark.parametrize("stored,algorithm", [
    ("", "rabbit_password_hashing_sha256"),
    ("not base64!", "rabbit_password_hashing_sha256"),
    ("AAAA", "rabbit_password_hashing_sha256"),
    ("kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", "some_future_algorithm"),
])
def test_malformed_or_unknown_hashes_never_match(stored, algorithm):
    assert not verify_password("test12", stored, algorithm)


# --- URLs and names ----------------------------------------------------------------------------

def test_amqp_url_encodes_user_password_and_vhost():
    url = amqp_url("rabbit.example", 5672, "t1", "p@ss:w/rd", "team/a")
    assert url == "amqp://t1:p%40ss%3Aw%2Frd@rabbit.example:5672/team%2Fa"
    creds, _, rest = url[len("amqp://"):].rpartition("@")
    assert unquote(creds.split(":", 1)[1]) == "p@ss:w/rd"
    assert unquote(rest.split("/", 1)[1]) == "team/a"


def test_amqp_url_default_vhost_and_ipv6_host():
    assert amqp_url("::1", 5671, "u", "p", "/") == "amqp://u:p@[::1]:5671/%2F"


@pytest.mark.parametrize("name", ["../x", "a b", "", "A", "x/y", "/", ".hidden", "-x", "a%2Fb", "é",
                                  "a" * 256])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(ValueError):
        validate_name(name)


@pytest.mark.parametrize("name", ["t1", "acme-corp", "acme-corp.orders", "a_b", "0a"])
def test_safe_names_pass(name):
    assert validate_name(name) == name


# --- HTTP calls against a fake session ---------------------------------------------------------------

class FakeResponse:
    def __init__(self, status: int, body=None):
        self.status_code = status
        self._body = body
        self.reason = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found"}.get(status, "Error")

    def json(self):
        if self._body is None:
            raise ValueError("no body")
        return self._body


class FakeSession:
    """Answers from `routes` {(method, path): response or exception}; records every call."""

    def __init__(self, routes: dict, base: str = CFG.management_url):
        self.routes = routes
        self.base = base
        self.calls: list[tuple[str, str, dict]] = []

    def request(self, method, url, timeout=None, **kwargs):
        assert timeout is not None, "every request needs a timeout"
        path = url[len(self.base):]
        self.calls.append((method, path, kwargs))
        answer = self.routes.get((method, path), FakeResponse(404, {"error": "Object Not Found"}))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def writes(self):
        return [(m, p) for m, p, _ in self.calls if m != "GET"]


def backend_with(routes: dict, cfg: RabbitMQConfig = CFG) -> tuple[RabbitMQBackend, FakeSession]:
    b = RabbitMQBackend(cfg)
    session = FakeSession(routes)
    b._session = lambda: session
    return b, session


FULL = {"configure": ".*", "write": ".*", "read": ".*"}


def _user(password: str, tags=()):
    return {"name": "t1", "tags": list(tags), "hashing_algorithm": "rabbit_password_hashing_sha256",
            "password_hash": hash_password(password, b"\x00\x11\x22\x33")}


def test_ensure_user_without_changes_writes_nothing():
    b, s = backend_with({
        ("GET", "/api/users/t1"): FakeResponse(200, _user("pw")),
        ("GET", "/api/permissions/t1/admin"): FakeResponse(200, {"vhost": "t1", "user": "admin", **FULL}),
        ("GET", "/api/users/t1/permissions"): FakeResponse(200, [{"vhost": "t1", "user": "t1", **FULL}]),
    })
    assert b.ensure_user("t1", "pw", "t1", enabled=True) == []
    assert s.writes() == []


def test_permissions_on_other_vhosts_are_revoked_with_quoted_paths():
    b, s = backend_with({
        ("GET", "/api/users/t1"): FakeResponse(200, _user("pw")),
        ("GET", "/api/permissions/t1/admin"): FakeResponse(200, {"vhost": "t1", "user": "admin", **FULL}),
        ("GET", "/api/users/t1/permissions"): FakeResponse(200, [{"vhost": "/", "user": "t1", **FULL},
                                                                 {"vhost": "t1", "user": "t1", **FULL}]),
        ("DELETE", "/api/permissions/%2F/t1"): FakeResponse(204),
    })
    assert b.ensure_user("t1", "pw", "t1", enabled=True) == ["user t1 permissions on vhost / revoked"]
    assert s.writes() == [("DELETE", "/api/permissions/%2F/t1")]


def test_ensure_user_changes_a_different_password_and_keeps_only_the_marker_tag():
    b, s = backend_with({
        ("GET", "/api/users/t1"): FakeResponse(200, _user("old", tags=["management"])),
        ("PUT", "/api/users/t1"): FakeResponse(204),
        ("GET", "/api/permissions/t1/admin"): FakeResponse(200, {"vhost": "t1", "user": "admin", **FULL}),
        ("GET", "/api/users/t1/permissions"): FakeResponse(200, [{"vhost": "t1", "user": "t1", **FULL}]),
    })
    assert b.ensure_user("t1", "new", "t1", enabled=True, owner_uid="u1") == ["user t1 password changed"]
    put = next(kw for m, p, kw in s.calls if m == "PUT")
    assert put["json"] == {"password": "new", "tags": "tenant-operator-uid:u1"}


def test_ensure_user_replaces_tags_by_the_marker_keeping_the_stored_hash():
    info = _user("pw", tags=["administrator"])
    b, s = backend_with({
        ("GET", "/api/users/t1"): FakeResponse(200, info),
        ("PUT", "/api/users/t1"): FakeResponse(204),
        ("GET", "/api/permissions/t1/admin"): FakeResponse(200, {"vhost": "t1", "user": "admin", **FULL}),
        ("GET", "/api/users/t1/permissions"): FakeResponse(200, [{"vhost": "t1", "user": "t1", **FULL}]),
    })
    assert b.ensure_user("t1", "pw", "t1", enabled=True, owner_uid="u1") == \
        ["user t1 tags set to the ownership marker only"]
    put = next(kw for m, p, kw in s.calls if m == "PUT")
    assert put["json"] == {"password_hash": info["password_hash"],
                           "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "tenant-operator-uid:u1"}


def test_suspension_revokes_permissions_and_closes_connections():
    conn_name = "10.0.0.5:40000 -> 10.0.0.1:5672"
    b, s = backend_with({
        ("GET", "/api/users/t1"): FakeResponse(200, _user("pw")),
        ("GET", "/api/permissions/t1/admin"): FakeResponse(200, {"vhost": "t1", "user": "admin", **FULL}),
        ("GET", "/api/users/t1/permissions"): FakeResponse(200, [{"vhost": "t1", "user": "t1", **FULL}]),
        ("DELETE", "/api/permissions/t1/t1"): FakeResponse(204),
        ("GET", "/api/connections"): FakeResponse(200, [{"name": conn_name, "user": "t1"},
                                                        {"name": "other", "user": "t2"}]),
        ("DELETE", "/api/connections/10.0.0.5%3A40000%20-%3E%2010.0.0.1%3A5672"): FakeResponse(204),
    })
    changes = b.ensure_user("t1", "pw", "t1", enabled=False)
    assert changes == ["user t1 permissions on vhost t1 revoked", "closed 1 connection(s) of user t1"]
    # Revoke first, then close: a reconnect after the close is refused.
    assert s.writes() == [("DELETE", "/api/permissions/t1/t1"),
                          ("DELETE", "/api/connections/10.0.0.5%3A40000%20-%3E%2010.0.0.1%3A5672")]


def test_delete_vhost_reports_whether_it_existed_and_admin_name_is_quoted():
    b, s = backend_with({("DELETE", "/api/vhosts/t1"): FakeResponse(204)})
    assert b.delete_vhost("t1") is True
    b, s = backend_with({})
    assert b.delete_vhost("t1") is False
    # The admin user's name comes from config and is quoted, not validated.
    cfg = RabbitMQConfig(management_url=CFG.management_url, admin_user="ops/admin", admin_password="x")
    b, s = backend_with({("PUT", "/api/permissions/t1/ops%2Fadmin"): FakeResponse(201)}, cfg)
    assert b._ensure_admin_permissions("t1") == ["admin user granted full permissions on vhost t1"]


@pytest.mark.parametrize("call", [
    lambda b: b.ensure_vhost("../x", max_connections=1, max_queues=1),
    lambda b: b.ensure_user("a b", "pw", "t1", enabled=True),
    lambda b: b.ensure_user("t1", "pw", "../x", enabled=True),
    lambda b: b.ensure_topology("t1", "t1.events", {"../x": "a.#"}),
    lambda b: b.ensure_topology("t1", "t1.events", {"t1.a": "a b"}),
    lambda b: b.delete_vhost("x/y"),
    lambda b: b.delete_user("a b"),
    lambda b: b.close_user_connections("../x"),
    lambda b: b.password_matches("a b", "pw"),
])
def test_bad_names_are_refused_before_any_request(call):
    b, s = backend_with({})
    with pytest.raises(ValueError):
        call(b)
    assert s.calls == []


def test_the_admin_user_is_never_managed_as_a_tenant():
    b, s = backend_with({})
    with pytest.raises(ValueError):
        b.ensure_user("admin", "pw", "admin", enabled=False)
    with pytest.raises(ValueError):
        b.delete_user("admin")
    assert s.calls == []


def test_ensure_vhost_sets_only_differing_limits():
    b, s = backend_with({
        ("GET", "/api/vhosts/t1"): FakeResponse(200, {"name": "t1"}),
        ("GET", "/api/vhost-limits/t1"): FakeResponse(
            200, [{"vhost": "t1", "value": {"max-queues": 5, "max-connections": 9}}]),
        ("PUT", "/api/vhost-limits/t1/max-connections"): FakeResponse(204),
    })
    changes = b.ensure_vhost("t1", max_connections=10, max_queues=5)
    assert changes == ["vhost t1 limit max-connections set to 10"]
    assert s.writes() == [("PUT", "/api/vhost-limits/t1/max-connections")]


def _topology_routes(bindings):
    return {
        ("GET", "/api/permissions/t1/admin"): FakeResponse(200, {"vhost": "t1", "user": "admin", **FULL}),
        ("GET", "/api/exchanges/t1/t1.events"): FakeResponse(200, {"name": "t1.events", "type": "topic",
                                                                    "durable": True}),
        ("GET", "/api/queues/t1"): FakeResponse(200, [
            {"name": "t1.orders", "durable": True, "auto_delete": False, "exclusive": False},
            {"name": "t1.tmp", "durable": False, "auto_delete": True, "exclusive": True},
            {"name": "scratch", "durable": True, "auto_delete": False, "exclusive": False},
        ]),
        ("GET", "/api/exchanges/t1/t1.events/bindings/source"): FakeResponse(200, bindings),
    }


def test_topology_in_steady_state_needs_no_amqp_connection():
    b, s = backend_with(_topology_routes([{"destination": "t1.orders", "destination_type": "queue",
                                           "routing_key": "orders.#"}]))
    b._connect = lambda vhost: pytest.fail("no AMQP connection expected")
    assert b.ensure_topology("t1", "t1.events", {"t1.orders": "orders.#"}) == ([], [])
    assert s.writes() == []


def test_topology_drift_opens_an_amqp_connection():
    b, _ = backend_with(_topology_routes([]))
    b._connect = lambda vhost: (_ for _ in ()).throw(BackendUnavailable("rabbitmq", "connect attempted"))
    with pytest.raises(BackendUnavailable, match="connect attempted"):
        b.ensure_topology("t1", "t1.events", {"t1.orders": "orders.#"})


def test_exchange_of_the_wrong_type_is_reported():
    routes = _topology_routes([])
    routes[("GET", "/api/exchanges/t1/t1.events")] = FakeResponse(200, {"type": "direct", "durable": True})
    b, _ = backend_with(routes)
    with pytest.raises(BackendUnavailable, match="expected a durable topic exchange"):
        b.ensure_topology("t1", "t1.events", {"t1.orders": "orders.#"})


def test_amqp_access_refusal_carries_the_broker_reason(monkeypatch):
    import pika.exceptions

    def refuse(params):
        raise pika.exceptions.ProbableAccessDeniedError(
            "ConnectionClosedByBroker: (530) \"NOT_ALLOWED - access to vhost 't1' refused for user 'admin': "
            "connection limit (1) is reached\"")
    monkeypatch.setattr(rabbitmq.pika, "BlockingConnection", refuse)
    b = RabbitMQBackend(CFG)
    with pytest.raises(BackendUnavailable) as err:
        b._connect("t1")
    assert str(err.value) == ("rabbitmq: amqp://rabbit.example:5672/t1: NOT_ALLOWED - access to vhost 't1' "
                              "refused for user 'admin': connection limit (1) is reached")


# --- errors ------------------------------------------------------------------------------------------

def test_connection_errors_name_the_url_but_no_credentials():
    cfg = RabbitMQConfig(management_url="http://ops:url-secret@rabbit.example:15672",
                         admin_user="admin", admin_password="s3cret-admin")
    b = RabbitMQBackend(cfg)
    session = FakeSession({("GET", "/api/whoami"): requests.ConnectionError(
        "HTTPConnectionPool(host='rabbit.example', port=15672): Max retries exceeded "
        "(Caused by NewConnectionError(': Failed to establish a new connection: "
        "[Errno 111] Connection refused'))")},
        base=cfg.management_url)
    b._session = lambda: session
    with pytest.raises(BackendUnavailable) as err:
        b.ping()
    message = str(err.value)
    assert err.value.backend == "rabbitmq"
    assert "http://rabbit.example:15672/api/whoami" in message
    assert "Connection refused" in message
    assert "url-secret" not in message and "s3cret-admin" not in message


def test_timeouts_and_http_errors_are_backend_unavailable():
    b, _ = backend_with({
        ("GET", "/api/whoami"): requests.ReadTimeout("read timed out"),
        ("GET", "/api/vhosts/t1"): FakeResponse(500, {"error": "Internal", "reason": "boom"}),
        ("GET", "/api/users/t1"): FakeResponse(401, {"error": "not_authorised"}),
    })
    with pytest.raises(BackendUnavailable, match="timed out after 5s"):
        b.ping()
    with pytest.raises(BackendUnavailable, match="HTTP 500: boom"):
        b.ensure_vhost("t1", max_connections=1, max_queues=1)
    with pytest.raises(BackendUnavailable, match="authentication failed"):
        b.password_matches("t1", "pw")


def test_amqp_endpoint_in_messages_has_no_credentials():
    b = RabbitMQBackend(CFG)
    assert b._amqp_endpoint("t1") == "amqp://rabbit.example:5672/t1"
    assert "s3cret" not in repr(CFG)


def test_passwords_are_never_logged(caplog):
    caplog.set_level("DEBUG", logger=rabbitmq.__name__)
    b, _ = backend_with({
        ("PUT", "/api/users/t1"): FakeResponse(201),
        ("PUT", "/api/permissions/t1/admin"): FakeResponse(201),
        ("GET", "/api/users/t1/permissions"): FakeResponse(200, []),
        ("PUT", "/api/permissions/t1/t1"): FakeResponse(201),
    })
    changes = b.ensure_user("t1", "tenant-pw-123", "t1", enabled=True)
    assert changes[0] == "user t1 created"
    assert "tenant-pw-123" not in caplog.text and "tenant-pw-123" not in json.dumps(changes)
