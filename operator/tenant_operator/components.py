"""The contract between the reconciler and each backend component (MySQL,
object storage, RabbitMQ, backups): what one sync returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from tenant_operator.status import Condition


@dataclass
class ComponentResult:
    component: str                                      # the tenancy.dev/component label of its objects
    condition: Condition
    objects: list[dict] = field(default_factory=list)   # desired Kubernetes objects (Secrets, CronJobs)
    status: dict = field(default_factory=dict)         # extra status fields (e.g. credentials.rotatedAt)
    events: list[tuple[str, str, str]] = field(default_factory=list)   # (type, reason, message)
    failed: bool = False                                # retry with backoff
    due_at: float | None = None                         # unix time a pass is due (rotation, revocation)


def live_secret_data(secret: dict | None) -> dict[str, str]:
    """Decoded data of a live Secret ({} when absent)."""
    import base64
    if not secret:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
