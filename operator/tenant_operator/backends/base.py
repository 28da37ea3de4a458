"""What every backend component shares, and the interface the deletion
lifecycle is built from.

A component turns the Tenant model into backend state (through its backend's
`client`) plus the credentials Secret that describes it. Shared rules live in
`BackendComponent`:

- a credential is generated once (`secrets`), then read back from its Secret;
  a deleted Secret yields a new credential that is set on the backend BEFORE
  the Secret is written, so the Secret never disagrees with the backend;
- a rotation (the `tenancy.dev/rotate-credentials` annotation with a new
  value, or `spec.credentials.rotateEvery`) switches each credential to the
  second account of its pair and revokes the previous one after the overlap
  (rotation.py); the component is told whether to rotate and what to do with
  the idle accounts (`idle_policy`), and the status record is kept here;
- backend calls are skipped while nothing relevant changed (same generation,
  rotation token, Secret versions) and the last full check is younger than
  `backendResyncInterval`: drift checks of a quiet tenant stay cheap;
- an unreachable backend gives a False condition with the error and a retry
  with backoff; the Secrets already there are kept.

The deletion interface (`Component`): `inventory` (what carries the Tenant's
UID), `final_backup` (this backend's part of the final backup), `revoke`
(credentials, the first purge step), `purge` (the data, under the purge step
named `data_step`) and `retain` (policy Retain).
Each acts only on what carries this Tenant's UID marker and says what it did.
`lifecycle.plan` orders the steps from these; no step names are hard-coded there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import secrets
import threading
import time
from datetime import UTC, datetime

from kubernetes.client.rest import ApiException

from tenant_operator import naming, render, rotation
from tenant_operator.components import ComponentResult, live_secret_data
from tenant_operator.config import OperatorConfig
from tenant_operator.errors import BackendUnavailable, ConfigError
from tenant_operator.kube import view
from tenant_operator.kube.client import Kube
from tenant_operator.kube.diff import desired_hash
from tenant_operator.lifecycle import parse_time
from tenant_operator.metrics import BACKEND_ERRORS, BACKEND_SYNCS, CREDENTIALS_ROTATED
from tenant_operator.naming import ANNOTATION_HASH
from tenant_operator.ownership import NameConflict
from tenant_operator.spec import Tenant
from tenant_operator.status import Condition, now_iso

log = logging.getLogger(__name__)


def new_password() -> str:
    """32 URL-safe ASCII characters (192 bits)."""
    return secrets.token_urlsafe(24)


def rotation_requested(t: Tenant, current_status: dict, backend: str = "") -> bool:
    """The annotation asks `backend` (any backend: "") for a rotation it has not done."""
    return rotation.requested(t, current_status, backend)


def credentials_since(secrets: list[dict], current_status: dict, backend: str = "") -> float | None:
    """Unix time of the oldest credential among `secrets`: the oldest Secret's
    creation (a credential is generated with its Secret), or the last rotation
    (tenant-wide, or of `backend`) when later (a rotation renews them all).
    None without a Secret."""
    created = [_unix(o["metadata"]["creationTimestamp"])
               for o in secrets if (o.get("metadata") or {}).get("creationTimestamp")]
    if not created:
        return None
    credentials = (current_status or {}).get("credentials") or {}
    rotated = [_unix(v) for v in (credentials.get("rotatedAt"),
                                  rotation.entry(current_status, backend).get("rotatedAt") if backend else None) if v]
    return max([min(created), *rotated])


def _unix(value) -> float:
    """A Kubernetes timestamp, as the watch (string) or the API client (datetime) gives it."""
    return (value if isinstance(value, datetime) else parse_time(str(value))).timestamp()


def removal_due(result_status: dict, now: datetime | None = None) -> bool:
    """Whether a pending removal in a component's last result has reached its
    purgeAfter: then the next pass calls the backend instead of reusing that
    result, so removals happen within a drift interval of their time, not a
    backendResyncInterval later. Entries waiting on something else (a failed
    dump, a queue still holding messages) wait for the next full check."""
    now = now or datetime.now(UTC)
    for entries in ((result_status or {}).get("pendingRemovals") or {}).values():
        for entry in entries or []:
            after = entry.get("purgeAfter")
            if after and not entry.get("waitingOn") and parse_time(after) <= now:
                return True
    return False


class Component:
    """The deletion interface; the defaults do nothing (a component without data)."""

    data_step = ""        # the purge step deleting this component's data, as recorded in status.deletion

    def final_backup(self, t: Tenant) -> dict:
        """This component's part of the final backup: {"objects": [...]}, plus
        "error" (the attempt failed: nothing may be purged) or "skipped". Never raises."""
        return {"objects": []}

    def revoke(self, t: Tenant) -> str:
        """Delete this Tenant's credentials on the backend; what was done ("" for nothing)."""
        return ""

    def purge(self, t: Tenant) -> str:
        """Delete this Tenant's data on the backend (the `data_step`); what was done."""
        return ""

    def retain(self, t: Tenant) -> list[str]:
        """Policy Retain: mark this Tenant's data kept for a later Tenant of the same name; what was kept."""
        return []

    def inventory(self, t: Tenant) -> list[str]:
        """Everything on the backend that carries this Tenant's UID marker (raises
        BackendUnavailable when the backend cannot tell)."""
        return []


