"""Packaging against the real local API server (`source .devenv/env`): the
kustomize base, the Helm chart and the example Tenants are accepted by a
server-side dry run, and the ClusterRole is enough for the operator to create
what it renders for a tenant (RBAC escalation checks included).

Real changes are kept to what a dry run cannot do without: the Tenant CRD is
(re-)applied, and the namespace `tenant-operator` plus the
objects of the RBAC test are created and removed again. helm parts are
skipped when helm is not installed (bash devenv/install-tools.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from tenant_operator import config, render, spec

from .conftest import wait_for as _wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tenant-operator"
DEVENV = Path(os.environ.get("DEVENV_DIR", ROOT / ".devenv"))
NAMESPACE = "tenant-operator"
EXAMPLES = sorted((ROOT / "examples").glob("tenant-*.yaml"))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="devenv is not up (source .devenv/env)"),
]


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    local = DEVENV / "bin" / name
    return str(local) if os.access(local, os.X_OK) else None


def run(*cmd: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def kubectl(*args: str, **kwargs) -> subprocess.CompletedProcess:
    exe = tool("kubectl")
    if not exe:
        pytest.skip("kubectl is not installed")
    return run(exe, *args, **kwargs)


@pytest.fixture(scope="module")
def helm() -> str:
    exe = tool("helm")
    if not exe:
        pytest.skip("helm is not installed (bash devenv/install-tools.sh)")
    return exe


def server_dry_run(manifest: str, *extra: str) -> list[str]:
    """Apply with a server-side dry run; every object must be accepted."""
    proc = kubectl("apply", "--dry-run=server", *extra, "-f", "-", input=manifest, check=False)
    assert proc.returncode == 0, f"server-side dry run rejected:\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    count = sum(1 for d in yaml.safe_load_all(manifest) if d)
    assert len(lines) == count and all("(server dry run)" in line for line in lines), proc.stdout
    return lines


def wait_for(predicate, timeout: float, what: str):
    _wait_for(predicate, timeout, 0.5, what)

def exists(kind: str, name: str, namespace: str = "") -> bool:
    args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
    if namespace:
        args += ["-n", namespace]
    return bool(kubectl(*args).stdout.strip())


def ensure_crd(path: Path, name: str, only_if_absent: bool = False) -> None:
    if not (only_if_absent and exists("crd", name)):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="module")
def cluster():
    ensure_crd(ROOT / "crds" / "tenant.yaml", "tenants.tenancy.dev")
    return True


def _phase(namespace: str) -> str:
    proc = kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "jsonpath={.status.phase}")
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def operator_namespace(cluster):
    """Namespaced objects cannot be dry-run into a namespace that does not
    exist: create it for real (and remove it afterwards if this test made it)."""
    if _phase(NAMESPACE) == "Terminating":
        wait_for(lambda: _phase(NAMESPACE) == "", 120, f"namespace {NAMESPACE} to finish terminating")
    created = False
    if not _phase(NAMESPACE):
        kubectl("create", "namespace", NAMESPACE)
        created = True
    yield NAMESPACE
    if created:
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s")


# --- kustomize base ------------------------------------------------------------------------

def test_kustomize_base_server_dry_run(operator_namespace):
    manifest = kubectl("kustomize", str(ROOT / "manifests")).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
    assert kinds == {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding", "Secret", "Deployment", "Service"}
    server_dry_run(manifest)


# --- Helm chart ----------------------------------------------------------------------------

@pytest.mark.parametrize("values", [[], ["-f", str(CHART / "ci" / "full-values.yaml")]], ids=["default", "full"])
def test_helm_lint(helm, values):
    proc = run(helm, "lint", str(CHART), "--strict", *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def helm_template(helm: str, *args: str) -> str:
    return run(helm, "template", "tenant-operator", str(CHART), "--namespace", NAMESPACE, *args).stdout


def test_helm_template_default_server_dry_run(helm, operator_namespace):
    manifest = helm_template(helm)
    kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Secret",
                     "Deployment", "Service"}
    server_dry_run(manifest)


def test_helm_template_full_server_dry_run(helm, operator_namespace):
    """Three replicas sharing the tenants, every integration configured, CRDs included."""
    args = ["-f", str(CHART / "ci" / "full-values.yaml"), "--include-crds"]
    if not exists("crd", "servicemonitors.monitoring.coreos.com"):
        args += ["--set", "metrics.serviceMonitor.enabled=false"]
    if not exists("crd", "prometheusrules.monitoring.coreos.com"):
        args += ["--set", "prometheusRule.enabled=false"]
    manifest = helm_template(helm, *args)
    kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
    assert {"CustomResourceDefinition", "Role", "RoleBinding", "Deployment"} <= kinds
    server_dry_run(manifest)


# --- example Tenants -----------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_tenant_server_dry_run(cluster, path: Path):
    server_dry_run(path.read_text())


def test_invalid_tenant_is_rejected_by_dry_run(cluster):
    # The dry run above does validate: a bad tier is refused by the CRD schema.
    doc = yaml.safe_load((ROOT / "examples" / "tenant-premium.yaml").read_text())
    doc["spec"]["tier"] = "platinum"
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0 and "spec.tier" in proc.stderr


# --- the ClusterRole is enough for what the operator creates -------------------------------

@pytest.fixture
def operator_identity(operator_namespace):
    """The manifests' ClusterRole bound to a throwaway ServiceAccount, for real."""
    suffix = uuid.uuid4().hex[:8]
    role = yaml.safe_load((ROOT / "manifests" / "clusterrole.yaml").read_text())
    name = f"tenant-operator-pkgtest-{suffix}"
    role["metadata"] = {"name": name}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NAMESPACE}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]}
    objects = [role, sa, binding]
    kubectl("create", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))
    user = f"system:serviceaccount:{NAMESPACE}:{name}"
    wait_for(lambda: kubectl("auth", "can-i", "patch", "networkpolicies.networking.k8s.io", "--as", user,
                             check=False).stdout.strip() == "yes", 30, "the ClusterRoleBinding to take effect")
    yield user, suffix
    kubectl("delete", "clusterrolebinding", name, "--ignore-not-found")
    kubectl("delete", "clusterrole", name, "--ignore-not-found")
    kubectl("delete", "serviceaccount", name, "-n", NAMESPACE, "--ignore-not-found")


