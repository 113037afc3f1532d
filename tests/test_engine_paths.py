"""Every decode path of the fast engine's one block against `transformers`, per weight format.

Paths: prefill, the batch-1 step (`OneRowStep`, the one special case), and the general block
for scoring many rows without a cache, a chunked prefill (start > 0) and a batched step of
several rows. Float32 must match within 1e-4; bfloat16 and int8 within their rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from models.engines.llama import FastEngine
from models.engines.llama.batch import BatchDecoder
from models.engines.llama.block import forward
from models.engines.llama.runtime import int8_available

TOL = {"float32": 1e-4, "bfloat16": 0.08, "int8-dynamic": 0.08}


def _engine(folder: Path, fmt: str) -> FastEngine:
    engine = FastEngine(folder)
    if fmt == "bfloat16":
        engine.use_weights(engine.weights.to_dtype(torch.bfloat16))
    elif fmt == "int8-dynamic":
        if not int8_available():
            pytest.skip("this torch build has no FBGEMM int8 kernels")
        engine.use_weights(engine.weights.quantized_int8())
    return engine


def _close(got: torch.Tensor, want: torch.Tensor, fmt: str) -> None:
    scale = float(want.abs().max()) if fmt != "float32" else 1.0
    diff = float((got.float() - want.float()).abs().max())
    assert diff <= TOL[fmt] * scale, f"{fmt}: max |diff| {diff:.3g}"


@pytest.mark.parametrize("fmt", sorted(TOL))
def test_every_path_matches_transformers(tiny_model_dir: Path, fmt: str) -> None:
    ref = LlamaForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    engine = _engine(tiny_model_dir, fmt)
    ids = [1, 57, 9, 300, 44, 18, 73, 201, 5, 99, 12, 7]
    with torch.inference_mode():
        want = ref(input_ids=torch.tensor([ids])).logits[0]

    # prefill, then the batch-1 step token by token
    _close(engine.prefill(ids[:4]), want[3], fmt)
    for i in range(4, len(ids)):
        _close(engine.step(ids[i]), want[i], fmt)

    # scoring: several rows at once, no cache
    rows = torch.tensor([ids, ids[::-1]])
    with torch.inference_mode():
        want_rows = ref(input_ids=rows).logits
    _close(engine.forward_full(rows), want_rows, fmt)

    # a chunked prefill: the first 5 tokens, then the next 7 as one chunk at start=5
    engine.prefill(ids[:5])
    with engine.scope():
        chunk = forward(engine.weights, engine.spec, engine.rope, torch.tensor([ids[5:]]), engine.cache, start=5)
    _close(chunk[0], want[5:], fmt)

    # a batched step: three rows continue the same prompt with different tokens
    dec = BatchDecoder(engine, ids[:6], rows=3, max_new=4)
    _close(dec.logits, want[5], fmt)
    nxt = [ids[6], 33, 120]
    got = dec.step(nxt)
    with torch.inference_mode():
        want_next = ref(input_ids=torch.tensor([[*ids[:6], t] for t in nxt])).logits[:, -1]
    _close(got, want_next, fmt)
