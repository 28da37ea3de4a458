"""The admin payload: minio-py's layout, with the PBKDF2 algorithm byte, and a
fresh salt and nonce per payload. (That MinIO accepts it and the user's secret
then signs is checked against the real server by the integration tests.)"""

from __future__ import annotations

import hashlib
import json

import pytest
from minio import crypto
from tenant_operator.backends.objectstore import admin


def decrypt(blob: bytes, secret: str) -> bytes:
    """madmin-go's DecryptData for the PBKDF2 + AES-GCM scheme, written out."""
    salt, algorithm, nonce, body = blob[:32], blob[32], blob[33:41], blob[41:]
    assert algorithm == admin.PBKDF2_AES_GCM
    key = admin.derive_key(secret, salt)
    additional_data = crypto._generate_additional_data(0, key, nonce + b"\x00\x00\x00\x00")
    chunks = [body[i:i + crypto._MAX_CHUNK_SIZE] for i in range(0, len(body), crypto._MAX_CHUNK_SIZE)]
    out = b""
    for nonce_id, chunk in enumerate(chunks, start=1):
        if nonce_id == len(chunks):
            additional_data = crypto._mark_as_last(additional_data)
        cipher = crypto._get_cipher(0, key, crypto._update_nonce_id(nonce, nonce_id))
        cipher.update(additional_data)
        out += cipher.decrypt_and_verify(chunk[:-16], chunk[-16:])
    return out


def test_payloads_decrypt_with_the_admin_secret_only():
    small = json.dumps({"status": "enabled", "secretKey": "s3cr3t"}).encode()
    large = bytes(range(256)) * 1000        # several chunks
    blobs = [admin.encrypt(p, "admin-secret") for p in (small, small, large)]
    assert decrypt(blobs[0], "admin-secret") == small
    assert decrypt(blobs[2], "admin-secret") == large
    assert blobs[0][:32] != blobs[1][:32], "each payload has its own salt"
    assert blobs[0][33:41] != blobs[1][33:41], "and its own nonce"
    with pytest.raises(ValueError):
        decrypt(blobs[0], "another-secret")


def test_the_key_is_madmin_pbkdf2():
    # pbkdf2.Key(password, salt, 8192, 32, sha256.New) in madmin-go.
    salt = bytes(32)
    assert admin.derive_key("secret", salt) == hashlib.pbkdf2_hmac("sha256", b"secret", salt, 8192, 32)
    assert len(admin.derive_key("secret", salt)) == 32
