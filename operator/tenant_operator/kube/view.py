"""PURE: what the operator keeps in memory of each object it owns.

A watch delivers whole objects: server defaults, status, managedFields and
every other manager's fields. Drift detection needs only the fields the
operator itself manages, and server-side apply records exactly those in the
object's managedFields. So the view keeps identity (kind, name, labels, our
annotations, resourceVersion, creationTimestamp), the few status fields the
reconciler reads, and a hash of the object projected onto our own field set
(kube/diff.fields_hash); only a Secret keeps its projected content, which
the backends read. A field another manager took over drops out of that set,
so it shows as drift and is applied again, which is what a whole-object
comparison would have done."""

from __future__ import annotations

import hashlib
import json
import sys

from tenant_operator.kube.diff import FIELDS_HASH, fields_hash
from tenant_operator.naming import ANNOTATION_HASH
from tenant_operator.ownership import ANNOTATION_UID

# Status fields the reconciler reads, by kind (everything else in status is dropped).
KEEP_STATUS = {
    "Namespace": ("phase",),
    "CronJob": ("lastScheduleTime", "lastSuccessfulTime"),
}
# Kinds whose projected content is kept, not only its hash: the backends read a Secret's data.
KEEP_CONTENT = {"Secret"}
VIEW_HASH = "viewHash"
KEEP_METADATA = ("name", "namespace", "labels", "resourceVersion", "creationTimestamp", "deletionTimestamp")
# Values that repeat across the views (every object of a tenant has its namespace,
# labels and, mostly, creation second): one string each, not one per object.
SHARED_METADATA = ("namespace", "creationTimestamp")
# Kept even if some other manager wrote them: ownership decisions read them.
KEEP_ANNOTATIONS = (ANNOTATION_HASH, ANNOTATION_UID)


def managed_fields(metadata: dict, manager: str) -> dict:
    """The union of the fieldsV1 sets `manager` holds on the main resource
    (apply and update entries; not the status subresource)."""
    merged: dict = {}
    for entry in metadata.get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("subresource"):
            continue
        _merge(merged, entry.get("fieldsV1") or {})
    return merged


def _merge(into: dict, fields: dict) -> None:
    for key, sub in fields.items():
        if key in into and isinstance(sub, dict) and sub:
            _merge(into[key], sub)
        else:
            into.setdefault(key, sub)


def project(value, fields: dict):
    """`value` restricted to a fieldsV1 set: `f:name` selects a map key,
    `k:{...}` a list item by its key fields, `v:<json>` a set member, `i:<n>`
    a list index. An empty set (a leaf) keeps the value whole."""
    if not fields or not isinstance(value, (dict, list)):
        return value
    if isinstance(value, dict):
        out = {}
        for key, sub in fields.items():
            if key.startswith("f:") and key[2:] in value:
                out[_shared(key[2:])] = project(value[key[2:]], sub)   # a slice is a new string each time
        return out
    out_items: list[tuple[int, object]] = []
    for key, sub in fields.items():
        if key.startswith("k:"):
            wanted = json.loads(key[2:])
            for i, item in enumerate(value):
                if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
                    # Only the item's fields that are ours: a key field the server
                    # defaulted (a port's protocol) is in the key, not in our set.
                    out_items.append((i, project(item, sub)))
                    break
        elif key.startswith("v:"):
            member = json.loads(key[2:])
            if member in value:
                out_items.append((value.index(member), member))
        elif key.startswith("i:"):
            i = int(key[2:])
            if i < len(value):
                out_items.append((i, project(value[i], sub)))
    return [item for _, item in sorted(out_items, key=lambda pair: pair[0])]


def compact(obj: dict, manager: str) -> dict:
    """The in-memory view of one owned object (see the module docstring)."""
    meta = obj.get("metadata") or {}
    fields = managed_fields(meta, manager)
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    # No entry of ours at all (not created by this operator): keep it whole, to be safe.
    body = project(rest, {k: v for k, v in fields.items() if k != "f:metadata"}) if fields else rest
    if not isinstance(body, dict) or (fields and set(fields) <= {"f:metadata"}):
        body = {}
    identity = {"apiVersion": _shared(obj.get("apiVersion")), "kind": _shared(obj.get("kind"))}
    if obj.get("kind") in KEEP_CONTENT:
        view = {**identity, **body}
    else:
        view = {**identity, FIELDS_HASH: fields_hash(body)}
    kept_meta = {k: meta[k] for k in KEEP_METADATA if k in meta}
    for key in SHARED_METADATA:
        if key in kept_meta:
            kept_meta[key] = _shared(kept_meta[key])
    if isinstance(kept_meta.get("labels"), dict):
        kept_meta["labels"] = {_shared(k): _shared(v) for k, v in kept_meta["labels"].items()}
    # Only annotations we manage (project() keeps a value whole under an empty set: none of ours is not all).
    our_keys = (fields.get("f:metadata") or {}).get("f:annotations")
    ours = project(meta.get("annotations") or {}, our_keys) if our_keys else {}
    annotations = {**(ours if isinstance(ours, dict) else {}),
                   **{k: v for k, v in (meta.get("annotations") or {}).items() if k in KEEP_ANNOTATIONS}}
    if annotations:
        kept_meta["annotations"] = annotations
    view["metadata"] = kept_meta
    status = {k: v for k, v in (obj.get("status") or {}).items() if k in KEEP_STATUS.get(obj.get("kind"), ())}
    if status:
        view["status"] = status
    # What a reconcile reads of it: unlike the resourceVersion, it does not move when
    # something we neither manage nor read changes (a quota's usage, a label of someone else's).
    view[VIEW_HASH] = hashlib.sha256(json.dumps(
        {k: v for k, v in view.items() if k != "metadata"} | {"metadata": {
            k: v for k, v in kept_meta.items() if k != "resourceVersion"}},
        sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    return view


def appliable(view: dict) -> dict:
    """A kept-content view (a Secret) as an object to apply again: without the
    view's own keys and the metadata a patch must not carry (a resourceVersion
    would make server-side apply a conditional write)."""
    meta = {k: v for k, v in view.get("metadata", {}).items() if k in ("name", "namespace", "labels", "annotations")}
    return {**{k: v for k, v in view.items() if k not in (VIEW_HASH, FIELDS_HASH, "status", "metadata")},
            "metadata": meta}


def _shared(value):
    """`value`, as the one copy of that string the process keeps (sys.intern)."""
    return sys.intern(value) if isinstance(value, str) else value
