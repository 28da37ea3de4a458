"""RabbitMQ backend: one vhost, one user and a small topology per tenant.

Administration (vhosts, users, permissions, limits, connections) goes through
the management HTTP API; the topology inside a tenant's vhost (exchange,
queues, bindings) is declared over AMQP with pika as the admin user.

Every call is idempotent and returns the list of changes it made, so the
reconciler can run it on every pass and report what actually happened. Any
failure to reach or operate the broker raises
`BackendUnavailable("rabbitmq", ...)` with a message naming the endpoint and
never a credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
from collections.abc import Collection
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import requests

from tenant_operator import config
from tenant_operator.errors import BackendUnavailable
from tenant_operator.ownership import RABBIT_RETAINED_TAG, RABBIT_TAG_PREFIX

log = logging.getLogger(__name__)

BACKEND = "rabbitmq"

# Names that reach URLs and AMQP: vhosts, users, exchanges and queues.
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NAME_MAX = 255
# Topic binding keys: dot-separated words, '*' and '#' wildcards.
ROUTING_KEY = re.compile(r"^[A-Za-z0-9_.*#-]{1,255}$")

FULL_ACCESS = {"configure": ".*", "write": ".*", "read": ".*"}
LIMIT_KEYS = ("max-connections", "max-queues")
_HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
_CLOSE_REASON = "closed by tenant-operator"


def validate_name(name: str, what: str = "name") -> str:
    """Return `name` if it matches the strict pattern, else raise ValueError."""
    if not isinstance(name, str) or len(name) > NAME_MAX or not NAME.fullmatch(name):
        raise ValueError(f"refusing unsafe RabbitMQ {what} {name!r} "
                         "(allowed: a-z, 0-9, '.', '_', '-', starting with a letter or digit)")
    return name


def hash_password(password: str, salt: bytes, algorithm: str = "rabbit_password_hashing_sha256") -> str:
    """RabbitMQ's internal password hash: base64(salt + H(salt + utf8(password)))."""
    if len(salt) != 4:
        raise ValueError("RabbitMQ password salts are 4 bytes")
    digest = _HASHES[algorithm](salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def verify_password(password: str, password_hash: str,
                    algorithm: str = "rabbit_password_hashing_sha256") -> bool:
    """True when `password_hash` (as returned by GET /api/users/<u>) is `password`'s hash.
    Unknown algorithms and malformed hashes count as a mismatch."""
    if algorithm not in _HASHES or not password_hash:
        return False
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (ValueError, TypeError):
        return False
    if len(raw) != 4 + _HASHES[algorithm]().digest_size:
        return False
    return hmac.compare_digest(hash_password(password, raw[:4], algorithm), password_hash)


def _tag_list(tags) -> list[str]:
    if isinstance(tags, str):
        return [t for t in tags.split(",") if t]
    return [str(t) for t in tags or []]


def _marker(tags: list[str]) -> str:
    return next((t[len(RABBIT_TAG_PREFIX):] for t in tags if t.startswith(RABBIT_TAG_PREFIX)), "")


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def amqp_url(host: str, port: int, user: str, password: str, vhost: str) -> str:
    """The AMQP URL a tenant connects with; user, password and vhost are percent-encoded."""
    return (f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{_host_for_url(host)}:{port}"
            f"/{quote(vhost, safe='')}")


def _seg(value: str) -> str:
    return quote(value, safe="")


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _describe(exc: requests.RequestException, timeout: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"timed out after {timeout:g}s"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if isinstance(exc, requests.ConnectionError):
        return "connection failed: " + (match.group(1).strip() if match else "cannot connect")
    return type(exc).__name__


class RabbitMQBackend:
    def __init__(self, cfg: config.RabbitMQConfig, *, timeout: float = 5.0):
        if not cfg.management_url:
            raise ValueError("RabbitMQ management URL is not configured")
        self.cfg = cfg
        self.timeout = timeout
        self.base_url = cfg.management_url.rstrip("/")
        self.display_url = _strip_userinfo(self.base_url)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # --- HTTP plumbing -------------------------------------------------------------

    def _session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe; the reconciler runs
        # several tenants in parallel, so each thread reuses its own session.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = (self.cfg.admin_user, self.cfg.admin_password)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _request(self, method: str, path: str, *, ok=(200, 201, 204), missing_ok: bool = False,
                 **kwargs) -> requests.Response | None:
        """Send a request to the management API. Returns None for 404 when `missing_ok`."""
        url = f"{self.base_url}{path}"
        shown = f"{method} {self.display_url}{path}"
        try:
            resp = self._session().request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise BackendUnavailable(BACKEND, f"{shown}: {_describe(exc, self.timeout)}") from None
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code not in ok:
            if resp.status_code == 401:
                reason = "authentication failed for the admin user"
            elif resp.status_code == 403:
                reason = "the admin user is not allowed to do this (needs the administrator tag)"
            else:
                reason = self._reason(resp)
            raise BackendUnavailable(BACKEND, f"{shown}: HTTP {resp.status_code}: {reason}")
        return resp

    @staticmethod
    def _reason(resp: requests.Response) -> str:
        try:
            body = resp.json()
        except ValueError:
            return (resp.reason or "unexpected response")[:200]
        if isinstance(body, dict):
            return str(body.get("reason") or body.get("error") or resp.reason)[:200]
        return (resp.reason or "unexpected response")[:200]

    def _get(self, path: str, *, missing_ok: bool = False, params: dict | None = None):
        resp = self._request("GET", path, ok=(200,), missing_ok=missing_ok, params=params)
        if resp is None:
            return None
        try:
            return resp.json()
        except ValueError:
            raise BackendUnavailable(BACKEND, f"GET {self.display_url}{path}: response is not JSON") from None

    def _put(self, path: str, body: dict) -> None:
        self._request("PUT", path, ok=(200, 201, 204), json=body)

    def _delete(self, path: str, *, headers: dict | None = None) -> bool:
        """DELETE; True when something was deleted, False when it was already gone."""
        return self._request("DELETE", path, ok=(200, 204), missing_ok=True, headers=headers) is not None

    # --- vhost ---------------------------------------------------------------------

    def _marker_of(self, kind: str, name: str) -> tuple[bool, str, bool]:
        validate_name(name, kind)
        info = self._get(f"/api/{kind}s/{_seg(name)}", missing_ok=True)
        if info is None:
            return False, "", False
        tags = _tag_list(info.get("tags"))
        return True, _marker(tags), RABBIT_RETAINED_TAG in tags

    def vhost_marker(self, vhost: str) -> tuple[bool, str, bool]:
        """(exists, owner UID from its tags or '', retained)."""
        return self._marker_of("vhost", vhost)

    def user_marker(self, user: str) -> tuple[bool, str, bool]:
        """(exists, owner UID from its tags or '', retained)."""
        return self._marker_of("user", user)

    def mark_vhost(self, vhost: str, uid: str, *, retained: bool = False) -> None:
        tags = [RABBIT_TAG_PREFIX + uid] + ([RABBIT_RETAINED_TAG] if retained else [])
        self._put(f"/api/vhosts/{_seg(vhost)}", {"description": f"managed by tenant-operator (Tenant UID {uid})",
                                                 "tags": ",".join(tags)})

    def ensure_vhost(self, vhost: str, *, max_connections: int, max_queues: int, owner_uid: str = "") -> list[str]:
        """Create the vhost (with `owner_uid` in its tags) or converge its limits.
        The caller has checked ownership (`vhost_marker`)."""
        validate_name(vhost, "vhost")
        changes: list[str] = []
        path = f"/api/vhosts/{_seg(vhost)}"
        info = self._get(path, missing_ok=True)
        if info is None:
            if owner_uid:
                self.mark_vhost(vhost, owner_uid)
            else:
                self._put(path, {"description": "managed by tenant-operator"})
            changes.append(f"vhost {vhost} created")
        elif owner_uid and _tag_list(info.get("tags")) != [RABBIT_TAG_PREFIX + owner_uid]:
            self.mark_vhost(vhost, owner_uid)
            changes.append(f"vhost {vhost} marked for Tenant UID {owner_uid}")

        wanted = {"max-connections": int(max_connections), "max-queues": int(max_queues)}
        current: dict = {}
        for entry in self._get(f"/api/vhost-limits/{_seg(vhost)}") or []:
            if entry.get("vhost") == vhost:
                current.update(entry.get("value") or {})
        for key in LIMIT_KEYS:
            if current.get(key) != wanted[key]:
                self._put(f"/api/vhost-limits/{_seg(vhost)}/{key}", {"value": wanted[key]})
                changes.append(f"vhost {vhost} limit {key} set to {wanted[key]}")
        self._log(changes)
        return changes

    def delete_vhost(self, vhost: str) -> bool:
        """Delete the vhost (its queues, messages and connections go with it).
        False when it did not exist."""
        validate_name(vhost, "vhost")
        deleted = self._delete(f"/api/vhosts/{_seg(vhost)}")
        if deleted:
            log.info("rabbitmq: vhost %s deleted", vhost)
        return deleted

    # --- users and permissions -----------------------------------------------------

    def _check_tenant_user(self, user: str) -> None:
        validate_name(user, "user")
        if user == self.cfg.admin_user:
            raise ValueError(f"refusing to manage the admin user {user!r} as a tenant user")

    def password_matches(self, user: str, password: str) -> bool:
        validate_name(user, "user")
        info = self._get(f"/api/users/{_seg(user)}", missing_ok=True)
        if info is None:
            return False
        return verify_password(password, info.get("password_hash", ""),
                               info.get("hashing_algorithm", "rabbit_password_hashing_sha256"))

    def ensure_user(self, user: str, password: str, vhost: str, *, enabled: bool, owner_uid: str = "") -> list[str]:
        """User with no tags; the password is written only when it differs (checked
        locally against the stored hash, so an unchanged call writes nothing).

        enabled: permissions configure/write/read '.*' on its own vhost and nowhere else.
        disabled (suspension): all its permissions deleted and its open connections closed.
        Also makes sure the admin user may operate inside the vhost (topology)."""
        self._check_tenant_user(user)
        validate_name(vhost, "vhost")
        if not password:
            raise ValueError(f"empty password for RabbitMQ user {user!r}")
        changes: list[str] = []

        upath = f"/api/users/{_seg(user)}"
        info = self._get(upath, missing_ok=True)
        # The only tag a tenant user carries is the ownership marker: no
        # management or administrator rights.
        wanted_tags = RABBIT_TAG_PREFIX + owner_uid if owner_uid else ""
        if info is None:
            self._put(upath, {"password": password, "tags": wanted_tags})
            changes.append(f"user {user} created")
        else:
            same_password = verify_password(password, info.get("password_hash", ""),
                                            info.get("hashing_algorithm", "rabbit_password_hashing_sha256"))
            tags = _tag_list(info.get("tags"))
            if not same_password:
                self._put(upath, {"password": password, "tags": wanted_tags})
                changes.append(f"user {user} password changed")
            elif tags != _tag_list(wanted_tags):
                # Keep the stored hash: only the tags change.
                self._put(upath, {"password_hash": info["password_hash"],
                                  "hashing_algorithm": info["hashing_algorithm"], "tags": wanted_tags})
                changes.append(f"user {user} tags set to the ownership marker only")

        changes += self._ensure_admin_permissions(vhost)

        perms = self._get(f"{upath}/permissions") or []
        for perm in perms:
            other = perm.get("vhost")
            if not isinstance(other, str) or (enabled and other == vhost):
                continue
            if self._delete(f"/api/permissions/{_seg(other)}/{_seg(user)}"):
                changes.append(f"user {user} permissions on vhost {other} revoked")
        if enabled:
            own = next((p for p in perms if p.get("vhost") == vhost), None)
            if own is None or any(own.get(k) != v for k, v in FULL_ACCESS.items()):
                self._put(f"/api/permissions/{_seg(vhost)}/{_seg(user)}", dict(FULL_ACCESS))
                changes.append(f"user {user} granted full permissions on vhost {vhost}")
        else:
            closed = self.close_user_connections(user)
            if closed:
                changes.append(f"closed {closed} connection(s) of user {user}")
        self._log(changes)
        return changes

    def _ensure_admin_permissions(self, vhost: str) -> list[str]:
        admin = self.cfg.admin_user
        path = f"/api/permissions/{_seg(vhost)}/{_seg(admin)}"
        perm = self._get(path, missing_ok=True)
        if perm is None or any(perm.get(k) != v for k, v in FULL_ACCESS.items()):
            self._put(path, dict(FULL_ACCESS))
            return [f"admin user granted full permissions on vhost {vhost}"]
        return []

    def close_user_connections(self, user: str) -> int:
        """Close every open connection of `user`; returns how many were closed.

        The management API lists a connection only after its first statistics
        emission, so a connection opened a moment ago may be missed; the next
        reconcile catches it."""
        validate_name(user, "user")
        conns = self._get("/api/connections", params={"columns": "name,user"}) or []
        closed = 0
        for conn in conns:
            if conn.get("user") != user or not conn.get("name"):
                continue
            if self._delete(f"/api/connections/{_seg(conn['name'])}", headers={"X-Reason": _CLOSE_REASON}):
                closed += 1
        if closed:
            log.info("rabbitmq: closed %d connection(s) of user %s", closed, user)
        return closed

    def revoke_user(self, user: str) -> list[str]:
        """The idle user of a rotated pair: no password (no login), no permissions,
        no open connections. Kept with its ownership tag for the next rotation,
        which sets a new password and grants it again. Returns the changes."""
        self._check_tenant_user(user)
        upath = f"/api/users/{_seg(user)}"
        info = self._get(upath, missing_ok=True)
        if info is None:
            return []
        changes: list[str] = []
        if info.get("password_hash"):
            # An empty hash is RabbitMQ's "no password": password logins are refused.
            self._put(upath, {"password_hash": "", "tags": ",".join(_tag_list(info.get("tags")))})  # nosec B105
            changes.append(f"user {user} password removed")
        for perm in self._get(f"{upath}/permissions") or []:
            other = perm.get("vhost")
            if isinstance(other, str) and self._delete(f"/api/permissions/{_seg(other)}/{_seg(user)}"):
                changes.append(f"user {user} permissions on vhost {other} revoked")
        closed = self.close_user_connections(user)
        if closed:
            changes.append(f"closed {closed} connection(s) of user {user}")
        self._log(changes)
        return changes

    def delete_user(self, user: str) -> bool:
        """Delete the user and close its connections. False when it did not exist."""
        self._check_tenant_user(user)
        deleted = self._delete(f"/api/users/{_seg(user)}")
        self.close_user_connections(user)
        if deleted:
            log.info("rabbitmq: user %s deleted", user)
        return deleted

    # --- topology ------------------------------------------------------------------

    def _amqp_endpoint(self, vhost: str) -> str:
        return f"amqp://{_host_for_url(self.cfg.amqp_host)}:{self.cfg.amqp_port}/{_seg(vhost)}"

    def _connect(self, vhost: str) -> pika.BlockingConnection:
        if not self.cfg.amqp_host:
            raise BackendUnavailable(BACKEND, "rabbitmq.amqpHost is not configured")
        params = pika.ConnectionParameters(
            host=self.cfg.amqp_host, port=self.cfg.amqp_port, virtual_host=vhost,
            credentials=pika.PlainCredentials(self.cfg.admin_user, self.cfg.admin_password,
                                              erase_on_connect=True),
            connection_attempts=1, socket_timeout=self.timeout, stack_timeout=self.timeout * 2,
            blocked_connection_timeout=self.timeout * 2, heartbeat=30,
            client_properties={"connection_name": "tenant-operator"},
        )
        try:
            return pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError:
            raise BackendUnavailable(BACKEND, f"{self._amqp_endpoint(vhost)}: authentication failed "
                                              "for the admin user") from None
        except pika.exceptions.ProbableAccessDeniedError as exc:
            # e.g. "NOT_ALLOWED - access to vhost 't1' refused for user 'admin': connection limit (50)
            # is reached": names vhost and user only.
            match = re.search(r"\(\d+\) (['\"])(.+?)\1", str(exc))
            reason = match.group(2) if match else "access to the vhost refused"
            raise BackendUnavailable(BACKEND, f"{self._amqp_endpoint(vhost)}: {reason}") from None
        except pika.exceptions.AMQPError as exc:
            raise BackendUnavailable(BACKEND, f"{self._amqp_endpoint(vhost)}: cannot connect "
                                              f"({type(exc).__name__})") from None

    def ensure_topology(self, vhost: str, exchange: str, queues: dict[str, str],
                        release: Collection[str] | None = None) -> tuple[list[str], list[str]]:
        """Durable topic exchange `exchange` and one durable queue per key of `queues`,
        bound to the exchange with the value as routing key.

        Operator-managed queues (durable, not exclusive/auto-delete, named
        f"{vhost}.…") that are no longer wanted are unbound from the exchange
        (nothing new reaches them) and kept. Those in `release` (all of them when
        `release` is None) are deleted if empty; a non-empty one stays until
        drained. Returns (changes, names of the kept unwanted queues).

        The current state is read from the management API (existence and
        bindings show there at once; message counts do not, so emptiness is
        left to the broker via queue.delete if-empty). The AMQP connection is
        opened only when something has to change: the admin's connection
        counts against the vhost's max-connections, which a busy tenant may
        have used up."""
        validate_name(vhost, "vhost")
        validate_name(exchange, "exchange")
        for name, key in queues.items():
            validate_name(name, "queue")
            if not isinstance(key, str) or not ROUTING_KEY.fullmatch(key):
                raise ValueError(f"refusing unsafe routing key {key!r} for queue {name!r}")
        prefix = f"{vhost}."
        changes = self._ensure_admin_permissions(vhost)

        ex = self._get(f"/api/exchanges/{_seg(vhost)}/{_seg(exchange)}", missing_ok=True)
        if ex is not None and (ex.get("type") != "topic" or not ex.get("durable")):
            raise BackendUnavailable(BACKEND, f"{self._amqp_endpoint(vhost)}: exchange {exchange} exists "
                                              f"with type {ex.get('type')!r}, durable={ex.get('durable')}; "
                                              "expected a durable topic exchange")
        listed = self._get(f"/api/queues/{_seg(vhost)}",
                           params={"columns": "name,durable,auto_delete,exclusive"}) or []
        existing = {q["name"]: q for q in listed if q.get("name")}
        stale = sorted(
            name for name, q in existing.items()
            if name.startswith(prefix) and name not in queues
            and q.get("durable") and not q.get("auto_delete") and not q.get("exclusive")
        )
        bindings: dict[str, set[str]] = {}
        if ex is not None:
            for b in self._get(f"/api/exchanges/{_seg(vhost)}/{_seg(exchange)}/bindings/source") or []:
                if b.get("destination_type") == "queue":
                    bindings.setdefault(b.get("destination"), set()).add(b.get("routing_key", ""))

        def queue_ok(name: str) -> bool:
            q = existing.get(name)
            return bool(q and q.get("durable") and not q.get("auto_delete") and not q.get("exclusive"))

        held = [n for n in stale if release is not None and n not in release]
        if (ex is not None and all(n in held and not bindings.get(n) for n in stale)
                and all(queue_ok(n) for n in queues)
                and all(bindings.get(n, set()) == {k} for n, k in queues.items())):
            self._log(changes)
            return changes, held

        kept: list[str] = []
        endpoint = self._amqp_endpoint(vhost)
        conn = self._connect(vhost)
        try:
            ch = conn.channel()
            for name in stale:
                if name not in held:
                    try:
                        ch.queue_delete(queue=name, if_empty=True)
                        changes.append(f"queue {name} deleted (no longer wanted, empty)")
                        continue
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 406:   # PRECONDITION_FAILED: not empty
                            raise
                        ch = conn.channel()
                kept.append(name)
                why = "its grace period has not ended" if name in held else "it holds messages"
                for key in sorted(bindings.get(name, ())):
                    ch.queue_unbind(queue=name, exchange=exchange, routing_key=key)
                    changes.append(f"queue {name} unbound from {exchange} ({key}); kept: {why}")

            # Declares double as verification: the broker refuses (406) an
            # existing exchange or queue whose properties differ.
            ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
            if ex is None:
                changes.append(f"exchange {exchange} created")
            for name, key in sorted(queues.items()):
                ch.queue_declare(queue=name, durable=True)
                if name not in existing:
                    changes.append(f"queue {name} created")
                have = bindings.get(name, set())
                if key not in have:
                    ch.queue_bind(queue=name, exchange=exchange, routing_key=key)
                    changes.append(f"queue {name} bound to {exchange} with {key}")
                for old in sorted(have - {key}):
                    ch.queue_unbind(queue=name, exchange=exchange, routing_key=old)
                    changes.append(f"queue {name} unbound from {exchange} ({old})")
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BackendUnavailable(BACKEND, f"{endpoint}: broker refused a topology change: "
                                              f"{exc.reply_code} {exc.reply_text}") from None
        except pika.exceptions.AMQPError as exc:
            raise BackendUnavailable(BACKEND, f"{endpoint}: connection lost while declaring topology "
                                              f"({type(exc).__name__})") from None
        finally:
            if conn.is_open:
                try:
                    conn.close()
                except pika.exceptions.AMQPError:
                    pass
        self._log(changes)
        return changes, kept

    # --- misc ------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise BackendUnavailable unless the management API answers with valid admin credentials."""
        self._get("/api/whoami")

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def __enter__(self) -> RabbitMQBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _log(changes: list[str]) -> None:
        for change in changes:
            log.info("rabbitmq: %s", change)
