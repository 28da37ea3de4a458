"""Packaging: the Dockerfile, the kustomize base (manifests/), the Helm chart
(charts/tenant-operator/) and the examples, checked against the code.

No cluster needed. The Dockerfile lint needs hadolint and the chart checks
need helm (both installed by devenv/install-tools.sh); those tests are
skipped when the tool is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tenant_operator import GROUP, config, defaults, naming, permissions, render, spec
from tenant_operator.kube.client import KINDS, OWNED
from tenant_operator.policy import TenantPolicy

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "tenant.yaml"
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "tenant-operator"
EXAMPLES = ROOT / "examples"
DOCKERFILE = ROOT / "Dockerfile"
SYNC_HINT = "copy it: cp crds/tenant.yaml manifests/crd.yaml charts/tenant-operator/crds/tenant.yaml"
# Each CRD and its copies in the kustomize base and the chart.
CRD_COPIES = {"tenant.yaml": "crd.yaml", "tenantbackup.yaml": "crd-tenantbackup.yaml",
              "tenantrestore.yaml": "crd-tenantrestore.yaml"}

CONFIG_PATH = "/etc/tenant-operator/config.yaml"
UID = 10001

# Permissions the ClusterRole may never hold.
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


def tool(name: str) -> str | None:
    """A tool on PATH, or the one devenv/install-tools.sh linked into .devenv/bin."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(os.environ.get("DEVENV_DIR", ROOT / ".devenv")) / "bin" / name
    return str(local) if os.access(local, os.X_OK) else None


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def rule_map(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, merged over the rules."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert not rule.get("resourceNames"), "the operator's rules are not name-restricted"
        assert not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def helm_template(*args: str) -> list[dict]:
    helm = tool("helm")
    if not helm:
        pytest.skip("helm is not installed (bash devenv/install-tools.sh)")
    out = subprocess.run([helm, "template", "tenant-operator", str(CHART), "--namespace", "tenant-operator",
                          *args], check=True, capture_output=True, text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


# --- what the code touches ---------------------------------------------------------------

SOURCE = ROOT / "operator" / "tenant_operator"
# Every call through the Kube client (kube/client.py): the method, and the kind when it is a literal.
KUBE_CALL = re.compile(r"\bkube\.(\w+)\(\s*(?:\"(\w+)\")?")
# Methods -> the verb the API server authorizes (patch_status: `patch` on <plural>/status).
METHOD_VERBS = {"get": "get", "list": "list", "create": "create", "delete": "delete", "apply": "patch",
                "patch_status": "patch", "replace": "update", "list_page": "list", "watch": "watch"}
# Methods of the client that send nothing to the API server.
LOCAL_METHODS = {"check_owner", "guarded"}
# The calls whose kind is not a literal; what they reach is derived from the rendered objects below.
DYNAMIC_CALLS = {("reconciler.py", "apply"), ("reconciler.py", "create"), ("reconciler.py", "delete"),
                 ("shards.py", "create"), ("shards.py", "replace"),
                 ("watchcache.py", "list_page"), ("watchcache.py", "watch"),
                 ("controller.py", "get"), ("controller.py", "patch_status"), ("controller.py", "create")}


def resource(kind: str) -> tuple[str, str]:
    k = KINDS[kind]
    return (k.api_version.split("/")[0] if "/" in k.api_version else "", k.plural)


def rendered_objects() -> list[dict]:
    """Every kind of object the reconciler applies: the full example tenant's
    objects, its backup CronJobs and ServiceAccount, each backend's Secret."""
    from tenant_operator.backends.mysql.component import MySQLComponent
    from tenant_operator.backends.objectstore.component import ObjectStorageComponent
    from tenant_operator.backends.rabbitmq.component import RabbitMQComponent
    from tenant_operator.render import backup
    cfg = config.from_dict({"mysql": {"servers": {"main": {"host": "10.0.0.1"}}},
                            "objectStorage": {"endpoint": "http://10.0.0.2:9000"}})
    t = spec.parse(yaml.safe_load((EXAMPLES / "tenant-premium.yaml").read_text()), cfg)
    secrets = [render.secret(t, f"{c.component}-x", c.component, {})
               for c in (MySQLComponent, ObjectStorageComponent, RabbitMQComponent)]
    return [*render.render_tenant(t, cfg), *backup.cronjobs(t, cfg), *secrets]


def code_permissions() -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, from what the code does: its Kube calls,
    the objects it applies (patch + create) and prunes (delete), the kinds it
    watches through kopf (list + watch)."""
    need: dict[tuple[str, str], set[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if path.parent.name == "kube" and path.name == "client.py":
            continue
        for method, kind in KUBE_CALL.findall(path.read_text()):
            if method in LOCAL_METHODS:
                continue
            assert method in METHOD_VERBS, f"{path.name}: kube.{method}() is new to this test: map it to its verb"
            if not kind:
                assert (path.name, method) in DYNAMIC_CALLS, \
                    f"{path.name}: kube.{method}() with a kind this test cannot see: extend the derivation"
                continue
            group, plural = resource(kind)
            plural += "/status" if method == "patch_status" else ""
            need.setdefault((group, plural), set()).add(METHOD_VERBS[method])
    from tenant_operator.reconciler import PRUNABLE
    for obj in rendered_objects():
        verbs = need.setdefault(resource(obj["kind"]), set())
        verbs |= {"patch", "create"}          # server-side apply; the namespace is created with POST
        if obj["metadata"]["labels"][naming.LABEL_COMPONENT] in PRUNABLE:
            verbs.add("delete")
    # The watch cache lists and watches every kind of runtime.watched_kinds().
    from tenant_operator.runtime import watched_kinds
    for watched in watched_kinds("tenant-operator"):
        need.setdefault(resource(watched.kind), set()).update({"list", "watch"})
    # operations/controller.py reads each request and writes its status, and creates its Jobs.
    for kind in ("TenantBackup", "TenantRestore"):
        group, plural = resource(kind)
        need.setdefault((group, plural), set()).add("get")
        need.setdefault((group, plural + "/status"), set()).add("patch")
    for job in request_jobs():
        need.setdefault(resource(job["kind"]), set()).add("create")
    # shards.py writes its Leases through create (a missing one) and replace (renew, take, give back).
    need.setdefault(resource("Lease"), set()).update({"create", "update"})
    return need


def tenant_admin_rules() -> dict[tuple[str, str], set[str]]:
    """The rules of the tenant-admin Role the operator creates: RBAC lets it
    create that Role only if it holds every permission the Role grants."""
    cfg = config.from_dict({})
    tenant = spec.parse(yaml.safe_load((EXAMPLES / "tenant-premium.yaml").read_text()), cfg)
    roles = [o for o in render.render_tenant(tenant, cfg) if o["kind"] in ("Role", "ClusterRole")]
    assert roles, "the rendered tenant has no Role: update this test"
    return rule_map([r for role in roles for r in role["rules"]])


def test_permission_table_is_what_the_code_uses():
    """permissions.CODE holds exactly the verbs the code's calls need: none
    missing, none left over once a call is gone."""
    table = permissions.merged(permissions.CODE, permissions.LEASES)
    used = code_permissions()
    for key in sorted(set(table) | set(used)):
        assert table.get(key, set()) == used.get(key, set()), \
            f"{key}: permissions.CODE lists {sorted(table.get(key, []))}, the code uses {sorted(used.get(key, []))}"
    assert all(reason for verbs in permissions.CODE.values() for reason in verbs.values())


def test_kopf_sends_no_put_and_posts_core_events():
    """What permissions.KOPF rests on: kopf's API client sends GET, POST, PATCH
    and DELETE only (never PUT: no `update`), it posts core v1 Events, and it
    watches CRDs."""
    import inspect

    from kopf._cogs.clients import api
    from kopf._cogs.structs import references
    methods = set(re.findall(r"method=['\"](\w+)['\"]", inspect.getsource(api)))
    assert methods and methods <= {"get", "post", "patch", "delete"}, methods
    assert (references.EVENTS.group, references.EVENTS.version, references.EVENTS.any_name) == ("", "v1", "events")
    assert (references.CRDS.group, references.CRDS.any_name) == ("apiextensions.k8s.io", "customresourcedefinitions")
    assert permissions.KOPF[("", "events")].keys() == {"create"}


def request_jobs() -> list[dict]:
    """The Jobs the operator creates: a TenantBackup's and a TenantRestore's."""
    from tenant_operator.operations import jobs, model
    cfg = config.from_dict({})
    t = spec.parse(yaml.safe_load((EXAMPLES / "tenant-premium.yaml").read_text()), cfg)
    service = t.databases[0]
    return [*jobs.backup_jobs(model.BackupRequest("b", t.namespace, "u1", (service,)), t, cfg),
            jobs.restore_job(model.RestoreRequest("r", t.namespace, "u2", service, "", ""),
                             f"mysql/{service}/20260101T000000Z.sql.gz", t, cfg)]


def test_the_operator_creates_jobs_only_for_requests():
    # Scheduled backup Jobs come from the CronJob controller; the operator only creates the
    # Jobs of TenantBackups and TenantRestores, each owned by its request (it goes with it).
    assert not KINDS["Job"].owned
    assert not any(o["kind"] == "Job" for o in rendered_objects())
    for job in request_jobs():
        (owner,) = job["metadata"]["ownerReferences"]
        assert owner["kind"] in ("TenantBackup", "TenantRestore") and owner["controller"] is True
    verbs = permissions.merged(permissions.CODE, permissions.KOPF)[("batch", "jobs")]
    assert "create" in verbs and not verbs & {"patch", "update", "delete"}


# --- CRD copies --------------------------------------------------------------------------

@pytest.mark.parametrize("source,copy", [(name, place / copy_name)
                                         for name, manifest in CRD_COPIES.items()
                                         for place, copy_name in ((MANIFESTS, manifest), (CHART / "crds", name))],
                         ids=lambda v: str(v).rsplit("/", 2)[-2] + "/" + str(v).rsplit("/", 1)[-1]
                         if "/" in str(v) else v)
def test_crd_copy_is_identical(source: str, copy: Path):
    assert copy.read_bytes() == (ROOT / "crds" / source).read_bytes(), \
        f"{copy.relative_to(ROOT)} differs from crds/{source}; copy it"


def test_crds_are_the_served_kinds():
    crds = {yaml.safe_load((ROOT / "crds" / name).read_text())["spec"]["names"]["kind"] for name in CRD_COPIES}
    assert crds == {"Tenant", "TenantBackup", "TenantRestore"}
    assert {p.name for p in (ROOT / "crds").glob("*.yaml")} == set(CRD_COPIES)


def test_kustomization_lists_the_crd_copy_and_every_file():
    kust = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kust["namespace"] == "tenant-operator"
    assert set(CRD_COPIES.values()) <= set(kust["resources"])
    for res in kust["resources"]:
        assert (MANIFESTS / res).is_file(), res
        assert not res.startswith(".."), "kustomize refuses files outside the base by default"
    listed = set(kust["resources"]) | {"kustomization.yaml"}
    assert {p.name for p in MANIFESTS.glob("*.yaml")} == listed, "a manifest file is not in kustomization.yaml"


# --- RBAC --------------------------------------------------------------------------------

def manifests_clusterrole() -> dict:
    return yaml.safe_load((MANIFESTS / "clusterrole.yaml").read_text())


def check_clusterrole(rules: list[dict]) -> None:
    granted = rule_map(rules)
    admin = tenant_admin_rules()
    used = permissions.merged(permissions.CODE, permissions.KOPF)

    for verbs in granted.values():
        assert not verbs & FORBIDDEN_VERBS, verbs
    assert all("*" not in g and "*" not in r for g, r in granted)

    # Everything the code and kopf use, with the verbs they use.
    for key, verbs in used.items():
        missing = verbs - granted.get(key, set())
        assert not missing, f"the ClusterRole lacks {sorted(missing)} on {key}, which the operator uses"
    # Everything the tenant-admin Role grants (RBAC escalation prevention).
    for key, verbs in admin.items():
        missing = verbs - granted.get(key, set())
        assert not missing, f"the tenant-admin Role grants {sorted(missing)} on {key}: the ClusterRole must too"
    # And nothing else: no verb on a resource that neither the code, kopf nor the tenant-admin Role needs.
    for key, verbs in granted.items():
        extra = verbs - used.get(key, set()) - admin.get(key, set())
        assert not extra, (f"the ClusterRole grants {sorted(extra)} on {key}, which neither the operator "
                           "(permissions.py) nor the tenant-admin Role needs")
    assert resource("Lease") not in granted, "Leases are granted in the operator's namespace only (a Role)"


def test_clusterrole_matches_code():
    role = manifests_clusterrole()
    assert role["kind"] == "ClusterRole"
    check_clusterrole(role["rules"])


def test_owned_kinds_are_what_the_operator_renders():
    # One table: every kind a tenant's rendering produces is watched, and only those and the Tenant exist.
    cfg = config.from_dict({})
    premium = spec.parse(yaml.safe_load((EXAMPLES / "tenant-premium.yaml").read_text()), cfg)
    rendered = {o["kind"] for o in render.render_tenant(premium, cfg)}
    owned = {k.kind for k in KINDS.values() if k.owned}
    assert rendered <= owned
    assert set(KINDS) - owned == {"Tenant", "Lease", "Job", "TenantBackup", "TenantRestore"}
    assert {p for _g, _v, p in OWNED} == {k.plural for k in KINDS.values() if k.owned}


def test_clusterrole_check_refuses_an_unused_verb():
    """The check above fails on a grant nobody needs (here Jobs patch and delete:
    the operator only creates the Jobs of requests, which go with them)."""
    rules = manifests_clusterrole()["rules"] + [{"apiGroups": ["batch"], "resources": ["jobs"],
                                                 "verbs": ["create", "patch", "delete"]}]
    with pytest.raises(AssertionError, match=r"grants \['delete', 'patch'\] on \('batch', 'jobs'\)"):
        check_clusterrole(rules)
    without_events = [r for r in manifests_clusterrole()["rules"] if r["resources"] != ["events"]]
    with pytest.raises(AssertionError, match="lacks"):
        check_clusterrole(without_events)


def test_clusterrolebinding_binds_the_service_account():
    binding = yaml.safe_load((MANIFESTS / "clusterrolebinding.yaml").read_text())
    sa = yaml.safe_load((MANIFESTS / "serviceaccount.yaml").read_text())
    deploy = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": manifests_clusterrole()["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "tenant-operator"}]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


@pytest.mark.parametrize("replicas", [1, 3])
def test_chart_clusterrole_matches_code(replicas: int):
    docs = helm_template("--set", f"replicaCount={replicas}")
    role = one(docs, "ClusterRole")
    check_clusterrole(role["rules"])
    assert role["rules"] == manifests_clusterrole()["rules"], "chart and manifests ClusterRoles differ"


def check_lease_role(docs: list[dict], namespace: str) -> None:
    """The Lease permissions: exactly LEASES, in the operator's namespace, bound to its ServiceAccount."""
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert rule_map(role["rules"]) == permissions.merged(permissions.LEASES)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    sa = one(docs, "ServiceAccount") if by_kind(docs, "ServiceAccount") else None
    if sa is not None:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": namespace}]


def test_chart_lease_role_and_sharding_config():
    docs = helm_template("--set", "replicaCount=2")
    check_lease_role(docs, "tenant-operator")
    cfg_text = yaml.safe_load(one(docs, "Secret")["stringData"]["config.yaml"])
    assert cfg_text["sharding"] == {"shards": 16, "name": "tenant-operator", "namespace": "tenant-operator",
                                    "leaseDuration": "15s", "renewInterval": "5s"}
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    # The older value name still counts.
    assert one(helm_template("--set", "replicas=3"), "Deployment")["spec"]["replicas"] == 3


def test_manifests_lease_role():
    check_lease_role(load_all(MANIFESTS / "role.yaml") + [yaml.safe_load((MANIFESTS / "serviceaccount.yaml")
                                                                          .read_text())], "tenant-operator")


# --- Deployment --------------------------------------------------------------------------

def dockerfile_cmd() -> list[str]:
    import json
    text = DOCKERFILE.read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return entry + cmd


def check_deployment(deploy: dict, replicas: int = 1) -> None:
    spec_ = deploy["spec"]
    assert spec_["replicas"] == replicas
    # Replicas share the tenants by shard Leases, one holder each: rolling is safe.
    assert spec_["strategy"]["type"] == "RollingUpdate"
    pod = spec_["template"]["spec"]
    assert set(spec_["selector"]["matchLabels"].items()) <= set(spec_["template"]["metadata"]["labels"].items())

    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == UID
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}

    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged", False) is False

    res = container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]

    # Arguments: the config file, the liveness endpoint the probes use.
    words = " ".join(container.get("command", []) + container.get("args", [])).split()
    assert f"--config={CONFIG_PATH}" in words
    assert dockerfile_cmd()[-1] == CONFIG_PATH
    (liveness,) = [w.split("=", 1)[1] for w in words if w.startswith("--liveness=")]
    m = re.fullmatch(r"http://0\.0\.0\.0:(\d+)(/\S*)", liveness)
    assert m, liveness
    port, path = int(m.group(1)), m.group(2)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("health", port), probe
    metrics = [w for w in words if w.startswith("--metrics-port=")]
    if metrics:
        assert ports["metrics"] == int(metrics[0].split("=")[1])
    assert not any(w.startswith("--peering") for w in words), "sharding replaces kopf peering"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    # Config from a Secret, /tmp writable (HOME) on a read-only root.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg_mount = mounts[str(Path(CONFIG_PATH).parent)]
    assert cfg_mount["readOnly"] is True
    assert "secret" in volumes[cfg_mount["name"]]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_manifests_deployment_is_hardened():
    check_deployment(yaml.safe_load((MANIFESTS / "deployment.yaml").read_text()))


