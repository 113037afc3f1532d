"""`companion run MODEL [--character NAME]`: any model as a companion in one step (Ollama's `run`).

    from models.runner import companion_for
    luna = companion_for("exports/companion-chat.gguf", character="luna")
    print(luna.generate_response(message="Hello!").text)

MODEL is, in the order tried:

* a `.gguf` file (the `llamacpp` engine) or a model folder (Hugging Face layout);
* `openai:ID`, or any id with `base_url=` (an OpenAI-compatible server: `base_url`, else the
  environment's `OPENAI_BASE_URL`, as the `openai` client reads it);
* a configured or stored model: `NAME` or `CATEGORY/NAME` (a personality is returned as is);
* `ORG/NAME[@REVISION]` on the Hugging Face Hub: pulled into the store first (`models.hub`),
  after `confirm(question)` says yes.

The character is a configured personality's card (its card, scenarios, emotional model and
parameters, over MODEL instead of its own base; a LoRA adapter trained for another base is not
applied) or, by default, `ASSISTANT`: a plain, friendly assistant card. Either way the result
is a `PersonalityModel`, so every companion feature works: emotions and steering (local
engines), scenarios, lorebooks, memory and personalization (`HybridModel`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.errors import ModelNotFoundError, UnknownModelError

__all__ = ["ASSISTANT", "assistant_card", "companion_for", "resolve_run_model"]

#: The default character of `companion run`: no persona beyond being helpful.
ASSISTANT = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Assistant",
        "description": "{{char}} is a helpful, friendly writing companion who answers {{user}} clearly and kindly.",
        "personality": "",
        "scenario": "",
        "first_mes": "Hello! What shall we write today?",
        "mes_example": "",
        "tags": ["assistant"],
    },
}


def assistant_card() -> Any:
    from models.personality.card import CharacterCard

    return CharacterCard(ASSISTANT, source="companion run")


def resolve_run_model(
    spec: str, *, manager: Any = None, confirm: Callable[[str], bool] | None = None, **params: Any
) -> Any:
    """The model MODEL names (see the module doc): a `TransformerModel`, or the configured model
    itself (which may be a `PersonalityModel`). `params` are `transformer` parameters."""
    from models.model_manager import ModelManager
    from models.transformer_model import TransformerModel

    path = Path(spec).expanduser()
    if spec.startswith("openai:") or params.get("base_url"):
        if not params.get("base_url") and os.environ.get("OPENAI_BASE_URL"):
            params["base_url"] = os.environ["OPENAI_BASE_URL"]
        if not params.get("base_url"):
            raise ModelNotFoundError(f"{spec}: name its server with --base-url URL (or set OPENAI_BASE_URL)")
        params = {k: v for k, v in params.items() if v is not None}
        return TransformerModel(spec if spec.startswith("openai:") else f"openai:{spec}", **params)
    model_folder = path.is_dir() and any((path / f).exists() for f in ("config.json", "persona.json"))
    if path.suffix == ".gguf" or model_folder:
        if not path.exists():
            raise ModelNotFoundError(f"{spec}: no such file")
        return TransformerModel(str(path.resolve()), **params)
    manager = manager or ModelManager()
    try:
        category, name = spec.split("/", 1) if "/" in spec else manager.find(spec)
        manager.canonical(category, name)
        return manager.load_model(category, name)
    except UnknownModelError:
        from models.hub import is_repo_id

        known_category = "/" in spec and spec.split("/", 1)[0] in manager.config.categories()
        if known_category or not is_repo_id(spec):  # personality/nobody is a config name, not a repo
            raise
    from models.hub import default_name, parse_repo, pull

    repo, _ = parse_repo(spec)
    stored = default_name(repo)
    try:
        return manager.load_model("base", stored)  # pulled before
    except ModelNotFoundError:
        pass
    if confirm is not None and not confirm(f"{spec} is not here: pull it from the Hugging Face Hub?"):
        raise ModelNotFoundError(f"{spec}: not pulled (run `companion models pull {spec}` first)")
    pull(spec, name=stored)
    return manager.load_model("base", stored)


def companion_for(
    spec: str | Any,
    character: str | None = None,
    *,
    manager: Any = None,
    confirm: Callable[[str], bool] | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    **params: Any,
) -> Any:
    """A `PersonalityModel`: `character`'s card (default `ASSISTANT`) over the model `spec`
    names (or over `spec` itself when it is already a model). `base_url` (and the name of the
    environment variable holding its key) makes `spec` a model id on that server."""
    from models.model_manager import ModelManager
    from models.personality.loader import emotion_trained, read_personality_folder
    from models.personality.model import PersonalityModel
    from models.personality.params import PersonalityParams

    manager = manager or ModelManager()
    remote = {"base_url": base_url, "api_key_env": api_key_env} if base_url else {}
    model = resolve_run_model(spec, manager=manager, confirm=confirm, **remote) if isinstance(spec, str) else spec
    if hasattr(model, "generate_response"):  # already a personality
        if character is None:
            return model
        model = model.base
    if character is None:
        return PersonalityModel(
            assistant_card(), model, params=PersonalityParams(**params), name="assistant",
            emotion_trained=emotion_trained(model),
        )  # fmt: skip
    category, name = character.split("/", 1) if "/" in character else ("personality", character)
    _, entry = manager.canonical(category, name)
    if entry.type != "personality":
        raise ModelNotFoundError(f"{character} is a {entry.type} model, not a personality")
    ref = manager.resolve(category, name)
    if ref.folder is None:
        raise ModelNotFoundError(f"personality {character}: its path {entry.path!r} is not a folder")
    card, _meta = read_personality_folder(ref.folder)
    settings = {**entry.parameters, **params, "base_model": None}
    return PersonalityModel(
        card, model, params=PersonalityParams(**settings), name=name, emotion_trained=emotion_trained(model)
    )
