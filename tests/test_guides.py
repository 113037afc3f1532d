"""The engines' logits guides (`engines/guides.py`) work on the entries within the margin only;
these check them against the whole-vocabulary arithmetic they replace."""

from __future__ import annotations

import torch

from models.engines.guides import GuideChain, NearBias, NearBoost

VOCAB = 500


def _dense_near_bias(bias: torch.Tensor, margin: float, stops: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    near = logits >= logits.max(dim=-1, keepdim=True).values - margin
    out = logits + torch.where(near, bias, torch.zeros(()))
    go_on = near.index_fill(1, stops, False)
    moving = go_on.any(dim=-1, keepdim=True)
    skip = ~go_on
    lift = torch.logsumexp(out.masked_fill(skip, float("-inf")), -1, keepdim=True) - torch.logsumexp(
        logits.masked_fill(skip, float("-inf")), -1, keepdim=True
    )
    out[:, stops] = torch.where(moving, logits[:, stops] + lift, out[:, stops])
    return out


def test_near_bias_is_the_whole_vocabulary_arithmetic_on_the_near_entries() -> None:
    g = torch.Generator().manual_seed(3)
    tables = [torch.randn(VOCAB, generator=g).clamp(-2, 2) for _ in range(3)]
    stops = torch.tensor([0, 7])
    logits = torch.randn(6, VOCAB, generator=g) * 3
    logits[1, 7] = logits[1].max() + 10  # a row whose only near token ends the reply: nothing moves
    logits[2] = 1.0  # a flat row: every token is near
    guides = [NearBias(tables[i % 3], 4.0, stops, key="t") for i in range(6)]
    got = NearBias.adjust_rows(guides, logits.clone())
    want = torch.stack([_dense_near_bias(tables[i % 3], 4.0, stops, logits[i : i + 1])[0] for i in range(6)])
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(got[1][1:7], logits[1][1:7])  # only the end token is near: the rest stays
    for i in range(6):  # a row alone is the row in the batch, bit for bit
        assert torch.equal(guides[i].adjust(logits[i].clone()), got[i])


def test_near_boost_adds_focus_to_unsaid_card_tokens_within_the_margin() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, VOCAB, generator=g) * 3
    guides = [NearBoost(range(0, 250), 2.0, 3.0), NearBoost(range(250, 500), 1.5, 3.0),
              NearBoost(range(0, 500), 0.0), NearBoost(range(0, 500), 1.0, 1.0)]  # fmt: skip
    said = [[int(logits[0].argmax())], [], [], [1, 2, 3]]
    got = NearBoost.adjust_rows(guides, logits.clone(), said)
    for i, guide in enumerate(guides):
        top = logits[i].max()
        mask = torch.zeros(VOCAB, dtype=torch.bool)
        mask[guide.ids] = True
        mask[torch.tensor(said[i], dtype=torch.long)] = False
        want = torch.where(mask & (logits[i] >= top - guide.margin), logits[i] + guide.focus, logits[i])
        assert torch.equal(got[i], want)
        assert torch.equal(guide.adjust(logits[i].clone(), said[i]), want)
    assert torch.equal(got[2], logits[2])  # focus 0 changes nothing
    chain = GuideChain([NearBias(torch.ones(VOCAB), 4.0, torch.tensor([0]), key="t"), guides[0]])
    both = GuideChain.adjust_rows([chain], logits[:1].clone(), said[:1])
    assert torch.equal(both, guides[0].adjust(chain.guides[0].adjust(logits[0].clone()), said[0])[None])
