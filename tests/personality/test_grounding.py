"""Card grounding (`models.personality.grounding`) and the default best-of-N ranking for small models."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
import torch

from models.engines.base import QUEUED, DecodeRow, SamplingParams
from models.paths import builtin_dir
from models.personality.card import CharacterCard
from models.personality.choice import DEFAULT_CANDIDATES
from models.personality.grounding import CardGuide, GuideChain, card_token_ids, content_words
from models.personality.model import PersonalityModel
from models.personality.params import PersonalityParams
from models.transformer_model import TransformerModel

#: Hand-written cards and a question each that the card answers (not from any dataset).
CARDS = [
    ("I keep bees on the roof of my flat. I play the cello in an orchestra.", "What do you do for fun?"),
    ("I am a firefighter. I have two cats named after planets.", "What do you do for a living?"),
    ("I grew up on a farm in Iowa. I love baking bread on Sundays.", "Where did you grow up?"),
    ("I collect vintage maps. My favourite city is Lisbon.", "Do you have any hobbies?"),
    ("I teach chemistry at a high school. I run marathons.", "What is your job?"),
    ("I drive a red truck. I fish in the lake every morning.", "What do you like to do in the morning?"),
    ("I am a nurse at a children's hospital. I knit scarves for my friends.", "What do you do for work?"),
    ("I play chess every evening. I have a garden full of tomatoes.", "How do you spend your evenings?"),
    ("I am learning Japanese. I want to visit Tokyo next spring.", "Are you planning any trips?"),
    ("I paint portraits of dogs. I live in a small cabin by the sea.", "Tell me about yourself."),
    ("I work as a baker. I wake up at four every morning.", "What do you do?"),
    ("I love horror movies. My brother is a pilot.", "What kind of movies do you like?"),
]


def _card(description: str, name: str = "Sam") -> CharacterCard:
    return CharacterCard(
        {"spec": "chara_card_v2", "spec_version": "2.0",
         "data": {"name": name, "description": description, "first_mes": "Hi!", "personality": "", "scenario": ""}}
    )  # fmt: skip


@pytest.fixture(scope="module")
def chat_base() -> TransformerModel:
    return TransformerModel(str(builtin_dir("companion-chat")), max_length=40)


def test_card_words_are_the_cards_content_words_spelled_as_one_token(chat_base: TransformerModel) -> None:
    codec = chat_base.codec
    ids = card_token_ids(codec, "I keep bees and play the cello. {{user}} is Tom, my friend.", user="Tom", char="Sam")
    words = {codec.decode([i]).strip().lower() for i in ids}
    assert {"keep", "bees", "play", "friend"} <= words
    assert not words & {"the", "and", "tom", "user", "sam", "i"}
    assert words <= content_words("keep bees play cello friend")


def test_card_guide_lifts_only_plausible_words_not_yet_used() -> None:
    guide = CardGuide([1, 2, 3], focus=2.0, margin=3.0)
    logits = torch.tensor([5.0, 4.0, 1.0, 4.5, 0.0])
    out = guide.adjust(logits, generated=[3])
    assert out[1] == 6.0  # near the best: lifted
    assert out[2] == 1.0  # 4 nats below the best: the model did not consider it
    assert out[3] == 4.5  # already in the reply: not repeated
    assert torch.equal(out[[0, 4]], logits[[0, 4]]) and logits[1] == 4.0  # others and the input untouched
    assert torch.equal(CardGuide([1], focus=0.0).adjust(logits), logits)


def test_guide_chain_applies_each_guide_in_order() -> None:
    class Add:
        def __init__(self, k: int) -> None:
            self.k = k

        def adjust(self, logits: torch.Tensor, generated: Any = ()) -> torch.Tensor:
            return logits * 2 + self.k

    out = GuideChain([Add(1), None, Add(3)]).adjust(torch.tensor([1.0]))
    assert out.item() == (1 * 2 + 1) * 2 + 3


def test_a_row_sums_the_models_own_log_probabilities(chat_base: TransformerModel) -> None:
    codec = chat_base.codec
    row = DecodeRow(codec, [1], SamplingParams(max_new_tokens=3, temperature=0.0, repetition_penalty=1.3), 3, True)
    steps = [torch.randn(codec.vocab_size, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    expect = 0.0
    for logits in steps:
        token = row.take(logits)
        expect += float(torch.log_softmax(logits, -1)[token])  # raw logits: no penalty, no guide
    got = row.result()
    assert got.scored_tokens == 3 and math.isclose(got.logprob, expect, rel_tol=1e-6)
    assert DecodeRow(codec, [1], SamplingParams(), 3).result().logprob is None


def test_batched_candidates_carry_their_likelihood(chat_base: TransformerModel) -> None:
    found = chat_base.chat_candidates([{"role": "user", "content": "Hello! How are you?"}], 3, 20, seed=1)
    assert len(found) == 3
    for c in found:
        assert c.mean_logprob is not None and -20 < c.mean_logprob < 0
        assert c.scored_tokens == c.completion_tokens + (c.finish_reason == "stop")


def test_small_local_models_rank_several_candidates_and_streams_do_while_the_engine_is_free(
    chat_base: TransformerModel,
) -> None:
    model = PersonalityModel(_card(CARDS[0][0]), chat_base, params=PersonalityParams(max_length=16, seed=2))
    calls: list[int] = []
    original = chat_base.chat_candidates

    def spy(messages: Any, n: int, max_length: Any = None, **options: Any) -> Any:
        calls.append(n)
        return original(messages, n, max_length, **options)

    chat_base.chat_candidates = spy  # type: ignore[method-assign]
    try:
        model.generate_response(message="hi", history=[])
        assert calls == [DEFAULT_CANDIDATES]
        pieces = list(model.stream_response(message="hi", history=[]))
        assert calls == [DEFAULT_CANDIDATES] * 2  # nothing else decoding: the best of N, as one piece
        assert len(pieces) == 1 and pieces[0] == model.last_response.text

        engine = chat_base.engine
        held, release = threading.Event(), threading.Event()

        def other_decode() -> None:  # another request holding the engine (a best-of-N elsewhere)
            with engine.lock:
                held.set()
                release.wait(30)

        other = threading.Thread(target=other_decode)
        other.start()
        held.wait(30)
        try:
            assert not engine.hold_if_free()
            turn = model._prepare(None, None, "hi", [], None, {}, streaming=True)
            assert turn.candidates == 1 and turn.release is None  # busy: one sample, streamed as it comes
        finally:
            release.set()
            other.join()
        assert engine.hold_if_free()  # the stream above let the engine go when its reply was chosen
        engine.lock.release()
        waiting = QUEUED.set(lambda: 1)  # a server's fair queue has a request behind this turn
        try:
            assert not engine.hold_if_free()
        finally:
            QUEUED.reset(waiting)

        model.params = PersonalityParams(max_length=16, seed=2, emotion_rerank=2)
        model.generate_response(message="hi", history=[])
        assert calls == [DEFAULT_CANDIDATES] * 2 + [2]
        # an engine that would decode the candidates one after another (llama.cpp, transformers)
        model.params = PersonalityParams(max_length=16, seed=2)
        engine.decodes_together = False
        try:
            for streaming in (False, True):
                turn = model._prepare(None, None, "hi", [], None, {}, streaming=streaming)
                assert turn.candidates == 1 and turn.release is None
        finally:
            del engine.decodes_together
    finally:
        chat_base.chat_candidates = original  # type: ignore[method-assign]


def test_card_focus_reaches_the_engine_with_the_cards_words(chat_base: TransformerModel) -> None:
    """On by default for a small local model (with the emotion guide when there is an emotion),
    off with `card_focus: 0`; the guide holds the words of the card in use."""
    facts, question = CARDS[0]
    seen: list[dict[str, Any]] = []
    original = chat_base.chat

    def spy(messages: Any, max_length: Any = None, **options: Any) -> Any:
        seen.append(options)
        return original(messages, max_length, **options)

    chat_base.chat = spy  # type: ignore[method-assign]
    try:
        for focus in (None, 0.0):
            params = PersonalityParams(max_length=8, seed=1, emotion_rerank=1, card_focus=focus, emotion_steering=0)
            PersonalityModel(_card(facts), chat_base, params=params).generate_response(message=question, history=[])
        params = PersonalityParams(max_length=8, seed=1, emotion_rerank=1)
        PersonalityModel(_card(facts), chat_base, params=params).generate_response(
            message=question, history=[], emotional_state="joy"
        )
    finally:
        chat_base.chat = original  # type: ignore[method-assign]
    guide = seen[0]["guide"]
    assert isinstance(guide, CardGuide) and guide.focus == 2.0
    assert set(guide.ids.tolist()) == set(card_token_ids(chat_base.codec, facts, user="friend", char="Sam"))
    assert "guide" not in seen[1]
    chained = seen[2]["guide"]
    assert isinstance(chained, GuideChain) and [type(g).__name__ for g in chained.guides] == [
        "EmotionGuide",
        "CardGuide",
    ]


def test_runs_of_marks_are_cut_to_three(chat_base: TransformerModel) -> None:
    model = PersonalityModel(_card("I like tea."), chat_base)
    assert model._clean("Sam: Same!!!!!!!!! Really?????? ok...") == "Same!!! Really??? ok..."


def test_reply_logprobs_are_the_sampled_candidates_own_scores(chat_base: TransformerModel) -> None:
    """Teacher-forced in one padded batch, each reply scores what sampling measured for it
    (where its text re-encodes to the same tokens), and the same as scored alone."""
    messages = [{"role": "user", "content": "Hello! How are you?"}]
    found = chat_base.chat_candidates(messages, 3, 20, seed=1)
    replies = [(c.text, c.finish_reason == "stop") for c in found]
    together = chat_base.reply_logprobs(messages, replies)
    alone = [chat_base.reply_logprobs(messages, [r])[0] for r in replies]
    assert together == pytest.approx(alone, abs=1e-4)
    codec = chat_base.engine.codec
    checked = 0
    for c, score in zip(found, together, strict=True):
        if len(codec.encode(c.text)) == c.completion_tokens:
            assert score == pytest.approx(c.mean_logprob, abs=1e-3)
            checked += 1
    assert checked >= 1
    assert chat_base.reply_logprobs(messages, [("", False)]) == [None]


def test_specificity_prefers_the_reply_that_owes_most_to_the_conversation(chat_base: TransformerModel) -> None:
    from models.personality import choice

    def score(text: str, generic_logprob: float, specificity: float) -> float:  # equally likely here, equally apt
        return choice.rank(text, -1.0, 0.5, 0.0, 1.0, generic_logprob, specificity)

    # the stock reply is as likely after an empty message (-1.0) as after this one; the other is not (-3.0)
    assert score("I agree!!!", -1.0, 0.0) == score("Bees need a quiet roof.", -3.0, 0.0)
    assert score("Bees need a quiet roof.", -3.0, 1.0) > score("I agree!!!", -1.0, 1.0)
    # a goodbye the user did not ask for loses to any other reply; after the user's own, it may win
    bye = choice.rank("That's great! Good night!", -0.5, 0.9, 0.0, 1.0, -4.0, 1.0, "I finished my chapter!")
    assert bye < choice.rank("Wow, the chapter!", -3.0, 0.1, 0.0, 1.0, -3.0, 1.0, "I finished my chapter!")
    farewell = choice.rank("Good night!", -0.5, 0.9, 0.0, 1.0, -4.0, 1.0, "Good night, Luna!")
    assert farewell > choice.rank("Wow, the chapter!", -3.0, 0.1, 0.0, 1.0, -3.0, 1.0, "Good night, Luna!")
    seen: list[int] = []
    real = choice.generic_logprobs  # best_of's second scoring pass

    def spy(base: Any, candidates: Any, options: Any) -> Any:
        seen.append(len(candidates))
        return real(base, candidates, options)

    choice.generic_logprobs = spy  # type: ignore[assignment]
    try:
        model = PersonalityModel(_card(CARDS[0][0]), chat_base, params=PersonalityParams(max_length=16, seed=2))
        model.generate_response(message="What do you do for fun?", history=[])
        assert seen == [DEFAULT_CANDIDATES]  # on by default for a small local model
        model.params = PersonalityParams(max_length=16, seed=2, specificity=0)
        model.generate_response(message="What do you do for fun?", history=[])
        assert seen == [DEFAULT_CANDIDATES]
    finally:
        choice.generic_logprobs = real  # type: ignore[assignment]


def test_thanking_for_the_chat_is_a_farewell_too() -> None:
    from models.personality.choice import FAREWELL

    # the chat model's stock close ("I agree! Thanks for the chat!") ends a conversation mid-way
    assert FAREWELL.search("I agree! Thanks for the chat!") and FAREWELL.search("thank you for chatting")
    assert not FAREWELL.search("Thanks for the advice, I'll try it.")


def test_trimming_keeps_whole_sentences_only() -> None:
    from models.personality.choice import clean_reply, complete_sentences

    cut = "He is the only lefty QB in the NFL. He has to be the only left handed quarterback in the"
    assert complete_sentences(cut) == "He is the only lefty QB in the NFL."
    assert complete_sentences('She said "hi." Then she') == 'She said "hi."'
    # a decimal point is not a sentence end; text with no whole sentence is kept rather than emptied
    assert complete_sentences("There were 3.2 billion people who") == "There were 3.2 billion people who"
    assert complete_sentences("lol") == "lol" and complete_sentences("... and then") == "... and then"
    assert complete_sentences("Wait! Really?!") == "Wait! Really?!"
    assert clean_reply("Ada: Yes. I think", ["Ada"]) == "Yes. I think"
    assert clean_reply("Ada: Yes. I think", ["Ada"], trim=True) == "Yes."


class _FixedCandidates:
    """A base whose candidates are fixed: the likelier one was cut off by the length limit."""

    def chat_candidates(self, messages: Any, n: int, max_new: int, **options: Any) -> list[Any]:
        out = []
        for text, logprob, reason in (("He has to be the only left handed quarterback in the", -0.3, "length"),
                                      ("A lighthouse keeper, then!", -2.0, "stop")):  # fmt: skip
            row = type("Row", (), {})()
            row.text, row.mean_logprob, row.finish_reason = text, logprob, reason
            out.append(row)
        return out[:n]


def test_a_reply_cut_off_by_the_length_limit_loses_to_one_that_ended() -> None:
    from models.personality import choice

    cut = choice.rank("He has to be the only left handed quarterback in the", -0.3, 0.9, 0.0, 1.0, cut_off=True)
    assert cut < choice.rank("A lighthouse keeper, then!", -2.0, 0.1, 0.0, 1.0)
    assert choice.rank("Ok.", -1.0, 0.5, 0.0, 1.0) == choice.rank("Ok.", -1.0, 0.5, 0.0, 1.0, cut_off=False)
    base, judge = _FixedCandidates(), lambda text: (0.5, 0.0)
    assert choice.best_of(base, [], 2, 8, {}, judge, 1.0, 0.0, "Hi") == "A lighthouse keeper, then!"
    # when every candidate was cut off, the usual ranking decides among them
    assert choice.best_of(base, [], 1, 8, {}, judge, 1.0, 0.0, "Hi").startswith("He has to be")
