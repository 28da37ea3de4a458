"""Which server of each backend a Tenant lives on.

A server named in `spec.placement.<backend>` is used as is. Otherwise a new
Tenant is placed automatically, on the server with the fewest tenants per unit
of weight (`choose`), and the choice is recorded in `status.placement` before
anything is created there. A recorded placement always wins afterwards: the
data of a Tenant never moves, and is never created twice.

Tenants provisioned before placement existed have no `status.placement`;
their data is on the default server (`<backend>.default`, or the single
server), so they resolve to it, never to an automatic choice (`provisioned`).

`choose`, `provisioned` and `resolve` are pure. `Placer` adds the one piece
of state an automatic choice needs: the choices made but not yet visible in
the counts (the index over Tenants lags behind our own status writes), so two
Tenants created together do not both land on the emptiest server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from fractions import Fraction

BACKENDS = ("mysql", "rabbitmq", "objectStorage")

# What a backend leaves behind once it has provisioned a tenant: its condition
# in the Tenant's status and the component label of its Secrets.
EVIDENCE = {
    "mysql": ("DatabasesReady", "mysql"),
    "rabbitmq": ("MessagingReady", "rabbitmq"),
    "objectStorage": ("ObjectStorageReady", "objectstorage"),
}


def choose(weights: Mapping[str, int], counts: Mapping[str, int]) -> str | None:
    """The server with the fewest tenants per unit of weight; ties go to the
    first name. Servers of weight 0 are never chosen; None when none is left."""
    candidates = [name for name, weight in weights.items() if weight > 0]
    if not candidates:
        return None
    return min(candidates, key=lambda name: (Fraction(counts.get(name, 0), weights[name]), name))


def provisioned(status: Mapping | None, secret_components: Collection[str]) -> set[str]:
    """Backends that already hold something of this Tenant: the backend's
    condition is in its status (every pass that reached the backend wrote it)
    or one of the backend's Secrets exists in its namespace."""
    conditions = {c.get("type") for c in (status or {}).get("conditions") or [] if isinstance(c, Mapping)}
    return {backend for backend, (ctype, component) in EVIDENCE.items()
            if ctype in conditions or component in secret_components}


def resolve(used: Iterable[str], requested: Mapping[str, str], recorded: Mapping[str, str],
            already: Collection[str], defaults: Mapping[str, str],
            choose_for: Callable[[str], str | None]) -> dict[str, str]:
    """The server of each backend in `used`: the recorded one, else the one the
    spec names, else (provisioned before placement existed) the default, else
    an automatic choice. Backends without any server are left out."""
    out = {}
    for backend in used:
        server = recorded.get(backend) or requested.get(backend)
        if not server and backend in already:
            server = defaults.get(backend)
        if not server:
            server = choose_for(backend) or defaults.get(backend)
        if server:
            out[backend] = server
    return out


# backend, server -> the names of the Tenants recorded there (the index over Tenants)
Members = Callable[[str, str], Collection[str]]


def may_choose(body: Mapping) -> bool:
    """Whether a pass over this Tenant object may need an automatic choice: it
    uses a backend (read loosely from the raw spec: never less than the model
    says) that status.placement does not record yet. Cheap: every drift check asks."""
    spec = body.get("spec") or {}
    recorded = (body.get("status") or {}).get("placement")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    wanted = {"mysql": bool(spec.get("databases")), "rabbitmq": spec.get("messaging") is not None,
              "objectStorage": spec.get("objectStorage") is not None or bool(spec.get("databases"))}
    return any(use and not recorded.get(backend) for backend, use in wanted.items())


class Placer:
    """Automatic choices, counted together with those still in flight."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], str] = {}   # (backend, tenant) -> server chosen

    def choose(self, backend: str, tenant: str, weights: Mapping[str, int], members: Members | None) -> str | None:
        with self._lock:
            if (backend, tenant) in self._pending:
                return self._pending[(backend, tenant)]   # the same answer until it is recorded
            counts = {}
            for server in weights:
                recorded = members(backend, server) if members else ()
                counts[server] = len(recorded)
                for (b, other), chosen in list(self._pending.items()):
                    if b != backend or chosen != server:
                        continue
                    if other in recorded:
                        del self._pending[(b, other)]   # the index has caught up
                    else:
                        counts[server] += 1
            server = choose(weights, counts)
            if server is not None:
                self._pending[(backend, tenant)] = server
            return server

    def forget(self, tenant: str) -> None:
        with self._lock:
            for key in [k for k in self._pending if k[1] == tenant]:
                del self._pending[key]
