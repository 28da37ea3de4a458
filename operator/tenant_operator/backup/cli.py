"""`tenant-operator backup`, `tenant-operator restore` and `tenant-operator drill`.

The backup CronJob runs `tenant-operator backup --secret-env` with both
Secrets as environment (`envFrom`) plus BACKUP_SERVICE and BACKUP_KEEP_*.
An administrator can run either command from outside with `--namespace NS`,
which reads the same Secrets through the Kubernetes API instead.

Exit status: 0 done, 1 failed, 2 bad settings, 3 integrity check failed
(restore refused, nothing executed), 4 nothing to drill (no backup yet)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping

from tenant_operator import naming
from tenant_operator.backup import BackupError, SettingsError

log = logging.getLogger("tenant_operator.backup")

# Only for a run outside a CronJob: the CronJobs always pass the Tenant's retention
# (BACKUP_KEEP_*). The operator's built-in defaults, so a manual run keeps as much.
DEFAULT_KEEP = {"daily": 30, "weekly": 12, "monthly": 12}


def derive_service(env: Mapping[str, str]) -> str:
    """BACKUP_SERVICE, else the `<service>` of DB_DATABASE = `<tenant_id>_<service>_db`
    with the tenant taken from S3_BACKUPS_BUCKET = `<tenant>-backups`."""
    service = env.get("BACKUP_SERVICE", "")
    if not service:
        database, bucket = env.get("DB_DATABASE", ""), env.get("S3_BACKUPS_BUCKET", "")
        if bucket.endswith("-backups") and database.endswith("_db"):
            head = naming.tenant_id(bucket[: -len("-backups")]) + "_"
            if database.startswith(head):
                service = database[len(head): -len("_db")]
    if not service:
        raise SettingsError("cannot tell the service: pass --service or set BACKUP_SERVICE")
    if not naming.SERVICE_NAME.fullmatch(service):
        raise SettingsError(f"{service!r} is not a service name")
    return service


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must be >= 0, got {value}")
    return value


def _settings(args) -> dict[str, str]:
    """The Secrets' keys: from the environment, or read from the cluster."""
    if args.secret_env:
        return dict(os.environ)
    if not args.service:
        raise SettingsError("--namespace needs --service")
    from tenant_operator.backup.component import secrets_env
    from tenant_operator.kube.client import Kube
    return secrets_env(Kube.from_environment("tenant-operator-backup"), args.namespace, args.service)


def _stores(env: Mapping[str, str], service_arg: str):
    from tenant_operator.backup.dump import DbSettings
    from tenant_operator.backup.store import BackupStore, S3Settings
    service = service_arg or derive_service(env)
    if not naming.SERVICE_NAME.fullmatch(service):
        raise SettingsError(f"{service!r} is not a service name")
    return service, DbSettings.from_env(env), BackupStore(S3Settings.from_env(env))


def cmd_backup(args) -> int:
    from tenant_operator.backup import retention
    from tenant_operator.backup.dump import run_backup
    env = _settings(args)
    service, db, store = _stores(env, args.service)
    keep = {k: v if v is not None else _env_int(env, f"BACKUP_KEEP_{k.upper()}", DEFAULT_KEEP[k])
            for k, v in (("daily", args.keep_daily), ("weekly", args.keep_weekly), ("monthly", args.keep_monthly))}
    policy = retention.Policy(**keep)     # validated before anything runs
    manifest = run_backup(db, store, service, tool=args.dump_tool, trigger=args.trigger,
                          part_size=args.part_size_mib * 2**20, request=args.request_id)
    print(json.dumps(manifest, sort_keys=True), flush=True)
    if not args.no_retention:
        retention.apply(store, service, policy)
    return 0