def test_manifests_service_targets_the_metrics_port():
    svc = yaml.safe_load((MANIFESTS / "service.yaml").read_text())
    deploy = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    assert set(svc["spec"]["selector"].items()) <= set(deploy["spec"]["template"]["metadata"]["labels"].items())
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_manifests_config_is_valid_with_the_credentials(monkeypatch):
    """The example config parses with the operator's own loader once the
    credentials Secret's keys are in the environment (envFrom), and holds no
    literal password."""
    cfg_secret = yaml.safe_load((MANIFESTS / "config-secret.yaml").read_text())
    creds = yaml.safe_load((MANIFESTS / "credentials-secret.yaml").read_text())
    deploy = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": creds["metadata"]["name"]}} in container["envFrom"]
    vol = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert vol["secret"]["secretName"] == cfg_secret["metadata"]["name"]

    text = cfg_secret["stringData"]["config.yaml"]
    raw = yaml.safe_load(text)
    for server in raw["mysql"]["servers"].values():
        assert re.fullmatch(r"\$\{\w+\}", server["adminPassword"])
    assert re.fullmatch(r"\$\{\w+\}", raw["objectStorage"]["secretKey"])
    assert re.fullmatch(r"\$\{\w+\}", raw["rabbitmq"]["adminPassword"])
    refs = set(re.findall(r"\$\{(\w+)\}", text))
    assert refs == set(creds["stringData"]), "config references and credentials keys differ"

    for key, value in creds["stringData"].items():
        monkeypatch.setenv(key, f"{value}-{key.lower()}")
    cfg = config.from_dict(raw)
    assert cfg.mysql_server("main").admin_password == "change-me-mysql_main_admin_password"
    assert cfg.object_storage.backend == "minio" and cfg.rabbitmq.admin_user
    # In-cluster Service names: egress to their namespaces, nothing looked up.
    assert [cfg.mysql_server("main").egress.namespace, cfg.object_storage.egress.namespace,
            cfg.rabbitmq.egress.namespace] == ["databases", "storage", "messaging"]
    assert "policy" in raw and cfg.policy == TenantPolicy()     # shows the defaults


