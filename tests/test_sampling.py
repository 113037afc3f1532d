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


class _RowGuide:
    """A guide with no `batch_key`: it is applied one row at a time."""

    def adjust(self, logits: torch.Tensor, generated: list[int]) -> torch.Tensor:
        out = logits.clone()
        out[len(generated) % logits.shape[-1]] += 5.0
        return out


def _rows() -> list[SamplingParams]:
    from models.personality.grounding import CardGuide, GuideChain

    card = GuideChain([CardGuide([3, 7, 11], focus=2.0, margin=3.0)])
    return [
        SamplingParams(temperature=0.0, repetition_penalty=1.1, guide=card),
        SamplingParams(temperature=0.0, guide=CardGuide([5, 9], focus=1.5)),
        SamplingParams(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.1, seed=1, guide=card),
        SamplingParams(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.1, seed=2, guide=card),
        SamplingParams(temperature=1.0, min_p=0.05, seed=3, guide=_RowGuide()),
        SamplingParams(temperature=0.0, logit_bias={4: 3.0}, presence_penalty=0.5),  # picked alone
        SamplingParams(temperature=0.0, repetition_penalty=1.3),
    ]


def test_rows_picked_together_match_their_own_picks() -> None:
    from models.engines.sampling import pick_rows

    gen = torch.Generator().manual_seed(0)
    alone = [Sampler(p, history=[1, 2, 3]) for p in _rows()]
    together = [Sampler(p, history=[1, 2, 3]) for p in _rows()]
    again = [Sampler(p, history=[1, 2, 3]) for p in _rows()]
    for _ in range(12):
        logits = torch.randn(len(alone), 64, generator=gen) * 3
        own = [s.pick(logits[i].clone()) for i, s in enumerate(alone)]
        batch = pick_rows(together, logits.clone())
        assert pick_rows(again, logits.clone()) == batch  # a seeded batch reproduces
        greedy = [i for i, p in enumerate(_rows()) if p.temperature == 0]
        assert [batch[i] for i in greedy] == [own[i] for i in greedy]  # greedy rows: the same tokens
        for i in (2, 3):  # sampled rows stay within their top-k
            assert batch[i] in torch.topk(logits[i], 20).indices.tolist()
    assert [s.generated for s in together] == [s.generated for s in again]
    assert [together[i].generated for i in (0, 1, 5, 6)] == [alone[i].generated for i in (0, 1, 5, 6)]


def test_draw_rows_samples_each_rows_distribution_with_its_own_generator() -> None:
    from models.engines.sampling import draw_rows

    logits = torch.tensor([[2.0, float("-inf"), 1.0, 0.0, float("-inf")], [float("-inf")] * 4 + [0.0]])
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    picks = [draw_rows(logits, gens) for _ in range(6000)]
    first = Counter(p[0] for p in picks)
    assert set(first) == {0, 2, 3} and {p[1] for p in picks} == {4}  # never a -inf category
    expected = torch.softmax(logits[0], -1)
    for token in (0, 2, 3):
        assert abs(first[token] / 6000 - float(expected[token])) < 0.02
    # a row draws the same alone as in a batch: one uniform number per row per call
    alone = [draw_rows(logits[:1], [torch.Generator().manual_seed(7)]) for _ in range(1)]
    g = torch.Generator().manual_seed(7)
    assert draw_rows(logits[:1], [g]) == alone[0]
    both = draw_rows(logits, [torch.Generator().manual_seed(7), torch.Generator().manual_seed(9)])
    assert both[0] == alone[0][0]
