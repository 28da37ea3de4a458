"""PURE comparison of desired objects with live ones, so a reconcile that
changes nothing sends nothing to the API server."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation

from kubernetes.utils.quantity import parse_quantity

from tenant_operator.naming import ANNOTATION_HASH


def desired_hash(obj: dict) -> str:
    """Stable hash of what we apply; stored on the object so that removing a
    field from the desired state (invisible to a subset check) still shows."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def with_hash(obj: dict) -> dict:
    out = dict(obj)
    meta = dict(out["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_HASH: desired_hash(obj)}
    out["metadata"] = meta
    return out


def _same_scalar(want, have) -> bool:
    if want == have:
        return True
    # The API server canonicalises quantities ("0.5" -> "500m", 8 -> "8").
    if isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        try:
            return Decimal(parse_quantity(want)) == Decimal(parse_quantity(have))
        except (ValueError, TypeError, InvalidOperation):
            return False
    return False


def is_subset(want, have) -> bool:
    """True when every field of `want` is present in `have` with the same value.
    Lists must match element-wise (order matters, length must be equal)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        for key, value in want.items():
            if key not in have:
                # The server drops empty maps/lists we send (e.g. `data: {}`).
                if value in ({}, [], None):
                    continue
                return False
            if not is_subset(value, have[key]):
                return False
        return True
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(
            is_subset(w, h) for w, h in zip(want, have, strict=True))
    return _same_scalar(want, have)


# Key of a watched object's view (kube/view.py) holding the hash of its managed fields.
FIELDS_HASH = "fieldsHash"


# A string that may be a quantity (an optional sign, then the grammar's number and
# suffix). Only these are parsed: parsing every name and image failed with an
# exception each time, which was most of the cost of hashing an object.
_MAYBE_QUANTITY = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[eE][-+]?[0-9]+|[numkMGTPE])?")


def _normal(value):
    """What the API server stores for what we send: quantities canonicalised
    ("0.5" and "500m", 8 and "8" are one value), empty maps and lists dropped.
    (Hashed for every object listed and every object rendered: kept tight.)"""
    if isinstance(value, str):
        return _quantity(value) if _MAYBE_QUANTITY.fullmatch(value) else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _normal(item)
            if item is not None and item != {} and item != []:
                out[key] = item
        return out
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return _quantity(value)
    return value


def _quantity(value: str | int) -> str | int:
    try:
        return f"q:{Decimal(parse_quantity(value)).normalize()}"
    except (ValueError, TypeError, InvalidOperation):
        return value


def fields_hash(body: dict) -> str:
    """Hash of an object's fields apart from apiVersion, kind, metadata and status."""
    rest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status", FIELDS_HASH)}
    return hashlib.sha256(json.dumps(_normal(rest), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def needs_apply(desired: dict, live: dict | None) -> bool:
    """`desired` must already carry its hash annotation (see with_hash). `live`
    is a whole object or a view (kube/view.py) carrying FIELDS_HASH."""
    if live is None:
        return True
    want_hash = desired["metadata"]["annotations"][ANNOTATION_HASH]
    have_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
    if want_hash != have_hash:
        return True
    if FIELDS_HASH in live:
        meta = {k: v for k, v in desired["metadata"].items() if k in ("labels", "annotations")}
        return fields_hash(desired) != live[FIELDS_HASH] or not is_subset(meta, live.get("metadata") or {})
    return not is_subset(desired, live)