def test_chart_deployment_is_hardened():
    check_deployment(one(helm_template(), "Deployment"))
    check_deployment(one(helm_template("-f", str(CHART / "ci" / "full-values.yaml")), "Deployment"), replicas=3)


def test_chart_rabbitmq_servers_with_placement_weights(monkeypatch, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": {"rabbitmq": {"enabled": True, "default": "main", "servers": {
        "main": {"managementUrl": "http://10.1.0.5:15672", "amqpHost": "10.1.0.5", "existingSecret": "mq-admin"},
        "second-eu": {"managementUrl": "http://10.1.0.6:15672", "amqpHost": "10.1.0.6",
                      "existingSecret": "mq2-admin", "passwordKey": "pw", "weight": 2}}}}}))
    docs = helm_template("-f", str(values))
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    text = one(docs, "Secret")["stringData"]["config.yaml"]
    refs = set(re.findall(r"\$\{(\w+)\}", text))
    assert refs == {"RABBITMQ_MAIN_ADMIN_USER", "RABBITMQ_MAIN_ADMIN_PASSWORD",
                    "RABBITMQ_SECOND_EU_ADMIN_USER", "RABBITMQ_SECOND_EU_ADMIN_PASSWORD"}
    assert env["RABBITMQ_SECOND_EU_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mq2-admin", "key": "pw"}
    for ref in refs:
        monkeypatch.setenv(ref, f"value-of-{ref}")
    cfg = config.from_dict(yaml.safe_load(text))
    assert sorted(cfg.rabbitmq_servers) == ["main", "second-eu"] and cfg.rabbitmq_default == "main"
    assert cfg.rabbitmq_servers["second-eu"].admin_password == "value-of-RABBITMQ_SECOND_EU_ADMIN_PASSWORD"
    assert cfg.rabbitmq_servers["second-eu"].weight == 2


