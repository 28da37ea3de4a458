"""Restore one backup into a database with the `mariadb` (or `mysql`) client.

Nothing is executed before the dump is proven intact: a first streaming pass
hashes the stored object and compares size and sha256 with its manifest; only
then does a second pass stream the same object, decompressed, into the
client. Both passes read the same object version (pinned by version id, or by
ETag on an unversioned bucket), so what is executed is what was verified,
and nothing is staged on disk or in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os

# Runs the mysql client with list arguments, never a shell.
import subprocess  # nosec B404
import zlib
from collections.abc import Callable

from tenant_operator import backup, naming
from tenant_operator.backup import BackupError, IntegrityError, SettingsError
from tenant_operator.backup.dump import CLIENT_TOOLS, DbSettings, StderrTail, child_env, defaults_file, find_tool
from tenant_operator.backup.store import BackupStore, ObjectInfo

log = logging.getLogger(__name__)


def complete_backups(store: BackupStore, service: str) -> list[str]:
    """Dump keys of `service` that have a manifest, newest first."""
    keys = {o.key for o in store.list(backup.prefix(service))}
    found = []
    for key in keys:
        parsed = backup.parse_key(service, key)
        if parsed and not parsed[1] and backup.manifest_key(key) in keys:
            found.append((parsed[0], key))
    return [k for _, k in sorted(found, reverse=True)]


def resolve(store: BackupStore, service: str, *, key: str = "", latest: bool = False) -> str:
    """The dump key to restore: `key` (a full key or just its timestamp) or the
    newest complete backup."""
    if latest:
        found = complete_backups(store, service)
        if not found:
            raise BackupError(f"no complete backup of {service} under {store.where}/{backup.prefix(service)}")
        return found[0]
    if backup.parse_timestamp(key):
        key = f"{backup.prefix(service)}{key}{backup.DUMP_SUFFIX}"
    parsed = backup.parse_key(service, key)
    if parsed is None or parsed[1]:
        raise SettingsError(f"{key!r} is not a backup of {service} "
                            f"(expected {backup.prefix(service)}YYYYMMDDTHHMMSSZ{backup.DUMP_SUFFIX} or the timestamp)")
    return key


def _load(store: BackupStore, key: str) -> tuple[ObjectInfo, dict]:
    manifest = store.get_json(backup.manifest_key(key))
    if manifest is None:
        raise IntegrityError(f"{key} has no manifest ({backup.manifest_key(key)}): it is not a complete backup; "
                             "refusing to restore it")
    info = store.stat(key)
    if info is None:
        raise BackupError(f"{key} does not exist in {store.where}")
    if manifest.get("key") not in (None, key):
        raise IntegrityError(f"the manifest of {key} describes {manifest.get('key')}; refusing to restore")
    sha, size = manifest.get("sha256"), manifest.get("size")
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(size, int):
        raise IntegrityError(f"the manifest of {key} has no valid size and sha256; refusing to restore")
    if info.size != size:
        raise IntegrityError(f"{key} is {info.size} bytes but its manifest says {size}: the dump is corrupted "
                             "or incomplete; refusing to restore (nothing was executed)")
    return info, manifest


def verify(store: BackupStore, key: str) -> tuple[ObjectInfo, dict]:
    """Check `key` against its manifest by streaming it once. Raises IntegrityError."""
    info, manifest = _load(store, key)
    digest, size = hashlib.sha256(), 0
    for chunk in store.iter_object(info):
        digest.update(chunk)
        size += len(chunk)
    if size != manifest["size"] or digest.hexdigest() != manifest["sha256"]:
        raise IntegrityError(f"{key} does not match its manifest (sha256 {digest.hexdigest()}, {size} bytes; "
                             f"expected {manifest['sha256']}, {manifest['size']} bytes): the dump is corrupted; "
                             "refusing to restore (nothing was executed)")
    log.info("restore: %s verified (%d bytes, sha256 %s)", key, size, manifest["sha256"])
    return info, manifest


def restore(db: DbSettings, store: BackupStore, key: str, *, into_database: str = "", tool: str = "",
            popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> dict:
    """Verify `key`, then pipe it into the client connected to `into_database`
    (default: the database of `db`). Returns a summary."""
    target = into_database or db.database
    if not naming.SQL_IDENTIFIER.fullmatch(target):
        raise SettingsError(f"{target!r} is not a valid database name")
    tool = tool or find_tool(CLIENT_TOOLS)
    info, manifest = verify(store, key)

    target_db = DbSettings(db.host, db.port, target, db.user, db.password)
    log.info("restore: executing %s into %s", key, target_db.where)
    with defaults_file(target_db) as cnf:
        argv = [tool, f"--defaults-extra-file={cnf}", "--batch", "--binary-mode", f"--database={target}"]
        try:
            proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=child_env())
        except OSError as exc:
            raise BackupError(f"cannot start {tool}: {exc.strerror or exc}") from None
        stderr = StderrTail(proc.stderr)
        unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        digest, raw = hashlib.sha256(), 0
        broken = False
        try:
            for chunk in store.iter_object(info):
                digest.update(chunk)
                data = unzip.decompress(chunk)
                raw += len(data)
                try:
                    proc.stdin.write(data)
                except BrokenPipeError:
                    broken = True     # the client quit; its exit status and stderr say why
                    break
            if not broken:
                proc.stdin.write(unzip.flush())
        except zlib.error as exc:
            proc.kill()
            proc.wait()
            raise IntegrityError(f"{key} is not a valid gzip stream ({exc}); the restore was aborted") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        rc = proc.wait()
    name = os.path.basename(tool)
    if rc != 0:
        detail = stderr.text()
        raise BackupError(f"{name} exited with status {rc} while restoring {key} into {target}"
                          + (f": {detail}" if detail else ""))
    if broken:
        raise BackupError(f"{name} stopped reading while restoring {key} into {target}")
    if digest.hexdigest() != manifest["sha256"] or not unzip.eof:
        raise IntegrityError(f"{key} changed while it was being restored into {target}; the database may be "
                             "partially restored")
    log.info("restore: %s restored into %s (%d bytes of SQL)", key, target, raw)
    return {"key": key, "database": target, "sha256": manifest["sha256"], "size": manifest["size"],
            "sqlBytes": raw, "backupStartedAt": manifest.get("startedAt")}
