"""A tenant's vhost, its RabbitMQ user and topology, and the `rabbitmq-credentials` Secret."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tenant_operator import naming, ownership, rotation
from tenant_operator.backends.base import BackendComponent, new_password
from tenant_operator.components import ComponentResult
from tenant_operator.errors import ConfigError
from tenant_operator.lifecycle import iso_time, parse_time
from tenant_operator.ownership import NameConflict
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition

log = logging.getLogger(__name__)


def pending_queues(current_status: dict | None) -> dict[str, datetime]:
    """queue -> purgeAfter, as the last pass recorded them in status.pendingRemovals."""
    out = {}
    for entry in (((current_status or {}).get("pendingRemovals") or {}).get("queues") or []):
        try:
            out[entry["queue"]] = parse_time(str(entry["purgeAfter"]))
        except (KeyError, TypeError, ValueError):
            continue   # unreadable: the queue waits a full grace period again
    return out


class RabbitMQComponent(BackendComponent):
    component = "rabbitmq"
    condition_type = "MessagingReady"
    backend_name = "rabbitmq"
    data_step = "delete-vhost"

    def __init__(self, cfg, kube):
        super().__init__(cfg, kube)
        self._clients: dict[str, object] = {}      # server name -> client

    def client_on(self, server: str):
        """The client of the RabbitMQ server named `server` ("": the default one)."""
        from tenant_operator.backends.rabbitmq.client import RabbitMQBackend
        if not self.cfg.rabbitmq_servers:
            raise ConfigError("rabbitmq", "the tenant asks for messaging but no RabbitMQ is configured")
        cfg = self.cfg.rabbitmq_server(server)
        with self._lock:
            if cfg.name not in self._clients:
                # Creating a vhost starts its message stores; on a broker holding
                # hundreds of vhosts that takes longer than a short HTTP timeout.
                self._clients[cfg.name] = RabbitMQBackend(cfg, timeout=30.0)
            return self._clients[cfg.name]

    def client(self, t: Tenant):
        """The client of the server the tenant is placed on."""
        return self.client_on(t.rabbitmq_server)

    def probe(self) -> None:
        for name in sorted(self.cfg.rabbitmq_servers):
            self.client_on(name).ping()

    def expected_secrets(self, t: Tenant) -> list[str]:
        return [naming.RABBITMQ_SECRET]

    def wanted(self, t: Tenant) -> bool:
        return t.messaging is not None

    def _check(self, t: Tenant, what: str, name: str, marker: tuple[bool, str, bool]) -> None:
        exists, uid, retained = marker
        decision = ownership.claim_decision(uid, t.name if retained else "", ownership.RETAINED if retained else "",
                                            uid=t.uid, tenant=t.name, exists=exists, adopt=t.adopt_existing)
        if decision == "conflict":
            raise NameConflict(f"RabbitMQ {what}", name, f"Tenant UID {uid}" if uid else "")

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False,
                 current_status: dict | None = None, record_intent=None) -> ComponentResult:
        from tenant_operator.backends.rabbitmq.client import amqp_url
        client, cfg = self.client(t), self.cfg.rabbitmq_server(t.rabbitmq_server)
        vhost = naming.vhost(t.name)
        name = naming.RABBITMQ_SECRET
        data = self.read_secret(t, live, name)
        # The Secret names the user in use; a rotation moves to the other one of the pair.
        user, idle = rotation.pick(naming.rabbitmq_user(t.name), naming.rabbitmq_user_alternate(t.name),
                                   data.get("RABBITMQ_USERNAME", ""))
        password = data.get("RABBITMQ_PASSWORD", "")
        if rotate:
            user, idle, password = idle, user, ""
        # All checked before any is touched: a user or vhost of another system is never taken over.
        self._check(t, "vhost", vhost, client.vhost_marker(vhost))
        self._check(t, "user", user, client.user_marker(user))
        idle_marker = client.user_marker(idle)
        self._check(t, "user", idle, idle_marker)
        changes = list(client.ensure_vhost(vhost, max_connections=t.rabbitmq_max_connections,
                                           max_queues=t.rabbitmq_max_queues, owner_uid=t.uid))
        if not password:
            password = new_password()
        changes.extend(client.ensure_user(user, password, vhost, enabled=not t.suspended, owner_uid=t.uid))
        if idle_marker[0] and (t.suspended or self.idle_policy(t, current_status, rotate) == rotation.REVOKE):
            changes.extend(client.revoke_user(idle))
        queues = {naming.queue(t.name, q): f"{q}.#" for q in (t.messaging.queues if t.messaging else ())}
        # A queue removed from the spec waits out the grace period (unbound, kept);
        # its purgeAfter is kept in status.pendingRemovals (lost, the wait restarts).
        previous = pending_queues(current_status)
        now = datetime.now(UTC)
        release = set() if terminating else {q for q, after in previous.items() if after <= now}
        topo, kept = client.ensure_topology(vhost, naming.events_exchange(t.name), queues, release=release)
        changes.extend(topo)
        events, pending, drained = [], [], []
        for queue in kept:
            after = previous.get(queue) or now + timedelta(seconds=t.deletion.grace_period)
            entry = {"queue": queue, "purgeAfter": iso_time(after)}
            if queue in release:
                entry["waitingOn"] = "it holds messages; deleted once drained"
                drained.append(queue)
            elif queue not in previous:
                events.append(("Warning", "QueuePendingRemoval",
                               f"{queue} removed from spec.messaging.queues; unbound, its messages are kept until "
                               f"{entry['purgeAfter']} (re-add it to keep it)"))
            pending.append(entry)
        secret_data = {
            "RABBITMQ_HOST": cfg.tenant_host, "RABBITMQ_PORT": str(cfg.amqp_port), "RABBITMQ_VHOST": vhost,
            "RABBITMQ_USERNAME": user, "RABBITMQ_PASSWORD": password,
            "AMQP_URL": amqp_url(cfg.tenant_host, cfg.amqp_port, user, password, vhost),
        }
        if changes:
            events.insert(0, ("Normal", "MessagingUpdated", "; ".join(changes)))
        if drained:
            cond = Condition(self.condition_type, True, "QueuesRetained",
                             f"removed from spec but not empty, kept until drained: {', '.join(drained)}")
        elif t.suspended:
            cond = Condition(self.condition_type, True, "Revoked",
                             "permissions revoked and connections closed while suspended")
        else:
            cond = Condition(self.condition_type, True, "Provisioned",
                             f"vhost {vhost} with {len(queues)} queue(s) bound to {naming.events_exchange(t.name)}")
        return ComponentResult(self.component, cond, objects=[self.secret(t, name, secret_data)], events=events,
                               status={"pendingRemovals": {"queues": pending}} if pending else {})

    def inventory(self, t: Tenant) -> list[str]:
        if not self.cfg.rabbitmq_servers or not t.uid:
            return []
        client = self.client(t)
        return [f"RabbitMQ {what} {name}" for what, name, marker in (
            ("vhost", naming.vhost(t.name), client.vhost_marker),
            ("user", naming.rabbitmq_user(t.name), client.user_marker),
            ("user", naming.rabbitmq_user_alternate(t.name), client.user_marker))
            if marker(name)[1] == t.uid]

    def _delete_marked(self, t: Tenant, what: str, name: str, marker, delete) -> str:
        """Delete `name` only if its marker records this Tenant's UID."""
        if not self.cfg.rabbitmq_servers:
            return ""
        exists, uid, _retained = marker(name)
        if uid != t.uid or not t.uid:
            return f"{what} {name} is not this Tenant's; left alone" if exists else ""
        return f"deleted {what} {name}" if delete(name) else ""

    def revoke(self, t: Tenant) -> str:
        """Both users of the pair go."""
        done = [self._delete_marked(t, "RabbitMQ user", user, lambda n: self.client(t).user_marker(n),
                                    lambda n: self.client(t).delete_user(n))
                for user in (naming.rabbitmq_user(t.name), naming.rabbitmq_user_alternate(t.name))]
        return "; ".join(d for d in done if d)

    def purge(self, t: Tenant) -> str:
        return self._delete_marked(t, "vhost", naming.vhost(t.name),
                                   lambda n: self.client(t).vhost_marker(n), lambda n: self.client(t).delete_vhost(n))

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark the vhost kept for a later Tenant of the same name."""
        if not self.cfg.rabbitmq_servers:
            return []
        vhost = naming.vhost(t.name)
        _exists, uid, _retained = self.client(t).vhost_marker(vhost)
        if uid != t.uid or not t.uid:
            return []
        self.client(t).mark_vhost(vhost, t.uid, retained=True)
        return [f"vhost {vhost}"]