def test_chart_config_is_valid_and_credentials_come_from_secrets(monkeypatch):
    docs = helm_template("-f", str(CHART / "ci" / "full-values.yaml"))
    secret = one(docs, "Secret")
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    text = secret["stringData"]["config.yaml"]
    refs = set(re.findall(r"\$\{(\w+)\}", text))
    assert refs == {"MYSQL_MAIN_ADMIN_PASSWORD", "MYSQL_EU_WEST_ADMIN_PASSWORD", "OBJECT_STORAGE_ACCESS_KEY",
                    "OBJECT_STORAGE_SECRET_KEY", "RABBITMQ_ADMIN_USER", "RABBITMQ_ADMIN_PASSWORD"}
    for ref in refs:
        assert "secretKeyRef" in env[ref]["valueFrom"], ref
        monkeypatch.setenv(ref, f"value-of-{ref}")
    assert env["MYSQL_EU_WEST_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mysql-eu-admin", "key": "root-password"}
    cfg = config.from_dict(yaml.safe_load(text))
    assert cfg.mysql_default == "main"
    assert cfg.mysql_server("eu-west").admin_password == "value-of-MYSQL_EU_WEST_ADMIN_PASSWORD"
    assert cfg.mysql_server("eu-west").tenant_host == "mysql-eu.example.com"
    assert cfg.workers == 16 and cfg.default_grace_period == 168 * 3600
    assert cfg.defaults == defaults.SpecDefaults(
        tier="premium", pod_security="baseline", ingress_class_name="traefik", ingress_cluster_issuer="internal-ca",
        ingress_service="web", ingress_port=8080, backup_schedule="30 1 * * *", retention_daily=14,
        retention_weekly=8, retention_monthly=12, grace_period=168 * 3600)
    assert cfg.tiers["premium"]["quota"]["requests.cpu"] == "6"
    assert cfg.tiers["premium"]["quota"]["pods"] == "50"   # merged, not replaced
    assert [s.namespace or s.cidr for s in cfg.shared_services] == ["monitoring", "10.96.0.10/32"]
    assert cfg.rabbitmq.admin_user == "value-of-RABBITMQ_ADMIN_USER"
    assert cfg.object_storage.tenant_endpoint == "https://s3.example.com"
    # Backend egress: derived (a Service's namespace; the public endpoint resolved), or the values' override.
    assert cfg.cluster_domain == "cluster.local"
    assert cfg.mysql_server("main").egress.namespace == "databases"
    assert cfg.mysql_server("eu-west").egress.cidrs == ("203.0.113.0/28",)
    assert cfg.mysql_server("eu-west").egress.source == "mysql.servers.eu-west.egress"
    assert cfg.object_storage.egress.ports == (443,) and cfg.object_storage.egress.cidrs
    assert cfg.object_storage.egress.source == "objectStorage.publicEndpoint"
    assert (cfg.rabbitmq.egress.namespace, cfg.rabbitmq.egress.pod_selector, cfg.rabbitmq.egress.ports) == (
        "messaging", {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}, (5672,))
    assert cfg.policy.allowed_cluster_issuers == ("letsencrypt-prod", "internal-*")
    assert cfg.policy.allowed_pod_security == ("restricted", "baseline", "privileged")
    assert cfg.policy.subjects.allowed_kinds == ("User", "Group")
    assert cfg.policy.subjects.denied_names == TenantPolicy().subjects.denied_names    # chart default kept
    assert cfg.policy.max_quota == {"requests.cpu": "64", "limits.memory": "256Gi", "pods": "500"}
    assert cfg.policy.allowed_domain_suffixes == ("example.com", "tenants.example.net")
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    checksum = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)


