"""One backup: `mariadb-dump` (or `mysqldump`) of the tenant database, gzip'd
and hashed in this process while it streams to the backups bucket, then a
manifest.

Nothing is staged: the dump's stdout is read in 1 MiB chunks, compressed, and
handed to a multipart upload one part at a time, so memory holds about one
part (16 MiB by default) whatever the size of the database. The password goes
to the dump tool through a temporary defaults file (mode 0600, removed
afterwards), never on its command line or in its environment.

Failure rules: a dump that exits non-zero makes the stream raise before its
last part is sent, so the multipart upload is aborted and no object appears;
if an object was written anyway (failure detected after completion, or the
manifest cannot be written), that exact version is deleted. A manifest is
written only for a complete, successful dump.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import shutil

# Runs mariadb-dump/mysqldump with list arguments, never a shell.
import subprocess  # nosec B404
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from tenant_operator import backup
from tenant_operator.backup import BackupError, SettingsError
from tenant_operator.backup.store import DEFAULT_PART_SIZE, BackupStore

log = logging.getLogger(__name__)

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
# --single-transaction: a consistent InnoDB snapshot without locking tables.
# --routines/--triggers/--events: the tenant user holds ALL PRIVILEGES on its
# database, which includes EVENT, TRIGGER and the routine privileges, so these
# need nothing beyond it. --no-tablespaces: tablespace metadata needs the
# global PROCESS privilege, which a tenant user does not have.
DUMP_OPTIONS = ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob",
                "--no-tablespaces", "--default-character-set=utf8mb4")
READ_CHUNK = 1 << 20
STDERR_TAIL = 16 * 1024
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class DbSettings:
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DbSettings:
        """From the keys of a `<service>-db-credentials` Secret."""
        missing = [k for k in ("DB_HOST", "DB_DATABASE", "DB_USERNAME", "DB_PASSWORD") if not env.get(k)]
        if missing:
            raise SettingsError(f"missing database settings: {', '.join(missing)} "
                                "(expected from the <service>-db-credentials Secret)")
        try:
            port = int(env.get("DB_PORT") or 3306)
        except ValueError:
            raise SettingsError(f"DB_PORT is not a port number: {env.get('DB_PORT')!r}") from None
        return cls(host=env["DB_HOST"], port=port, database=env["DB_DATABASE"], user=env["DB_USERNAME"],
                   password=env["DB_PASSWORD"])

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"


def find_tool(candidates: tuple[str, ...], override: str = "") -> str:
    """Full path of the first installed tool (or of `override`)."""
    for name in (override,) if override else candidates:
        path = shutil.which(name)
        if path:
            return path
    raise SettingsError(f"none of {', '.join((override,) if override else candidates)} is installed")


def describe_tool(tool: str) -> str:
    """First line of `tool --version` (the tool's name when that fails)."""
    try:
        # A client tool chosen by name from a fixed list, list arguments, no shell.
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10,  # nosec B603
                             env=child_env(), check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return os.path.basename(tool)
    line = out.strip().splitlines()[0] if out.strip() else ""
    return line or os.path.basename(tool)


def child_env() -> dict[str, str]:
    """A minimal environment for the client tools: no credentials of any kind."""
    tmp = tempfile.gettempdir()
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": tmp, "TMPDIR": tmp}


def _option(value: str) -> str:
    """A double-quoted option-file value ('\\' and '"' escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def defaults_file(db: DbSettings) -> Iterator[str]:
    """A `[client]` option file with the connection settings and password,
    readable by this user only, removed on exit."""
    for name, value in (("host", db.host), ("user", db.user), ("password", db.password)):
        if any(c in value for c in "\r\n\0"):
            raise SettingsError(f"the database {name} contains a line break or NUL")
    fd, path = tempfile.mkstemp(prefix="tenant-backup-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("[client]\n"
                     f"host={_option(db.host)}\n"
                     f"port={int(db.port)}\n"
                     "protocol=TCP\n"
                     f"user={_option(db.user)}\n"
                     f"password={_option(db.password)}\n")
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def dump_argv(tool: str, defaults_path: str, database: str) -> list[str]:
    # --defaults-extra-file must come first; `--` ends the options before the name.
    return [tool, f"--defaults-extra-file={defaults_path}", *DUMP_OPTIONS, "--", database]


def server_version(db: DbSettings, connect_timeout: float = 10.0) -> str:
    """`SELECT VERSION()` with the same credentials: also a preflight check that
    fails early, before anything is uploaded, when the database is unreachable."""
    import pymysql

    from tenant_operator.backends.mysql.client import connect
    try:
        conn = connect(host=db.host, port=db.port, user=db.user, password=db.password,
                       database=db.database, connect_timeout=connect_timeout,
                       read_timeout=60, program_name="tenant-operator-backup")
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else "?"
        text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
        raise BackupError(f"cannot connect to {db.where} as {db.user}: ({code}) "
                          f"{text.replace(db.password, '***')}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


class StderrTail:
    """Drains a process's stderr in a thread (so it can never block on a full
    pipe) and keeps its last few KiB for the error message."""

    def __init__(self, stream: BinaryIO | None, limit: int = STDERR_TAIL):
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._thread = None
        if stream is not None:
            self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
            self._thread.start()

    def _drain(self, stream: BinaryIO) -> None:
        try:
            while chunk := stream.read(4096):
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size > self._limit and len(self._chunks) > 1:
                    self._size -= len(self._chunks.popleft())
        except (OSError, ValueError):
            pass

    def text(self, timeout: float = 5.0) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        raw = b"".join(self._chunks)[-self._limit:]
        return raw.decode("utf-8", "replace").strip()


class GzipHashReader:
    """A readable stream of `source` gzip-compressed, counting and hashing the
    compressed bytes as they are read (what is uploaded is what is hashed).

    `read(n)` returns exactly n bytes until the end, so a multipart upload gets
    each part in one call. When `source` is exhausted, `on_eof` runs BEFORE the
    final bytes are returned: if it raises, the upload never completes."""

    def __init__(self, source: BinaryIO, on_eof: Callable[[], None] | None = None, *,
                 chunk_size: int = READ_CHUNK, level: int = 6):
        self._source = source
        self._on_eof = on_eof
        self._chunk = chunk_size
        self._zip = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)   # gzip container
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self.size = 0             # compressed bytes handed out
        self.raw_size = 0         # dump bytes read
        self.finished = False     # source exhausted, gzip trailer produced
        self.max_buffered = 0     # high-water mark of bytes held here (for the tests)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _fill(self, want: int) -> None:
        while len(self._buf) < want and not self.finished:
            chunk = self._source.read(self._chunk)
            if chunk:
                self.raw_size += len(chunk)
                self._buf += self._zip.compress(chunk)
            else:
                if self._on_eof is not None:
                    self._on_eof()
                self._buf += self._zip.flush()
                self.finished = True
            self.max_buffered = max(self.max_buffered, len(self._buf))

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("GzipHashReader.read needs a size: it never reads the whole stream")
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._hash.update(out)
        self.size += len(out)
        return out


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _free_key(store: BackupStore, service: str, when: datetime) -> tuple[str, datetime]:
    """The key for `when`; a second later while that one is taken (two runs in one second)."""
    for _ in range(10):
        key = backup.backup_key(service, when)
        if store.stat(key) is None and store.stat(backup.manifest_key(key)) is None:
            return key, when
        when += timedelta(seconds=1)
    raise BackupError(f"no free backup key near {backup.timestamp(when)} under {backup.prefix(service)}")


def run_backup(db: DbSettings, store: BackupStore, service: str, *, tool: str = "", trigger: str = "schedule",
               part_size: int = DEFAULT_PART_SIZE, version: str | None = None, timeout: float | None = None,
               popen: Callable[..., subprocess.Popen] = subprocess.Popen,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC), request: str = "") -> dict:
    """Dump `db` into `store` under mysql/<service>/ and write its manifest;
    returns the manifest. Raises BackupError, leaving no manifest (and no dump
    object) behind, when anything fails. `timeout` (seconds) kills a dump that
    runs longer (in a Job, activeDeadlineSeconds does that instead)."""
    if not service:
        raise SettingsError("no service name")
    tool = tool or find_tool(DUMP_TOOLS)
    version = version if version is not None else server_version(db)
    started_mono = time.monotonic()
    key, started = _free_key(store, service, clock())
    log.info("backup %s: dumping %s with %s to %s/%s", service, db.where, os.path.basename(tool),
             store.where, key)

    with defaults_file(db) as cnf:
        argv = dump_argv(tool, cnf, db.database)
        try:
            proc = popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=child_env())
        except OSError as exc:
            raise BackupError(f"cannot start {tool}: {exc.strerror or exc}") from None
        stderr = StderrTail(proc.stderr)
        timer = None
        timed_out = threading.Event()
        if timeout:
            def expire() -> None:
                timed_out.set()
                proc.kill()
            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()

        def dump_failed(rc: int) -> BackupError:
            if timed_out.is_set():
                return BackupError(f"{os.path.basename(tool)} of {db.where} was stopped after {timeout:.0f}s")
            detail = stderr.text()
            return BackupError(f"{os.path.basename(tool)} of {db.where} exited with status {rc}"
                               + (f": {detail}" if detail else ""))

        def check_exit() -> None:
            rc = proc.wait()
            if rc != 0:
                raise dump_failed(rc)

        reader = GzipHashReader(proc.stdout, on_eof=check_exit)
        version_id = None
        try:
            version_id = store.put_stream(key, reader, part_size=part_size)
            rc = proc.wait()
            if rc != 0 or not reader.finished:
                raise dump_failed(rc)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            # The stream raises before its last part, so normally nothing was
            # stored; whatever was (a completed upload), goes.
            _discard(store, key, version_id, uploaded=version_id is not None or reader.finished)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    finished = clock()
    manifest = {
        "formatVersion": MANIFEST_FORMAT,
        "bucket": store.bucket,
        "key": key,
        "versionId": version_id,
        "service": service,
        "database": db.database,
        "serverVersion": version,
        "tool": describe_tool(tool),
        "options": list(DUMP_OPTIONS),
        "compression": "gzip",
        "size": reader.size,
        "sha256": reader.sha256,
        "uncompressedSize": reader.raw_size,
        "startedAt": _iso(started),
        "finishedAt": _iso(finished),
        "durationSeconds": round(time.monotonic() - started_mono, 3),
        "trigger": trigger,
        **({"request": request} if request else {}),   # the TenantBackup that asked for it
    }
    try:
        store.put_json(backup.manifest_key(key), manifest)
    except BaseException:
        _discard(store, key, version_id, uploaded=True)
        raise
    log.info("backup %s: %s done, %d bytes (%d uncompressed), sha256 %s, %.1fs", service, key, reader.size,
             reader.raw_size, reader.sha256, manifest["durationSeconds"])
    return manifest


def _discard(store: BackupStore, key: str, version_id: str | None, *, uploaded: bool) -> None:
    """Remove the object a failed run stored, if any. The exact version: on the
    versioned backups bucket a plain delete would only hide it behind a delete
    marker (and would add a marker where nothing was stored)."""
    if not uploaded:
        return
    try:
        if version_id is None:
            info = store.stat(key)
            if info is None:
                return
            version_id = info.version_id
        store.delete(key, version_id)
        log.warning("backup: removed the object of the failed run %s", key)
    except BackupError as exc:
        log.error("backup: could not remove the object of the failed run %s: %s", key, exc)
