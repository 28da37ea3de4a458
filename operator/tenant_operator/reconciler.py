"""One reconcile of one Tenant: parse, render, sync backends, apply, prune,
report. Synchronous (the kubernetes, pymysql, minio and pika clients are),
run by the handlers in a bounded thread pool. Level-triggered: it converges
from whatever it finds, and sends nothing when nothing differs."""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes.client.rest import ApiException

from tenant_operator import naming, render, spec, status
from tenant_operator import placement as placement_mod
from tenant_operator.components import ComponentResult
from tenant_operator.config import OperatorConfig
from tenant_operator.errors import SpecError
from tenant_operator.kube.client import Kube
from tenant_operator.kube.diff import needs_apply, with_hash
from tenant_operator.naming import ANNOTATION_HASH
from tenant_operator.ownership import ANNOTATION_UID, NameConflict, claim_decision
from tenant_operator.rendercache import RenderCache
from tenant_operator.status import Condition

log = logging.getLogger(__name__)

# Component label -> condition type, for the Kubernetes-only components.
KUBE_COMPONENTS = {
    "namespace": "NamespaceReady",
    "network": "NetworkReady",
    "quota": "QuotaReady",
    "rbac": "QuotaReady",       # the admin Role is reported with the namespace guard rails
    "ingress": "IngressReady",
}
# Components whose objects the reconciler may prune. The namespace is never
# pruned here: only the deletion lifecycle removes it.
PRUNABLE = {"network", "quota", "rbac", "ingress", "mysql", "objectstorage", "rabbitmq", "backup", "drill"}

Key = tuple[str, str, str, str]


# When a status write met a newer Tenant whose spec moved on.
CONFLICT_RETRY_SECONDS = 1.0


@dataclass
class StatusWrite:
    writes: int          # 0 or 1
    current: dict        # the status the desired one was computed against
    desired: dict
    conflict: bool = False


@dataclass
class ReconcileResult:
    events: list[tuple[str, str, str]] = field(default_factory=list)
    writes: int = 0
    retry_after: float | None = None   # seconds, when something failed
    phase: str = ""
    waiting_on: set[str] = field(default_factory=set)   # components whose backend was unavailable
    pending_removals: bool = False   # something is due at a time, not on an event


def _message(exc: Exception) -> str:
    """What went wrong, in the API server's own words when it gave them (a 422
    names the field: `spec.hard[foo]: Invalid value: ...`)."""
    if isinstance(exc, ApiException):
        detail = ""
        try:
            body = json.loads(exc.body or "{}")
            detail = str(body.get("message") or "") if isinstance(body, dict) else ""
        except (TypeError, ValueError):
            pass
        said = f"API server said {exc.status} {exc.reason}"
        return f"{said}: {detail}"[:1000] if detail else said
    return str(exc) or type(exc).__name__


def _refused(exc: Exception) -> bool:
    """The API server refused the object itself (422 Invalid, 400 BadRequest):
    retrying the same spec cannot help, the Tenant is Invalid."""
    return isinstance(exc, ApiException) and exc.status in (400, 422)


def merged_credentials(current, produced: dict, failed: bool) -> dict:
    """status.credentials after a pass: each backend's record replaced by the one
    it produced, the others kept. The tenant-wide rotationToken and rotatedAt say
    the annotation's rotation is done, so they move only when no backend failed."""
    out = dict(current) if isinstance(current, dict) else {}
    for key, value in produced.items():
        if key in ("rotationToken", "rotatedAt") and failed:
            continue
        out[key] = value
    return out


