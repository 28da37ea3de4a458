"""Fixtures for integration tests against the devenv services (`make devenv-up`).

The operator runs as a real subprocess against the real API server; tests talk
to the cluster with the `kubernetes` client, and wait on conditions with a
timeout (never fixed sleeps)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
DEVENV = Path(os.environ.get("DEVENV_DIR", ROOT / ".devenv"))
GROUP, VERSION, PLURAL = "tenancy.dev", "v1alpha1", "tenants"


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.25, what="condition"):
    """Poll `predicate` until it returns a truthy value; fail with `what` (a string,
    or a callable that describes the last state) after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except ApiException as exc:
            last = exc
            if exc.status not in (404, 409):
                raise
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what} (last: {last!r})")


@pytest.fixture(scope="session")
def kube_config():
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("devenv is not up (source .devenv/env)")
    kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


@pytest.fixture(scope="session")
def core(kube_config):
    return kubernetes.client.CoreV1Api(kube_config)


@pytest.fixture(scope="session")
def custom(kube_config):
    return kubernetes.client.CustomObjectsApi(kube_config)


@pytest.fixture(scope="session")
def crd(kube_config):
    subprocess.run(["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True)
    ext = kubernetes.client.ApiextensionsV1Api(kube_config)

    def established():
        return all(any(c.type == "Established" and c.status == "True"
                       for c in ext.read_custom_resource_definition(name).status.conditions or [])
                   for name in ("tenants.tenancy.dev", "tenantbackups.tenancy.dev", "tenantrestores.tenancy.dev"))
    wait_for(established, 30, what="CRDs established")
    return True


BACKUPS_RETENTION_DAYS = 7
ARCHIVE_RETENTION_DAYS = 400


def operator_config(tmp_path_factory, **overrides) -> Path:
    base = yaml.safe_load((DEVENV / "operator-config.yaml").read_text())
    base.update({"driftInterval": "5s", "deletionPollInterval": "1s", "workers": 8, "finalBackupRetryInterval": "5s",
                 "backendResyncInterval": "30s", "backupImage": "tenant-operator:test",
                 "backupsBucketRetentionDays": BACKUPS_RETENTION_DAYS,
                 "archiveRetentionDays": ARCHIVE_RETENTION_DAYS})
    base.update(overrides)
    path = tmp_path_factory.mktemp("operator") / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


class Operator:
    """The operator as a subprocess, with its metrics endpoint for assertions."""

    def __init__(self, config: Path, log: Path, metrics_port: int):
        self.config, self.log, self.metrics_port = config, log, metrics_port
        self.proc: subprocess.Popen | None = None

    def start(self):
        # Fresh ports on every start: a port found free earlier (or its neighbour)
        # may have been taken since, e.g. as the local end of an outgoing connection.
        self.metrics_port, self.liveness_port = free_port(), free_port()
        self.log_handle = open(self.log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tenant_operator", "run", "--config", str(self.config),
             "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
             "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
            stdout=self.log_handle, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: self.metric("tenant_operator_api_writes_total") is not None, 60,
                 what="operator metrics endpoint")
        return self

    def stop(self, kill: bool = False):
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def metric(self, name: str, labels: str = "") -> float | None:
        import urllib.request
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.eE+-]+)$", re.M)
        m = pattern.search(text)
        return float(m.group(1)) if m else None


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def operator(crd, tmp_path_factory):
    config = operator_config(tmp_path_factory)
    log = tmp_path_factory.mktemp("logs") / "operator.log"
    port = free_port()
    op = Operator(config, log, port).start()
    yield op
    op.stop()
    print(f"operator log: {log}")


def unique(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tenant_body(name: str, **spec) -> dict:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"tier": "standard", "deletion": {"gracePeriod": "0s"}}}
    body["spec"].update(spec)
    return body


class Tenants:
    def __init__(self, custom):
        self.custom = custom
        self.created: list[str] = []

    def create(self, name: str, **spec) -> str:
        self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, tenant_body(name, **spec))
        self.created.append(name)
        return name

    def get(self, name: str) -> dict:
        return self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)

    def patch(self, name: str, patch: dict) -> dict:
        return self.custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch)

    def condition(self, name: str, ctype: str) -> dict | None:
        for c in (self.get(name).get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return c
        return None

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict:
        seen: dict = {}

        def check():
            t = self.get(name)
            st = seen["status"] = t.get("status") or {}
            return t if st.get("phase") == phase and st.get("observedGeneration") == t["metadata"]["generation"] \
                else None
        # On a timeout the message carries the last status: which condition held it back.
        return wait_for(check, timeout, what=lambda: f"tenant {name} phase {phase} (last status: {seen.get('status')})")

    def delete(self, name: str, **kwargs):
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name, **kwargs)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def gone(self, name: str) -> bool:
        try:
            self.get(name)
            return False
        except ApiException as exc:
            return exc.status == 404


def remove_bucket(name: str) -> None:
    """Delete a bucket with every object version in it, with the admin credentials."""
    from urllib.parse import urlparse

    from minio import Minio
    from minio.deleteobjects import DeleteObject
    url = urlparse(os.environ["MINIO_ENDPOINT"])
    s3 = Minio(url.netloc, access_key=os.environ["MINIO_ACCESS_KEY"], secret_key=os.environ["MINIO_SECRET_KEY"],
               secure=url.scheme == "https")
    if not s3.bucket_exists(name):
        return
    objects = [DeleteObject(o.object_name, o.version_id)
               for o in s3.list_objects(name, recursive=True, include_version=True)]
    for err in s3.remove_objects(name, objects):
        raise AssertionError(f"cannot remove {err.name} from {name}: {err}")
    s3.remove_bucket(name)


@pytest.fixture
def tenants(custom, operator):
    t = Tenants(custom)
    yield t
    for name in t.created:
        try:
            # Test clean-up only: a test that needs the final backup checks it itself.
            t.patch(name, {"metadata": {"annotations": {"tenancy.dev/purge-now": "true",
                                                        "tenancy.dev/skip-final-backup": "true"}}})
        except ApiException:
            pass
        t.delete(name)
    for name in t.created:
        wait_for(lambda n=name: t.gone(n), 120, what=f"tenant {name} to be purged")
    # A purge keeps `<tenant>-backups` by design (platform retention); tests clean it up.
    if os.environ.get("MINIO_ENDPOINT"):
        for name in t.created:
            remove_bucket(f"{name}-backups")
