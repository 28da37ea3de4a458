"""Prometheus metrics, served on /metrics when TENANT_OPERATOR_METRICS_PORT is set
(the CLI sets it from --metrics-port)."""

from __future__ import annotations

import contextlib
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
# Per-tenant series for the alerting rules. Times are Unix timestamps that the
# rules compare with time(): they stay right between passes, where an age would freeze.
TENANT_PHASE = Gauge("tenant_operator_tenant_phase",
                     "1 for the tenant's current phase, 0 for the others", ["tenant", "phase"])
BACKUP_TIMESTAMP = Gauge("tenant_operator_last_successful_backup_timestamp_seconds",
                         "Unix time of the oldest of the latest successful backups of the tenant's databases",
                         ["tenant"])
BACKUP_INTERVAL = Gauge("tenant_operator_backup_interval_seconds",
                        "Longest time between two scheduled backups of the tenant (while backups are expected)",
                        ["tenant"])
FINAL_BACKUP_FAILURES = Gauge("tenant_operator_final_backup_failed_attempts",
                              "Consecutive failed attempts of a deleted tenant's final backup (0: taken or skipped)",
                              ["tenant"])
CREDENTIALS_ROTATED = Gauge("tenant_operator_credentials_rotated_timestamp_seconds",
                            "Unix time the tenant's oldest credential on a backend was created or rotated",
                            ["tenant", "backend"])
DRILL_PASSED = Gauge("tenant_operator_backup_drill_passed",
                     "1 when the last recovery drill of the database passed, 0 when it failed", ["tenant", "service"])
DRILL_TIMESTAMP = Gauge("tenant_operator_backup_drill_timestamp_seconds",
                        "Unix time the last recovery drill of the database ended", ["tenant", "service"])
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

PHASES = ("Provisioning", "Ready", "Degraded", "Suspended", "Terminating", "Invalid")
# Every series labelled by tenant: removed when the tenant is forgotten.
PER_TENANT = (BACKUP_AGE, TENANT_PHASE, BACKUP_TIMESTAMP, BACKUP_INTERVAL, FINAL_BACKUP_FAILURES,
              CREDENTIALS_ROTATED, DRILL_PASSED, DRILL_TIMESTAMP)

_phases: dict[str, str] = {}


def set_phase(tenant: str, phase: str) -> None:
    if not phase or _phases.get(tenant) == phase:
        return
    _phases[tenant] = phase
    # One series per phase, so that a tenant moving between two phases that are not
    # Ready stays continuously "not Ready" for an alert's `for:`.
    for p in PHASES:
        TENANT_PHASE.labels(tenant, p).set(1 if p == phase else 0)
    _publish()


def remove_series(metric, tenant: str) -> None:
    """Drop every series of `metric` labelled with `tenant` (none: nothing to do)."""
    index = metric._labelnames.index("tenant")  # noqa: SLF001 - prometheus_client keeps no public view
    for labels in list(metric._metrics):  # noqa: SLF001 - a copy: other threads add series
        if labels[index] == tenant:
            with contextlib.suppress(KeyError):   # removed meanwhile by another thread
                metric.remove(*labels)


def forget(tenant: str) -> None:
    _phases.pop(tenant, None)
    for metric in PER_TENANT:
        remove_series(metric, tenant)
    _publish()


def _publish() -> None:
    counts: dict[str, int] = {}
    for phase in _phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    for phase in PHASES:
        TENANTS_BY_PHASE.labels(phase).set(counts.get(phase, 0))


def start_if_configured() -> None:
    port = os.environ.get("TENANT_OPERATOR_METRICS_PORT")
    if port:
        # In a pod the scraper reaches the pod IP: all interfaces is the right default there.
        addr = os.environ.get("TENANT_OPERATOR_METRICS_ADDR", "0.0.0.0")  # nosec B104
        start_http_server(int(port), addr=addr)
