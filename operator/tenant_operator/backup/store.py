"""The backups bucket, reached with the backup Jobs' keys (the `minio` client
speaks to MinIO and to AWS S3 alike).

Every failure becomes a `BackupError` naming the endpoint, bucket and key,
never a credential."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from tenant_operator.backup import BackupError, SettingsError

DEFAULT_PART_SIZE = 16 * 2**20   # 16 MiB parts: 10,000 parts reach 160 GiB, one part is held in memory
READ_CHUNK = 1 * 2**20


@dataclass(frozen=True)
class S3Settings:
    endpoint: str          # http(s)://host[:port]; empty means AWS S3 in `region`
    region: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        """From the keys of the `backup-credentials` Secret."""
        missing = [k for k in ("S3_BACKUPS_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(k)]
        if missing:
            raise SettingsError(f"missing object-storage settings: {', '.join(missing)} "
                                "(expected from the backup-credentials Secret)")
        return cls(endpoint=env.get("S3_ENDPOINT", ""), region=env.get("S3_REGION") or "us-east-1",
                   bucket=env["S3_BACKUPS_BUCKET"], access_key=env["AWS_ACCESS_KEY_ID"],
                   secret_key=env["AWS_SECRET_ACCESS_KEY"])


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None
    version_id: str | None = None
    etag: str | None = None


def _host(settings: S3Settings) -> tuple[str, bool]:
    endpoint = settings.endpoint or f"https://s3.{settings.region}.amazonaws.com"
    url = endpoint if "://" in endpoint else "https://" + endpoint
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise SettingsError(f"S3_ENDPOINT must be http(s)://host[:port], got {settings.endpoint!r}")
    return parts.netloc, parts.scheme == "https"


class BackupStore:
    """One tenant's backups bucket."""

    def __init__(self, settings: S3Settings, *, client: Minio | None = None,
                 connect_timeout: float = 10.0, read_timeout: float = 300.0):
        self.settings = settings
        self.bucket = settings.bucket
        host, secure = _host(settings)
        self.where = f"{'https' if secure else 'http'}://{host}/{self.bucket}"
        if client is None:
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                maxsize=4, cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
            )
            client = Minio(host, access_key=settings.access_key, secret_key=settings.secret_key,
                           secure=secure, region=settings.region, http_client=http)
        self._s3 = client

    def __repr__(self) -> str:
        return f"BackupStore({self.where!r})"

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except BackupError:
            raise
        except S3Error as exc:
            raise BackupError(f"{action} failed at {self.where}: {exc.code}: {exc.message}") from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackupError(f"{action} failed at {self.where}: {type(exc).__name__}: {exc}") from None

    # --- writes --------------------------------------------------------------------------

    def put_stream(self, key: str, data: BinaryIO, *, part_size: int = DEFAULT_PART_SIZE,
                   content_type: str = "application/gzip") -> str | None:
        """Upload from a stream of unknown length, one part at a time; returns the
        version id (None on an unversioned bucket). An exception raised by
        `data.read` aborts the multipart upload and propagates unchanged."""
        with self._guard(f"uploading {key}"):
            # One upload thread: parts are read only as fast as they are sent, so
            # at most one part is held in memory.
            result = self._s3.put_object(self.bucket, key, data, length=-1, part_size=part_size,
                                         content_type=content_type, num_parallel_uploads=1)
        return result.version_id

    def put_json(self, key: str, doc: dict) -> str | None:
        import io
        raw = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        with self._guard(f"writing {key}"):
            result = self._s3.put_object(self.bucket, key, io.BytesIO(raw), length=len(raw),
                                         content_type="application/json")
        return result.version_id

    def delete(self, key: str, version_id: str | None = None) -> None:
        """Delete `key` (a delete marker on a versioned bucket), or exactly one
        version of it when `version_id` is given."""
        with self._guard(f"deleting {key}"):
            self._s3.remove_object(self.bucket, key, version_id=version_id)

    # --- reads -----------------------------------------------------------------------------

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Current objects under `prefix` (recursive)."""
        with self._guard(f"listing {prefix}"):
            return [ObjectInfo(o.object_name, int(o.size or 0), o.last_modified, o.version_id, o.etag)
                    for o in self._s3.list_objects(self.bucket, prefix=prefix, recursive=True)]

    def stat(self, key: str) -> ObjectInfo | None:
        """The current version of `key`, None when absent."""
        with self._guard(f"reading {key}"):
            try:
                st = self._s3.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise
        return ObjectInfo(key, int(st.size or 0), st.last_modified, st.version_id, st.etag)

    def get_json(self, key: str) -> dict | None:
        """A small JSON object, None when absent."""
        with self._guard(f"reading {key}"):
            try:
                resp = self._s3.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    return None
                raise
            try:
                raw = resp.read(1 << 20)
            finally:
                resp.close()
                resp.release_conn()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise BackupError(f"{key} at {self.where} is not valid JSON") from None
        if not isinstance(doc, dict):
            raise BackupError(f"{key} at {self.where} is not a JSON object")
        return doc

    def iter_object(self, info: ObjectInfo, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """Stream one object. With a version id the exact version is read; else the
        ETag must still match, so two reads of `info` always see the same bytes."""
        headers = {} if info.version_id or not info.etag else {"If-Match": f'"{info.etag.strip(chr(34))}"'}
        with self._guard(f"downloading {info.key}"):
            resp = self._s3.get_object(self.bucket, info.key, version_id=info.version_id,
                                       request_headers=headers or None)
            try:
                yield from resp.stream(chunk_size, decode_content=False)
            finally:
                resp.close()
                resp.release_conn()
