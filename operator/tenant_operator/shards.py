"""Several replicas share the tenants: each Tenant belongs to one shard (a
stable hash of its UID), and each shard to the replica that holds its Lease.

Every replica keeps a member Lease of its own alive, and aims to hold its
share of the shards (ceil(shards / live members)): it takes free or expired
shard Leases up to that share and gives back what it holds beyond it, so a
new replica gets work and a dead one's shards move on. A shard Lease names
its holder and is written only when it changes hands; it stays held while
the holder's member Lease is renewed, so an idle replica writes one Lease
per renewal, not one per shard. As in client-go's leader election, a member
Lease counts as expired when its record has not changed for its duration
*as seen by the observer's own clock*, so clock skew between nodes does not
matter.

Mutual exclusion: a replica acts for a shard only until
`last renewal sent + duration - renew interval`, which is earlier than any
other replica can see its member Lease expire; a shard it gives back it
stops using first and releases one tick later, and a shard whose deadline
passed before the next renewal is taken again by a write conditional on the
Lease as listed (someone may have taken it meanwhile). Writes for a tenant
are fenced on that deadline (Kube.guarded), so a replica that was frozen (a
long GC pause, a SIGSTOP, a partition) refuses its own late writes instead
of racing the new holder. A backend call already in flight when the
deadline passes completes: that is the margin the renew interval covers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes.client.rest import ApiException

from tenant_operator import metrics

log = logging.getLogger(__name__)

LABEL_ROLE = "tenancy.dev/lease"
SHARD_LEASE_SECONDS = 3600


def shard_of(uid: str, shards: int) -> int:
    """Stable across replicas, restarts and releases: the Tenant UID never changes."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % shards


def identity() -> str:
    """The pod name in a cluster (unique among live pods), else host and pid; plus a
    random part, so a restarted process never mistakes its predecessor's Leases for its own."""
    base = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{uuid.uuid4().hex[:6]}"


def lease_name(prefix: str, role: str, suffix: str) -> str:
    """A valid object name: lower-case alphanumerics and '-', at most 63 chars."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{role}-{suffix}".lower()).strip("-")
    return name[:63].rstrip("-")


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observed:
    """When this replica first saw a Lease's current record (holder, renewTime)."""
    record: tuple
    since: float


@dataclass
class Plan:
    """What one tick does, decided from the Leases as listed (pure, see plan())."""
    renew: list[int] = field(default_factory=list)
    acquire: list[int] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    surplus: list[int] = field(default_factory=list)   # stop using now, release next tick
    share: int = 0


def plan(shards: int, me: str, holders: dict[int, str], expired: set[int], members: int,
         releasing: set[int]) -> Plan:
    """holders: shard -> holderIdentity ('' when free); expired: shards whose
    holder's record went stale; members: live replicas, this one included;
    releasing: shards this replica stopped using last tick (given back now)."""
    share = math.ceil(shards / max(1, members))
    mine = sorted(s for s, h in holders.items() if h == me and s not in releasing)
    out = Plan(share=share, release=sorted(releasing))
    out.renew, out.surplus = mine[:share], mine[share:]
    free = [s for s in range(shards) if s not in releasing and s not in mine
            and (not holders.get(s) or s in expired)]
    out.acquire = free[:max(0, share - len(mine))]
    return out


