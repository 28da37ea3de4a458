"""Benchmark of one operator against the local platform (`make bench`).

Measures, with tenants of 3 databases, 2 buckets, 2 queues and 1 domain:
  latency      apply -> Ready for tenants applied one at a time (p50/p95)
  throughput   N tenants applied at once -> all Ready (tenants/s)
  floor        the same provisioning without the operator: the reconcile core
               called directly from a thread pool (render + server-side apply
               + backend calls), i.e. everything but kopf and the watches; with
               where its time goes (thread-seconds in Kubernetes writes and in
               each backend's pass)
  idle         over an idle window: API writes, backend passes, CPU seconds,
               passes run and drift checks answered from the fingerprint
  memory       peak RSS of each replica at N tenants, and its RSS at rest
  restart      time for the restarted replicas to confirm N tenants, and their writes
  placement    how the tenants spread over the configured backend servers
  purge        time until every bench tenant is deleted and purged (grace 0s)
Prints a table and writes bench/results.json. Bounded: every wait has a
timeout and all tenants are purged at the end.

Environment: BENCH_N (100), BENCH_LATENCY_N (20), BENCH_IDLE_SECONDS (300), BENCH_WORKERS (8),
BENCH_SKIP_FLOOR (0; 1 skips the floor and the ratio), BENCH_REPLICAS (1; the replicas share
the tenants through shard Leases, as the chart runs them), BENCH_THEN_REPLICAS (0; then restart
the same tenants with that many replicas and measure restart, memory and idle again),
BENCH_PURGE (1; 0 leaves the tenants for the next run), BENCH_OUT (bench/results.json).
Every configured server of a backend gets weight 1, so new tenants spread over all of them."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes
import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BENCH_OUT") or ROOT / "bench" / "results.json")
GROUP, VERSION, PLURAL = "tenancy.dev", "v1alpha1", "tenants"
SPEC = {"tier": "standard", "domains": [], "databases": ["auth", "products", "orders"],
        "objectStorage": {"buckets": ["media", "docs"], "quotaGiB": 10}, "messaging": {"queues": ["orders", "mail"]},
        "deletion": {"gracePeriod": "0s"}}


class Results(dict):
    """Figures as they are measured: printed and saved at once, so a run cut short keeps them."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        print(f"bench: {key} = {value}", flush=True)
        OUT.write_text(json.dumps(self, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    def __init__(self, config: Path, log: Path):
        self.config, self.log, self.port, self.proc = config, log, free_port(), None

    def start(self) -> Operator:
        self.proc = subprocess.Popen([sys.executable, "-m", "tenant_operator", "run", "--config", str(self.config),
                                      "--metrics-port", str(self.port), "--metrics-address", "127.0.0.1"],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait("operator metrics", lambda: self.metric("tenant_operator_api_writes_total") is not None, 60)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def metric(self, name: str, labels: str = "") -> float | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.eE+-]+)$", text, re.M)
        return float(m.group(1)) if m else None

    def metric_sum(self, name: str) -> float:
        """A counter summed over all its label sets (0 when absent)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([0-9.eE+-]+)$", text, re.M))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


class Replicas:
    """The operator's replicas, each a process with its own metrics endpoint."""

    def __init__(self, config: Path, logdir: Path, count: int):
        self.config, self.logdir, self.count = config, logdir, count
        self.ops: list[Operator] = []

    def start(self) -> Replicas:
        self.ops = [Operator(self.config, self.logdir / f"operator-{i}.log").start() for i in range(self.count)]
        return self

    def stop(self) -> None:
        for op in self.ops:
            op.stop()

    def total(self, name: str) -> float:
        return sum(op.metric_sum(name) for op in self.ops)

    def cpu_seconds(self) -> float:
        return sum(op.cpu_seconds() for op in self.ops)

    def peak_rss_mib(self) -> list[float]:
        return [round(op.peak_rss_mib(), 1) for op in self.ops]

    def rss_mib(self) -> list[float]:
        return [round(op.rss_mib(), 1) for op in self.ops]


def wait(what: str, predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench: timed out after {timeout}s waiting for {what}")


def body(name: str, floor: bool = False) -> dict:
    spec = copy.deepcopy(SPEC)
    spec["domains"] = [f"{name}.bench.example.com"]   # one host per tenant: a shared one is a DomainConflict
    # The floor's Tenants are not the operator's bench tenants (no `bench` label): no operator runs then.
    labels = {"bench-floor": "true"} if floor else {"bench": "true"}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name,
            "labels": labels}, "spec": spec}


