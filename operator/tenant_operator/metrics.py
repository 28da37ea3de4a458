"""Prometheus metrics, served on /metrics when TENANT_OPERATOR_METRICS_PORT is set
(the CLI sets it from --metrics-port)."""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

TENANTS_BY_PHASE = Gauge("tenant_operator_tenants", "Tenants by phase", ["phase"])
RECONCILE_DURATION = Histogram(
    "tenant_operator_reconcile_duration_seconds", "Duration of one tenant reconcile",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RECONCILE_ERRORS = Counter("tenant_operator_reconcile_errors_total", "Reconciles that raised")
BACKEND_ERRORS = Counter("tenant_operator_backend_errors_total", "Failed backend calls", ["backend"])
BACKUP_AGE = Gauge("tenant_operator_last_successful_backup_age_seconds",
                   "Seconds since the tenant's last successful backup", ["tenant"])
SKIPPED_PASSES = Counter("tenant_operator_skipped_passes_total",
                         "Drift checks that found every input of the last quiet pass unchanged")
BACKEND_SYNCS = Counter("tenant_operator_backend_syncs_total",
                        "Passes that called a backend (every backend call happens in one)", ["backend"])
LEASE_WRITES = Counter("tenant_operator_lease_writes_total",
                       "Writes of shard and member Leases (replica coordination, not tenant work)")
FENCED_WRITES = Counter("tenant_operator_fenced_writes_total",
                        "Writes refused because this replica no longer held the tenant's shard")
SHARDS_OWNED = Gauge("tenant_operator_shards_owned", "Shards this replica holds (sharding on)")
API_WRITES = Counter("tenant_operator_api_writes_total", "Write requests sent to the Kubernetes API")

_phases: dict[str, str] = {}


def set_phase(tenant: str, phase: str) -> None:
    if not phase or _phases.get(tenant) == phase:
        return
    _phases[tenant] = phase
    _publish()


def forget(tenant: str) -> None:
    _phases.pop(tenant, None)
    BACKUP_AGE.remove(tenant) if (tenant,) in BACKUP_AGE._metrics else None  # noqa: SLF001
    _publish()


def _publish() -> None:
    counts: dict[str, int] = {}
    for phase in _phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    for phase in ("Provisioning", "Ready", "Degraded", "Suspended", "Terminating", "Invalid"):
        TENANTS_BY_PHASE.labels(phase).set(counts.get(phase, 0))


def start_if_configured() -> None:
    port = os.environ.get("TENANT_OPERATOR_METRICS_PORT")
    if port:
        # In a pod the scraper reaches the pod IP: all interfaces is the right default there.
        addr = os.environ.get("TENANT_OPERATOR_METRICS_ADDR", "0.0.0.0")  # nosec B104
        start_http_server(int(port), addr=addr)
