"""The sampler: the distribution it draws from is the one its settings describe."""

from __future__ import annotations

from collections import Counter

import torch

from models.engines.base import SamplingParams
from models.engines.sampling import Sampler

LOGITS = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])


def draws(n: int = 400, **kw: object) -> Counter[int]:
    s = Sampler(SamplingParams(seed=0, **kw))  # type: ignore[arg-type]
    return Counter(s.pick(LOGITS.clone()) for _ in range(n))


def test_greedy_takes_the_argmax() -> None:
    assert set(draws(50, temperature=0.0)) == {0}


def test_top_k_keeps_only_the_k_best() -> None:
    assert set(draws(top_k=2)) == {0, 1}


def test_top_p_keeps_the_nucleus() -> None:
    probs = torch.softmax(LOGITS, -1)  # 0.64, 0.24, 0.09, ...
    assert probs[0] < 0.7 < probs[0] + probs[1]
    assert set(draws(top_p=0.7, temperature=1.0)) == {0, 1}


def test_frequencies_follow_the_softmax() -> None:
    c = draws(4000, temperature=1.0)
    expected = torch.softmax(LOGITS, -1)
    for token in range(3):
        assert abs(c[token] / 4000 - float(expected[token])) < 0.03


def test_same_seed_same_draws_and_temperature_flattens() -> None:
    assert draws(top_k=3) == draws(top_k=3)
    hot = draws(2000, temperature=5.0)
    cold = draws(2000, temperature=0.5)
    assert hot[0] < cold[0]


def test_repetition_penalty_lowers_seen_tokens() -> None:
    s = Sampler(SamplingParams(temperature=0.0, repetition_penalty=10.0), history=[0])
    assert s.pick(LOGITS.clone()) == 1


def test_min_p_drops_tokens_under_a_share_of_the_best() -> None:
    probs = torch.softmax(LOGITS, -1)  # 0.64, 0.24, 0.09, 0.03, ...
    assert probs[2] / probs[0] < 0.2 < probs[1] / probs[0]
    assert set(draws(min_p=0.2, temperature=1.0)) == {0, 1}


def test_openai_penalties_follow_its_formula() -> None:
    # logit - count * frequency - [count > 0] * presence, on tokens generated so far
    s = Sampler(SamplingParams(temperature=0.0, frequency_penalty=0.6))
    picks = [s.pick(LOGITS.clone()) for _ in range(4)]
    assert picks == [0, 0, 1, 0]  # 4.0 vs 3.0: after two 0s, 4.0 - 1.2 < 3.0; then 4.0 - 1.2 > 3.0 - 0.6
    s = Sampler(SamplingParams(temperature=0.0, presence_penalty=1.5))
    # each seen token loses 1.5 once, however often it was seen: 2.5 (0) beats 1.5 (1) and 2.0 (2)
    assert [s.pick(LOGITS.clone()) for _ in range(4)] == [0, 1, 0, 0]


def test_penalties_and_min_p_out_of_range_are_refused() -> None:
    import pytest

    from models.errors import GenerationInputError

    for bad in ({"presence_penalty": 2.5}, {"frequency_penalty": -3.0}, {"min_p": 1.5}):
        with pytest.raises(GenerationInputError, match=next(iter(bad))):
            SamplingParams(**bad).check()  # type: ignore[arg-type]
