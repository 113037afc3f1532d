"""Helpers of the lifecycle tests: a config for Luna, model edits, a catalog publisher, and the
loopback HTTP handler that can cut chosen downloads halfway (fixtures are in conftest.py)."""

from __future__ import annotations

import http.server
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

LUNA_CONFIG = "models:\n  personality:\n    luna: {type: transformer, path: '{tiny}', parameters: {max_length: 8}}\n"


def edit_model(folder: Path, **config_changes: Any) -> Path:
    """Change keys of a model folder's config.json (a visible, diffable change)."""
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(config_changes)
    path.write_text(json.dumps(data, indent=2))
    (folder / "manifest.json").unlink(missing_ok=True)
    return folder


class Publisher:
    """A separate installation that versions models and publishes a signed catalog folder."""

    def __init__(self, root: Path) -> None:
        from models.catalog import generate_key
        from models.version_control import ModelVersionControl

        self.root = root
        self.home = root / "publisher-home"
        self.home.mkdir(parents=True)
        self.catalog = root / "catalog"
        self.key_path = root / "signing.pem"
        self.public_key = generate_key(self.key_path)
        self.vc = ModelVersionControl(
            home=self.home, actor="publisher", database_url=f"sqlite:///{self.home / 'companion.db'}"
        )

    def publish(self, source: Path, bump: str = "major", notes: str = "new release", expires_days: float = 30) -> str:
        """Version `source` as personality/luna (2.0.0 on the first call) and publish it."""
        from models.update_publish import publish_version

        if not self.vc.list_versions("luna", category="personality"):
            self.vc.create_version("luna", "baseline", category="personality", source=source)
        info = self.vc.create_version("luna", notes, bump=bump, category="personality", source=source)  # type: ignore[arg-type]
        publish_version(self.vc, "personality/luna", self.catalog, self.key_path, info.version, expires_days)
        return info.version

    def resign(self, **changes: Any) -> None:
        """Rewrite catalog.json's signed part with `changes` and sign it again."""
        from models.catalog import load_private_key, sign_catalog

        path = self.catalog / "catalog.json"
        signed = json.loads(path.read_text())["signed"]
        signed.update(changes)
        path.write_text(json.dumps(sign_catalog(signed, load_private_key(self.key_path))))

    def updates_config(self, source: str) -> str:
        return f"updates:\n  catalogs: ['{source}']\n  trusted_keys: ['{self.public_key}']\n"


class CuttingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; files whose path is in `cut` are sent half, then the connection closes."""

    cut: ClassVar[set[str]] = set()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if self.path.lstrip("/") in self.cut:
            data = source.read()
            outputfile.write(data[: len(data) // 2])  # then the connection closes: a cut download
            self.close_connection = True
            return
        shutil.copyfileobj(source, outputfile)
