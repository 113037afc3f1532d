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