def cmd_restore(args) -> int:
    from tenant_operator.backup.restore import resolve, restore, verify
    env = _settings(args)
    service, db, store = _stores(env, args.service)
    key = resolve(store, service, key=args.backup or "", latest=args.latest)
    if args.verify_only:
        _, manifest = verify(store, key)
        print(json.dumps({"key": key, "verified": True, "sha256": manifest["sha256"], "size": manifest["size"]}),
              flush=True)
        return 0
    summary = restore(db, store, key, into_database=args.into_database or "", tool=args.client_tool)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def cmd_drill(args) -> int:
    from tenant_operator.backup.drill import run_drill
    env = _settings(args)
    service, db, store = _stores(env, args.service)
    summary = run_drill(db, store, service, args.into_database, tool=args.client_tool)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def _run(fn):
    def wrapper(args) -> int:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            return fn(args)
        except BackupError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return exc.exit_code
    return wrapper


def _source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--secret-env", action="store_true",
                     help="read DB_*, S3_* and AWS_* from the environment (the CronJob's envFrom of both Secrets)")
    src.add_argument("--namespace", default="",
                     help="read the tenant's Secrets from this namespace through the Kubernetes API")
    p.add_argument("--service", default="",
                   help="service whose database this is (default: BACKUP_SERVICE, else derived from DB_DATABASE)")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _part_size(text: str) -> int:
    value = int(text)
    if not 5 <= value <= 5120:
        raise argparse.ArgumentTypeError("must be between 5 and 5120 (S3 part size limits, MiB)")
    return value


def add_command(sub) -> None:
    b = sub.add_parser("backup", help="dump a tenant database to its backups bucket, then apply retention",
                       description="Stream mariadb-dump/mysqldump through gzip to "
                                   "s3://<S3_BACKUPS_BUCKET>/mysql/<service>/<UTC>.sql.gz, write its manifest, "
                                   "then delete backups outside the retention policy.")
    _source(b)
    for name in ("daily", "weekly", "monthly"):
        b.add_argument(f"--keep-{name}", type=_non_negative, default=None,
                       help=f"keep the newest backup of each of the last N {name} periods "
                            f"(default: BACKUP_KEEP_{name.upper()}, else {DEFAULT_KEEP[name]})")
    b.add_argument("--no-retention", action="store_true", help="only back up, delete nothing")
    b.add_argument("--part-size-mib", type=_part_size, default=16, help="multipart upload part size (memory used)")
    b.add_argument("--dump-tool", default="", help="dump program (default: mariadb-dump, else mysqldump)")
    b.add_argument("--trigger", default="schedule", choices=("schedule", "manual", "final"),
                   help=argparse.SUPPRESS)
    b.add_argument("--request-id", default="", help=argparse.SUPPRESS)   # a TenantBackup's UID, in the manifest
    b.set_defaults(func=_run(cmd_backup))

    r = sub.add_parser("restore", help="verify a backup against its manifest, then load it into the database",
                       description="Download (streaming) a backup, check its sha256 against the manifest before "
                                   "executing anything, then pipe it into the mariadb/mysql client.")
    _source(r)
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--backup", default="", metavar="KEY",
                       help="mysql/<service>/<YYYYMMDDTHHMMSSZ>.sql.gz, or just the timestamp")
    which.add_argument("--latest", action="store_true", help="the newest complete backup")
    r.add_argument("--into-database", default="", metavar="NAME",
                   help="restore into this database instead of DB_DATABASE (the user needs rights on it)")
    r.add_argument("--verify-only", action="store_true", help="check the backup, execute nothing")
    r.add_argument("--client-tool", default="", help="client program (default: mariadb, else mysql)")
    r.set_defaults(func=_run(cmd_restore))

    d = sub.add_parser("drill", help="restore the latest backup into a scratch database, then empty it",
                       description="A recovery drill: verify the newest complete backup against its manifest, "
                                   "restore it into the scratch database, then drop and create that database "
                                   "again. Exit 3: the dump does not match its manifest; 4: no backup yet.")
    _source(d)
    d.add_argument("--into-database", required=True, metavar="NAME",
                   help="the scratch database (created by the operator, granted to the service's user)")
    d.add_argument("--client-tool", default="", help="client program (default: mariadb, else mysql)")
    d.set_defaults(func=_run(cmd_drill))