class ShardManager:
    """The Leases of one replica; ticks in the event loop, Kubernetes calls in a thread."""

    def __init__(self, kube, *, shards: int, namespace: str, prefix: str, lease_seconds: float,
                 renew_seconds: float, me: str | None = None):
        self.kube, self.shards, self.namespace, self.prefix = kube, shards, namespace, prefix
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self.me = me or identity()
        self._valid_until: dict[int, float] = {}   # shard -> monotonic deadline for acting on it
        self._releasing: set[int] = set()
        self._observed: dict[str, Observed] = {}
        self._changed = asyncio.Event()
        self._stopping = False

    # --- what the runtime asks ------------------------------------------------------

    def owns(self, uid: str) -> bool:
        return time.monotonic() < self._valid_until.get(shard_of(uid, self.shards), 0.0)

    def owned_shards(self) -> list[int]:
        now = time.monotonic()
        return sorted(s for s, until in self._valid_until.items() if now < until)

    async def changed(self, timeout: float) -> None:
        """Returns when the set of owned shards changed (or after `timeout`)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._changed.wait()), timeout)
        except TimeoutError:
            pass

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            before = self.owned_shards()
            try:
                await loop.run_in_executor(None, self.tick)
            except Exception as exc:  # noqa: BLE001 - keep trying; ownership lapses by itself
                log.warning("shard leases: %s: %s", type(exc).__name__, str(exc)[:300])
            after = self.owned_shards()
            if after != before:
                log.info("replica %s now holds shards %s of %d", self.me, after, self.shards)
                self._signal()
            metrics.SHARDS_OWNED.set(len(after))
            # Wake at the next renewal, or at once when a deadline passes unrenewed.
            nearest = min([u - time.monotonic() for u in self._valid_until.values()] + [self.renew_seconds])
            await asyncio.sleep(max(0.05, min(self.renew_seconds, nearest)))
            if self.owned_shards() != after:
                self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def tick(self) -> None:
        leases = self._leases()
        now = sent = time.monotonic()
        members, renewed = self._keep_member(leases, now)
        if not renewed:
            return   # what this replica holds lapses at its deadline unless a later renewal succeeds
        holders, expired = {}, set()
        for shard in range(self.shards):
            lease = leases.get(self._shard_lease(shard))
            holders[shard] = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
            if holders[shard] and holders[shard] != self.me and not self._alive(holders[shard], leases, now):
                expired.add(shard)
        p = plan(self.shards, self.me, holders, expired, members, self._releasing)
        for shard in p.release:
            self._write(shard, leases.get(self._shard_lease(shard)), holder="")
        self._releasing = set(p.surplus)   # stop using them now; released next tick
        # A shard is held while its holder's member Lease is renewed: a renewal sent
        # before this replica's deadline for a shard extends it with no write of the
        # shard's own. After a lapse (a freeze, a slow API server) another replica may
        # have taken it since the list, so it is taken again, on the resourceVersion listed.
        held = {shard for shard in p.renew if sent < self._valid_until.get(shard, 0.0)}
        for shard in [s for s in p.renew if s not in held] + p.acquire:
            if self._write(shard, leases.get(self._shard_lease(shard)), holder=self.me):
                held.add(shard)
        for shard in held:
            self._valid_until[shard] = sent + self.lease_seconds - self.renew_seconds
        for shard in set(self._valid_until) - held:
            self._valid_until.pop(shard)   # given back, or someone else holds it now

    def release_all(self) -> None:
        """On a clean stop: give every shard back at once (the next replica takes
        them without waiting for expiry) and drop the member Lease."""
        self._stopping = True
        held = self.owned_shards() + sorted(self._releasing)
        self._valid_until.clear()
        leases = self._leases()
        for shard in held:
            lease = leases.get(self._shard_lease(shard))
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.me:
                self._write(shard, lease, holder="")
        self.kube.delete("Lease", self._member_lease(), self.namespace, lease=True)

    # --- Leases ----------------------------------------------------------------------------------

    def _leases(self) -> dict[str, dict]:
        """Every shard and member Lease of this operator, by name: one list call."""
        return {o["metadata"]["name"]: o for o in self.kube.list(
            "Lease", self.namespace, label_selector=f"{LABEL_ROLE},app.kubernetes.io/instance={self.prefix}")}

    def _shard_lease(self, shard: int) -> str:
        return lease_name(self.prefix, "shard", str(shard))

    def _member_lease(self, holder: str | None = None) -> str:
        """The member Lease of `holder` (this replica by default). Hashed:
        identities are long (pod names), and a truncated one could collide."""
        return lease_name(self.prefix, "member", hashlib.sha256((holder or self.me).encode()).hexdigest()[:12])

    def _stale(self, name: str, lease: dict | None, now: float) -> bool:
        """The Lease's record (holder, renewTime; None while it does not exist) has
        not changed for its duration, as this replica's own clock saw it."""
        spec = (lease or {}).get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime")) if lease is not None else None
        seen = self._observed.get(name)
        if seen is None or seen.record != record:
            self._observed[name] = Observed(record, now)
            return False
        return now - seen.since > float(spec.get("leaseDurationSeconds") or self.lease_seconds)

    def _alive(self, holder: str, leases: dict, now: float) -> bool:
        """Whether `holder` still holds its shards: its member Lease is renewed."""
        name = self._member_lease(holder)
        return not self._stale(name, leases.get(name), now)

    def _keep_member(self, leases: dict, now: float) -> tuple[int, bool]:
        """Renew this replica's member Lease; count the live members; delete
        member Leases long dead (their pods are gone for good). Returns the
        live members and whether the renewal was written."""
        members = 1
        for name, lease in leases.items():
            if lease["metadata"].get("labels", {}).get(LABEL_ROLE) != "member" or name == self._member_lease():
                continue
            if not self._stale(name, lease, now):
                members += 1
            elif now - self._observed[name].since > 10 * self.lease_seconds:
                self.kube.delete("Lease", name, self.namespace, lease=True)
                self._observed.pop(name, None)
        ours = leases.get(self._member_lease())
        body = self._lease_body(self._member_lease(), "member", self.me, ours)
        return members, self._put(body, ours)

    def _lease_body(self, name: str, role: str, holder: str, current: dict | None) -> dict:
        spec = dict((current or {}).get("spec") or {})
        now = _now_micro()
        if spec.get("holderIdentity") != holder:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if current else 0)
        # A shard Lease is written only when it changes hands (held through the member
        # Lease); its long duration keeps replicas of a release that judged shard Leases
        # by their own renewals off it during a rolling update.
        duration = SHARD_LEASE_SECONDS if role == "shard" else int(self.lease_seconds)
        spec.update(holderIdentity=holder, renewTime=now, leaseDurationSeconds=duration)
        meta = {"name": name, "namespace": self.namespace,
                "labels": {LABEL_ROLE: role, "app.kubernetes.io/instance": self.prefix,
                           "app.kubernetes.io/name": "tenant-operator"}}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def _write(self, shard: int, current: dict | None, holder: str) -> bool:
        if current is None and not holder:
            return True
        return self._put(self._lease_body(self._shard_lease(shard), "shard", holder, current), current)

    def _put(self, body: dict, current: dict | None) -> bool:
        """Create or replace on the resourceVersion listed: False when another
        replica wrote the Lease first (409), which is how two never both win."""
        try:
            if current is None:
                self.kube.create(body, lease=True)
            else:
                self.kube.replace(body, lease=True)
            return True
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise


def from_config(kube, cfg) -> ShardManager | None:
    s = cfg.sharding
    if s is None:
        return None
    return ShardManager(kube, shards=s.shards, namespace=s.namespace, prefix=s.name,
                        lease_seconds=s.lease_seconds, renew_seconds=s.renew_seconds)
