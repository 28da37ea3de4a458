"""PURE comparison of desired objects with live ones, so a reconcile that
changes nothing sends nothing to the API server."""

from __future__ import annotations

import hashlib
import json
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


def needs_apply(desired: dict, live: dict | None) -> bool:
    """`desired` must already carry its hash annotation (see with_hash)."""
    if live is None:
        return True
    want_hash = desired["metadata"]["annotations"][ANNOTATION_HASH]
    have_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
    if want_hash != have_hash:
        return True
    return not is_subset(desired, live)
