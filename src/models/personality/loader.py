"""Loading personality models: the `personality` loader type and personality folders.

A personality folder holds::

    persona.json       the character card (V2/V3 JSON; our fields under data.extensions.companion)
    companion.json     {"format": "companion-model/1", "kind": "personality",
                        "base_model": "builtin:companion-chat", "version": "1.0.0"}
    adapter/           optional PEFT LoRA adapter trained on the character's lines
    manifest.json      sha256 of every file (built-in and store folders)

`base_model` is a model path (`builtin:…`, `openai:…`, a folder, relative to the personality
folder) or `CATEGORY/NAME` of a configured model; the config entry's `parameters.base_model`
overrides it. Base models are shared: three characters on one base load its weights once.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from pathlib import Path
from typing import Any

from models.config import TransformerParams
from models.errors import CardError, ModelNotFoundError
from models.paths import DEFAULT_PERSONA_BASE, persona_base_ref
from models.personality.card import CharacterCard, load_card
from models.personality.params import PersonalityParams
from models.registry import LoadRequest

__all__ = [
    "DEFAULT_BASE",
    "load_personality",
    "persona_base_ref",
    "read_personality_folder",
    "reset_shared_manager",
    "shared_manager",
    "write_personality_folder",
]

#: The base of a personality folder that names none (imported cards, `write_personality_folder`):
#: the embedded chat model, which follows the chat template and the emotion control tokens.
#: (`builtin:companion-base` is the pre-trained model under it: it continues text, it does not chat.)
DEFAULT_BASE = DEFAULT_PERSONA_BASE
CONFIG_REF = re.compile(r"^([a-z0-9][a-z0-9_.-]{0,63})/([a-z0-9][a-z0-9_.-]{0,63})$")
_BASES: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_WRAPPED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def shared_manager() -> Any:
    """The process-wide `ModelManager` (`models.model_manager.default_manager`)."""
    from models.model_manager import default_manager

    return default_manager()


def reset_shared_manager() -> None:
    """Forget the process-wide manager and its cached models (tests; after changing COMPANION_HOME)."""
    from models.model_manager import reset_default_manager

    with _LOCK:
        reset_default_manager()
        _BASES.clear()
        _WRAPPED.clear()


def read_personality_folder(folder: Path) -> tuple[CharacterCard, dict[str, Any]]:
    """The card and `companion.json` metadata of a personality folder."""
    persona = folder / "persona.json"
    if not persona.exists():
        raise ModelNotFoundError(f"{folder}: not a personality folder (no persona.json)")
    meta_path = folder / "companion.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    card = load_card(persona)
    if (folder / "avatar.png").exists():
        card.image = (folder / "avatar.png").read_bytes()
    return card, meta


def write_personality_folder(
    folder: Path,
    card: CharacterCard,
    *,
    base_model: str = DEFAULT_BASE,
    version: str = "1.0.0",
    manifest: bool = True,
    name: str | None = None,
) -> Path:
    """Write `persona.json` + `companion.json` (+ `manifest.json`) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "persona.json").write_text(card.to_json(), encoding="utf-8")
    meta = {
        "format": "companion-model/1",
        "kind": "personality",
        "name": name or folder.name,
        "character": card.name,
        "base_model": base_model,
        "version": version,
    }
    (folder / "companion.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if manifest:
        from models.store import write_manifest

        write_manifest(folder)
    return folder


def _load_base(
    manager: Any, ref: str, params: PersonalityParams, folder: Path | None, adapter: Path | None = None
) -> Any:
    """The base model a personality generates with. Shared between personalities unless the
    personality has its own LoRA adapter, which is merged into a private copy of the base."""
    from models.model_manager import resolve_path
    from models.transformer_model import TransformerModel

    m = CONFIG_REF.match(ref)
    resolved = None
    if m and not (folder and (folder / ref).exists()):
        try:
            if adapter is None:
                return manager.load_model(m.group(1), m.group(2))
            resolved = manager.resolve(m.group(1), m.group(2))
        except ModelNotFoundError:
            pass  # not a config name: try it as a path below
    if resolved is None:
        resolved = resolve_path(ref, folder or Path.cwd())
    where = str(resolved.folder) if resolved.folder else resolved.raw
    engine_keys = ("engine", "dtype", "threads", "base_url", "model", "api_key_env")
    key = (where, str(adapter) if adapter else None, *(getattr(params, k) for k in engine_keys))
    with _LOCK:
        base = _BASES.get(key)
        if base is None:
            gen = params.model_dump(include=set(TransformerParams.model_fields))
            base = TransformerModel(ref, ref=resolved, adapter=adapter, **gen)
            _BASES[key] = base
    return base


def _adapter_of(folder: Path, meta: dict[str, Any]) -> Path | None:
    """The personality's LoRA adapter folder, if it has one."""
    adapter = folder / "adapter"
    return adapter if (adapter / "adapter_config.json").exists() else None


def check_adapter_base(folder: Path, meta: dict[str, Any], base: Any) -> None:
    """Refuse an adapter whose recorded base weights differ from the base it would load on."""
    from models.errors import AdapterError
    from models.integrity import weights_sha256

    want = (meta.get("adapter") or {}).get("base_sha256")
    base_folder = getattr(getattr(base, "ref", None), "folder", None)
    if not want or base_folder is None:
        return
    have = weights_sha256(Path(base_folder))
    if have != want:
        raise AdapterError(
            f"{folder}: the LoRA adapter was trained on base {meta['adapter'].get('base_model')!r} with weights "
            f"sha256 {want[:12]}…, but its base resolves to {base_folder} (weights {str(have)[:12]}…); "
            "retrain the adapter or point base_model at the base it was trained on"
        )


def load_personality(manager: Any, request: LoadRequest) -> Any:
    """Loader of `type: personality` config entries."""
    from models.personality.model import PersonalityModel

    folder = request.ref.folder
    if folder is None or not folder.is_dir():
        raise ModelNotFoundError(
            f"personality {request.name!r}: path {request.entry.path!r} must be a folder with persona.json"
        )
    from models.store import check_safe_files, verify_manifest

    check_safe_files(folder)
    if (folder / "manifest.json").exists():
        verify_manifest(folder)
    card, meta = read_personality_folder(folder)
    params = request.params
    if not isinstance(params, PersonalityParams):
        raise CardError("parameters", f"expected personality parameters, got {type(params).__name__}")
    base_ref = params.base_model or str(meta.get("base_model") or DEFAULT_BASE)
    adapter = _adapter_of(folder, meta)
    base = _load_base(manager, base_ref, params, folder, adapter)
    if adapter is not None:
        check_adapter_base(folder, meta, base)
    return PersonalityModel(
        card,
        base,
        params=params,
        name=request.name,
        version=request.ref.version or meta.get("version"),
        emotion_trained=emotion_trained(base),
    )


def emotion_trained(base: Any) -> bool:
    """Whether the base model was fine-tuned with emotion control tokens: its companion.json
    says so, or for a GGUF file, the `companion.emotion_control` key our export writes."""
    where = getattr(getattr(base, "ref", None), "folder", None)
    if where is None:
        return False
    where = Path(where)
    if where.is_file() and where.suffix == ".gguf":
        from models.engines.llamacpp import gguf_metadata

        return bool(gguf_metadata(where).get("companion.emotion_control"))
    if not (where / "companion.json").exists():
        return False
    meta = json.loads((where / "companion.json").read_text(encoding="utf-8"))
    return bool(meta.get("emotion_control"))


def wrap_plain_model(manager: Any, name: str, model: Any) -> Any:
    """A `type: transformer` personality entry (the seed's example config) as a personality:
    the built-in card of that name when there is one, else a card that only names it."""
    from models.paths import builtin_dir, name_candidates
    from models.personality.model import PersonalityModel

    with _LOCK:
        known = _WRAPPED.get(model)
    if known is not None:
        return known
    card = None
    for cand in name_candidates(name, "personality"):
        persona = builtin_dir(cand) / "persona.json"
        if persona.exists():
            card = load_card(persona)
            break
    if card is None:
        card = CharacterCard({"name": name.split("_")[0].title(), "description": "", "first_mes": ""})
    params = PersonalityParams(**model.params.model_dump())
    wrapped = PersonalityModel(card, model, params=params, name=name, emotion_trained=emotion_trained(model))
    with _LOCK:
        _WRAPPED[model] = wrapped
    return wrapped
