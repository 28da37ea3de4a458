"""backup.dump (and the verify-first rule of backup.restore) with a fake dump
process and a fake store. The fake store reads the stream exactly as minio's
`put_object(length=-1)` does (its own `read_part_data`), so the tests see
what the real upload would hold in memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import stat

import pytest
from minio.helpers import read_part_data
from tenant_operator import backup
from tenant_operator.backup import BackupError, IntegrityError, SettingsError
from tenant_operator.backup import cli as backup_cli
from tenant_operator.backup.dump import DUMP_OPTIONS, DbSettings, GzipHashReader, defaults_file, run_backup
from tenant_operator.backup.restore import resolve, restore, verify
from tenant_operator.backup.store import ObjectInfo

MiB = 1 << 20
PART = 5 * MiB            # S3's minimum part size
PASSWORD = "s3cr'et\"pa\\ss#word"
DB = DbSettings("db.example", 3306, "acme_auth_db", "acme_auth_user", PASSWORD)


class FakeDumpOutput(io.RawIOBase):
    """The dump's stdout: `total` bytes of incompressible data made on demand."""

    def __init__(self, total: int, seed: int = 1):
        self.total, self.produced = total, 0
        self._rng = random.Random(seed)
        self.digest = hashlib.sha256()

    def readable(self):
        return True

    def read(self, n=-1):
        n = self.total - self.produced if n is None or n < 0 else min(n, self.total - self.produced)
        data = self._rng.randbytes(n)
        self.produced += n
        self.digest.update(data)
        return data


class FakeProc:
    def __init__(self, total: int, rc: int = 0, stderr: bytes = b""):
        self.stdout = FakeDumpOutput(total)
        self.stderr = io.BytesIO(stderr)
        self.rc = rc
        self.returncode = None
        self.killed = False

    def wait(self, timeout=None):
        self.returncode = -9 if self.killed else self.rc
        return self.returncode

    def poll(self):
        return self.returncode

    def kill(self):
        self.killed = True


class FakePopen:
    """Records the command line, environment and option file the dump tool gets."""

    def __init__(self, proc: FakeProc):
        self.proc = proc
        self.argv = self.env = self.cnf_text = self.cnf_mode = None

    def __call__(self, argv, **kwargs):
        self.argv, self.env = argv, kwargs["env"]
        cnf = argv[1].split("=", 1)[1]
        self.cnf_path = cnf
        self.cnf_text = open(cnf).read()
        self.cnf_mode = stat.S_IMODE(os.stat(cnf).st_mode)
        return self.proc


class FakeStore:
    bucket = "acme-backups"
    where = "http://minio.example/acme-backups"

    def __init__(self, proc: FakeProc | None = None, fail_after_parts: int | None = None,
                 fail_manifest: bool = False):
        self.objects: dict[str, bytes] = {}
        self.proc = proc
        self.parts: list[int] = []
        self.produced_at_first_part = None
        self.aborted = False
        self.fail_after_parts = fail_after_parts
        self.fail_manifest = fail_manifest
        self.deleted: list[tuple[str, str | None]] = []
        self.version = 0

    # minio's put_object(length=-1): read part_size + 1, keep the extra byte for the next part.
    def put_stream(self, key, data, *, part_size):
        self.reader = data
        body, one_byte = bytearray(), b""
        try:
            while True:
                part = read_part_data(data, part_size + 1, one_byte)
                last = len(part) <= part_size
                if not last:
                    one_byte, part = part[-1:], part[:-1]
                self.parts.append(len(part))
                if self.produced_at_first_part is None and self.proc is not None:
                    self.produced_at_first_part = self.proc.stdout.produced
                body += part
                if self.fail_after_parts is not None and len(self.parts) >= self.fail_after_parts:
                    raise BackupError(f"uploading {key} failed at {self.where}: SlowDown")
                if last:
                    break
        except BaseException:
            self.aborted = True        # the multipart upload is aborted: nothing is stored
            raise
        self.version += 1
        self.objects[key] = bytes(body)
        return f"v{self.version}"

    def put_json(self, key, doc):
        if self.fail_manifest:
            raise BackupError(f"writing {key} failed at {self.where}: AccessDenied")
        self.objects[key] = json.dumps(doc).encode()
        return "m1"

    def stat(self, key):
        if key not in self.objects:
            return None
        return ObjectInfo(key, len(self.objects[key]), None, "v1", "etag")

    def delete(self, key, version_id=None):
        self.deleted.append((key, version_id))
        self.objects.pop(key, None)

    def list(self, prefix):
        return [ObjectInfo(k, len(v), None) for k, v in self.objects.items() if k.startswith(prefix)]

    def get_json(self, key):
        return json.loads(self.objects[key]) if key in self.objects else None

    def iter_object(self, info, chunk_size=MiB):
        data = self.objects[info.key]
        for i in range(0, len(data), chunk_size):
            yield data[i:i + chunk_size]


