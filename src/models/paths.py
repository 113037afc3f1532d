"""What a model `path` means. One place for the rules, used by config, manager and models.

* `builtin:<name>`                 a model shipped inside this package (read-only)
* `openai:<model id>`              a model on an OpenAI-compatible server (see `base_url`)
* `store:<category>/<name>[@ver]`  a model in the user's store
* an existing folder or `.gguf`    used as is; relative paths resolve against the config file's
                                   folder (or the working directory for code)
* `models/<category>/<name>`       the seed's form: when no such folder exists, it names a model
                                   in the store or the config (`luna_model`, `luna_transformer`
                                   and `luna_personality` all mean `luna`)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_PERSONA_BASE", "PathRef", "builtin_dir", "classify_path", "name_candidates", "persona_base_ref"]

_STORE_FORM = re.compile(r"^(?:\./)?(?:models/)?([a-z0-9][a-z0-9_.-]{0,63})/([a-z0-9][a-z0-9_.-]{0,63})/?$")
_STORE_REF = re.compile(r"^store:([a-z0-9][a-z0-9_.-]{0,63})/([a-z0-9][a-z0-9_.-]{0,63})(?:@([0-9A-Za-z.+-]+))?$")
#: Suffixes the seed uses on model names; stripped to find the model they name.
NAME_SUFFIXES = ("_model", "_transformer", "_personality", "_personalization", "_adaptive", "_hybrid")
#: The base model of a personality folder whose `companion.json` names none.
DEFAULT_PERSONA_BASE = "builtin:companion-chat"


def persona_base_ref(folder: Path) -> str | None:
    """For a personality folder (`persona.json`, no weights), its base model reference (else None)."""
    if not (folder / "persona.json").exists() or (folder / "config.json").exists():
        return None
    meta_path = folder / "companion.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    return str(meta.get("base_model") or DEFAULT_PERSONA_BASE)


def builtin_dir(name: str = "") -> Path:
    """The folder of a built-in model (or the built-in root)."""
    root = Path(str(resources.files("models") / "builtin"))
    return root / name if name else root


@dataclass(frozen=True)
class PathRef:
    kind: str  # folder | builtin | store | openai | gguf | missing
    raw: str
    folder: Path | None = None
    category: str | None = None
    name: str | None = None
    version: str | None = None
    remote_model: str | None = None
    problem: str | None = None


def classify_path(raw: str, base: Path | None = None) -> PathRef:
    """Classify `raw` without touching the store (so config validation stays cheap)."""
    base = base or Path.cwd()
    if raw.startswith("builtin:"):
        name = raw.split(":", 1)[1]
        folder = builtin_dir(name)
        if not name or not _is_model_folder(folder):
            known = sorted(p.name for p in builtin_dir().iterdir() if _is_model_folder(p))
            return PathRef(
                "missing", raw, problem=f"no built-in model {name!r} (built-in: {', '.join(known) or 'none'})"
            )
        return PathRef("builtin", raw, folder=folder, name=name)
    if raw.startswith("openai:"):
        model = raw.split(":", 1)[1]
        if not model:
            return PathRef("missing", raw, problem="openai: needs a model id, e.g. openai:llama3.1:8b")
        return PathRef("openai", raw, remote_model=model)
    if raw.startswith("store:"):
        m = _STORE_REF.match(raw)
        if not m:
            return PathRef("missing", raw, problem="store references look like store:<category>/<name>[@<version>]")
        return PathRef("store", raw, category=m.group(1), name=m.group(2), version=m.group(3))
    p = Path(raw).expanduser()
    full = p if p.is_absolute() else base / p
    if full.exists():
        kind = "gguf" if full.is_file() and full.suffix == ".gguf" else "folder"
        return PathRef(kind, raw, folder=full.resolve())
    m = _STORE_FORM.match(raw)
    if m and not p.is_absolute():
        return PathRef("store", raw, category=m.group(1), name=m.group(2))
    return PathRef("missing", raw, problem=f"{raw!r} does not exist (looked for {full})")


def _is_model_folder(folder: Path) -> bool:
    """A weights folder (`config.json`) or a personality folder (`persona.json`)."""
    return (folder / "config.json").exists() or (folder / "persona.json").exists()


def name_candidates(name: str, category: str | None = None) -> list[str]:
    """`luna_personality` → [`luna_personality`, `luna`]; order is most specific first."""
    out = [name]
    suffixes = ((f"_{category}",) if category else ()) + NAME_SUFFIXES
    for s in suffixes:
        if name.endswith(s) and len(name) > len(s) and name[: -len(s)] not in out:
            out.append(name[: -len(s)])
    return out
