"""MySQL databases and users of a tenant, with their `<service>-db-credentials` Secrets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from tenant_operator import naming, ownership, rotation
from tenant_operator.backends.base import BackendComponent, new_password
from tenant_operator.components import ComponentResult
from tenant_operator.errors import ConfigError
from tenant_operator.lifecycle import iso_time, parse_time
from tenant_operator.ownership import NameConflict
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition

log = logging.getLogger(__name__)

DB_ANNOTATION_DATABASE = "tenancy.dev/mysql-database"
DB_ANNOTATION_USER = "tenancy.dev/mysql-user"
DB_ANNOTATION_SERVER = "tenancy.dev/mysql-server"


# Databases recorded for a service besides its own carry `<service>:<purpose>` in the
# bookkeeping's service column: a restore's new database, a drill's scratch database.
PURPOSE_RESTORE, PURPOSE_DRILL = "restore", "drill"


def split_service(recorded: str) -> tuple[str, str]:
    """(service, purpose) of a bookkeeping row's service column ("" for the service's own)."""
    service, _, purpose = recorded.partition(":")
    return service, purpose


def primary_user(tenant: str, service: str, recorded: list[str]) -> str:
    """The first account of a service's pair. Names recorded when they were
    created win over derived ones (a change in how names are derived never
    orphans a user); of two recorded, the first is the one whose alternate the
    other is."""
    derived = naming.mysql_user(tenant, service)
    if not recorded or derived in recorded or naming.mysql_user_alternate(derived) in recorded:
        return derived
    firsts = [u for u in sorted(recorded) if all(naming.mysql_user_alternate(o) != u for o in recorded)]
    return firsts[0] if firsts else sorted(recorded)[0]


class MySQLComponent(BackendComponent):
    component = "mysql"
    condition_type = "DatabasesReady"
    backend_name = "mysql"
    data_step = "drop-databases"

    def __init__(self, cfg, kube):
        super().__init__(cfg, kube)
        self._clients: dict = {}
        # (tenant, service) -> object key of a fresh dump; wired to the backup component.
        self.final_dump = None

    def client(self, server_name: str):
        from tenant_operator.backends.mysql.client import MySQLBackend
        server = self.cfg.mysql_server(server_name)
        with self._lock:
            if server.name not in self._clients:
                self._clients[server.name] = MySQLBackend(server, pool_size=max(2, self.cfg.workers))
            return self._clients[server.name]

    def probe(self) -> None:
        for name in sorted(self.cfg.mysql_servers):
            self.client(name).ping()

    def expected_secrets(self, t: Tenant) -> list[str]:
        return [naming.db_secret(service) for service in t.databases]

    def wanted(self, t: Tenant) -> bool:
        return bool(t.databases)

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False,
                 current_status: dict | None = None, record_intent=None) -> ComponentResult:
        from tenant_operator.backends.mysql.client import Owner
        if t.databases and not self.cfg.mysql_servers:
            raise ConfigError("mysql.servers", "the tenant asks for databases but no MySQL server is configured")
        server = self.cfg.mysql_server(t.mysql_server) if t.databases else None
        objects, changes, events, conflicts = [], [], [], []
        # One read of the bookkeeping per server serves both the names recorded
        # for the spec's services and the services removed from it.
        owned = {name: self.client(name).owned_by(t.uid) for name in sorted(self.cfg.mysql_servers)} \
            if t.uid else {}
        # Names recorded when they were created win over derived ones: a change
        # in how names are derived never orphans an existing database.
        rows = owned.get(server.name, []) if server else []
        recorded = {(r.service, r.kind): r.name for r in rows if r.kind == "database"}
        idle_policy = self.idle_policy(t, current_status, rotate)
        extras: dict[str, set[str]] = {}
        for r in rows:
            base, purpose = split_service(r.service)
            if r.kind == "database" and purpose and (purpose != PURPOSE_DRILL or t.backup.drilled):
                extras.setdefault(base, set()).add(r.name)
        for service in t.databases:
            db = recorded.get((service, "database")) or naming.mysql_database(t.name, service)
            primary = primary_user(t.name, service, [r.name for r in rows if r.service == service and r.kind == "user"])
            name = naming.db_secret(service)
            data = self.read_secret(t, live, name)
            # The Secret names the account in use; a rotation moves to the other one.
            user, idle = rotation.pick(primary, naming.mysql_user_alternate(primary), data.get("DB_USERNAME", ""))
            password = data.get("DB_PASSWORD", "")
            if rotate:
                user, idle, password = idle, user, ""
            if not password:
                password = new_password()
            client = self.client(server.name)
            try:
                made = []
                if t.backup.drilled and t.uid:
                    drill_db = naming.mysql_drill_database(t.name, service)
                    made += client.ensure_owned_database(drill_db, Owner(t.name, t.uid, f"{service}:{PURPOSE_DRILL}"))
                    extras.setdefault(service, set()).add(drill_db)
                made += client.ensure_account(
                    db, user, password, max_user_connections=t.mysql_max_user_connections, locked=t.suspended,
                    owner=Owner(t.name, t.uid, service, t.adopt_existing),
                    extra_databases=tuple(sorted(extras.get(service, ()))))
                if idle_policy == rotation.REVOKE or t.suspended:
                    made += client.revoke_owned_account(idle, t.uid)
            except NameConflict as exc:
                conflicts.append(str(exc))
                kept = self._secrets(t, live).get(name)
                if kept is not None:
                    objects.append(kept)
                continue
            changes.extend(f"{service}: {c}" for c in made)
            objects.append(self._db_secret(t, server, service, db, user, password))

        if server is not None and not terminating:
            changes.extend(self._drop_idle_drill_databases(t, rows, server.name))
        pending = self._removed_services(t, live, owned, terminating, objects, events)
        status = {"pendingRemovals": {"databases": pending}} if pending else {}
        if changes:
            events.append(("Normal", "DatabasesUpdated", "; ".join(changes)))
        if conflicts:
            cond = Condition(self.condition_type, False, "NameConflict", "; ".join(conflicts))
        elif not t.databases:
            cond = Condition(self.condition_type, True, "NotRequested", "no databases in spec")
        elif t.suspended:
            cond = Condition(self.condition_type, True, "Locked",
                             f"{len(t.databases)} database user(s) locked while suspended")
        else:
            cond = Condition(self.condition_type, True, "Provisioned",
                             f"{len(t.databases)} database(s) on server {server.name}")
        return ComponentResult(self.component, cond, objects=objects, events=events, status=status,
                               failed=bool(conflicts))

    def _drop_idle_drill_databases(self, t: Tenant, rows: list, server_name: str) -> list[str]:
        """Scratch databases of drills no longer wanted: they only ever hold a drill's copy."""
        out = []
        for r in rows:
            base, purpose = split_service(r.service)
            if r.kind == "database" and purpose == PURPOSE_DRILL and not (t.backup.drilled and base in t.databases):
                if self.client(server_name).drop_owned("database", r.name, t.uid):
                    out.append(f"{base}: dropped drill database {r.name}")
        return out

    def restore_database(self, t: Tenant, service: str, database: str, user: str) -> list[str]:
        """Create a restore's new database for `t` (recorded for its UID, so it
        is purged with it) and grant it to the service's user `user`. Raises
        NameConflict when the name is someone else's."""
        from tenant_operator.backends.mysql.client import Owner
        client = self.client(t.mysql_server)
        return client.ensure_owned_database(database, Owner(t.name, t.uid, f"{service}:{PURPOSE_RESTORE}"),
                                            grant_to=user)

    def _db_secret(self, t: Tenant, server, service: str, db: str, user: str, password: str) -> dict:
        url = f"mysql://{quote(user, safe='')}:{quote(password, safe='')}@{server.tenant_host}:{server.port}/{db}"
        return self.secret(t, naming.db_secret(service), {
            "DB_HOST": server.tenant_host, "DB_PORT": str(server.port), "DB_DATABASE": db,
            "DB_USERNAME": user, "DB_PASSWORD": password, "DATABASE_URL": url,
        }, {DB_ANNOTATION_DATABASE: db, DB_ANNOTATION_USER: user, DB_ANNOTATION_SERVER: server.name})

    def _removed_services(self, t: Tenant, live: dict, owned: dict[str, list], terminating: bool, objects: list,
                          events: list) -> list[dict]:
        """Services gone from spec.databases, found in the server's bookkeeping
        for this Tenant's UID (never in anything a tenant can edit). Each waits
        out its own grace period, locked but intact, with its Secret kept; a
        final dump is taken before it is dropped (policy Delete) or it is kept
        (policy Retain). While the Tenant is terminating nothing changes here."""
        pending = []
        now = datetime.now(UTC)
        for server_name, server_rows in owned.items():
            client = self.client(server_name)
            # A restore's or drill's database goes with its service's own, or with the tenant.
            rows = [r for r in server_rows if r.service not in t.databases and not split_service(r.service)[1]]
            by_service: dict[str, list] = {}
            for row in rows:
                by_service.setdefault(row.service, []).append(row)
            for service, svc_rows in sorted(by_service.items()):
                db = next((r.name for r in svc_rows if r.kind == "database"), "")
                users = [r.name for r in svc_rows if r.kind == "user"]   # both accounts of the pair
                secret = self._secrets(t, live).get(naming.db_secret(service))
                if secret is not None:
                    objects.append(secret)   # kept until the database goes: re-adding restores it as it was
                if any(r.state == ownership.RETAINED for r in svc_rows) or terminating:
                    continue
                purge_after = next((r.purge_after for r in svc_rows if r.purge_after), "")
                if not purge_after:
                    purge_after = iso_time(now + timedelta(seconds=t.deletion.grace_period))
                    for row in svc_rows:
                        client.mark(row.kind, row.name, t.uid, ownership.PENDING, purge_after)
                    for user in users:
                        client.lock(user, True)
                    events.append(("Warning", "DatabasePendingRemoval",
                                   f"{service}: database {db} removed from spec.databases; its users are locked and "
                                   f"the data is kept until {purge_after} (re-add the service to keep it)"))
                if now < parse_time(purge_after):
                    pending.append({"service": service, "database": db, "server": server_name,
                                    "purgeAfter": purge_after})
                    continue
                # Grace over: a final dump first; no dump, no drop.
                try:
                    key = self.final_dump(t, service) if self.final_dump and db else ""
                except Exception as exc:  # noqa: BLE001 - recorded; the database stays
                    pending.append({"service": service, "database": db, "server": server_name,
                                    "purgeAfter": purge_after, "waitingOn": f"final dump failed: {exc}"[:300]})
                    events.append(("Warning", "FinalBackupFailed", f"{service}: {exc}"[:500]))
                    continue
                for user in users:
                    client.drop_owned("user", user, t.uid)
                if t.deletion.policy == "Delete":
                    if db:
                        client.drop_owned("database", db, t.uid)
                    events.append(("Normal", "DatabaseDropped", f"{service}: dropped {db} after its grace period "
                                   f"(final dump {key}; deletion policy Delete)"))
                else:
                    if db:
                        client.mark("database", db, t.uid, ownership.RETAINED)
                    events.append(("Normal", "DatabaseRetained", f"{service}: kept {db} (final dump {key}; "
                                   "deletion policy Retain); its users were dropped"))
                if secret is not None:
                    objects.remove(secret)
        return pending

    # --- deletion -------------------------------------------------------------------------
    def _owned(self, t: Tenant) -> list[tuple[object, object]]:
        """(client, row) for everything any configured server records for the UID."""
        out = []
        for server_name in sorted(self.cfg.mysql_servers):
            client = self.client(server_name)
            out.extend((client, row) for row in client.owned_by(t.uid))
        return out

    def inventory(self, t: Tenant) -> list[str]:
        if not self.cfg.mysql_servers or not t.uid:
            return []
        return [f"MySQL {row.kind} {row.name}" for _c, row in self._owned(t)]

    def owned_services(self, t: Tenant) -> list[str]:
        """Services with a database recorded for this Tenant's UID."""
        if not self.cfg.mysql_servers or not t.uid:
            return []
        return sorted({row.service for _c, row in self._owned(t)
                       if row.kind == "database" and not split_service(row.service)[1]})

    def _drop(self, t: Tenant, kind: str) -> str:
        if not self.cfg.mysql_servers or not t.uid:
            return ""
        dropped = [row.name for client, row in self._owned(t)
                   if row.kind == kind and client.drop_owned(kind, row.name, t.uid)]
        return f"dropped MySQL {kind}s {', '.join(dropped)}" if dropped else ""

    def revoke(self, t: Tenant) -> str:
        return self._drop(t, "user")

    def purge(self, t: Tenant) -> str:
        return self._drop(t, "database")

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark the databases kept for a later Tenant of the same name."""
        kept = []
        for client, row in self._owned(t):
            if row.kind == "database":
                client.mark("database", row.name, t.uid, ownership.RETAINED)
                kept.append(f"database {row.name}")
        return kept