def backup_with(proc: FakeProc, store: FakeStore | None = None, **kwargs):
    store = store or FakeStore(proc)
    popen = FakePopen(proc)
    manifest = run_backup(DB, store, "auth", tool="fake-dump", version="10.11.6-MariaDB", popen=popen,
                          part_size=PART, **kwargs)
    return manifest, store, popen


# --- streaming -------------------------------------------------------------------------------

def test_streaming_never_holds_the_whole_dump():
    total = 48 * MiB                     # incompressible: about 48 MiB of gzip, ten parts
    proc = FakeProc(total)
    manifest, store, _ = backup_with(proc)

    key = manifest["key"]
    stored = store.objects[key]
    assert len(store.parts) == 10 and all(p == PART for p in store.parts[:-1])
    # When the first part left, the dump had produced about one part, not the dump.
    assert store.produced_at_first_part <= PART + 2 * MiB
    assert proc.stdout.produced == total
    # The stream never buffers more than one part plus one read chunk (and its gzip output).
    assert store.reader.max_buffered <= PART + 1 + 2 * MiB < total / 4
    assert manifest["uncompressedSize"] == total
    assert manifest["size"] == len(stored) and manifest["sha256"] == hashlib.sha256(stored).hexdigest()
    assert hashlib.sha256(gzip.decompress(stored)).hexdigest() == proc.stdout.digest.hexdigest()


def test_reader_buffer_is_bounded_and_hashes_what_it_hands_out():
    src = FakeDumpOutput(30 * MiB)
    reader = GzipHashReader(src, chunk_size=MiB)
    out = hashlib.sha256()
    size = 0
    while chunk := reader.read(PART + 1):
        assert len(chunk) == PART + 1 or reader.finished
        out.update(chunk)
        size += len(chunk)
    assert reader.finished and reader.size == size and reader.sha256 == out.hexdigest()
    assert reader.max_buffered <= PART + 1 + 2 * MiB
    with pytest.raises(ValueError):
        GzipHashReader(FakeDumpOutput(10)).read()


def test_manifest_fields_and_key():
    manifest, store, _ = backup_with(FakeProc(3 * MiB))
    key = manifest["key"]
    assert backup.parse_key("auth", key)[1] is False
    assert json.loads(store.objects[backup.manifest_key(key)]) == manifest
    assert manifest["database"] == "acme_auth_db" and manifest["service"] == "auth"
    assert manifest["serverVersion"] == "10.11.6-MariaDB" and manifest["tool"] == "fake-dump"
    assert manifest["compression"] == "gzip" and manifest["versionId"] == "v1" and manifest["trigger"] == "schedule"
    assert manifest["startedAt"].endswith("Z") and manifest["finishedAt"].endswith("Z")
    assert manifest["durationSeconds"] >= 0
    assert key == f"mysql/auth/{manifest['startedAt'].replace('-', '').replace(':', '')}.sql.gz"


def test_a_taken_key_moves_to_the_next_second():
    from datetime import UTC, datetime
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    store = FakeStore()
    store.objects[backup.backup_key("auth", now)] = b"earlier run"
    manifest, _, _ = backup_with(FakeProc(1000), store, clock=lambda: now)
    assert manifest["key"] == "mysql/auth/20240506T070810Z.sql.gz"


# --- credentials --------------------------------------------------------------------------------

