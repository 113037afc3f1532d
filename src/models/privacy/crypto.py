"""Encryption of user data at rest: Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`).

The key lives in `COMPANION_HOME/keys/data.key` (mode 0600), never in the database, so a copy of
`companion.db` or of `users/` alone reveals nothing. Stores of user data (memory, preferences,
logged answers, feedback, learners) seal what they write with `seal` / `write_user_file` while
`privacy.encrypt_at_rest` is on (the default), and read through `unseal` / `read_user_file`,
which also read values written in the clear (before encryption was on, or with it off), so
turning the setting either way loses nothing.

Database values are sealed as a Fernet token *string*: a Text column holds the token, a JSON
column holds the token as its JSON value (the JSON text of the original, encrypted). A token
is random per write, so sealed columns cannot be compared in SQL: stores that need equality
(memory's "same fact twice") compare after reading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from models.errors import PrivacyError

__all__ = [
    "FERNET_PREFIX",
    "data_key_path",
    "decrypt",
    "encrypt",
    "encryption_enabled",
    "is_encrypted",
    "read_encrypted",
    "read_user_file",
    "seal",
    "unseal",
    "write_encrypted",
    "write_user_file",
]

FERNET_PREFIX = b"gAAAAA"  # every Fernet token starts with version byte 0x80 → base64 "gAAAAA"


def data_key_path(home: Path | None = None) -> Path:
    from models.home import companion_home

    return (home or companion_home()) / "keys" / "data.key"


#: Fernet objects by key file identity (path, inode, mtime, size): sealing and unsealing every
#: row read the key file and created the home folder each time, which a busy server paid per
#: memory fact. A replaced or rotated key file has a new identity, so it is read again.
_FERNETS: dict[tuple[str, int, int, int], object] = {}


def _key_identity(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return str(path), st.st_ino, st.st_mtime_ns, st.st_size


def _fernet(home: Path | None = None) -> object:
    from cryptography.fernet import Fernet

    from models.home import home_secret

    path = data_key_path(home)
    known = _key_identity(path)
    if known is not None and known in _FERNETS:
        return _FERNETS[known]
    key = home_secret(path.name, Fernet.generate_key, home)
    try:
        fernet = Fernet(key.strip())
    except ValueError as exc:
        raise PrivacyError(f"{path} is not a Fernet key ({exc}); restore it from a backup") from exc
    made = _key_identity(path)
    if made is not None:
        _FERNETS[made] = fernet
    return fernet


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


# --- stores of user data ------------------------------------------------------------------------


def encryption_enabled() -> bool:
    """`privacy.encrypt_at_rest` of the active context's config. The config is re-read when one
    of its files changes (two `os.stat` calls an ask); this used to parse the whole YAML again
    every 5 s, a 40 ms stall of whichever request asked."""
    from models.context import current

    return bool(current().config.privacy.encrypt_at_rest)


def seal(value: Any, *, as_json: bool = False, enabled: bool | None = None) -> Any:
    """`value` as stored: a Fernet token string while encryption is on (of `value` itself, or of
    its JSON text with `as_json`), else `value` unchanged. None stays None."""
    if value is None or not (encryption_enabled() if enabled is None else enabled):
        return value
    raw = json.dumps(value, ensure_ascii=False) if as_json else str(value)
    return encrypt(raw.encode("utf-8")).decode("ascii")


def unseal(value: Any, *, as_json: bool = False) -> Any:
    """The value `seal` was given: decrypts a token, passes anything else (clear data) through."""
    if isinstance(value, str) and value.startswith(FERNET_PREFIX.decode()):
        raw = decrypt(value.encode("ascii")).decode("utf-8")
        return json.loads(raw) if as_json else raw
    return value


def write_user_file(path: Path, data: bytes) -> None:
    """Write a file of user data atomically: encrypted while encryption is on, else as is."""
    if encryption_enabled():
        write_encrypted(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.partial")
    part.write_bytes(data)
    os.replace(part, path)


def read_user_file(path: Path, home: Path | None = None) -> bytes:
    """A file `write_user_file` wrote (or one written in the clear): its plain bytes."""
    data = path.read_bytes()
    return decrypt(data, home) if is_encrypted(data) else data