class BackendComponent(Component):
    component = ""        # tenancy.dev/component label of its Secrets
    condition_type = ""
    backend_name = ""     # for errors and metrics

    def __init__(self, cfg: OperatorConfig, kube: Kube):
        self.cfg = cfg
        self.kube = kube
        self._cache: dict[str, tuple[tuple, float, ComponentResult]] = {}
        self._lock = threading.Lock()

    # --- to implement -------------------------------------------------------------------
    def wanted(self, t: Tenant) -> bool:
        raise NotImplementedError

    def converge(self, t: Tenant, live: dict, rotate: bool, terminating: bool = False,
                 current_status: dict | None = None, record_intent=None) -> ComponentResult:
        """Make the backend match `t`. `record_intent(names)` records in the Tenant's
        status, before they exist, names a backend cannot create together with
        their ownership marker (object storage's buckets); the others ignore it."""
        raise NotImplementedError

    def expected_secrets(self, t: Tenant) -> list[str]:
        """The Secrets a tenant converged on this backend has."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------
    def _secrets(self, t: Tenant, live: dict) -> dict[str, dict]:
        return {key[3]: obj for key, obj in live.items()
                if key[1] == "Secret" and key[2] == t.namespace
                and obj["metadata"].get("labels", {}).get(naming.LABEL_COMPONENT) == self.component}

    def read_secret(self, t: Tenant, live: dict, name: str) -> dict[str, str]:
        """Decoded data of the tenant's Secret `name`. The watch cache can lag just
        behind our own write, so a miss is confirmed with one GET."""
        obj = live.get(("v1", "Secret", t.namespace, name))
        if obj is None:
            try:
                obj = self.kube.get("Secret", name, t.namespace)
            except ApiException as exc:
                raise BackendUnavailable("kubernetes", f"cannot read Secret {name}: {exc.status}") from None
        return live_secret_data(obj)

    def secret(self, t: Tenant, name: str, data: dict[str, str], annotations: dict | None = None) -> dict:
        obj = render.secret(t, name, self.component, data)
        if annotations:
            obj["metadata"]["annotations"] = annotations
        return obj

    def _key(self, t: Tenant, secrets: list[dict], rotate: bool) -> tuple:
        # A Secret's applied hash, not its resourceVersion: our own write of the
        # Secrets a pass produced must not make the next pass call the backend again.
        # (An edit by someone else is drift the reconciler re-applies; a deleted
        # Secret fails _secrets_present.)
        versions = tuple(sorted((o["metadata"]["name"], (o["metadata"].get("annotations") or {}).get(ANNOTATION_HASH)
                                 or desired_hash(o)) for o in secrets if o.get("kind", "Secret") == "Secret"))
        return (t.generation, t.suspended, rotate, t.rotate_token, versions, t.uid)

    def _publish_credentials_age(self, t: Tenant, live: dict, current_status: dict, terminating: bool) -> None:
        since = None if terminating else credentials_since(list(self._secrets(t, live).values()), current_status,
                                                           self.backend_name)
        if since is None:
            # No credential to renew, or one that is revoked with its tenant.
            with contextlib.suppress(KeyError):
                CREDENTIALS_ROTATED.remove(t.name, self.backend_name)
        else:
            CREDENTIALS_ROTATED.labels(t.name, self.backend_name).set(since)

    def sync(self, t: Tenant, live: dict, current_status: dict, *, terminating: bool = False,
             record_intent=None) -> ComponentResult | None:
        self._publish_credentials_age(t, live, current_status, terminating)
        if not self.wanted(t) and not self._secrets(t, live):
            self._cache.pop(t.name, None)
            return None
        now = rotation.now_utc()
        record = rotation.entry(current_status, self.backend_name)
        secrets_since = credentials_since(list(self._secrets(t, live).values()), current_status)
        rotate = not terminating and rotation.due(t, current_status, self.backend_name, secrets_since, now)
        key = (*self._key(t, list(self._secrets(t, live).values()), rotate), terminating)
        cached = self._cache.get(t.name)
        if cached is None:
            vouched = self._vouched_for(t, live, current_status, rotate, terminating)
            if vouched is not None:
                # First pass since start: the status vouches for the backend. Checked
                # against it within one resync interval, spread so they do not come at once.
                aged = time.monotonic() - random.uniform(0.0, self.cfg.backend_resync_interval)  # nosec B311
                self._cache[t.name] = (key, aged, vouched)
                return self._scheduled(t, vouched, record, secrets_since)
        if cached and cached[0] == key and time.monotonic() - cached[1] < self.cfg.backend_resync_interval \
                and not cached[2].failed and self._secrets_present(cached[2], live) \
                and not removal_due(cached[2].status) and not rotation.revoke_due(record, now):
            # Same outcome as last time, but its events were already posted.
            return self._scheduled(t, dataclasses.replace(cached[2], events=[]), record, secrets_since)
        converged = False
        try:
            BACKEND_SYNCS.labels(self.backend_name).inc()
            result = self.converge(t, live, rotate, terminating, current_status, record_intent=record_intent)
            converged = True
        except NameConflict as exc:
            result = ComponentResult(component=self.component,
                                     condition=Condition(self.condition_type, False, "NameConflict", str(exc)),
                                     objects=list(self._secrets(t, live).values()), failed=True)
        except BackendUnavailable as exc:
            BACKEND_ERRORS.labels(self.backend_name).inc()
            log.warning("tenant %s: %s", t.name, exc)
            result = ComponentResult(
                component=self.component,
                condition=Condition(self.condition_type, False, "BackendUnavailable", str(exc)),
                objects=list(self._secrets(t, live).values()),   # keep what exists
                failed=True)
            if not self._was_unavailable(current_status):
                # Once per outage of this tenant (not once per retry): the Tenant's events show it.
                result.events.append(("Warning", "BackendUnavailable", str(exc)[:1000]))
        except ConfigError as exc:
            result = ComponentResult(component=self.component,
                                     condition=Condition(self.condition_type, False, "NotConfigured", str(exc)),
                                     objects=list(self._secrets(t, live).values()), failed=False)
        if converged and not terminating:
            # Also when part of it failed (a name conflict): the Secrets it switched stay switched.
            done = rotation.after(t, record, rotate, now)
            credentials = {self.backend_name: done} if done else {}
            if rotate:
                if rotation.requested(t, current_status, self.backend_name):
                    # Tenant-wide: kept only when every backend rotated (reconciler).
                    credentials.update(rotationToken=t.rotate_token, rotatedAt=now_iso())
                CREDENTIALS_ROTATED.labels(t.name, self.backend_name).set(time.time())
                overlap = t.credentials.rotation_overlap
                result.events.append(("Normal", "CredentialsRotated", f"{self.backend_name} credentials rotated; "
                                      + (f"the previous ones are revoked at {done['previousRevokeAt']}"
                                         if overlap else "the previous ones are revoked")))
            if credentials:
                result.status["credentials"] = credentials
        # Remembered under the key the next pass will see: the Secrets as this pass leaves them.
        after = (*self._key(t, result.objects, rotate and result.failed), terminating)
        self._cache[t.name] = (after, time.monotonic(), result)
        return self._scheduled(t, result, record, secrets_since)

    def idle_policy(self, t: Tenant, current_status: dict | None, rotate: bool) -> str:
        """What converge does with the idle account of each pair: rotation.KEEP or REVOKE."""
        return rotation.previous_policy(t, rotation.entry(current_status, self.backend_name), rotate,
                                        rotation.now_utc())

    def _scheduled(self, t: Tenant, result: ComponentResult, record: dict,
                   secrets_since: float | None) -> ComponentResult:
        """The result with the time its backend next needs a pass (rotation.next_due)."""
        done = (result.status.get("credentials") or {}).get(self.backend_name, record)
        result.due_at = rotation.next_due(t, done, secrets_since)
        return result

    def _vouched_for(self, t: Tenant, live: dict, current_status: dict, rotate: bool,
                     terminating: bool) -> ComponentResult | None:
        """What the last pass found, when the Tenant's status records it for the
        current spec and every Secret it produced is still there: then a
        restarted operator confirms the tenant with no backend call."""
        if rotate or terminating or not self.wanted(t) or (current_status or {}).get("pendingRemovals"):
            return None
        if (current_status or {}).get("observedGeneration") != t.generation:
            return None
        cond = next((c for c in (current_status or {}).get("conditions") or []
                     if c.get("type") == self.condition_type), None)
        if cond is None or cond.get("status") != "True":
            return None
        secrets = self._secrets(t, live)
        if not all(name in secrets for name in self.expected_secrets(t)):
            return None
        return ComponentResult(self.component, Condition(self.condition_type, True, cond.get("reason", ""),
                                                         cond.get("message", "")),
                               objects=[view.appliable(o) for o in secrets.values()], failed=False)

    def _was_unavailable(self, current_status: dict) -> bool:
        return any(c.get("type") == self.condition_type and c.get("reason") == "BackendUnavailable"
                   for c in (current_status or {}).get("conditions") or [])

    def probe(self) -> None:
        """One cheap call that raises BackendUnavailable while the backend is down."""
        raise NotImplementedError

    @staticmethod
    def _secrets_present(result: ComponentResult, live: dict) -> bool:
        """A Secret the last pass produced that is gone now means the credential
        must be re-established, whatever else is unchanged."""
        return all(render.object_key(o) in live for o in result.objects if o["kind"] == "Secret")

    def forget(self, tenant: str) -> None:
        self._cache.pop(tenant, None)


