"""MinIO's admin client, with the payload key derived once.

The admin API wants the body of `add user` encrypted with a key derived from
the admin secret by argon2id (64 MiB, four lanes). minio-py derives a fresh key
with a fresh salt on every call: 356 ms of CPU per user created or rotated,
measured on the local platform. The salt travels in the payload and the
server derives the key from it, so one salt and key per admin secret serve
every payload; each payload still gets its own random nonce, as minio-py
gives it. The format is minio-py's own (its helpers build it), pinned by the
dependency range minio>=7.2,<7.3."""

from __future__ import annotations

import functools
import json
import os

from minio import MinioAdmin
from minio import crypto as _crypto
from minio.minioadmin import _COMMAND


@functools.lru_cache(maxsize=4)
def _salt_and_key(secret: str) -> tuple[bytes, bytes]:
    salt = os.urandom(_crypto._SALT_LEN)
    return salt, _crypto._generate_key(secret.encode(), salt)


def encrypt(payload: bytes, secret: str) -> bytes:
    """minio.crypto.encrypt with the key of `_salt_and_key` (AES-GCM, as minio-py)."""
    salt, key = _salt_and_key(secret)
    nonce = os.urandom(_crypto._NONCE_LEN)
    additional_data = _crypto._generate_additional_data(0, key, nonce + b"\x00\x00\x00\x00")
    indices = range(0, len(payload), _crypto._CHUNK_SIZE)
    result = salt + b"\x00" + nonce
    for nonce_id, i in enumerate(indices, start=1):
        if i == indices[-1]:
            additional_data = _crypto._mark_as_last(additional_data)
        cipher = _crypto._get_cipher(0, key, _crypto._update_nonce_id(nonce, nonce_id))
        cipher.update(additional_data)
        data, tag = cipher.encrypt_and_digest(payload[i:i + _crypto._CHUNK_SIZE])
        result += data + tag
    return result


class Admin(MinioAdmin):
    """MinioAdmin whose `user_add` (creating a user, setting its secret) encrypts
    with the cached key."""

    def user_add(self, access_key: str, secret_key: str) -> str:
        body = json.dumps({"status": "enabled", "secretKey": secret_key}).encode()
        response = self._url_open(method="PUT", command=_COMMAND.ADD_USER, query_params={"accessKey": access_key},
                                  body=encrypt(body, self._provider.retrieve().secret_key))
        return response.data.decode()
