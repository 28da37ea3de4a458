"""The admin payload encrypted with a cached key is what minio-py decrypts, and
the argon2 key is derived once per admin secret."""

from __future__ import annotations

import io
import json

from minio import crypto
from tenant_operator.backends.objectstore import admin


class Body(io.BytesIO):
    """What DecryptReader reads: a response body."""

    def release_conn(self):
        pass


def decrypt(blob: bytes, secret: str) -> bytes:
    with crypto.DecryptReader(Body(blob), secret.encode()) as reader:
        return b"".join(reader.stream())


def test_payloads_decrypt_as_minio_py_reads_them(monkeypatch):
    derived = []
    real = crypto._generate_key
    monkeypatch.setattr(crypto, "_generate_key", lambda s, salt: derived.append(salt) or real(s, salt))
    admin._salt_and_key.cache_clear()
    small = json.dumps({"status": "enabled", "secretKey": "s3cr3t"}).encode()
    large = bytes(range(256)) * 1000        # several chunks
    blobs = [admin.encrypt(p, "admin-secret") for p in (small, small, large)]
    assert decrypt(blobs[0], "admin-secret") == small
    assert decrypt(blobs[2], "admin-secret") == large
    assert blobs[0] != blobs[1], "each payload has its own nonce"
    assert len(derived) == 1 + 2, "one derivation for three payloads (cached), one per decryption"
    assert len(set(derived)) == 1, "one salt for every payload of this secret"
    # Another admin secret gets its own salt and key; the wrong secret cannot read.
    other = admin.encrypt(small, "another-secret")
    assert other[:32] != blobs[0][:32]
    try:
        decrypt(other, "admin-secret")
    except ValueError:
        pass
    else:
        raise AssertionError("decrypted with the wrong secret")
