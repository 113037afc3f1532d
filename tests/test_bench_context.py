"""bench.replies.position_perplexity: every position bucket scores the same held-out text."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_TEXT


class _Bigram(torch.nn.Module):
    """Logits from the current token alone: a token's loss does not depend on its position."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(vocab, vocab, generator=g) * 3

    def forward(self, x: torch.Tensor) -> object:
        return type("Out", (), {"logits": self.table[x]})()


def _books(folder: Path) -> Path:
    """One long book whose held-out tail alternates short runs of easy (repeated) and varied text,
    so buckets that held different text would differ."""
    lines = TINY_TEXT.strip().splitlines()
    paras = []
    for i in range(3000):
        paras.append(lines[0] * 3 if i % 7 < 3 else " ".join(lines[(i * k) % len(lines)] for k in (1, 3, 5)))
    (folder / "books").mkdir(parents=True)
    (folder / "books" / "pg00001_test.txt").write_text("\n\n".join(paras), encoding="utf-8")
    return folder


def test_buckets_hold_the_same_text(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers
    from bench.replies import position_perplexity

    from models.engines.codec import TextCodec
    from models.training.corpus import book_token_ids

    shared = _books(tmp_path / "shared")
    codec = TextCodec(tiny_model_dir)
    assert len(book_token_ids(codec, shared, "heldout")) > 4 * 512  # several windows' worth
    model = _Bigram(codec.vocab_size).eval()
    monkeypatch.setattr(transformers.LlamaForCausalLM, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    got = position_perplexity(tiny_model_dir, shared)
    assert set(got) == {"0-127", "128-255", "256-383", "384-511"}
    assert all(math.isfinite(v) and v > 1 for v in got.values())
    # A position-blind model: a bucket's perplexity moves only with the text it holds.
    assert got["384-511"] / got["128-255"] == pytest.approx(1.0, abs=0.03)
    assert got["256-383"] / got["128-255"] == pytest.approx(1.0, abs=0.03)