def test_clusterrole_allows_applying_a_rendered_tenant(operator_identity):
    """Server-side apply (dry run) of everything the operator renders for the
    full example, as the operator's ServiceAccount: Role and RoleBinding
    creation pass RBAC's escalation checks only if the ClusterRole holds
    every permission the tenant-admin Role grants."""
    user, suffix = operator_identity
    cfg = config.from_dict({"namespacePrefix": f"pkg{suffix}-"})
    tenant = spec.parse(yaml.safe_load((ROOT / "examples" / "tenant-premium.yaml").read_text()), cfg)
    objects = render.render_tenant(tenant, cfg)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Role", "RoleBinding", "NetworkPolicy", "ResourceQuota", "LimitRange"} <= kinds
    namespace = next(o for o in objects if o["kind"] == "Namespace")["metadata"]["name"]
    assert namespace.startswith(f"pkg{suffix}-")
    # The tenant namespace must exist for its objects' dry run.
    kubectl("create", "namespace", namespace)
    try:
        as_operator = ("--server-side", "--field-manager=tenant-operator", "--as", user)
        # The Role for real (a RoleBinding's check needs the Role to exist):
        # created as the operator, so the escalation check applies to it.
        roles = [o for o in objects if o["kind"] == "Role"]
        proc = kubectl("apply", *as_operator, "-f", "-", input="\n---\n".join(json.dumps(o) for o in roles),
                       check=False)
        assert proc.returncode == 0, f"creating the tenant-admin Role as the operator failed:\n{proc.stderr}"
        rest = [o for o in objects if o["kind"] != "Role"]
        server_dry_run("\n---\n".join(json.dumps(o) for o in rest), *as_operator)
        for verb, resource in (("delete", "namespaces"), ("list", "secrets"), ("watch", "cronjobs.batch"),
                               ("patch", "tenants.tenancy.dev/status"), ("watch", "jobs.batch"),
                               ("create", "jobs.batch")):
            assert kubectl("auth", "can-i", verb, resource, "--as", user, check=False).stdout.strip() == "yes", \
                (verb, resource)
        for plural in ("tenantbackups", "tenantrestores"):
            assert kubectl("auth", "can-i", "patch", f"{plural}.tenancy.dev", "--subresource=status", "--as", user,
                           check=False).stdout.strip() == "yes", plural
            # The requests themselves are the platform engineers': the operator only writes their status.
            assert kubectl("auth", "can-i", "patch", f"{plural}.tenancy.dev", "--as", user,
                           check=False).stdout.strip() == "no", plural
        # Nothing the code does not use: it creates the Jobs of requests, never changes or deletes one.
        for verb, resource in (("create", "pods"), ("delete", "customresourcedefinitions"), ("get", "nodes"),
                               ("delete", "jobs.batch"), ("patch", "jobs.batch"),
                               ("create", "tenantbackups.tenancy.dev"),
                               ("escalate", "roles.rbac.authorization.k8s.io")):
            assert kubectl("auth", "can-i", verb, resource, "--as", user, check=False).stdout.strip() == "no", \
                (verb, resource)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
