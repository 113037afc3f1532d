"""What `companion models show` prints: one model's config, files and engine."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["describe_model"]


def describe_model(manager: Any, category: str, name: str) -> dict[str, Any]:
    """Config entry, resolved location, files with sizes, and the model's own metadata."""
    from models.model_manager import resolve_path

    cname, entry = manager.canonical(category, name)
    data: dict[str, Any] = {
        "category": category,
        "name": cname,
        "type": entry.type,
        "path": entry.path,
        "description": entry.description,
        "parameters": entry.parameters,
        "config_file": manager.config.origin[(category, cname)],
    }
    ref = resolve_path(
        entry.path, manager.config.base_dir(category, cname), config=manager.config, hint=(category, cname)
    )
    data["resolved"] = str(ref.folder) if ref.folder else ref.raw
    data["version"] = ref.version
    if ref.folder is not None and ref.folder.is_dir():
        files = {  # every file, sub-folders included (a personality's adapter/, training/ reports)
            p.relative_to(ref.folder).as_posix(): p.stat().st_size for p in sorted(ref.folder.rglob("*")) if p.is_file()
        }
        data["files"] = files
        data["size_bytes"] = sum(files.values())
        for meta in ("config.json", "companion.json"):
            f = ref.folder / meta
            if f.exists():
                data[meta] = json.loads(f.read_text())
        cfg = data.get("config.json") or {}
        if cfg:
            data["architecture"] = (cfg.get("architectures") or [cfg.get("model_type")])[0]
            data["engine"] = _engine_choice(entry, cfg)
    elif ref.kind == "gguf":
        data["engine"] = {"auto": "llamacpp", "why": "a GGUF file runs on llama.cpp"}
    data["loaded"] = manager.is_loaded(category, cname)
    return data


def _engine_choice(entry: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Which engine `engine: auto` picks for a model folder, and why (what the fast engine
    lacks when it falls back to `hf`)."""
    from models.engines.llama.spec import unsupported

    chosen = (entry.parameters or {}).get("engine", "auto")
    if entry.type != "transformer" or chosen != "auto":
        return {"configured": chosen}
    problems = unsupported(cfg)
    if not problems:
        return {"auto": "fast", "why": f"the fast engine runs {cfg.get('model_type')} models"}
    return {"auto": "hf", "why": "the fast engine does not run it: " + "; ".join(problems)}
