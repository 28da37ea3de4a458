"""When a backend rotates its credentials, and what becomes of the previous one.

Every credential has two accounts on its backend, used alternately (naming.py
derives the second one's name). The Secret names the active account: it is what
applications read, so it cannot disagree with them. A rotation gives the idle
account a new password and the same rights, switches the Secret to it, and
keeps the previous account working for the tenant's `rotationOverlap`, so pods
can pick up the new Secret; then the previous account is revoked.

`status.credentials.<backend>` records the rest: `rotatedAt` (the active
credential's rotation), `rotationToken` (the annotation value it fulfilled) and
`previousRevokeAt` (only while the previous credential still works). A tenant
from before this scheme has none of these and rotates the same way: its single
account is the first of the pair.

Pure functions of the model, the status and the time; unit tested.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tenant_operator.lifecycle import iso_time, parse_time
from tenant_operator.spec import Tenant

KEEP, REVOKE = "keep", "revoke"


def entry(current_status: dict | None, backend: str) -> dict:
    """status.credentials.<backend> ({} when absent or unreadable)."""
    value = ((current_status or {}).get("credentials") or {}).get(backend)
    return dict(value) if isinstance(value, dict) else {}


def _time(value) -> datetime | None:
    try:
        return parse_time(str(value)) if value else None
    except ValueError:
        return None


def revoke_at(record: dict) -> datetime | None:
    return _time(record.get("previousRevokeAt"))


def in_overlap(record: dict, now: datetime) -> bool:
    """The previous credential still works: its revocation is recorded and not yet due."""
    at = revoke_at(record)
    return at is not None and now < at


def revoke_due(record: dict, now: datetime) -> bool:
    at = revoke_at(record)
    return at is not None and at <= now


def requested(t: Tenant, current_status: dict | None, backend: str) -> bool:
    """The annotation holds a value this backend has not rotated for. A backend
    with no record of its own goes by the tenant-wide one (older status)."""
    record = entry(current_status, backend)
    done = record.get("rotationToken")
    if done is None:
        done = ((current_status or {}).get("credentials") or {}).get("rotationToken", "")
    return bool(t.rotate_token) and t.rotate_token != done


def since(record: dict, secrets_since: float | None) -> float | None:
    """Unix time the active credential was issued: its rotation, else (never
    rotated by this scheme) `secrets_since` (its Secret's creation or the
    tenant-wide rotation, see base.credentials_since)."""
    rotated = _time(record.get("rotatedAt"))
    if rotated is None:
        return secrets_since
    return max(rotated.timestamp(), secrets_since or 0.0)


def scheduled_at(t: Tenant, record: dict, secrets_since: float | None) -> float | None:
    """Unix time `rotateEvery` asks for the next rotation (None: never)."""
    issued = since(record, secrets_since)
    if not t.credentials.rotate_every or issued is None:
        return None
    return issued + t.credentials.rotate_every


def due(t: Tenant, current_status: dict | None, backend: str, secrets_since: float | None,
        now: datetime) -> bool:
    """Rotate now: asked for (annotation) or scheduled (rotateEvery), and the
    overlap of the previous rotation is over. A rotation during an overlap
    would reset the account pods may still be using."""
    record = entry(current_status, backend)
    if in_overlap(record, now):
        return False
    at = scheduled_at(t, record, secrets_since)
    return requested(t, current_status, backend) or (at is not None and at <= now.timestamp())


def previous_policy(t: Tenant, record: dict, rotating: bool, now: datetime) -> str:
    """What to do with the idle account of each pair: KEEP it as it is (just
    replaced, with an overlap; or within the overlap), else REVOKE it
    (idempotent; an account that does not exist stays absent)."""
    if rotating:
        return KEEP if t.credentials.rotation_overlap else REVOKE
    return KEEP if in_overlap(record, now) else REVOKE


def after(t: Tenant, record: dict, rotated: bool, now: datetime) -> dict:
    """status.credentials.<backend> once this pass is done."""
    out = dict(record)
    if rotated:
        out["rotatedAt"] = iso_time(now)
        out["rotationToken"] = t.rotate_token or out.get("rotationToken", "")
        if t.credentials.rotation_overlap:
            out["previousRevokeAt"] = iso_time(now + timedelta(seconds=t.credentials.rotation_overlap))
        else:
            out.pop("previousRevokeAt", None)
    elif not in_overlap(out, now):
        out.pop("previousRevokeAt", None)   # revoked by this pass
    return out


def next_due(t: Tenant, record: dict, secrets_since: float | None) -> float | None:
    """Unix time this backend next needs a pass: the revocation of the previous
    credential, else the scheduled rotation (a requested one waits for the
    revocation and then is immediate)."""
    at = revoke_at(record)
    if at is not None:
        return at.timestamp()
    return scheduled_at(t, record, secrets_since)


def pick(primary: str, alternate: str, named: str) -> tuple[str, str]:
    """(active, idle) accounts of a pair, from the account the Secret names
    (anything else, or no Secret: the first account is active)."""
    return (alternate, primary) if named == alternate else (primary, alternate)


def now_utc() -> datetime:
    return datetime.now(UTC)