def test_password_only_in_a_private_option_file():
    proc = FakeProc(1000)
    _, _, popen = backup_with(proc)
    assert all(PASSWORD not in arg for arg in popen.argv)
    assert all(PASSWORD not in v for v in popen.env.values()) and "MYSQL_PWD" not in popen.env
    assert set(popen.env) == {"PATH", "HOME", "TMPDIR"}
    assert popen.cnf_mode == 0o600
    assert 'password="s3cr\'et\\"pa\\\\ss#word"' in popen.cnf_text
    assert "protocol=TCP" in popen.cnf_text and 'user="acme_auth_user"' in popen.cnf_text
    assert not os.path.exists(popen.cnf_path)         # removed afterwards
    assert popen.argv[0] == "fake-dump" and popen.argv[1].startswith("--defaults-extra-file=")
    assert popen.argv[-2:] == ["--", "acme_auth_db"]
    for option in ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"):
        assert option in popen.argv and option in DUMP_OPTIONS


def test_option_file_refuses_line_breaks():
    with pytest.raises(SettingsError), defaults_file(DbSettings("h", 1, "d", "u", "a\nb")):
        pass


# --- failures -------------------------------------------------------------------------------------

def test_failed_dump_aborts_the_upload_and_writes_no_manifest():
    proc = FakeProc(12 * MiB, rc=2, stderr=b"mysqldump: Got error: 1044: Access denied\n")
    store = FakeStore(proc)
    with pytest.raises(BackupError) as err:
        backup_with(proc, store)
    assert "exited with status 2" in str(err.value) and "Access denied" in str(err.value)
    assert store.aborted and store.objects == {}        # parts went out, the upload never completed
    assert len(store.parts) >= 2


def test_upload_failure_kills_the_dump():
    proc = FakeProc(40 * MiB)
    store = FakeStore(proc, fail_after_parts=2)
    with pytest.raises(BackupError, match="SlowDown"):
        backup_with(proc, store)
    assert proc.killed and store.objects == {}
    assert proc.stdout.produced < 40 * MiB


def test_manifest_failure_removes_the_dump_version():
    proc = FakeProc(MiB)
    store = FakeStore(proc, fail_manifest=True)
    with pytest.raises(BackupError, match="AccessDenied"):
        backup_with(proc, store)
    assert store.objects == {}
    assert [v for _, v in store.deleted] == ["v1"]       # that exact version, not a delete marker


def test_settings_from_the_secret_keys():
    env = {"DB_HOST": "h", "DB_PORT": "3307", "DB_DATABASE": "acme_auth_db", "DB_USERNAME": "u",
           "DB_PASSWORD": "p", "S3_BACKUPS_BUCKET": "acme-backups"}
    assert DbSettings.from_env(env).port == 3307
    with pytest.raises(SettingsError, match="DB_PASSWORD"):
        DbSettings.from_env({**env, "DB_PASSWORD": ""})
    assert backup_cli.derive_service(env) == "auth"
    assert backup_cli.derive_service({**env, "BACKUP_SERVICE": "orders"}) == "orders"
    # tenant `acme-eu`: database acme_eu_auth_db, bucket acme-eu-backups
    assert backup_cli.derive_service({"DB_DATABASE": "acme_eu_auth_db", "S3_BACKUPS_BUCKET": "acme-eu-backups"}) \
        == "auth"
    with pytest.raises(SettingsError):
        backup_cli.derive_service({"DB_DATABASE": "other_db", "S3_BACKUPS_BUCKET": "acme-backups"})


# --- restore verifies first --------------------------------------------------------------------

class ExplodingPopen:
    def __call__(self, *args, **kwargs):
        raise AssertionError("the client must not be started for a corrupted dump")


def stored_backup() -> tuple[FakeStore, str, bytes]:
    manifest, store, _ = backup_with(FakeProc(2 * MiB))
    return store, manifest["key"], store.objects[manifest["key"]]


def test_restore_refuses_a_corrupted_dump_before_executing_anything():
    store, key, data = stored_backup()
    corrupted = bytearray(data)
    corrupted[1000] ^= 0xFF
    store.objects[key] = bytes(corrupted)
    with pytest.raises(IntegrityError, match="does not match its manifest") as err:
        restore(DB, store, key, tool="fake-client", popen=ExplodingPopen())
    assert err.value.exit_code == 3

    store.objects[key] = data[:-10]
    with pytest.raises(IntegrityError, match="refusing to restore"):
        restore(DB, store, key, tool="fake-client", popen=ExplodingPopen())

    store.objects[key] = data
    del store.objects[backup.manifest_key(key)]
    with pytest.raises(IntegrityError, match="no manifest"):
        restore(DB, store, key, tool="fake-client", popen=ExplodingPopen())


