"""PersonalityModel on the tiny test model: responses, state, contexts, prompt budget, loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import ConfigError, UnknownContextError
from models.model_manager import ModelManager
from models.personality import PersonalityModel, Response, load_personality_model
from models.personality.behavior import measure, plan_generation
from models.personality.card import CharacterCard
from models.personality.extension import BehaviorTraits
from models.personality.interaction import normalize_history, parse_examples
from models.personality.prompt import assemble_prompt
from tests.personality.conftest import v2_card


@pytest.fixture
def ada(personality_config) -> PersonalityModel:
    model = load_personality_model("ada_personality")
    assert isinstance(model, PersonalityModel)
    return model


def test_generate_response_is_a_string_with_metadata(ada: PersonalityModel) -> None:
    r = ada.generate_response(context="romantic_conversation", emotional_state="romantic")
    assert isinstance(r, Response) and isinstance(r, str) and r == r.text
    assert r.emotion == "romantic" and r.model == "ada" and r.version == "1.0.0" and r.character == "Ada"
    assert r.context == "romantic_conversation"
    assert set(r.timings) >= {"prompt_ms", "generate_ms", "total_ms"} and r.timings["total_ms"] > 0
    assert r.usage["prompt_tokens"] > 0 and r.to_dict()["emotion"] == "romantic"
    assert "romantic" in repr(r) and (r + "!").endswith("!")


def test_the_manager_loads_type_personality(personality_config) -> None:
    mm = ModelManager()
    model = mm.load_model("personality", "ada")
    assert isinstance(model, PersonalityModel) and mm.load_model("personality", "ada_personality") is model
    assert model.control == "prompt"  # the tiny model was never trained with emotion tokens


def test_unknown_context_and_emotion_list_the_valid_ones(ada: PersonalityModel) -> None:
    with pytest.raises(UnknownContextError, match=r"Valid contexts: romantic_conversation, storm_night"):
        ada.generate_response(context="romantic_conversaton")
    with pytest.raises(UnknownContextError, match="Did you mean 'romantic_conversation'"):
        ada.generate_response(context="romantic_conversaton")
    with pytest.raises(UnknownContextError, match="Valid emotional states: anger, caring"):
        ada.generate_response(emotional_state="bliss")


def test_state_follows_the_user_and_override_leaves_it(ada: PersonalityModel) -> None:
    assert ada.emotional_state().emotion == "caring"  # the card's temperament
    r = ada.generate_response(message="haha lol so funny, what a joke", emotional_state="sadness")
    assert r.emotion == "sadness"
    assert ada.emotional_state().emotion == "playful"  # the override was for that turn only
    r2 = ada.generate_response(message="the bus leaves at noon")
    assert r2.emotion == ada.emotional_state().emotion
    assert len(ada.session().history) == 4  # two user messages, two replies
    ada.reset()
    assert ada.session().history == [] and ada.emotional_state().emotion == "caring"


def test_context_sets_the_mood_and_caller_history_is_not_kept(ada: PersonalityModel) -> None:
    r = ada.generate_response(context="storm_night", message="hello", history=[("user", "hi"), ("assistant", "hey")])
    assert r.emotion in ("fear", "caring") and ada.session().history == []
    assert r.prompt["kept"]["history"] + r.prompt["dropped"]["history"] == 2  # the tiny model has 128 positions


def test_greetings_and_addressing(ada: PersonalityModel) -> None:
    assert ada.greeting() == "*Ada looks up from the lamp.* You came! Sit by the window."
    assert ada.greeting(user="Sam", index=1) == "Ah, Sam. The gulls told me you'd come."
    text = ada.start(user="Sam")
    assert ada.session("Sam").history == [{"role": "assistant", "content": text}]


def test_streaming_matches_and_records(ada: PersonalityModel) -> None:
    pieces = list(ada.stream_response(message="tell me about the storm", seed=5))
    assert ada.last_response is not None and "".join(pieces).strip() == ada.last_response.text


def test_lorebook_lands_in_the_prompt(ada: PersonalityModel) -> None:
    r = ada.generate_response(message="I hear thunder")
    assert r.prompt["kept"]["lore"] == 1


def test_emotion_tokens_when_the_base_was_trained_with_them(personality_config, tiny_model_dir: Path) -> None:
    model = load_personality_model("ada")
    trained = PersonalityModel(model.card, model.base, params=model.params, emotion_trained=True)
    assert trained.control == "token"
    rendered: list[str] = []
    codec = trained.base.engine.codec
    original = codec.render_chat

    def spy(messages, add_generation_prompt=True, **extra):
        out = original(messages, add_generation_prompt, **extra)
        rendered.append(out)
        return out

    codec.render_chat = spy
    try:
        trained.generate_response(emotional_state="playful", message="hi")
    finally:
        codec.render_chat = original
    assert rendered and rendered[-1].endswith("<|assistant|><|emotion:playful|>")
    assert "feels playful" not in rendered[-1]


def test_prompt_budget_drops_examples_first_then_old_history() -> None:
    card = CharacterCard(v2_card())
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i} " * 5} for i in range(20)
    ]
    count = lambda s: len(s.split())  # noqa: E731
    roomy = assemble_prompt(card, user="Sam", message="hi", history=history[:2], scenario_text="x", count_tokens=count)
    assert roomy.kept["examples"] == 2 and roomy.dropped["examples"] == 0
    tight = assemble_prompt(
        card, user="Sam", message="hi", history=history, scenario_text="x", count_tokens=count, budget=200
    )
    assert tight.kept["examples"] == 0 and tight.dropped["examples"] == 2  # examples went first
    assert 0 < tight.kept["history"] < 20 and tight.prompt_tokens <= 200
    assert tight.messages[-2]["content"] == "hi" and tight.messages[-1]["role"] == "system"  # post-history
    assert history[-1]["content"].strip() in [m["content"].strip() for m in tight.messages]  # newest kept
    always = assemble_prompt(
        card, user="Sam", message="hi", history=history, scenario_text="x", count_tokens=count, budget=200,
        example_mode="always",
    )  # fmt: skip
    assert always.kept["examples"] == 2
    system = roomy.messages[0]["content"]
    assert system.startswith("You are Ada, talking with Sam.") and "{{" not in system and "Sam" in system


def test_examples_and_history_parsing() -> None:
    blocks = parse_examples(v2_card()["data"]["mes_example"])
    assert blocks[1] == [
        {"role": "user", "content": "I wrote a poem."},
        {"role": "assistant", "content": "Read it to me, <USER>."},
    ]
    assert normalize_history(["hi", "hello"]) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


def test_behaviour_traits_become_settings_and_are_measurable() -> None:
    terse = plan_generation(
        BehaviorTraits(verbosity=0.0, humour=0.0), max_length=100, temperature=0.8, repetition_penalty=1.1
    )
    wordy = plan_generation(
        BehaviorTraits(verbosity=1.0, humour=1.0, initiative=0.9),
        max_length=100,
        temperature=0.8,
        repetition_penalty=1.1,
    )
    assert terse.max_new_tokens < wordy.max_new_tokens and terse.temperature < wordy.temperature
    assert any("question" in i for i in wordy.instructions) and any("short" in i for i in terse.instructions)
    m = measure(["Why not? Let's go!", "Fine.", "I'd love that, haha."])
    assert (
        m.replies == 3
        and m.question_rate == pytest.approx(1 / 3, abs=1e-3)
        and m.mean_words > 1
        and m.contraction_rate > 0
    )


def test_invalid_personality_parameters_are_config_errors(user_config, personality_dir: Path) -> None:
    user_config(
        f"models:\n  personality:\n    ada: {{type: personality, path: '{personality_dir}', "
        "parameters: {emotion_control: telepathy, max_lenght: 3}}\n"
    )
    with pytest.raises(ConfigError) as info:
        ModelManager().load_model("personality", "ada")
    text = str(info.value)
    assert "parameters.emotion_control" in text and "max_lenght: unknown key (did you mean 'max_length'?)" in text


def test_a_transformer_entry_is_wrapped_as_a_personality(user_config) -> None:
    user_config("models:\n  personality:\n    ada: {type: transformer, path: '{tiny}', parameters: {max_length: 8}}\n")
    model = load_personality_model("ada")
    assert isinstance(model, PersonalityModel) and model.card.name == "Ada"
    assert isinstance(model.generate_response(message="hi"), Response)


def test_personality_folder_metadata(personality_dir: Path, tiny_model_dir: Path) -> None:
    meta = json.loads((personality_dir / "companion.json").read_text())
    assert meta["kind"] == "personality" and meta["base_model"] == str(tiny_model_dir)
    assert (personality_dir / "manifest.json").exists()


def test_an_external_openai_model_gets_the_emotion_in_words(user_config, personality_dir: Path) -> None:
    from tests.openai_fake_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        user_config(
            f"models:\n  personality:\n    ada:\n      type: personality\n      path: '{personality_dir}'\n"
            f"      parameters: {{base_model: 'openai:fake-model', base_url: '{server.url}', max_length: 20}}\n"
        )
        model = load_personality_model("ada")
        assert model.control == "prompt"
        r = model.generate_response(context="storm_night", emotional_state="romantic", message="Hello?", user="Sam")
        assert r.text == "Hello there, friend." and r.emotion == "romantic"
        body = server.requests[-1].body
    system = body["messages"][0]["content"]
    assert "Right now Ada feels romantic" in system and "A storm rages outside." in system
    assert body["messages"][-2] == {"role": "user", "content": "Hello?"}
    assert "Respond with a" not in system  # no second emotion instruction from the engine


def test_custom_labels_map_to_control_tokens(personality_config) -> None:
    base = load_personality_model("ada").base
    raw = v2_card()
    raw["data"]["extensions"]["companion"] = {
        "emotion": {"labels": ["happy", "calm"], "label_map": {"happy": ["joy", "playful"], "calm": ["neutral"]},
                    "baseline": "calm"},
    }  # fmt: skip
    model = PersonalityModel(CharacterCard(raw), base, emotion_trained=True)
    assert model.labels == ["happy", "calm"] and model.emotional_state().emotion == "calm"
    turn = model._prepare(None, "happy", "hi", [], None, {})
    assert turn.options["emotion"] == "joy" and turn.emotion == "happy"
    model.generate_response(message="haha lol so funny, what a joke")
    assert model.emotional_state().values["happy"] > 0  # playful + joy are summed into "happy"


def test_trim_incomplete_cuts_every_reply_back_to_a_whole_sentence(
    personality_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.personality.params import PersonalityParams

    raw = "The lighthouse keeper never slept. He watched the"  # as a token limit leaves it
    for trim, expected in ((False, raw), (True, "The lighthouse keeper never slept.")):
        ada = load_personality_model("ada_personality")
        ada.params = ada.params.model_copy(update={"trim_incomplete": trim})
        monkeypatch.setattr(ada, "_generate", lambda turn: raw)
        reply = ada.generate_response(message="Tell me about the sea.", seed=1)
        assert reply.text == expected
        assert ada.session().history[-1]["content"] == expected  # the kept turn is the trimmed one
    with pytest.raises(ValueError, match="trim_incomplete"):
        PersonalityParams(trim_incomplete="sometimes")
