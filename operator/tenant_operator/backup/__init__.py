"""MySQL backups of tenant databases into the tenant's own backups bucket.

Layout in `s3://<tenant>-backups/`:

    mysql/<service>/<YYYYMMDDTHHMMSSZ>.sql.gz                  gzip of a mariadb-dump / mysqldump run
    mysql/<service>/<YYYYMMDDTHHMMSSZ>.sql.gz.manifest.json    size, sha256, server version, timing, tool

A dump counts as a backup only once its manifest exists: the manifest is
written last, after the dump process exited 0 and the upload completed, and
a failed run removes what it uploaded. Retention and `restore --latest` only
ever consider keys that parse exactly as the layout above; anything else in
the bucket is left alone.

Modules: `dump` (stream a dump through gzip to the store), `restore`
(verify, then pipe into the client), `retention` (pure selection plus its
application), `store` (S3 with the tenant's keys), `cli` (the `backup` and
`restore` subcommands), `component` (CronJobs and `BackupsReady` for the
reconciler, final backup for the deletion lifecycle).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

KEY_ROOT = "mysql"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DUMP_SUFFIX = ".sql.gz"
MANIFEST_SUFFIX = ".manifest.json"
_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z$")


def prefix(service: str) -> str:
    """Where one service's backups live (with the trailing '/')."""
    return f"{KEY_ROOT}/{service}/"


def timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def backup_key(service: str, when: datetime) -> str:
    return f"{prefix(service)}{timestamp(when)}{DUMP_SUFFIX}"


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def parse_timestamp(text: str) -> datetime | None:
    """`YYYYMMDDTHHMMSSZ` -> aware UTC datetime; None for anything else."""
    if not _TIMESTAMP.fullmatch(text):
        return None
    try:
        return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_key(service: str, key: str) -> tuple[datetime, bool] | None:
    """(time, is_manifest) when `key` is exactly one of our own keys for
    `service`, else None. Nothing that fails this check is ever deleted."""
    head = prefix(service)
    if not key.startswith(head):
        return None
    rest = key[len(head):]
    is_manifest = rest.endswith(DUMP_SUFFIX + MANIFEST_SUFFIX)
    if is_manifest:
        rest = rest[: -len(MANIFEST_SUFFIX)]
    if not rest.endswith(DUMP_SUFFIX):
        return None
    when = parse_timestamp(rest[: -len(DUMP_SUFFIX)])
    return (when, is_manifest) if when else None


class BackupError(Exception):
    """A backup or restore failed; the message is safe to show (no credentials)."""

    exit_code = 1


class IntegrityError(BackupError):
    """A dump does not match its manifest: refused before anything is executed."""

    exit_code = 3


class SettingsError(BackupError):
    """Missing or invalid settings (environment, arguments)."""

    exit_code = 2
