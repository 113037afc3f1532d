"""Best-of-N decoding: the `fast` engine's batched `sample_many` against its single-row decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from models.engines.base import Candidate, Engine, LocalEngine, SamplingParams, derived_seed, row_seeds
from models.engines.llama import FastEngine
from models.engines.llama.batch import BatchDecoder
from models.errors import EngineError

ATOL = 1e-4
PROMPT = "the lighthouse keeper wrote a letter"
MESSAGES = [{"role": "user", "content": "hello there, how are you?"}]


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with logits far from flat (so greedy ties cannot hide a mismatch)."""
    from safetensors.torch import load_file, save_file

    from tests.conftest import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("sharp") / "m", manifest=False, seed=3)
    state = {}
    for name, t in load_file(str(folder / "model.safetensors")).items():
        state[name] = t if name.endswith("norm.weight") else t * 5.0
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def engine(sharp_model: Path) -> FastEngine:
    return FastEngine(sharp_model)


def _single(engine: LocalEngine, prompt: Any, params: SamplingParams) -> Candidate:
    pieces = engine.stream(prompt, params) if isinstance(prompt, str) else engine.stream_chat(prompt, params)
    text = "".join(pieces)
    return Candidate(text, engine.last_stats.completion_tokens, engine.last_stats.finish_reason)


