"""Encryption of user data at rest: Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`).

The key lives in `COMPANION_HOME/keys/data.key` (mode 0600), never in the database, so a copy of
`companion.db` or of `users/` alone reveals nothing. Stores of user data (memory, preferences,
chats) write through `write_encrypted` and read through `read_encrypted`.
"""

from __future__ import annotations

import os
from pathlib import Path

from models.errors import PrivacyError

__all__ = ["FERNET_PREFIX", "data_key_path", "decrypt", "encrypt", "is_encrypted", "read_encrypted", "write_encrypted"]

FERNET_PREFIX = b"gAAAAA"  # every Fernet token starts with version byte 0x80 → base64 "gAAAAA"


def data_key_path(home: Path | None = None) -> Path:
    from models.home import companion_home

    return (home or companion_home()) / "keys" / "data.key"


def _fernet(home: Path | None = None) -> object:
    from cryptography.fernet import Fernet

    path = data_key_path(home)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError as exc:
        raise PrivacyError(f"{path} is not a Fernet key ({exc}); restore it from a backup") from exc


def encrypt(data: bytes, home: Path | None = None) -> bytes:
    return _fernet(home).encrypt(data)  # type: ignore[attr-defined]


def decrypt(token: bytes, home: Path | None = None) -> bytes:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(home).decrypt(token)  # type: ignore[attr-defined]
    except InvalidToken:
        raise PrivacyError(
            "encrypted user data does not match the key in keys/data.key (wrong key or damaged)"
        ) from None


def is_encrypted(data: bytes) -> bool:
    return data.startswith(FERNET_PREFIX)


def write_encrypted(path: Path, data: bytes, home: Path | None = None) -> None:
    """Encrypt and write `data` atomically (temporary file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.partial")
    part.write_bytes(encrypt(data, home))
    os.replace(part, path)


def read_encrypted(path: Path, home: Path | None = None) -> bytes:
    return decrypt(path.read_bytes(), home)