def bench_tenants(custom) -> list[dict]:
    return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector="bench=true")["items"]


def ready_names(custom) -> set[str]:
    items = bench_tenants(custom)
    return {t["metadata"]["name"] for t in items
            if (t.get("status") or {}).get("phase") == "Ready"
            and t["status"].get("observedGeneration") == t["metadata"]["generation"]}


def versions(custom) -> dict[str, str]:
    return {t["metadata"]["name"]: t["metadata"]["resourceVersion"] for t in bench_tenants(custom)}


def purge_all(custom) -> None:
    for t in bench_tenants(custom):
        name = t["metadata"]["name"]
        try:
            custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name,
                                               {"metadata": {"annotations": {"tenancy.dev/purge-now": "true"}}})
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def placement(custom) -> dict[str, dict[str, int]]:
    """Tenants per backend server, from what each Tenant's status records."""
    out: dict[str, dict[str, int]] = {}
    for t in bench_tenants(custom):
        for backend, server in ((t.get("status") or {}).get("placement") or {}).items():
            out.setdefault(backend, {}).setdefault(server, 0)
            out[backend][server] += 1
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Stopwatch:
    """Thread-seconds spent inside wrapped calls, by label (summed over threads)."""

    def __init__(self):
        self.spent: Counter = Counter()
        self._lock = threading.Lock()

    def wrap(self, label: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.spent[label] += time.perf_counter() - started
        return timed


IDLE_COUNTERS = {"api_writes": "tenant_operator_api_writes_total",
                 "backend_syncs": "tenant_operator_backend_syncs_total",
                 "reconciles": "tenant_operator_reconcile_duration_seconds_count",
                 "skipped_passes": "tenant_operator_skipped_passes_total",
                 "lease_writes": "tenant_operator_lease_writes_total"}


def measure_idle(results: Results, op: Replicas, custom, idle_s: float, prefix: str) -> None:
    """No spec changes for idle_s seconds: what the replicas still do."""
    print(f"bench: idle for {idle_s:g}s", flush=True)
    c0 = op.cpu_seconds()
    start = {k: op.total(m) for k, m in IDLE_COUNTERS.items()}
    before = versions(custom)
    time.sleep(idle_s)   # the measurement window itself, not synchronisation
    # Which Tenants changed, if any: names to look up in the operator log.
    after = versions(custom)
    results[f"{prefix}idle_changed_tenants"] = sorted(k for k, v in after.items() if before.get(k) != v)
    results[f"{prefix}idle_cpu_seconds"] = round(op.cpu_seconds() - c0, 2)
    for key, m in IDLE_COUNTERS.items():
        results[f"{prefix}idle_{key}"] = op.total(m) - start[key]
    results[f"{prefix}rss_at_rest_mib"] = op.rss_mib()
    results[f"{prefix}peak_rss_mib"] = op.peak_rss_mib()


def measure_restart(results: Results, op: Replicas, config: Path, tmp: Path, count: int, total: int,
                    prefix: str) -> Replicas:
    """Time for `count` fresh replicas to confirm `total` tenants, and their writes."""
    print(f"bench: restart with {count} replica(s)", flush=True)
    op.stop()
    op = Replicas(config, tmp, count)
    t0 = time.monotonic()
    op.start()
    wait("restart confirmation", lambda: op.total("tenant_operator_reconcile_duration_seconds_count")
         >= total, max(300, total * 2), 0.5)
    results[f"{prefix}restart_confirm_s"] = round(time.monotonic() - t0, 2)
    results[f"{prefix}restart_api_writes"] = op.total("tenant_operator_api_writes_total")
    results[f"{prefix}restart_peak_rss_mib"] = op.peak_rss_mib()
    return op


def floor_run(config_path: Path, n: int, workers: int, prefix: str) -> tuple[float, dict[str, float]]:
    """The provisioning work with no operator: the reconcile core, called directly.
    Returns its wall time and the thread-seconds spent per part."""
    from tenant_operator import config as config_mod
    from tenant_operator.backends import build_backends
    from tenant_operator.kube.client import Kube
    from tenant_operator.reconciler import Reconciler
    cfg = config_mod.load(config_path)
    kube = Kube.from_environment(cfg.field_manager, pool_size=workers * 2)
    rec = Reconciler(cfg, kube, build_backends(cfg, kube))
    # Where the floor's time goes: Kubernetes writes (the reconciler's applies and
    # creates) and each backend's pass (its service calls plus the Secret reads).
    watch = Stopwatch()
    for method in ("apply", "create"):
        setattr(kube, method, watch.wrap("kubernetes_writes", getattr(kube, method)))
    for backend in rec.backends:
        backend.sync = watch.wrap(backend.component, backend.sync)
    names = [f"{prefix}-{i:04d}" for i in range(n)]
    custom = kubernetes.client.CustomObjectsApi()
    started = time.monotonic()

    def one(name: str) -> None:
        # A real Tenant (no operator runs, so it gets no finalizer): the reconciler
        # records the tenant's placement in its status before it touches a backend.
        obj = custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body(name, floor=True))
        rec.reconcile(obj, {}, placed={})
    with ThreadPoolExecutor(workers) as pool:
        for fut in [pool.submit(one, n_) for n_ in names]:
            fut.result()
    elapsed = time.monotonic() - started
    breakdown = {k: round(v, 2) for k, v in sorted(watch.spent.items())}
    breakdown["total_thread_s"] = round(elapsed * workers, 2)
    # Clean up what the floor created, through the operator's own purge code path.
    from tenant_operator import naming, spec

    def purge(name: str) -> None:
        obj = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        t = spec.parse(obj, cfg)
        for b in rec.backends:
            b.revoke(t)
        for b in rec.backends:
            b.purge(t)
        kube.delete("Namespace", naming.namespace(name, cfg.namespace_prefix))
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(purge, names))
    return elapsed, breakdown


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    n = int(os.environ.get("BENCH_N", "100"))
    lat_n = int(os.environ.get("BENCH_LATENCY_N", "20"))
    idle_s = float(os.environ.get("BENCH_IDLE_SECONDS", "300"))
    workers = int(os.environ.get("BENCH_WORKERS", "8"))
    replicas = int(os.environ.get("BENCH_REPLICAS", "1"))
    # Listing every bench Tenant is work for the API server and this process on
    # the same cores as the operator: poll less often the more there are.
    poll = max(1.0, n / 200)

    kubernetes.config.load_kube_config()
    custom = kubernetes.client.CustomObjectsApi()
    subprocess.run(["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/tenant.yaml")],
                   check=True, capture_output=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    cfg = yaml.safe_load(Path(args.config).read_text())
    # Drift checks and backend resyncs at the operator's defaults (60 s, 6 h).
    cfg.update({"workers": workers, "deletionPollInterval": "5s"})
    # New tenants spread over every configured server of a backend (weight 1 each).
    for backend in ("mysql", "rabbitmq", "objectStorage"):
        for server in ((cfg.get(backend) or {}).get("servers") or {}).values():
            server["weight"] = 1
    if replicas > 1:
        # As the chart runs them: the replicas share the tenants through shard Leases.
        cfg["sharding"] = {"shards": 16, "name": f"bench-{uuid.uuid4().hex[:6]}", "namespace": "default"}
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    results = Results(n=n, latency_n=lat_n, workers=workers, replicas=replicas, idle_seconds=idle_s)
    # Floor first, on backends as empty as the operator run will find them.
    # BENCH_SKIP_FLOOR=1 leaves it out (it takes as long as the throughput run).
    skip_floor = os.environ.get("BENCH_SKIP_FLOOR") == "1"
    if not skip_floor:
        print(f"bench: floor, {n} tenants without the operator", flush=True)
        floor_s, breakdown = floor_run(config_path, n, workers, "bf")
        results["floor_all_done_s"] = round(floor_s, 2)
        results["floor_thread_seconds"] = breakdown
    # The operator starts on a settled cluster: not amid the namespace controller
    # deleting the floor's thousands of objects (their events would be measured too).
    core, floor_ns = kubernetes.client.CoreV1Api(), f"{cfg.get('namespacePrefix', 'tenant-')}bf-"
    wait("floor namespaces gone", lambda: not [ns for ns in core.list_namespace().items
                                               if ns.metadata.name.startswith(floor_ns)], max(300, n), 2.0)
    print(f"bench: operator, {lat_n} tenants one at a time then {n} at once", flush=True)
    op = Replicas(config_path, tmp, replicas).start()
    if replicas > 1:
        wait("every shard held", lambda: op.total("tenant_operator_shards_owned") == 16, 120, 0.5)
    try:
        # Latency, one tenant at a time.
        latencies = []
        for i in range(lat_n):
            name = f"bl-{i:04d}"
            t0 = time.monotonic()
            custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body(name))
            wait(f"{name} Ready", lambda nm=name: nm in ready_names(custom), 120, 0.05)
            latencies.append(time.monotonic() - t0)
        results["latency_p50_s"] = round(statistics.median(latencies), 3)
        results["latency_p95_s"] = round(pct(latencies, 95), 3)

        # Throughput, N at once.
        names = [f"bt-{i:04d}" for i in range(n)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda nm: custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body(nm)), names))
        wait(f"{n} tenants Ready", lambda: len(ready_names(custom) & set(names)) == n, max(300, n * 3), poll)
        elapsed = time.monotonic() - t0
        results["throughput_all_ready_s"] = round(elapsed, 2)
        results["throughput_tenants_per_s"] = round(n / elapsed, 2)
        results["peak_rss_mib"] = op.peak_rss_mib()
        if not skip_floor:
            results["operator_over_floor"] = round(elapsed / results["floor_all_done_s"], 2)

        measure_idle(results, op, custom, idle_s, "")
        results["placement"] = placement(custom)
        total = n + lat_n
        op = measure_restart(results, op, config_path, tmp, replicas, total, "")
        then = int(os.environ.get("BENCH_THEN_REPLICAS", "0"))
        if then:
            # The same tenants with another number of replicas: restart, memory and idle side by side.
            op.stop()
            cfg2 = dict(cfg, sharding={"shards": 16, "name": f"bench-{uuid.uuid4().hex[:6]}", "namespace": "default"})
            config2 = tmp / f"config-{then}.yaml"
            config2.write_text(yaml.safe_dump(cfg2))
            prefix = f"replicas_{then}_"
            results[f"{prefix}replicas"] = then
            op = measure_restart(results, op, config2, tmp, then, total, prefix)
            measure_idle(results, op, custom, idle_s, prefix)
    finally:
        keep = os.environ.get("BENCH_PURGE") == "0"
        print("bench: leaving the bench tenants (BENCH_PURGE=0)" if keep else "bench: purging the bench tenants",
              flush=True)
        t0 = time.monotonic()
        try:
            if not keep:
                purge_all(custom)
                wait("bench tenants purged", lambda: not bench_tenants(custom), max(300, n * 3), poll)
                results["purge_all_s"] = round(time.monotonic() - t0, 2)
        finally:
            print(f"bench: operator logs in {tmp}", flush=True)
            op.stop()

    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v}")
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
