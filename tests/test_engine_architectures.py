"""The fast engine on the common open architectures, against `transformers`, at fp32.

Each test builds a tiny random-weights model of one `model_type` with `transformers` (our tiny
tokenizer beside it), and compares every path of the fast engine's block with the reference
logits within 1e-4: prefill, the batch-1 step, scoring several rows, a batched step. What the
engine does not implement falls back to `hf` with the reason (`models show` prints it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from companion.cli import app
from models.engines.llama import FastEngine
from models.engines.llama.batch import BatchDecoder
from models.engines.llama.spec import unsupported
from models.transformer_model import TransformerModel

LLAMA3_ROPE = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16, "rope_theta": 500000.0,
}  # fmt: skip
CASES: dict[str, dict[str, Any]] = {
    "llama3": {"model_type": "llama", "rope_parameters": LLAMA3_ROPE},
    "llama-bias": {"model_type": "llama", "attention_bias": True},
    "mistral": {"model_type": "mistral", "sliding_window": 96},
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", "head_dim": 16},
    "phi3": {"model_type": "phi3"},
}


def _build(tiny_model_dir: Path, dest: Path, settings: dict[str, Any]) -> Path:
    settings = dict(settings)
    mtype = settings.pop("model_type")
    vocab = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    cfg = AutoConfig.for_model(
        mtype, vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=2, bos_token_id=1, eos_token_id=0, **settings,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random biases and norm weights, so a missed one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(mean=1.0 if "norm" in name else 0.0, std=0.2)
    model.save_pretrained(dest, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / f, dest / f)
    return dest


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_path_matches_transformers(case: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _build(tiny_model_dir, tmp_path / case, CASES[case])
    ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    assert FastEngine.supports(folder), unsupported(json.loads((folder / "config.json").read_text()))
    engine = FastEngine(folder)
    ids = [1, 57, 9, 300, 44, 18, 73, 201, 5, 99, 12, 7, 31, 64, 90, 17, 250, 3, 8, 41]
    with torch.inference_mode():
        want = ref(input_ids=torch.tensor([ids])).logits[0]
    assert torch.allclose(engine.prefill(ids[:6]), want[5], atol=1e-4)
    for i in range(6, len(ids)):  # positions past original_max_position_embeddings for llama3
        got = engine.step(ids[i])
        assert torch.allclose(got, want[i], atol=1e-4), (case, i, float((got - want[i]).abs().max()))
    rows = torch.tensor([ids, ids[::-1]])
    with torch.inference_mode():
        want_rows = ref(input_ids=rows).logits
    assert torch.allclose(engine.forward_full(rows), want_rows, atol=1e-4)
    decoder = BatchDecoder(engine, ids[:10], 2, 4)
    with torch.inference_mode():
        step = decoder.step([ids[10], ids[10]])
    assert torch.allclose(step[0], want[10], atol=1e-4) and torch.allclose(step[1], want[10], atol=1e-4)
    assert engine.info()["architecture"] == type(ref).__name__


def test_mistral_context_is_capped_at_its_window(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _build(tiny_model_dir, tmp_path / "m", CASES["mistral"])
    assert FastEngine(folder).max_positions == 96


def test_what_the_block_lacks_falls_back_to_hf_with_the_reason(
    tiny_model_dir: Path, tmp_path: Path, user_config
) -> None:
    folder = _build(tiny_model_dir, tmp_path / "yarn", {"model_type": "qwen2"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert any("yarn" in p for p in unsupported(cfg))
    model = TransformerModel(str(folder), max_length=4)
    assert model.engine_name == "hf"
    user_config(f"models:\n  base:\n    yarn: {{type: transformer, path: '{folder}'}}\n")
    r = CliRunner().invoke(app, ["models", "show", "base/yarn", "--json"])
    engine = json.loads(r.output)["engine"]
    assert engine["auto"] == "hf" and "rope type 'yarn'" in engine["why"]


def test_tensor_files_read_what_safetensors_reads(tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    from models.engines.llama.weights import TensorFiles

    files = TensorFiles(tiny_model_dir)
    want = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(files) == set(want) and files.numel() == sum(t.numel() for t in want.values())
    for name, tensor in want.items():
        assert files.shape(name) == tuple(tensor.shape) and torch.equal(files[name], tensor)
    files["model.norm.weight"] = torch.zeros(3)  # a merged adapter's tensor shadows the file's
    assert files["model.norm.weight"].shape == (3,)


def test_bfloat16_weights_stay_bfloat16_and_a_tied_head_is_the_embedding(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _build(tiny_model_dir, tmp_path / "bf16", CASES["qwen2"])
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    engine = FastEngine(folder, dtype=None)  # `dtype: auto`
    assert engine.dtype == torch.bfloat16 and engine.weights.head_is_embedding
    assert engine.weights.nbytes <= (folder / "model.safetensors").stat().st_size
    ids = [1, 57, 9, 300, 44, 18]
    with torch.inference_mode():
        want = model.float()(input_ids=torch.tensor([ids])).logits[0, -1]
    got = engine.prefill(ids).float()
    assert float((got - want).abs().max()) <= 0.08 * float(want.abs().max())
    assert TransformerModel(str(folder), max_length=2).engine.dtype == torch.bfloat16
