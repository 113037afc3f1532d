"""ModelManager: resolution through config, suffix names, caching, thread safety, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from models.errors import ModelNotFoundError, UnknownModelError
from models.model_manager import ModelManager, resolve_path
from models.paths import classify_path, name_candidates
from models.registry import loader_types, register_loader
from models.transformer_model import TransformerModel


def test_seed_sample_loads_luna(user_config) -> None:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}'}\n")
    model_manager = ModelManager()
    personality_model = model_manager.load_model("personality", "luna")
    assert isinstance(personality_model, TransformerModel)
    assert personality_model.generate("The", max_length=5, seed=1) is not None


def test_suffix_names_resolve_to_the_same_model(user_config) -> None:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}'}\n")
    mm = ModelManager()
    assert mm.load_model("personality", "luna_personality") is mm.load_model("personality", "luna")
    assert name_candidates("luna_personality", "personality") == ["luna_personality", "luna"]
    assert name_candidates("luna_transformer") == ["luna_transformer", "luna"]


def test_unknown_name_lists_close_matches(user_config) -> None:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}'}\n")
    with pytest.raises(UnknownModelError, match=r"Did you mean 'luna'\?"):
        ModelManager().load_model("personality", "lunaa")
    with pytest.raises(UnknownModelError, match="unknown model category 'personalty'"):
        ModelManager().load_model("personalty", "luna")


def test_concurrent_first_loads_load_once(user_config, monkeypatch: pytest.MonkeyPatch) -> None:
    user_config("models:\n  base:\n    counted: {type: counting, path: '{tiny}'}\n")
    calls: list[int] = []
    gate = threading.Event()

    from pydantic import BaseModel

    class Params(BaseModel):
        pass

    def slow_loader(manager, request):  # a loader that takes a while, to widen the race
        calls.append(1)
        gate.wait(1.0)
        return object()

    register_loader("counting", Params, slow_loader)
    mm = ModelManager()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(mm.load_model("base", "counted"))) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(r) for r in results}) == 1
    assert "counting" in loader_types()


def test_unload_and_list(user_config) -> None:
    user_config("models:\n  base:\n    tiny: {type: transformer, path: '{tiny}'}\n")
    mm = ModelManager()
    mm.load_model("base", "tiny")
    listed = {(i.category, i.name): i for i in mm.list_models()}
    assert listed[("base", "tiny")].loaded
    assert ("base", "companion-base") in listed  # built-in always present
    assert mm.unload("base", "tiny") == 1
    assert not mm.is_loaded("base", "tiny")


def test_warm_load_is_cached(user_config) -> None:
    user_config("models:\n  base:\n    tiny: {type: transformer, path: '{tiny}'}\n")
    mm = ModelManager()
    a = mm.load_model("base", "tiny")
    assert mm.load_model("base", "tiny") is a


def test_config_change_is_picked_up(user_config) -> None:
    mm = ModelManager()
    assert not any(i.name == "tiny" for i in mm.list_models())
    user_config("models:\n  base:\n    tiny: {type: transformer, path: '{tiny}'}\n")
    assert any(i.name == "tiny" for i in mm.list_models())


def test_seed_form_paths_resolve_through_config(user_config) -> None:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}'}\n")
    ref = resolve_path("models/personality/luna_transformer")
    assert ref.kind == "folder"
    assert (ref.folder / "config.json").exists()


def test_seed_config_path_falls_back_to_builtin_luna(user_config) -> None:
    # The seed's own YAML names a folder that doesn't exist: it means "the luna model".
    user_config(
        "models:\n  personality:\n    luna:\n      type: transformer\n"
        "      path: models/personality/luna_model\n      parameters: {max_length: 512, temperature: 0.8}\n"
    )
    mm = ModelManager()
    _, entry = mm.canonical("personality", "luna")
    ref = resolve_path(entry.path, Path.cwd(), config=mm.config, hint=("personality", "luna"))
    assert ref.kind == "builtin"


def test_missing_paths_are_clear() -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_path("/definitely/not/here")
    with pytest.raises(UnknownModelError, match="unknown personality model 'nobody'"):
        resolve_path("models/personality/nobody")
    assert classify_path("builtin:nope").problem is not None
    assert classify_path("openai:llama3").kind == "openai"
    assert classify_path("store:base/x@1.0.0").version == "1.0.0"


def test_store_models_resolve_latest(tiny_model_dir: Path) -> None:
    from models.store import ModelStore

    store = ModelStore()
    store.publish("personality", "nova", "1.0.0", tiny_model_dir)
    store.publish("personality", "nova", "1.1.0", tiny_model_dir)
    ref = resolve_path("models/personality/nova_model")
    assert ref.version == "1.1.0"
    model = TransformerModel("models/personality/nova")
    assert model.info()["version"] == "1.1.0"