def test_chart_values_set_each_spec_default_and_the_older_grace_key_still_wins():
    docs = helm_template("--set", "config.defaultGracePeriod=48h", "--set", "config.defaults.backup.retention.daily=7",
                         "--set", "config.defaults.ingress.className=haproxy",
                         "--set", "config.defaults.backup.drills.enabled=false")
    cfg = config.from_dict(yaml.safe_load(one(docs, "Secret")["stringData"]["config.yaml"]))
    assert cfg.default_grace_period == 48 * 3600
    assert (cfg.defaults.drills_enabled, cfg.defaults.drill_schedule) == (False, "30 4 * * 0")
    assert (cfg.defaults.retention_daily, cfg.defaults.retention_weekly) == (7, 12)
    assert cfg.defaults.ingress_class_name == "haproxy"


def test_chart_default_config_is_valid():
    docs = helm_template()
    cfg = config.from_dict(yaml.safe_load(one(docs, "Secret")["stringData"]["config.yaml"]))
    assert cfg.namespace_prefix == "tenant-" and cfg.backup_image.endswith(":0.1.0")
    assert cfg.policy == TenantPolicy()           # the chart's defaults are the operator's
    assert cfg.defaults == defaults.BUILT_IN      # so are its spec defaults, written out
    assert not by_kind(docs, "ServiceMonitor")


