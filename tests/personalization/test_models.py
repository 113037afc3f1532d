"""The seed's samples as written, the loader types, the folder format, HybridModel on a tiny personality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import IntegrityError, ModelNotFoundError, UnsafeFileError
from models.personalization import (
    PreferenceLearner,
    UserPreferences,
    read_personalization_folder,
    write_personalization_folder,
)
from tests.personalization.conftest import GRANT_ALL

user_prefs = {"tone": "warm", "length": "short", "formality": "casual"}


def test_seed_personalization_and_adaptive_samples() -> None:
    # --- "Personalization Models" -----------------------------------------------------------
    from models.personalization import load_personalization_model

    # Load personalization model
    personalization_model = load_personalization_model("user_preferences")

    # Adapt to user preferences
    adapted_response = personalization_model.adapt_response(
        base_response="Hello, how can I help you?",
        user_preferences=user_prefs
    )  # fmt: skip
    assert adapted_response == "Hey, how can I help you?" and adapted_response.base == "Hello, how can I help you?"
    assert adapted_response.score == max(adapted_response.scores) and adapted_response.response_id

    # --- "Model Loading" (the personalization line) -----------------------------------------
    from models.model_manager import ModelManager

    model_manager = ModelManager()
    personalization_model = model_manager.load_model("personalization", "user_prefs")
    assert type(personalization_model).__name__ == "AdaptiveModel" and personalization_model.version == "1.0.0"

    # --- "Adaptive Models" --------------------------------------------------------------------
    from models.adaptive_model import AdaptiveModel

    model = AdaptiveModel(
        model_path="models/personalization/user_adaptive",
        learning_rate=0.001
    )  # fmt: skip

    # Adapt to user preferences
    adapted_response = model.adapt(
        base_response="Hello there!",
        user_preferences=user_prefs
    )  # fmt: skip
    assert model.learning_rate == 0.001 and model.adaptation_rate == 0.2
    assert adapted_response in adapted_response.candidates and "Hello there" in adapted_response.base


def test_seed_hybrid_and_framework_samples() -> None:
    # --- "Hybrid Models" ---------------------------------------------------------------------
    from models.hybrid_model import HybridModel

    model = HybridModel(
        personality_model="models/personality/luna",
        personalization_model="models/personalization/user_prefs"
    )  # fmt: skip

    # Generate personalized personality response
    response = model.generate_personalized_response(
        context="romantic_conversation",
        user_preferences=user_prefs
    )  # fmt: skip
    assert isinstance(response, str) and response.strip() and response.response.model == "luna"
    assert response.response.context == "romantic_conversation" and response.response_id

    # --- "Framework Integration" ---------------------------------------------------------------
    context, emotional_state = "romantic_conversation", "romantic"
    from framework.framework_tool import get_framework
    from models.model_manager import ModelManager  # noqa: F401 - as in the sample

    # Get framework instance
    framework = get_framework()

    # Load models through framework
    personality_plugin = framework.get_plugin("personality_engine")
    personalization_plugin = framework.get_plugin("personalization_engine")

    # Use models
    response = personality_plugin.generate_response(context, emotional_state)
    adapted_response = personalization_plugin.adapt_response(response, user_prefs)
    assert adapted_response.base == str(response).strip() and adapted_response in adapted_response.candidates


def test_folder_round_trip_tolerates_an_adapter(tmp_path: Path) -> None:
    learner = PreferenceLearner.cold_start({"length": "long"}, seed=4)
    folder = tmp_path / "p"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    write_personalization_folder(folder, {"length": "long"}, learner, {"version": "1.2.0", "metrics": {"acc": 0.8}})
    meta = json.loads((folder / "companion.json").read_text())
    assert meta["format"] == "companion-model/1" and meta["kind"] == "personalization" and meta["version"] == "1.2.0"
    assert "adapter/adapter_config.json" in json.loads((folder / "manifest.json").read_text())["files"]
    prefs, again, meta = read_personalization_folder(folder)
    assert prefs == UserPreferences(length="long") and again.profile() == learner.profile()


def test_folder_problems_are_refused(tmp_path: Path) -> None:
    folder = write_personalization_folder(tmp_path / "p", None, PreferenceLearner())
    (folder / "preferences.json").write_text('{"length": "long"}')
    with pytest.raises(IntegrityError):
        read_personalization_folder(folder)
    folder = write_personalization_folder(tmp_path / "q", None, PreferenceLearner(), manifest=False)
    (folder / "learner.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeFileError):
        read_personalization_folder(folder)
    (folder / "learner.pt").unlink()
    (folder / "companion.json").write_text('{"kind": "personality"}')
    with pytest.raises(Exception, match="kind must be 'personalization'"):
        read_personalization_folder(folder)
    with pytest.raises(ModelNotFoundError, match="no companion.json"):
        read_personalization_folder(tmp_path)


def test_the_store_version_wins_over_the_builtin_folder(companion_home: Path) -> None:
    """What the trainer publishes (category personalization) is what the seed names load."""
    from models.personalization import load_personalization_model
    from models.version_control import ModelVersionControl

    vc = ModelVersionControl()
    with vc.store.lock("personalization", "user_prefs"), vc.store.staging("personalization", "user_prefs") as staged:
        write_personalization_folder(staged, {"length": "long", "formality": "formal"}, PreferenceLearner(), {})
        meta = {"category": "personalization", "name": "user_prefs", "version": "1.1.0"}
        vc.publish_staged(staged, meta, alias="current", reason="trained")
    model = load_personalization_model("user_preferences")
    assert model.version == "1.1.0" and model.defaults.length == "long"
    assert load_personalization_model("user_prefs").defaults.formality == "formal"


def test_loader_types_from_the_users_config(tiny_personality: str) -> None:
    from models.hybrid_model import HybridModel
    from models.model_manager import ModelManager

    manager = ModelManager()
    hybrid = manager.load_model("personalization", "ada_for_you")
    assert isinstance(hybrid, HybridModel) and hybrid.candidates == 2 and hybrid.personality.name == "ada"
    r = hybrid.generate_personalized_response(message="Tell me about the lighthouse.", user="sam")
    assert len(set(r.candidates)) >= 2 and r.response_id and r.text in r.candidates


def test_a_model_that_cannot_adapt_is_refused(user_config) -> None:
    from models.model_manager import ModelManager
    from models.personalization import load_personalization_model

    user_config(GRANT_ALL + "models:\n  personalization:\n    plain:\n      type: transformer\n      path: '{tiny}'\n")
    with pytest.raises(ModelNotFoundError, match="cannot adapt responses"):
        load_personalization_model("plain", ModelManager())


def test_bad_parameters_are_config_errors(user_config) -> None:
    from models.errors import ConfigError
    from models.model_manager import ModelManager

    user_config(
        GRANT_ALL + "models:\n  personalization:\n    p:\n      type: adaptive\n"
        "      path: models/personalization/user_prefs\n      parameters: {learning_rate: -1, adaption_rate: 0.1}\n"
    )
    with pytest.raises(
        ConfigError, match=r"learning_rate.*\n.*adaption_rate: unknown key \(did you mean 'adaptation_rate'"
    ):
        ModelManager().load_model("personalization", "p")


def test_hybrid_two_users_get_different_answers_and_feedback_changes_the_next(tiny_personality: str) -> None:
    from models.hybrid_model import HybridModel
    from models.personalization import record_feedback

    hybrid = HybridModel(personality_model="ada", personalization_model="models/personalization/user_prefs")
    ana = {"length": "short", "formality": "casual", "emoji": "some", "tone": "playful"}
    ben = {"length": "long", "formality": "formal", "emoji": "none", "questions": "often"}
    msg = "I finished chapter 2 with Harold at the harbour."
    a = hybrid.generate_personalized_response(user_preferences=ana, message=msg, user="ana", seed=1)
    b = hybrid.generate_personalized_response(user_preferences=ben, message=msg, user="ben", seed=1)
    assert a.response.text == b.response.text  # the same generation ...
    assert a != b and "😄" in a and b.endswith("?")  # ... shown each user their way
    assert len(a) < len(b)
    from models.personalization.rewrite import protected_tokens

    for r in (a, b):  # whatever the reply named or counted, the shown version still does
        for token, count in protected_tokens(r.response.text).items():
            assert r.count(token) >= count
    # Ana keeps choosing the long, formal version: her next answers move toward it.
    target = max(a.candidates, key=len)
    for _ in range(12):
        r = hybrid.generate_personalized_response(user_preferences=ana, message=msg, user="ana", seed=1)
        record_feedback(r.response_id, choice=r.candidates.index(max(r.candidates, key=len)))
    after = hybrid.generate_personalized_response(user_preferences=ana, message=msg, user="ana", seed=1)
    assert len(after) > len(a) and after != a
    assert target  # the candidates are the same generation's


def test_hybrid_puts_memory_and_preferences_in_the_prompt(tiny_personality: str) -> None:
    from models.hybrid_model import HybridModel

    hybrid = HybridModel(personality_model="ada", personalization_model=None)
    seen: list = []
    persona = hybrid.personality
    original = persona.generate_response

    def spy(**kwargs):
        seen.append(kwargs)
        return original(**kwargs)

    persona.generate_response = spy
    hybrid.generate_personalized_response(message="My name is Sam and I love sea shanties.", user="sam")
    r = hybrid.generate_personalized_response(user_preferences={"length": "short"}, message="Any ideas?", user="sam")
    # The note rides last in the history, so it is the first history message the prompt keeps.
    note = seen[-1]["history"][-1]
    assert note["role"] == "system" and "Keep replies short" in note["content"]
    assert "Their name is Sam." in note["content"] and "They like sea shanties." in note["content"]
    assert [m["role"] for m in seen[-1]["history"][:-1]] == ["user", "assistant"]  # the kept conversation
    assert "Their name is Sam." in r.memory
    assert persona.session("sam").history[-1]["content"] == r.text  # the shown reply is what is kept


def test_best_of_n_moves_the_emotional_state_once(tiny_personality: str) -> None:
    from models.hybrid_model import HybridModel

    one = HybridModel(personality_model="ada", personalization_model=None, candidates=1)
    one.generate_personalized_response(message="I am so sad and lonely tonight.", user="x", seed=1)
    single = one.personality.emotional_state("x").to_dict()
    one.personality.reset("x")
    three = HybridModel(one.personality, None, candidates=3)
    r = three.generate_personalized_response(message="I am so sad and lonely tonight.", user="x", seed=1)
    assert three.personality.emotional_state("x").to_dict() == pytest.approx(single)
    assert r.response_id and len(r.candidates) >= 3


def test_the_builtin_folder_verifies() -> None:
    from models.integrity import verify_manifest
    from models.paths import builtin_dir

    folder = builtin_dir("user_prefs")
    verify_manifest(folder, full=True)
    prefs, learner, meta = read_personalization_folder(folder)
    assert meta["kind"] == "personalization" and prefs == UserPreferences() and learner.updates == 0


def test_feedback_on_a_hybrid_entry_reaches_its_learner(tiny_personality: str) -> None:
    from models.model_manager import ModelManager
    from models.personality.loader import shared_manager
    from models.personalization import record_feedback
    from models.personalization.storage import learner_dir

    assert isinstance(shared_manager(), ModelManager)
    hybrid = shared_manager().load_model("personalization", "ada_for_you")
    r = hybrid.generate_personalized_response(message="Hello!", user="sam")
    record_feedback(r.response_id, rating=-1)  # found through the log: the hybrid's personalization part
    assert learner_dir("sam", "ada_for_you").exists()
    assert hybrid.adapt_response("Hello there, friend.", {"emoji": "some"}).endswith("😊")


def test_an_engine_rewriter_adds_candidates_that_keep_names(tiny_model_dir: Path) -> None:
    from models.personalization.model import PersonalizationModel
    from models.personalization.params import PersonalizationParams

    params = PersonalizationParams(rewriter=str(tiny_model_dir), rewrites=3)
    model = PersonalizationModel(params=params)
    base = "Ada wrote 3 letters to Harold about the lighthouse and the lamp oil."
    free = model.rewrites(base, UserPreferences(length="short"))
    assert len(free) == 3  # what the engine proposed (random tiny weights: mostly noise)
    adapted = model.adapt_response(base, {"length": "short"}, log=False)
    for cand in adapted.candidates:
        assert "Ada" in cand and "Harold" in cand and "3" in cand


def test_the_public_api_resolves() -> None:
    import models.personalization as pz

    for name in pz.__all__:
        assert getattr(pz, name) is not None, name
    assert sorted(dir(pz)) == sorted(pz.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pz.nope  # noqa: B018