class FakeClient:
    def __init__(self):
        self.stdin = io.BytesIO()
        self.stdin.close = lambda: None
        self.stderr = io.BytesIO()
        self.argv = None

    def __call__(self, argv, **kwargs):
        self.argv = argv
        return self

    def wait(self, timeout=None):
        return 0

    def kill(self):
        raise AssertionError("not expected")


def test_restore_pipes_the_verified_dump_into_the_client():
    store, key, data = stored_backup()
    client = FakeClient()
    summary = restore(DB, store, key, into_database="acme_auth_copy", tool="fake-client", popen=client)
    assert client.stdin.getvalue() == gzip.decompress(data)
    assert summary["database"] == "acme_auth_copy" and summary["sqlBytes"] == 2 * MiB
    assert "--database=acme_auth_copy" in client.argv and all(PASSWORD not in a for a in client.argv)
    verify(store, key)
    with pytest.raises(SettingsError):
        restore(DB, store, key, into_database="x`; DROP", tool="fake-client", popen=client)


def test_resolve_latest_skips_incomplete_backups():
    store, key, _ = stored_backup()
    store.objects["mysql/auth/29991231T000000Z.sql.gz"] = b"incomplete"
    store.objects["mysql/auth/notes.txt"] = b"x"
    assert resolve(store, "auth", latest=True) == key
    assert resolve(store, "auth", key=key.split("/")[-1][:16]) == key
    with pytest.raises(SettingsError):
        resolve(store, "auth", key="mysql/orders/20240101T000000Z.sql.gz")
    with pytest.raises(BackupError, match="no complete backup"):
        resolve(FakeStore(), "auth", latest=True)


def test_cli_exit_codes(monkeypatch, capsys):
    from tenant_operator import cli
    monkeypatch.setattr(os, "environ", {"PATH": os.environ.get("PATH", "")})
    assert cli.main(["backup", "--secret-env"]) == 2
    assert "BACKUP_SERVICE" in capsys.readouterr().err
    assert cli.main(["backup", "--secret-env", "--service", "auth"]) == 2
    assert "DB_HOST" in capsys.readouterr().err
    monkeypatch.setattr(os, "environ", {
        "BACKUP_SERVICE": "auth", "BACKUP_KEEP_DAILY": "seven", "DB_HOST": "h", "DB_DATABASE": "d",
        "DB_USERNAME": "u", "DB_PASSWORD": "p", "S3_ENDPOINT": "http://minio.invalid:9000",
        "S3_BACKUPS_BUCKET": "acme-backups", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert cli.main(["backup", "--secret-env"]) == 2          # refused before anything runs
    assert "BACKUP_KEEP_DAILY must be an integer" in capsys.readouterr().err
    assert cli.main(["backup", "--secret-env", "--keep-daily", "0", "--keep-weekly", "0",
                     "--keep-monthly", "0"]) == 2
    assert "keeps nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["restore", "--secret-env", "--service", "auth"])       # --backup or --latest is required
    with pytest.raises(SystemExit):
        cli.main(["backup"])                                             # --secret-env or --namespace


class HangingProc(FakeProc):
    """A dump that never writes anything until it is killed."""

    def __init__(self):
        super().__init__(0)
        import threading
        self._gone = threading.Event()
        outer = self

        class Hanging(io.RawIOBase):
            produced = 0

            def readable(self):
                return True

            def read(self, n=-1):
                outer._gone.wait(30)
                return b""
        self.stdout = Hanging()

    def kill(self):
        super().kill()
        self._gone.set()


def test_a_hung_dump_is_stopped_after_the_timeout():
    proc = HangingProc()
    store = FakeStore(proc)
    with pytest.raises(BackupError, match="stopped after"):
        backup_with(proc, store, timeout=0.2)
    assert proc.killed and store.objects == {} and store.aborted