class Reconciler:
    def __init__(self, cfg: OperatorConfig, kube: Kube, backends: list | None = None):
        self.cfg = cfg
        self.kube = kube
        self.backends = backends or []    # objects with .sync(t, live, now) -> ComponentResult | None
        self._failures: dict[str, int] = {}
        self._render_cache = RenderCache()
        # One reconcile or deletion step per tenant at a time. A daemon's reconcile
        # thread can outlive its (cancelled) coroutine: without this lock it could
        # re-create what a purge just removed.
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._deleting: set[str] = set()
        self.placer = placement_mod.Placer()

    # --- helpers -------------------------------------------------------------

    def _backoff(self, name: str, failed: bool) -> float | None:
        if not failed:
            self._failures.pop(name, None)
            return None
        n = self._failures[name] = self._failures.get(name, 0) + 1
        return min(300.0, 5.0 * 2 ** (n - 1))

    def _write_status(self, body: dict, make_desired: Callable[[dict], dict], *,
                      follow_spec: bool = True, attempts: int = 2) -> StatusWrite:
        """Write the status `make_desired(current)` computes, on the condition
        that the Tenant is still at the resourceVersion `body` was read at. A
        stale view (a lagging watch, another writer) can then never overwrite
        a newer status. On a conflict the Tenant is read once and the status
        recomputed against it; if its spec moved on, the next pass handles it."""
        meta = body["metadata"]
        for attempt in range(1, attempts + 1):
            current = body.get("status") or {}
            desired = make_desired(current)
            patch = status.status_patch(current, desired)
            if not patch:
                return StatusWrite(0, current, desired)
            try:
                written = self.kube.patch_status("Tenant", meta["name"], patch,
                                                 resource_version=meta.get("resourceVersion"))
            except ApiException as exc:
                if exc.status != 409:
                    raise
                fresh = self.kube.get("Tenant", meta["name"]) if attempt < attempts else None
                if fresh is None or (follow_spec and (
                        fresh["metadata"].get("generation") != meta.get("generation")
                        or bool(fresh["metadata"].get("deletionTimestamp")) != bool(meta.get("deletionTimestamp")))):
                    break
                log.debug("tenant %s: status conflict at resourceVersion %s, now %s", meta["name"],
                          meta.get("resourceVersion"), fresh["metadata"]["resourceVersion"])
                meta["resourceVersion"] = fresh["metadata"]["resourceVersion"]
                body["status"] = fresh.get("status") or {}
                continue
            self._remember(body, written)
            return StatusWrite(1, current, desired)
        return StatusWrite(0, current, desired, conflict=True)

    @staticmethod
    def _remember(body: dict, written: dict | None) -> None:
        """Later writes of the same pass are conditional on our own write."""
        rv = ((written or {}).get("metadata") or {}).get("resourceVersion")
        if rv:
            body["metadata"]["resourceVersion"] = rv

    # --- the reconcile -------------------------------------------------------------

    def reconcile_terminating(self, body: dict, live: dict[Key, dict], t: spec.Tenant,
                              deletion: dict) -> ReconcileResult:
        """Keep a deleted tenant suspended during its grace period and report it."""
        return self.reconcile(body, live, model=t, deletion=deletion)

    def report_terminating(self, body: dict, deletion: dict) -> int:
        """Status only (no applies): used while purging, when the namespace is going away."""
        def desired(current: dict) -> dict:
            kept = [Condition(c["type"], {"True": True, "False": False}.get(c["status"]), c.get("reason", ""),
                              c.get("message", ""))
                    for c in current.get("conditions") or [] if c["type"] in status.COMPONENT_CONDITIONS]
            return status.desired_status(
                current, generation=int(body["metadata"].get("generation") or 0),
                namespace=current.get("namespace", ""), conditions=kept, suspended=True,
                extra={"deletion": copy.deepcopy(deletion)}, deletion=deletion)
        # The deletion record is the purge's memory (final backup taken, steps
        # done): it must not be lost to a conflict with kopf's own patches.
        write = self._write_status(body, desired, follow_spec=False, attempts=5)
        if write.writes:
            # Later steps of the same pass compare against what was just written
            # (a copy: the caller keeps mutating its `deletion`).
            body["status"] = {**write.current, **copy.deepcopy(write.desired)}
        return write.writes

    def reconcile(self, body: dict, live: dict[Key, dict], *, model: spec.Tenant | None = None,
                  deletion: dict | None = None, claims: dict | None = None,
                  placed: placement_mod.Members | None = None) -> ReconcileResult:
        """`claims`: host -> [(tenant, ingress creationTimestamp)] of the operator's
        Ingresses routing the Tenant's domains (see runtime.domain_claims).
        `placed`: (backend, server) -> Tenants recorded there (runtime.placement_members)."""
        name = body["metadata"]["name"]
        with self.tenant_lock(name):
            if deletion is None and (name in self._deleting or body["metadata"].get("deletionTimestamp")):
                return ReconcileResult()   # the deletion lifecycle owns this tenant now
            return self._reconcile(body, live, model=model, deletion=deletion, claims=claims or {}, placed=placed)

    def _reconcile(self, body: dict, live: dict[Key, dict], *, model: spec.Tenant | None,
                   deletion: dict | None, claims: dict | None = None,
                   placed: placement_mod.Members | None = None) -> ReconcileResult:
        name = body["metadata"]["name"]
        result = ReconcileResult()
        current = body.get("status") or {}
        try:
            t = model or spec.parse(body, self.cfg)
        except SpecError as exc:
            cond = Condition("SpecValid", False, "InvalidSpec", str(exc))
            write = self._write_status(body, lambda cur: status.desired_status(
                cur, generation=int(body["metadata"].get("generation") or 0),
                namespace=cur.get("namespace", ""), conditions=[cond], suspended=False, invalid=True))
            result.writes += write.writes
            if result.writes:
                result.events.append(("Warning", "InvalidSpec", str(exc)))
            result.phase = "Invalid"
            return result
        if model is None and deletion is None:
            settled = self._place(body, live, t, placed)
            if settled is None:
                # Where the data goes is not recorded: nothing may be created yet.
                result.retry_after = CONFLICT_RETRY_SECONDS
                return result
            t = settled

        desired_objs: list[tuple[str, dict]] = []   # (component, object)
        for obj in self._rendered(t):
            desired_objs.append((obj["metadata"]["labels"][naming.LABEL_COMPONENT], obj))

        # A domain another Tenant routed first is not routed here: no Ingress at all.
        taken = self._domains_taken(t, live, claims or {})
        if taken:
            desired_objs = [(c, o) for c, o in desired_objs if c != "ingress"]

        conditions: dict[str, Condition] = {}
        extra_status: dict = {}
        failed = bool(taken)
        errors: dict[str, str] = {}
        refused: set[str] = set()   # components whose object the API server refused as invalid
        applied: list[str] = []

        def apply_all(objs) -> None:
            for component, obj in objs:
                try:
                    if self._apply(obj, live):
                        result.writes += 1
                        applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
                except Exception as exc:  # noqa: BLE001 - reported in status, retried
                    if component not in errors and _refused(exc):
                        refused.add(component)
                    errors.setdefault(component, f"{obj['kind']} {obj['metadata']['name']}: {_message(exc)}")

        # Namespace first, and only one that is provably this Tenant's.
        ns_obj = next(o for c, o in desired_objs if c == "namespace")
        try:
            result.writes += self._ensure_namespace(t, ns_obj, live, applied)
        except NameConflict as exc:
            errors["namespace"] = str(exc)
            conflict = exc
        except Exception as exc:  # noqa: BLE001
            errors["namespace"] = _message(exc)
            conflict = None
        else:
            conflict = None
        ns_live = live.get(render.object_key(ns_obj))
        if "namespace" not in errors and ns_live and ns_live.get("status", {}).get("phase") == "Terminating":
            errors["namespace"] = f"namespace {t.namespace} is still terminating; waiting for it to go"

        backend_results: list[ComponentResult] = []
        if "namespace" not in errors:
            # Isolation first: policies, quota, limits, RBAC (and the ingress) go in
            # before any backend is touched, so a backend failure never leaves the
            # namespace open.
            apply_all((c, o) for c, o in desired_objs if c != "namespace")
            for backend in self.backends:
                res = self._sync_backend(backend, t, live, current, deletion,
                                         functools.partial(self._record_creating, body))
                if res is None:
                    continue
                backend_results.append(res)
                conditions[res.condition.type] = res.condition
                if res.condition.reason == "BackendUnavailable":
                    result.waiting_on.add(res.component)
                for key, value in res.status.items():
                    if key in ("pendingRemovals", "credentials"):
                        extra_status.setdefault(key, {}).update(value)
                    else:
                        extra_status[key] = value
                result.events.extend(res.events)
                failed |= res.failed
                own = [(obj["metadata"]["labels"][naming.LABEL_COMPONENT], obj) for obj in res.objects]
                # Each backend's Secrets right after its own change: a failure in a
                # later backend never leaves this one with a credential no Secret holds.
                apply_all(own)
                desired_objs.extend(own)
            pruned = self._prune(t, desired_objs, live, errors)
            result.writes += len(pruned)
            if pruned:
                result.events.append(("Normal", "Pruned", "removed objects no longer wanted: " + ", ".join(pruned)))
        if applied:
            result.events.append(("Normal", "Applied", "created or updated " + ", ".join(applied)))
        previous = {c.get("type"): c for c in current.get("conditions") or []}
        if conflict is not None and (previous.get("NamespaceReady") or {}).get("reason") != "NameConflict":
            result.events.append(("Warning", "NameConflict", str(conflict)))

        conditions.update(self._kube_conditions(t, errors, "NameConflict" if conflict is not None else "ApplyFailed",
                                                refused))
        if taken and "namespace" not in errors:
            message = "already routed by another Tenant, so this Tenant's Ingress is not applied: " + ", ".join(taken)
            conditions["IngressReady"] = Condition("IngressReady", False, "DomainConflict", message)
            if (previous.get("IngressReady") or {}).get("reason") != "DomainConflict":
                result.events.append(("Warning", "DomainConflict", message))
        for res in backend_results:
            # A backend's own object (Secret, CronJob) failed to apply: that backend is not ready.
            if res.component in errors and res.condition.status is not False:
                conditions[res.condition.type] = Condition(
                    res.condition.type, False, "Invalid" if res.component in refused else "ApplyFailed",
                    errors[res.component])
        failed |= bool(errors)

        credentials = extra_status.pop("credentials", None)
        if credentials:
            extra_status["credentials"] = merged_credentials(current.get("credentials"), credentials, failed)
        result.pending_removals = bool(extra_status.get("pendingRemovals"))
        if "namespace" not in errors:
            # Merge-patch null removes the field once nothing is pending any more.
            extra_status.setdefault("pendingRemovals", None)
        ordered = [conditions[c] for c in status.COMPONENT_CONDITIONS + status.INFORMATIONAL_CONDITIONS
                   if c in conditions]
        if deletion is not None:
            extra_status["deletion"] = deletion
        write = self._write_status(body, lambda cur: status.desired_status(
            cur, generation=t.generation, namespace=t.namespace, conditions=ordered, suspended=t.suspended,
            extra=extra_status, deletion=deletion, invalid=bool(refused)))
        result.writes += write.writes
        desired = write.desired
        result.phase = desired["phase"]
        if write.writes and write.current.get("phase") != desired["phase"] and desired["phase"] == "Invalid":
            result.events.append(("Warning", "RefusedByAPIServer",
                                  "; ".join(errors[c] for c in sorted(refused))[:1000]))
        elif write.writes and write.current.get("phase") != desired["phase"] \
                and desired["phase"] in ("Ready", "Degraded", "Suspended"):
            kind = "Warning" if desired["phase"] == "Degraded" else "Normal"
            ready = desired["conditions"][0]
            result.events.append((kind, desired["phase"], ready["message"]))
        result.retry_after = self._backoff(name, failed)
        # After a failure the backoff decides; a past-due revocation must not turn into a 1 s loop.
        due = self._rotation_due_in(backend_results) if deletion is None and not failed else None
        if due is not None:
            result.retry_after = min(result.retry_after or due, due)
        if write.conflict and result.retry_after is None:
            # A newer Tenant exists; its watch event wakes the next pass, this is the fallback.
            result.retry_after = CONFLICT_RETRY_SECONDS
        return result

    def _rotation_due_in(self, results: list[ComponentResult]) -> float | None:
        """Seconds until a backend's rotation or revocation is due, when that comes
        before the backend resync that would otherwise find it (see runtime: a
        quiet tenant's passes are skipped until then)."""
        times = [r.due_at for r in results if r.due_at is not None]
        if not times:
            return None
        wait = max(1.0, min(times) - time.time())
        return wait if wait <= 2 * self.cfg.backend_resync_interval else None

    def _place(self, body: dict, live: dict[Key, dict], t: spec.Tenant,
               placed: placement_mod.Members | None) -> spec.Tenant | None:
        """Record in status.placement the server of each backend the tenant uses,
        before any backend is touched (placement.py). The model to go on with,
        or None when the record could not be written."""
        current = body.get("status") or {}
        recorded = current.get("placement") if isinstance(current.get("placement"), dict) else {}
        uses = {"mysql": bool(t.databases), "rabbitmq": t.messaging is not None,
                "objectStorage": t.uses_object_storage}
        used = [b for b in placement_mod.BACKENDS if uses[b] and self.cfg.servers(b)]
        if all(recorded.get(b) for b in used):
            return t
        requested = (body.get("spec") or {}).get("placement") or {}
        components = {o["metadata"].get("labels", {}).get(naming.LABEL_COMPONENT)
                      for k, o in live.items() if k[1] == "Secret" and k[2] == t.namespace}

        def choose_for(backend: str) -> str | None:
            weights = {name: server.weight for name, server in self.cfg.servers(backend).items()}
            return self.placer.choose(backend, t.name, weights, placed)

        wanted = placement_mod.resolve(used, requested, recorded, placement_mod.provisioned(current, components),
                                       {b: self.cfg.default_server(b) for b in used}, choose_for)
        # What a fresh read finds recorded wins over this pass's choice.
        write = self._write_status(body, lambda cur: {"placement": {**wanted, **(cur.get("placement") or {})}})
        if write.conflict:
            return None
        body["status"] = {**(body.get("status") or {}), "placement": write.desired["placement"]}
        if write.writes:
            log.info("tenant %s placed: %s", t.name, write.desired["placement"])
        return spec.parse(body, self.cfg)

    def _record_creating(self, body: dict, buckets: list[str]) -> None:
        """Record in status.creating the buckets about to be created (see
        ObjectStorage's Intents). Nothing may be created unless this is written."""
        write = self._write_status(body, lambda cur: {"creating": {**(cur.get("creating") or {}), "buckets": buckets}})
        if write.conflict:
            raise RuntimeError("the Tenant changed while its new buckets were recorded; the next pass creates them")
        body["status"] = {**(body.get("status") or {}), "creating": write.desired["creating"]}

    @staticmethod
    def _domains_taken(t: spec.Tenant, live: dict[Key, dict], claims: dict) -> list[str]:
        """Domains of `t` that another Tenant's Ingress routed first (earlier
        creationTimestamp; the tenant name breaks a tie)."""
        if not t.domains or t.ingress is None or not t.ingress.enabled:
            return []
        ours = live.get(("networking.k8s.io/v1", "Ingress", t.namespace, naming.INGRESS))
        since = ((ours or {}).get("metadata") or {}).get("creationTimestamp")
        taken = []
        for host in t.domains:
            for tenant, created in claims.get(host, ()):
                if tenant != t.name and (since is None or (created, tenant) < (since, t.name)):
                    taken.append(f"{host} (Tenant {tenant})")
                    break
        return taken

    def _sync_backend(self, backend, t: spec.Tenant, live, current: dict, deletion: dict | None,
                      record_intent=None):
        """One backend's pass; an unexpected error becomes its condition, never
        stops the other components."""
        self.kube.check_owner()   # no backend call for a tenant whose shard moved on
        try:
            return backend.sync(t, live, current, terminating=deletion is not None,
                                record_intent=record_intent)
        except Exception as exc:  # noqa: BLE001 - reported in status, retried with backoff
            log.error("tenant %s: %s component failed: %s: %s", t.name, backend.component,
                      type(exc).__name__, exc)
            log.debug("traceback", exc_info=True)
            ctype = getattr(backend, "condition_type", "") or "BackupsReady"
            return ComponentResult(backend.component, Condition(ctype, False, "InternalError",
                                                                f"{type(exc).__name__}: {exc}"[:500]),
                                   objects=[o for k, o in live.items() if k[1] == "Secret" and k[2] == t.namespace
                                            and o["metadata"].get("labels", {}).get(naming.LABEL_COMPONENT)
                                            == backend.component],
                                   failed=True)

    def _ensure_namespace(self, t: spec.Tenant, desired: dict, live: dict[Key, dict], applied: list[str]) -> int:
        """Create the namespace with our marker, or keep applying it when it
        carries this Tenant's UID. Anything else under that name is not ours."""
        key = render.object_key(desired)
        current = live.get(key)
        if current is None:
            # The watch only sees labelled namespaces: a foreign one needs a read.
            current = self.kube.get("Namespace", t.namespace)
        if current is None:
            try:
                written = self.kube.create(desired if ANNOTATION_HASH in desired["metadata"].get("annotations", {})
                                           else with_hash(desired))
            except ApiException as exc:
                if exc.status == 409:
                    raise NameConflict("namespace", t.namespace) from None
                raise
            live[key] = written
            applied.append(f"Namespace/{t.namespace}")
            return 1
        marker = (current["metadata"].get("annotations") or {}).get(ANNOTATION_UID, "")
        decision = claim_decision(marker, "", "", uid=t.uid, tenant=t.name, exists=True,
                                  adopt=t.adopt_existing)
        if decision == "conflict":
            holder = (current["metadata"].get("labels") or {}).get(naming.LABEL_TENANT, "")
            raise NameConflict("namespace", t.namespace,
                               f"Tenant {holder} (another UID)" if marker and holder else "")
        live.setdefault(key, current)
        if self._apply(desired, live):
            applied.append(f"Namespace/{t.namespace}")
            return 1
        return 0

    def _rendered(self, t: spec.Tenant) -> list[dict]:
        """Rendering is pure: a drift check of an unchanged tenant reuses the last
        result instead of running the templates again (the bulk of idle CPU)."""
        return self._render_cache.get(t.name, repr(t),
                                      lambda: [with_hash(o) for o in render.render_tenant(t, self.cfg)])

    def tenant_lock(self, tenant: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(tenant, threading.RLock())

    def begin_deletion(self, tenant: str) -> None:
        """From now on only the deletion lifecycle acts on this tenant."""
        self._deleting.add(tenant)

    def forget(self, tenant: str) -> None:
        self._render_cache.forget(tenant)
        self._failures.pop(tenant, None)
        self._deleting.discard(tenant)
        self.placer.forget(tenant)

    def _apply(self, obj: dict, live: dict[Key, dict]) -> bool:
        desired = obj if ANNOTATION_HASH in obj["metadata"].get("annotations", {}) else with_hash(obj)
        current = live.get(render.object_key(obj))
        if not needs_apply(desired, current):
            return False
        started = time.monotonic()
        self.kube.apply(desired)
        log.debug("applied %s/%s in %.3fs", obj["kind"], obj["metadata"]["name"], time.monotonic() - started)
        return True

    def _prune(self, t: spec.Tenant, desired_objs, live: dict[Key, dict], errors: dict[str, str]) -> list[str]:
        wanted = {render.object_key(o) for _, o in desired_objs}
        pruned = []
        for key, obj in live.items():
            component = obj["metadata"].get("labels", {}).get(naming.LABEL_COMPONENT, "")
            if key in wanted or component not in PRUNABLE or key[2] != t.namespace:
                continue
            try:
                if self.kube.delete(key[1], key[3], key[2]):
                    pruned.append(f"{key[1]}/{key[3]}")
            except Exception as exc:  # noqa: BLE001
                errors.setdefault(component, f"cannot remove {key[1]} {key[3]}: {_message(exc)}")
        return pruned

    def _kube_conditions(self, t: spec.Tenant, errors: dict[str, str], namespace_reason: str = "ApplyFailed",
                         refused: set[str] | frozenset = frozenset()) -> dict[str, Condition]:
        def cond(ctype: str, components: tuple[str, ...], ok_reason: str, ok_msg: str) -> Condition:
            for comp in components:
                if comp in errors:
                    reason = "Invalid" if comp in refused else namespace_reason if comp == "namespace" \
                        else "ApplyFailed"
                    return Condition(ctype, False, reason, errors[comp])
            return Condition(ctype, True, ok_reason, ok_msg)

        out = {
            "NamespaceReady": cond("NamespaceReady", ("namespace",), "Created", f"namespace {t.namespace}"),
            "NetworkReady": cond("NetworkReady", ("network",), "PoliciesApplied",
                                 "default-deny with same-namespace, ingress-controller, DNS, backend and "
                                 "shared-service allowances"),
            "QuotaReady": cond("QuotaReady", ("quota", "rbac"), "Applied",
                               f"{t.tier} quota and limits applied"),
        }
        if t.ingress is None or not t.domains:
            out["IngressReady"] = cond("IngressReady", ("ingress",), "NotRequested", "no domains in spec")
        elif not t.ingress.enabled:
            out["IngressReady"] = cond("IngressReady", ("ingress",), "Disabled", "spec.ingress.enabled is false")
        elif t.suspended:
            out["IngressReady"] = cond("IngressReady", ("ingress",), "Suspended", "ingress removed while suspended")
        else:
            out["IngressReady"] = cond("IngressReady", ("ingress",), "Routed",
                                       f"{len(t.domains)} domain(s) routed to {t.ingress.service}:{t.ingress.port}")
        if "namespace" in errors:
            for ctype in ("NetworkReady", "QuotaReady", "IngressReady"):
                out[ctype] = Condition(ctype, False, "NamespaceNotReady", errors["namespace"])
        return out
