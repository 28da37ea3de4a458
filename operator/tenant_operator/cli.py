"""The `tenant-operator` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import yaml

from tenant_operator import config as config_mod
from tenant_operator.errors import ConfigError, SpecError


def _setup_logging(fmt: str, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if fmt == "json":
        from tenant_operator.logfmt import JsonFormatter
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler], force=True)
    # kopf's per-handler "succeeded" lines drown the useful ones.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)
    for noisy in ("kubernetes.client.rest", "urllib3", "botocore", "pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(args) -> int:
    import kopf

    from tenant_operator import handlers
    config_mod.load(args.config)          # fail fast with a clear message
    handlers.CONFIG_PATH = args.config
    if args.metrics_port:
        os.environ["TENANT_OPERATOR_METRICS_PORT"] = str(args.metrics_port)
        os.environ["TENANT_OPERATOR_METRICS_ADDR"] = args.metrics_address
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.log_format == "json"
                   else kopf.LogFormat.PLAIN, log_prefix=False)
    _setup_logging(args.log_format, args.verbose)
    kopf.run(
        clusterwide=True,
        # Replicas share the tenants through shard Leases (config `sharding`), not kopf peering.
        standalone=True,
        liveness_endpoint=args.liveness or None,
    )
    return 0


def _load_tenants(path: str) -> list[dict]:
    stream = sys.stdin if path == "-" else open(path)  # noqa: SIM115
    with stream:
        docs = [d for d in yaml.safe_load_all(stream) if d]
    return [d for d in docs if d.get("kind") == "Tenant"]


def cmd_render(args) -> int:
    from tenant_operator import render, spec
    cfg = config_mod.load(args.config) if args.config else config_mod.from_dict({})
    out = []
    for obj in _load_tenants(args.file):
        t = spec.parse(obj, cfg)
        out.extend(render.render_tenant(t, cfg))
        if args.with_backups:
            from tenant_operator.render import backup
            out.extend(backup.cronjobs(t, cfg))
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tenant-operator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--config", required=True, help="operator configuration YAML")
    run.add_argument("--liveness", default="", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    # In a pod the scraper reaches the pod IP: all interfaces is the right default there.
    run.add_argument("--metrics-address", default="0.0.0.0",  # nosec B104
                     help="address for the metrics server")
    run.add_argument("--log-format", choices=("plain", "json"), default="plain")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    render = sub.add_parser("render", help="print the Kubernetes objects a Tenant file produces (no cluster)")
    render.add_argument("file", help="Tenant YAML file (or - for stdin)")
    render.add_argument("--config", default="", help="operator configuration YAML (defaults otherwise)")
    render.add_argument("--with-backups", action="store_true", help="include the backup CronJobs")
    render.set_defaults(func=cmd_render)

    from tenant_operator import cli_data
    cli_data.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
