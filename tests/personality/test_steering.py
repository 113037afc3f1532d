"""Emotion steering (`models.personality.steering`) and the sampler hooks it rides on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.engines.base import SamplingParams
from models.engines.codec import TextCodec
from models.engines.sampling import Sampler
from models.errors import EngineError
from models.paths import builtin_dir
from models.personality import PersonalityModel, load_personality_model
from models.personality.emotion import EmotionClassifier, default_classifier
from models.personality.params import PersonalityParams
from models.personality.steering import EmotionSteering, token_emotion_scores


@pytest.fixture(scope="module")
def shipped() -> EmotionClassifier:
    return default_classifier()


@pytest.fixture(scope="module")
def chat_codec() -> TextCodec:
    return TextCodec(builtin_dir("companion-chat"))


# --- the token table ----------------------------------------------------------------------


def test_token_scores_put_emotion_words_on_top(shipped: EmotionClassifier, chat_codec: TextCodec) -> None:
    scores, mask = token_emotion_scores(shipped, chat_codec)
    assert scores.shape == (chat_codec.vocab_size, len(shipped.labels)) and mask.sum() > 1000
    assert not scores[~mask].any()  # sub-word pieces and markup get no score
    assert np.allclose(scores[mask].mean(axis=0), 0.0, atol=1e-4)
    steering = EmotionSteering(shipped, chat_codec, shipped.labels)
    expected = {"sadness": "sad", "fear": "afraid", "playful": "funny", "romantic": "love", "caring": "safe"}
    for label, word in expected.items():
        bias = steering.bias(label)
        top = {chat_codec.id_to_token(int(t)) for t in torch.topk(bias, 25).indices}
        assert f"Ġ{word}" in top, (label, sorted(top))
        (tid,) = chat_codec.encode(" " + word)
        others = [lab for lab in expected if lab != label]
        assert all(bias[tid] > steering.bias(o)[tid] for o in others), (label, word)


def test_mapped_labels_sum_their_sources(shipped: EmotionClassifier, chat_codec: TextCodec) -> None:
    label_map = {"warm": ["joy", "caring"], "gloomy": ["sadness"]}
    steering = EmotionSteering(shipped, chat_codec, ["warm", "gloomy"], label_map)
    (tid,) = chat_codec.encode(" sad")
    assert steering.bias("gloomy")[tid] > 0 > steering.bias("warm")[tid]
    assert steering.guide("warm") is not None and steering.guide(None) is None
    assert EmotionSteering(shipped, chat_codec, ["odd"]).guide("odd") is None  # no classifier source
    assert EmotionSteering(shipped, chat_codec, ["joy"], strength=0).guide("joy") is None


# --- the guide ------------------------------------------------------------------------------


def test_guides_adjust_a_batch_row_by_row_the_same(shipped: EmotionClassifier, chat_codec: TextCodec) -> None:
    from models.personality.grounding import CardGuide, GuideChain

    steering = EmotionSteering(shipped, chat_codec, shipped.labels)
    labels = ["joy", "sadness", "fear", "joy"]
    chains = [GuideChain([steering.guide(lab), CardGuide([10, 20, 30 + i], 2.0)]) for i, lab in enumerate(labels)]
    assert len({c.batch_key() for c in chains}) == 1
    logits = torch.randn(len(chains), chat_codec.vocab_size, generator=torch.Generator().manual_seed(1)) * 4
    generated = [[], [10], [20, 5], []]
    together = GuideChain.adjust_rows(chains, logits.clone(), generated)
    for i, chain in enumerate(chains):
        assert torch.equal(together[i], chain.adjust(logits[i].clone(), generated[i]))
    assert not torch.equal(together[0], together[1])  # each row toward its own label


def test_guide_nudges_only_plausible_tokens(shipped: EmotionClassifier, chat_codec: TextCodec) -> None:
    steering = EmotionSteering(shipped, chat_codec, shipped.labels, strength=1.0, margin=2.0)
    guide = steering.guide("sadness")
    (sad,) = chat_codec.encode(" sad")
    (far,) = chat_codec.encode(" sorry")
    logits = torch.full((chat_codec.vocab_size,), -50.0)
    logits[sad], logits[far] = 0.0, -10.0  # " sorry" is sad too, but the model would not say it
    out = guide.adjust(logits, [])
    assert out[sad] == pytest.approx(steering.bias("sadness")[sad].item()) and out[sad] > 0
    assert out[far] == logits[far] and logits[sad] == 0.0  # outside the margin; not in place
    padded = torch.cat((logits, torch.full((64,), -1e4)))  # a head padded past the tokenizer
    assert torch.equal(guide.adjust(padded, [])[: len(logits)], out) and guide.adjust(padded, [])[-1] == -1e4
    assert torch.equal(guide.adjust(logits[:-1], []), out[:-1])  # a head smaller than the tokenizer
    assert "sadness" in repr(guide)


def test_steering_keeps_the_odds_of_ending_the_reply(shipped: EmotionClassifier, chat_codec: TextCodec) -> None:
    steering = EmotionSteering(shipped, chat_codec, shipped.labels, strength=2.0, margin=4.0)
    assert set(steering.stop_ids.tolist()) == chat_codec.stop_ids
    logits = torch.randn(chat_codec.vocab_size, generator=torch.Generator().manual_seed(0)) * 2
    logits[steering.stop_ids] = logits.max() - 1.0  # ending is a likely choice here
    near = logits >= logits.max() - 4.0
    near[steering.stop_ids] = False
    for label in ("romantic", "anger", "neutral"):
        out = steering.guide(label).adjust(logits, [])
        assert int((out != logits).sum()) > 10, label
        # ending vs going on (among the steered candidates): the same odds before and after
        odds = [float(torch.logsumexp(x[steering.stop_ids], 0) - torch.logsumexp(x[near], 0)) for x in (logits, out)]
        assert odds[0] == pytest.approx(odds[1], abs=1e-4), label


def test_sampler_runs_a_guide_per_row_and_logit_bias() -> None:
    vocab = 50
    logits = torch.linspace(0, 1, vocab)

    class NoRepeat:  # a guide that bans every token its row has already generated
        def __init__(self) -> None:
            self.calls: list[list[int]] = []

        def adjust(self, x: torch.Tensor, generated: list[int]) -> torch.Tensor:
            self.calls.append(list(generated))
            return x.index_fill(0, torch.tensor(generated, dtype=torch.long), float("-inf")) if generated else x

    guide = NoRepeat()
    sampler = Sampler(SamplingParams(temperature=0, guide=guide))
    assert [sampler.pick(logits) for _ in range(3)] == [vocab - 1, vocab - 2, vocab - 3]
    assert guide.calls == [[], [vocab - 1], [vocab - 1, vocab - 2]]
    s = Sampler(SamplingParams(temperature=0, logit_bias={3: 100, vocab - 1: -100}))
    assert s.pick(logits) == 3
    assert Sampler(SamplingParams(temperature=0, logit_bias={vocab - 1: -100})).pick(logits) == vocab - 2
    with pytest.raises(EngineError, match="outside the vocabulary"):
        Sampler(SamplingParams(logit_bias={vocab + 5: 1.0})).pick(logits)
    with pytest.raises(EngineError, match="must be in"):
        SamplingParams(logit_bias={1: 101}).check()
    with pytest.raises(EngineError, match="token ids"):
        SamplingParams(logit_bias={"1": 1}).check()  # type: ignore[dict-item]


# --- in the personality model ------------------------------------------------------------------


def _agreement(model: PersonalityModel, label: str, prompts: list[str]) -> float:
    hits = 0
    for i, prompt in enumerate(prompts):
        model.reset()
        reply = model.generate_response(message=prompt, emotional_state=label, history=[], seed=10 + i)
        hits += reply.detected_emotion == label
    return hits / len(prompts)


@pytest.mark.slow
def test_steering_makes_luna_show_the_emotion_more_often(companion_home) -> None:
    luna = load_personality_model("luna")
    assert luna.steering is not None and luna.info()["emotion_steering"] == luna.params.emotion_steering
    prompts = ["Tell me about your day.", "What should we write today?", "The train was late again.",
               "I had tea this morning.", "Let's name the ship.", "Describe the old house."]  # fmt: skip
    defaults = luna.params.model_dump()
    gains = []
    for label in ("sadness", "playful", "anger"):
        luna.params = PersonalityParams(**{**defaults, "emotion_steering": 0.0})
        plain = _agreement(luna, label, prompts)
        luna.params = PersonalityParams(**defaults)
        gains.append(_agreement(luna, label, prompts) - plain)
    assert sum(gains) > 0.3, gains


def test_guides_reach_the_engine_only_when_steering_applies(personality_config) -> None:
    ada = load_personality_model("ada")  # one sample and no card focus: only the emotion guide
    ada.params = PersonalityParams(**{**ada.params.model_dump(), "emotion_rerank": 1, "card_focus": 0.0})
    seen: list[dict] = []
    original = ada.base.chat

    def spy(messages, max_length=None, **options):
        seen.append(options)
        return original(messages, max_length, **options)

    ada.base.chat = spy
    try:
        ada.generate_response(message="hi", emotional_state="joy")
        ada.generate_response(message="hi")  # the state may be anything: a guide toward it or none
        ada.params = PersonalityParams(**{**ada.params.model_dump(), "emotion_steering": 0.0})
        ada.generate_response(message="hi", emotional_state="joy")
    finally:
        ada.base.chat = original
    assert seen[0]["guide"].label == "joy" and "guide" not in seen[2]
    assert ada.steering is None and ada.info()["emotion_steering"] == 0.0


def test_batched_candidates_share_one_stateless_guide(personality_config) -> None:
    ada = load_personality_model("ada")
    ada.params = PersonalityParams(**{**ada.params.model_dump(), "emotion_rerank": 3, "card_focus": 0.0})
    seen: list[dict] = []
    original = ada.base.chat_candidates

    def spy(messages, n, max_length=None, **options):
        seen.append(options)
        return original(messages, n, max_length, **options)

    ada.base.chat_candidates = spy
    try:
        r = ada.generate_response(message="hi", emotional_state="sadness", seed=3)
        again = ada.generate_response(message="hi", emotional_state="sadness", seed=3)
    finally:
        ada.base.chat_candidates = original
    assert [o["guide"].label for o in seen] == ["sadness", "sadness"]
    assert r.text == again.text  # seeded rows under one guide: reproducible


def test_concurrent_first_turns_share_one_steering(personality_config, monkeypatch) -> None:
    # a server's first burst asks every turn's steering at once: one table is built, so the
    # batching scheduler adjusts all those rows as one group (`batch_key` is the steering's id)
    import threading
    import time

    ada = load_personality_model("ada")
    built = []
    original = EmotionSteering.__init__

    def slow_init(self, *args, **kwargs):
        built.append(self)
        time.sleep(0.05)  # a wide window for a second thread to start its own
        original(self, *args, **kwargs)

    monkeypatch.setattr(EmotionSteering, "__init__", slow_init)
    got: list[EmotionSteering] = []
    threads = [threading.Thread(target=lambda: got.append(ada.steering)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len({id(s) for s in got}) == 1


def test_invalid_steering_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        PersonalityParams(emotion_steering=-1)
    with pytest.raises(ValueError):
        PersonalityParams(steering_margin=0)
