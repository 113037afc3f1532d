"""The `updates:` section of `config.yaml`: where update catalogs live and whom to trust.

    updates:
      catalogs:                       # folders or HTTP(S) URLs holding catalog.json
        - "https://models.example.org/companion/"
        - "/srv/shared/companion-catalog"
      trusted_keys:                   # Ed25519 public keys (`companion updates keygen` prints one)
        - "ed25519:7bXw...="
      alias: current                  # the alias an applied update moves

A catalog is used only if it is signed by one of `trusted_keys`; with no catalogs configured
`check_updates()` simply finds nothing. Relative folder paths resolve against the config file.
Kept in its own module (pydantic only) so `models.config` can embed it without import cycles.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["KEY_PREFIX", "UpdatesConfig"]

KEY_PREFIX = "ed25519:"
_KEY_RE = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")  # 32 raw bytes, standard base64


class UpdatesConfig(BaseModel):
    """Update sources and the keys their catalogs must be signed with."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    catalogs: list[str] = Field(
        default_factory=list, description="Folders or http(s):// URLs that hold a signed catalog.json."
    )
    trusted_keys: list[str] = Field(
        default_factory=list, description="Ed25519 public keys as 'ed25519:<base64>' (see `companion updates keygen`)."
    )
    alias: str = Field("current", description="The alias an applied update moves to the new version.")
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds to wait for a catalog or file download.")

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not _KEY_RE.match(key):
                raise ValueError(
                    f"{key[:24]!r}... is not an Ed25519 public key: expected 'ed25519:' and 44 base64 "
                    "characters, as printed by `companion updates keygen`"
                )
        return keys

    @field_validator("catalogs")
    @classmethod
    def _catalogs(cls, sources: list[str]) -> list[str]:
        for source in sources:
            if not source.strip():
                raise ValueError("an empty catalog source: use a folder path or an http(s):// URL")
            if "://" in source and not source.startswith(("http://", "https://", "file://")):
                raise ValueError(f"{source!r}: catalogs are folders or http(s):// URLs")
        return sources