def test_batched_logits_match_single_rows(engine: FastEngine) -> None:
    ids = engine.codec.encode(PROMPT, add_bos=True)
    rows = [[5, 9, 17, 3], [40, 41, 42, 43], [5, 9, 100, 7]]
    dec = BatchDecoder(engine, ids, len(rows), max_new=8)
    first = engine.prefill(ids)
    torch.testing.assert_close(dec.logits, first, atol=ATOL, rtol=ATOL)
    batched = [dec.step([r[i] for r in rows]) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        engine.prefill(ids)
        for i, token in enumerate(row):
            torch.testing.assert_close(batched[i][j], engine.step(token), atol=ATOL, rtol=ATOL)


def test_dropping_rows_keeps_the_others_caches(engine: FastEngine) -> None:
    ids = engine.codec.encode(PROMPT, add_bos=True)
    dec = BatchDecoder(engine, ids, 3, max_new=8)
    dec.step([11, 12, 13])
    dec.keep([2, 0])
    got = dec.step([20, 21])
    for k, (first, second) in enumerate(((13, 20), (11, 21))):
        engine.prefill(ids)
        engine.step(first)
        torch.testing.assert_close(got[k], engine.step(second), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("prompt", [PROMPT, MESSAGES], ids=["text", "chat"])
def test_greedy_rows_equal_the_single_greedy_decode(engine: FastEngine, prompt: Any) -> None:
    params = SamplingParams(max_new_tokens=24, temperature=0.0, repetition_penalty=1.3)
    want = _single(engine, prompt, params)
    got = engine.sample_many(prompt, params, 3)
    assert got == [want] * 3
    assert engine.last_stats.extra["row_tokens"] == [want.completion_tokens] * 3


@pytest.mark.parametrize("prompt", [PROMPT, MESSAGES], ids=["text", "chat"])
def test_sampled_rows_equal_single_decodes_with_row_seeds(engine: FastEngine, prompt: Any) -> None:
    params = SamplingParams(max_new_tokens=20, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=7)
    got = engine.sample_many(prompt, params, 4)
    want = [_single(engine, prompt, params.but(seed=s)) for s in row_seeds(params, 4)]
    assert got == want
    assert len({c.text for c in got}) > 1  # independent streams


def test_neighbouring_seeds_share_no_rows(engine: FastEngine) -> None:
    """Best of 8 under seed 1 is not best of 8 under seed 0 shifted by one row (with `seed + i`
    rows they shared 7 of 8 samples, so a swipe or OpenAI's `n` with a seed repeated the reply)."""
    rows = [row_seeds(SamplingParams(seed=s), 8) for s in range(50)]
    assert all(r[0] == s for s, r in enumerate(rows))  # row 0 is the single decode
    flat = [x for r in rows for x in r]
    assert len(set(flat)) == len(flat)
    assert all(0 <= x < 2**31 for x in flat)
    params = SamplingParams(max_new_tokens=12, temperature=0.9, top_k=40)
    a = {c.text for c in engine.sample_many(MESSAGES, params.but(seed=0), 4)}
    b = {c.text for c in engine.sample_many(MESSAGES, params.but(seed=1), 4)}
    assert len(a & b) <= 1  # at most the same text by chance, not three shared rows


def test_rows_stop_on_their_own(engine: FastEngine) -> None:
    """Different lengths per row: stop strings, stop ids and the length limit, each row alone."""
    base = SamplingParams(max_new_tokens=30, temperature=1.2, seed=1)
    texts = [c.text for c in engine.sample_many(PROMPT, base, 6)]
    stop = next(t[2:4] for t in texts if len(t) > 4)
    params = base.but(stop=(stop,))
    got = engine.sample_many(PROMPT, params, 6)
    want = Engine.sample_many(engine, PROMPT, params, 6)  # the one-by-one fallback
    assert got == want
    assert all(stop not in c.text for c in got)
    assert any(c.finish_reason == "stop" for c in got)


def test_generic_fallback_and_model_front(tiny_model_dir: Path) -> None:
    from models.transformer_model import TransformerModel

    model = TransformerModel(tiny_model_dir, engine="fast", max_length=12, seed=5)
    batched = model.chat_many(MESSAGES, 3)
    assert batched == [model.chat(MESSAGES, seed=derived_seed(5, i)) for i in range(3)]
    assert model.generate_many(PROMPT, 2, temperature=0.0) == [model.generate(PROMPT, temperature=0.0)] * 2
    looped = Engine.sample_many(model.engine, MESSAGES, model.sampling(seed=5), 3)
    assert [c.text for c in looped] == batched


def test_zero_budget_and_bad_n(engine: FastEngine) -> None:
    assert engine.sample_many(PROMPT, SamplingParams(max_new_tokens=0), 2) == [Candidate("", 0, "length")] * 2
    with pytest.raises(EngineError, match="n \\(the number"):
        engine.sample_many(PROMPT, SamplingParams(), 0)


def test_int8_engine_decodes_batches(sharp_model: Path) -> None:
    from models.engines.llama.runtime import int8_available, quantize_int8

    if not int8_available():
        pytest.skip("no FBGEMM int8 kernels in this torch build")
    engine = FastEngine(sharp_model)
    quantize_int8(engine)
    ids = engine.codec.encode(PROMPT, add_bos=True)
    dec = BatchDecoder(engine, ids, 2, max_new=4)
    got = dec.step([5, 9])
    for j, token in enumerate((5, 9)):
        engine.prefill(ids)
        # Activations are quantized per call over all rows, so rows differ from batch-1 slightly.
        torch.testing.assert_close(got[j], engine.step(token), atol=0.1 * float(got.abs().max()), rtol=0.1)
    out = engine.sample_many(PROMPT, SamplingParams(max_new_tokens=8, temperature=0.0), 2)
    assert out[0] == out[1] and out[0].completion_tokens > 0


def test_picking_and_scoring_run_at_the_engines_thread_count(
    engine: FastEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Picking among the rows (a top-k over rows x vocabulary) and teacher-forced scoring used to
    run outside the engine's thread scope, at torch's default count: on a 2-core machine a
    parallel region whose idle worker then spun between steps (session 21)."""
    import models.engines.llama.batch as batch_module

    seen: list[int] = []
    real_pick, real_softmax = batch_module.pick_rows, torch.log_softmax

    def pick(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real_pick(*args, **kwargs)

    def softmax(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real_softmax(*args, **kwargs)

    monkeypatch.setattr(batch_module, "pick_rows", pick)
    monkeypatch.setattr(torch, "log_softmax", softmax)
    before = torch.get_num_threads()
    torch.set_num_threads(engine.threads + 1)
    try:
        engine.sample_many(PROMPT, SamplingParams(max_new_tokens=4, seed=0), 3)
        engine.reply_logprobs(MESSAGES, SamplingParams(), [("fine, thanks", True), ("hello", False)])
        assert torch.get_num_threads() == engine.threads + 1  # restored after each
    finally:
        torch.set_num_threads(before)
    assert len(seen) >= 2 and set(seen) == {engine.threads}
