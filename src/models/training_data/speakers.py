"""Stable pseudonymous speaker ids.

A speaker id is `spk_` + 12 hex digits of a keyed BLAKE2b hash of the platform and the
account id (Discord) or display name (plain logs). The key is a random 32-byte salt created
once per `COMPANION_HOME` (`data/.speaker_key`, mode 0600), so ids are stable across runs and
files on one installation but cannot be turned back into account ids by hashing guesses
without that file. The ids are pseudonyms, not anonymization: display names stay in the text
until the anonymization hook removes them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from functools import lru_cache
from pathlib import Path

__all__ = ["speaker_id"]


@lru_cache(maxsize=8)
def _key_for(home: str) -> bytes:
    path = Path(home) / "data" / ".speaker_key"
    if path.is_file():
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".speaker_key.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    try:
        os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's key
    except FileExistsError:
        key = path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return key


def speaker_id(namespace: str, raw: str) -> str:
    """The stable pseudonym of account `raw` on platform `namespace` for this COMPANION_HOME."""
    from models.home import companion_home

    key = _key_for(str(companion_home()))
    digest = hashlib.blake2b(f"{namespace}\0{raw}".encode(), key=key[:64], digest_size=6).hexdigest()
    return f"spk_{digest}"
