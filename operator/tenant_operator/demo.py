"""`make demo`: the whole story on the local platform, in about a minute.

Installs the CRD, starts the operator, applies the premium example Tenant,
waits for Ready, shows what was provisioned (objects, Secret keys, backend
state), proves a tenant credential works, then deletes the Tenant with
`purge-now` and shows the ordered purge. `--keep` leaves the tenant in place."""

from __future__ import annotations

import argparse
import base64
import json

# Runs kubectl with list arguments, never a shell; kubectl comes from PATH on
# purpose (the devenv puts its own build first).
import subprocess  # nosec B404
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tenant-premium.yaml"


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout  # nosec B603


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def wait(what: str, predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


def tenant_json(name: str) -> dict | None:
    argv = ["kubectl", "get", "tenant", name, "-o", "json"]
    out = subprocess.run(argv, capture_output=True, text=True)  # nosec B603
    return json.loads(out.stdout) if out.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--keep", action="store_true", help="leave the demo tenant in place")
    args = parser.parse_args()

    step("Installing the Tenant CRD")
    print(sh("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")).strip())

    step("Starting the operator")
    log = open(ROOT / ".devenv" / "logs" / "demo-operator.log", "w")  # noqa: SIM115
    argv = [sys.executable, "-m", "tenant_operator", "run", "--config", args.config]
    op = subprocess.Popen(argv,  # nosec B603
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        body = yaml.safe_load(EXAMPLE.read_text())
        name = body["metadata"]["name"]
        # The demo purges right away at the end; keep the example's other settings.
        body["spec"].setdefault("deletion", {})["gracePeriod"] = "720h"
        step(f"Applying {EXAMPLE.relative_to(ROOT)} (tenant {name})")
        started = time.monotonic()
        argv = ["kubectl", "apply", "-f", "-"]
        subprocess.run(argv, input=yaml.safe_dump(body), text=True, check=True)  # nosec B603

        def ready():
            t = tenant_json(name)
            st = (t or {}).get("status") or {}
            return st.get("phase") == "Ready" and st.get("observedGeneration") == t["metadata"]["generation"]
        wait("the tenant to become Ready", ready)
        print(f"Ready after {time.monotonic() - started:.1f}s")
        print(sh("kubectl", "get", "tenants"))
        t = tenant_json(name)
        ns = t["status"]["namespace"]
        for c in t["status"]["conditions"]:
            print(f"  {c['type']:<20} {c['status']:<6} {c['reason']:<18} {c['message']}")

        step(f"Objects in namespace {ns}")
        print(sh("kubectl", "get", "networkpolicies,resourcequotas,limitranges,roles,rolebindings,ingresses,"
                 "secrets,cronjobs", "-n", ns))

        step("Credentials Secrets (keys only; values never printed)")
        secrets = json.loads(sh("kubectl", "get", "secrets", "-n", ns, "-l",
                                "app.kubernetes.io/managed-by=tenant-operator", "-o", "json"))["items"]
        for s in secrets:
            print(f"  {s['metadata']['name']}: {', '.join(sorted(s['data']))}")

        step("A tenant credential at work: the auth service's own login to MySQL")
        db = next(s for s in secrets if s["metadata"]["name"] == "auth-db-credentials")["data"]
        dec = {k: base64.b64decode(v).decode() for k, v in db.items()}
        import pymysql
        conn = pymysql.connect(host=dec["DB_HOST"], port=int(dec["DB_PORT"]), user=dec["DB_USERNAME"],
                               password=dec["DB_PASSWORD"], database=dec["DB_DATABASE"])
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER(), DATABASE()")
            user, database = cur.fetchone()
            print(f"  connected as {user} to {database}")
        conn.close()

        if args.keep:
            print(f"\nLeaving tenant {name} in place (--keep).")
            return 0

        step(f"Deleting tenant {name}: grace period 720h, skipped with {'tenancy.dev/purge-now'}")
        subprocess.run(["kubectl", "delete", "tenant", name, "--wait=false"], check=True)  # nosec B603, B607
        wait("Terminating", lambda: ((tenant_json(name) or {}).get("status") or {}).get("phase") == "Terminating")
        print(json.dumps(tenant_json(name)["status"].get("deletion"), indent=2))
        argv = ["kubectl", "annotate", "tenant", name, "tenancy.dev/purge-now=true"]
        subprocess.run(argv, check=True)  # nosec B603
        wait("the purge", lambda: tenant_json(name) is None, 180)
        print(sh("kubectl", "get", "events", "-n", "default", "--field-selector",
                 f"involvedObject.name={name}", "--sort-by=.metadata.creationTimestamp",
                 "-o", "custom-columns=REASON:.reason,MESSAGE:.message"))
        print("Tenant purged.")
        return 0
    finally:
        op.terminate()
        try:
            op.wait(30)
        except subprocess.TimeoutExpired:
            op.kill()


if __name__ == "__main__":
    raise SystemExit(main())
