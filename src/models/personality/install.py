"""Cards in and out of the user's models: `companion cards import|export` as library calls.

`import_card(file)` turns a card (JSON, PNG or CHARX; V1/V2/V3) into a personality model: a
new version in the store (`store/personality/<name>/<version>/` with `persona.json`,
`companion.json`, `manifest.json`) and an entry in `COMPANION_HOME/config.yaml`
(`type: personality`, `path: store:personality/<name>`), so `companion chat <name>` works.
The card is kept exactly as read. `find_card(name)` reads the card of any configured
personality without loading its base model.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from models.errors import CardError, ConfigError
from models.personality.card import CharacterCard, load_card
from models.personality.loader import DEFAULT_BASE, write_personality_folder

__all__ = ["find_card", "import_card", "slug"]


def slug(name: str) -> str:
    """A model name from a character name: `Lady Ada` → `lady-ada`."""
    s = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._")
    return (s or "character")[:64]


def _add_config_entry(name: str, entry: dict[str, Any], force: bool) -> Path:
    from models.home import config_path

    path = config_path()
    data: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(str(path), ["(top level): expected a mapping"])
        data = loaded or {}
    personalities = data.setdefault("models", {}).setdefault("personality", {}) or {}
    data["models"]["personality"] = personalities
    if name in personalities and not force:
        raise ConfigError(str(path), [f"models.personality.{name}: already exists (use --force to replace it)"])
    personalities[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
    return path


def import_card(
    file: str | Path, *, name: str | None = None, base_model: str = DEFAULT_BASE, force: bool = False
) -> dict[str, Any]:
    """Import a card as personality `name` (default: from the character's name)."""
    from models.store import ModelStore, validate_name

    card = load_card(file)
    if card.spec == "chara_card_v1":
        card = card.convert("chara_card_v2")
    model_name = validate_name(name or slug(card.name))
    store = ModelStore()
    version = store.next_version(
        "personality", model_name, "major" if store.list_versions("personality", model_name) else "minor"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_personality_folder(Path(tmp) / "p", card, base_model=base_model, version=version, manifest=False)
        if card.image is not None:
            (folder / "avatar.png").write_bytes(card.image)
        published = store.publish("personality", model_name, version, folder)
    entry = {
        "type": "personality",
        "path": f"store:personality/{model_name}",
        "description": f"{card.name} (imported from {Path(file).name})",
    }
    config = _add_config_entry(model_name, entry, force)
    return {"name": model_name, "version": version, "folder": str(published), "config": str(config)}


def find_card(ref: str, manager: Any = None) -> CharacterCard:
    """A card from a file path, or the card of a configured personality (`luna`)."""
    path = Path(ref)
    if path.suffix.lower() in (".json", ".png", ".apng", ".charx") or path.is_file():
        return load_card(path)
    from models.personality.loader import read_personality_folder, shared_manager

    manager = manager or shared_manager()
    ref_obj = manager.resolve("personality", ref)
    if ref_obj.folder is None or not (ref_obj.folder / "persona.json").exists():
        raise CardError("persona.json", f"personality {ref!r} has no card (it is not a personality folder)")
    return read_personality_folder(ref_obj.folder)[0]