def test_chart_refuses_a_mysql_server_without_secret():
    helm = tool("helm")
    if not helm:
        pytest.skip("helm is not installed (bash devenv/install-tools.sh)")
    run = subprocess.run([helm, "template", "t", str(CHART), "--set", "config.mysql.servers.main.host=db"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "config.mysql.servers.main.existingSecret is required" in run.stderr


def test_chart_crds_and_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "tenant-operator"
    import tenant_operator
    assert chart["appVersion"] == tenant_operator.__version__
    assert {p.name for p in (CHART / "crds").iterdir()} == set(CRD_COPIES)


# --- Dockerfile --------------------------------------------------------------------------

def test_dockerfile_lint():
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed (bash devenv/install-tools.sh)")
    run = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_shape():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.M)
    assert len(stages) == 2 and stages[0][1] == "builder", stages
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert "pip wheel" in text and "--from=builder" in text
    assert re.search(r"apt-get install -y --no-install-recommends [^\n]*mariadb-client", text)
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert re.search(rf"^USER {UID}(:{UID})?$", text, re.M)
    assert "HOME=/tmp" in text and "PYTHONDONTWRITEBYTECODE=1" in text
    assert dockerfile_cmd() == ["tenant-operator", "run", "--config", CONFIG_PATH]


def test_dockerignore_keeps_the_context_small():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    assert "!pyproject.toml" in lines and "!operator/" in lines


# --- examples ----------------------------------------------------------------------------

TENANT_EXAMPLES = sorted(EXAMPLES.glob("tenant-*.yaml"))


def test_the_three_tier_examples_exist():
    assert {p.name for p in TENANT_EXAMPLES} >= {"tenant-standard.yaml", "tenant-premium.yaml",
                                                 "tenant-business.yaml"}


@pytest.mark.parametrize("path", TENANT_EXAMPLES, ids=lambda p: p.name)
def test_example_tenant_parses(path: Path):
    cfg = config.from_dict({})
    docs = load_all(path)
    assert docs and all(d["kind"] == "Tenant" and d["apiVersion"] == f"{GROUP}/v1alpha1" for d in docs)
    for doc in docs:
        tenant = spec.parse(doc, cfg)
        assert tenant.tier in path.name
        assert render.render_tenant(tenant, cfg)


def test_premium_example_is_the_full_example():
    doc = yaml.safe_load((EXAMPLES / "tenant-premium.yaml").read_text())
    t = spec.parse(doc, config.from_dict({}))
    assert t.tier == "premium"
    assert t.databases == ("auth", "products", "orders")
    assert t.object_storage.buckets == ("products", "sav") and t.object_storage.quota_gib == 150
    assert t.messaging.queues == ("auth", "orders")
    assert t.domains and t.billing.id and t.admins and t.ingress and t.ingress.enabled
    assert set(doc["spec"]) >= {"domains", "billing", "quota", "limits", "databases", "objectStorage",
                                "messaging", "ingress", "admins", "backup", "deletion"}


def test_argocd_examples():
    app = yaml.safe_load((EXAMPLES / "argocd" / "application.yaml").read_text())
    assert app["kind"] == "Application" and app["spec"]["source"]["path"] == "tenants"
    appset = yaml.safe_load((EXAMPLES / "argocd" / "applicationset.yaml").read_text())
    assert appset["kind"] == "ApplicationSet"
    (gen,) = appset["spec"]["generators"]
    assert gen["git"]["directories"] == [{"path": "tenants/*"}]
    assert appset["spec"]["template"]["spec"]["source"]["path"] == "{{ .path.path }}"
    cm = yaml.safe_load((EXAMPLES / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    lua = (EXAMPLES / "argocd" / "tenant-health.lua").read_text()
    assert cm["data"]["resource.customizations.health.tenancy.dev_Tenant"] == lua, \
        "argocd-cm-patch.yaml must inline tenant-health.lua unchanged"
