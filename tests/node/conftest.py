"""End to end on the local platform's real node: the chart installs the locally
built image, tenants get real pods, NetworkPolicies are enforced.

`make e2e` brings the platform up, builds and imports the image and runs
these tests; they are skipped when the node is not running.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pymysql
import pytest
import yaml
from minio import Minio

ROOT = Path(__file__).resolve().parents[2]
DEVENV = Path(os.environ.get("DEVENV_DIR", ROOT / ".devenv"))
RELEASE = "tenant-operator"
OPERATOR_NS = "tenant-operator"
POD_GATEWAY = "10.244.0.1"   # the host as pods see it (devenv/node.sh)


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    return out


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def kubectl_json(*args: str) -> dict:
    return json.loads(kubectl(*args, "-o", "json"))


def wait_for(predicate, timeout: float = 120.0, interval: float = 1.0, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, subprocess.SubprocessError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def apply(manifest: dict | str) -> None:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text)


class Platform:
    """The services on the host (reached on 127.0.0.1) and the installed operator."""

    def __init__(self, state: dict[str, str], image: str):
        self.state = state
        self.image = image

    def mysql(self, user: str = "admin", password: str | None = None, database: str | None = None):
        return pymysql.connect(host="127.0.0.1", port=int(self.state["MYSQL_PORT"]), user=user,
                               password=password if password is not None else self.state["MYSQL_ADMIN_PASSWORD"],
                               database=database, connect_timeout=5, autocommit=True)

    def minio(self) -> Minio:
        return Minio(f"127.0.0.1:{self.state['MINIO_PORT']}", access_key="devenvadmin",
                     secret_key=self.state["MINIO_SECRET_KEY"], secure=False)

    def operator_pods(self) -> list[dict]:
        return kubectl_json("-n", OPERATOR_NS, "get", "pods", "-l",
                            "app.kubernetes.io/name=tenant-operator")["items"]

    def operator_logs(self) -> str:
        return kubectl("-n", OPERATOR_NS, "logs", "deploy/tenant-operator", "--tail=-1", check=False)


def chart_values(state: dict[str, str], image: str) -> dict:
    repo, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "logFormat": "plain",
        "config": {
            "defaultGracePeriod": "720h",
            "mysql": {"default": "main", "servers": {"main": {
                "host": POD_GATEWAY, "port": int(state["MYSQL_PORT"]), "adminUser": "admin",
                "existingSecret": "mysql-main-admin", "passwordKey": "password"}}},
            "objectStorage": {"enabled": True, "backend": "minio",
                              "endpoint": f"http://{POD_GATEWAY}:{state['MINIO_PORT']}",
                              "existingSecret": "object-storage-admin"},
            "rabbitmq": {"enabled": True, "managementUrl": f"http://{POD_GATEWAY}:{state['RABBIT_MGMT_PORT']}",
                         "amqpHost": POD_GATEWAY, "amqpPort": int(state["AMQP_PORT"]),
                         "existingSecret": "rabbitmq-admin"},
        },
    }


def admin_secrets(state: dict[str, str]) -> list[dict]:
    def secret(name: str, data: dict) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": OPERATOR_NS},
                "stringData": data}
    return [secret("mysql-main-admin", {"password": state["MYSQL_ADMIN_PASSWORD"]}),
            secret("object-storage-admin", {"accessKey": "devenvadmin", "secretKey": state["MINIO_SECRET_KEY"]}),
            secret("rabbitmq-admin", {"username": "admin", "password": state["RABBITMQ_ADMIN_PASSWORD"]})]


def node_ready() -> bool:
    try:
        node = kubectl_json("get", "node", "localhost")
    except (AssertionError, subprocess.SubprocessError):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


E2E_TENANTS = ("e2ea", "e2eb", "e2ec")


def purge_tenants(names) -> None:
    """Delete tenants at once (purge-now: no grace period) and wait until they are gone."""
    present = [n for n in names if kubectl("get", "tenant", n, "--ignore-not-found").strip()]
    for name in present:
        kubectl("annotate", "tenant", name, "tenancy.dev/purge-now=true", "--overwrite")
        kubectl("delete", "tenant", name, "--wait=false")
    for name in present:
        wait_for(lambda name=name: not kubectl("get", "tenant", name, "--ignore-not-found").strip(),
                 timeout=240, interval=2, what=f"tenant {name} purged")


@pytest.fixture(scope="session")
def platform():
    if not (DEVENV / "image.env").exists() or not node_ready():
        pytest.skip("needs the local node and the operator image: run `make e2e`")
    state = read_env(DEVENV / "state.env")
    image = read_env(DEVENV / "image.env")["OPERATOR_IMAGE"]
    kubectl("create", "namespace", OPERATOR_NS, check=False)
    for s in admin_secrets(state):
        apply(s)
    # helm installs a chart's CRDs only with the release's first install: apply the current ones.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    values = DEVENV / "e2e-values.yaml"
    values.write_text(yaml.safe_dump(chart_values(state, image)))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    helm = subprocess.run(["helm", "upgrade", "--install", RELEASE, str(ROOT / "charts/tenant-operator"),
                           "-n", OPERATOR_NS, "-f", str(values)], capture_output=True, text=True, timeout=120)
    assert helm.returncode == 0, helm.stderr
    platform = Platform(state, image)
    wait_for(lambda: deployment_available(platform, since), timeout=180,
             what="the operator Deployment to be Available")
    # Left by an interrupted run: the tests need fresh tenants.
    purge_tenants(E2E_TENANTS)
    yield platform
    # Leave the platform as found: no tenants of ours, no second operator for
    # the integration tests to compete with.
    purge_tenants(E2E_TENANTS)
    subprocess.run(["helm", "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "120s"],
                   capture_output=True, timeout=180)


def deployment_available(platform: Platform, since: str) -> bool:
    """Available, or fail at once with the logs when a pod started since `since` crash-loops."""
    for pod in platform.operator_pods():
        if pod["metadata"]["creationTimestamp"] < since:
            continue
        for cs in pod["status"].get("containerStatuses", []):
            if cs.get("restartCount", 0) >= 2:
                pytest.fail("operator pod restarts:\n" + platform.operator_logs()[-3000:])
    dep = kubectl_json("-n", OPERATOR_NS, "get", "deploy", RELEASE)
    return any(c["type"] == "Available" and c["status"] == "True" for c in dep["status"].get("conditions", []))


def wait_job(namespace: str, name: str, timeout: float = 180) -> None:
    """Wait for a Job to succeed; fail with its logs if it fails."""
    def done():
        status = kubectl_json("-n", namespace, "get", "job", name)["status"]
        if status.get("failed"):
            logs = kubectl("-n", namespace, "logs", f"job/{name}", check=False)
            pytest.fail(f"Job {namespace}/{name} failed: {logs}")
        return status.get("succeeded") == 1
    wait_for(done, timeout=timeout, what=f"Job {namespace}/{name}")


def tenant_ready(name: str) -> dict | None:
    t = kubectl_json("get", "tenant", name)
    ready = [c for c in t.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
    if ready and ready[0]["status"] == "True" and t["status"].get("observedGeneration") == t["metadata"]["generation"]:
        return t
    return None


def pod_spec(image: str, command: list[str], env_from: list[str] = ()) -> dict:
    """A pod that passes the tenant namespaces' restricted Pod Security level."""
    return {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
                "envFrom": [{"secretRef": {"name": s}} for s in env_from],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }


def run_pod(namespace: str, name: str, image: str, command: list[str], *, env_from: list[str] = (),
            labels: dict | None = None, timeout: float = 180) -> tuple[str, str]:
    """Run a restricted-profile pod to completion; return (phase, logs)."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
           "spec": pod_spec(image, command, env_from)}
    kubectl("-n", namespace, "delete", "pod", name, "--ignore-not-found", "--wait=true")
    apply(pod)

    def finished():
        phase = kubectl_json("-n", namespace, "get", "pod", name)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None
    phase = wait_for(finished, timeout=timeout, what=f"pod {namespace}/{name} to finish")
    return phase, kubectl("-n", namespace, "logs", name, check=False)
