"""The `fast` engine against the `hf` engine on the same tiny random Llama weights."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import models.engines.llama.engine as fast_module
import models.engines.rows as rows_module
from models.engines.base import LocalEngine, SamplingParams
from models.engines.hf import HFEngine
from models.engines.llama import FastEngine
from models.engines.sampling import Sampler
from models.errors import EngineError

ATOL = RTOL = 1e-4
VARIANTS = {
    "gqa-tied": {},
    "gqa-untied": {"tie_word_embeddings": False},
    "mha-theta": {"num_key_value_heads": 4, "rope_theta": 500000.0},
}
PROMPT = "the lighthouse keeper wrote a letter to the sea"


def _texts() -> list[str]:
    rng = random.Random(0)
    words = ["".join(rng.choices("etaoinshrdlucmfwyp", k=rng.randint(1, 7))) for _ in range(400)]
    return [" ".join(rng.choices(words, k=30)) for _ in range(200)] + [PROMPT] * 5


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from models.training.tokenizer import train_tokenizer

    return train_tokenizer(_texts(), vocab_size=512)


@pytest.fixture(scope="module")
def make_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Callable[..., Path]:
    """Build (once per variant) a tiny random Llama folder with tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.training.tokenizer import save_tokenizer_files

    built: dict[str, Path] = {}

    def make(name: str, **overrides: Any) -> Path:
        if name in built:
            return built[name]
        folder = tmp_path_factory.mktemp(name)
        settings: dict[str, Any] = {
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128,
            "tie_word_embeddings": True,
            "initializer_range": 0.1,  # logits far from flat, so parity is a real test
        }
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**(settings | overrides))).save_pretrained(folder)
        save_tokenizer_files(tokenizer, folder, model_max_length=128)
        built[name] = folder
        return folder

    return make


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def engines(request: pytest.FixtureRequest, make_model: Callable[..., Path]) -> tuple[FastEngine, HFEngine]:
    """Both engines on one variant's weights (shared by a module: every test prefills first)."""
    folder = make_model(request.param, **VARIANTS[request.param])
    return FastEngine(folder), HFEngine(folder)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    diff = (a.float() - b.float()).abs().max().item()
    assert torch.allclose(a.float(), b.float(), atol=ATOL, rtol=RTOL), f"max |diff| = {diff}"


def _decode(
    engine: LocalEngine, params: SamplingParams, monkeypatch: pytest.MonkeyPatch, prompt: str = PROMPT
) -> tuple[str, list[int]]:
    """Run the shared decode loop; return the text and every token the sampler picked."""
    picked: list[int] = []

    class Recording(Sampler):
        def pick(self, logits: torch.Tensor) -> int:
            token = super().pick(logits)
            picked.append(token)
            return token

    monkeypatch.setattr(rows_module, "Sampler", Recording)  # each row builds its sampler
    text = "".join(engine.stream(prompt, params))
    return text, picked


# --- logits parity ----------------------------------------------------------------------------


def test_prefill_and_step_logits_match_hf(engines: tuple[FastEngine, HFEngine]) -> None:
    fast, hf = engines
    ids = fast.codec.encode(PROMPT, add_bos=True)
    a, b = fast.prefill(ids), hf.prefill(ids)
    _close(a, b)
    for _ in range(12):
        token = int(torch.argmax(b))
        a, b = fast.step(token).clone(), hf.step(token)
        _close(a, b)


def test_forward_full_matches_hf(engines: tuple[FastEngine, HFEngine]) -> None:
    fast, hf = engines
    ids = torch.randint(0, 512, (3, 40), generator=torch.Generator().manual_seed(1))
    _close(fast.forward_full(ids), hf.forward_full(ids))
    assert fast.score([PROMPT, "a"]) == pytest.approx(hf.score([PROMPT, "a"]), abs=1e-3)


def test_cache_growth_keeps_parity(make_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache that starts at 8 positions doubles on demand without losing what it held."""
    monkeypatch.setattr(fast_module, "INITIAL_CAPACITY", 8)
    folder = make_model("gqa-tied")
    fast, hf = FastEngine(folder), HFEngine(folder)
    assert fast.cache.capacity == 8
    ids = fast.codec.encode(PROMPT, add_bos=True)[:5]
    a, b = fast.prefill(ids), hf.prefill(ids)
    for token in range(40, 70):
        a, b = fast.step(token).clone(), hf.step(token)
    _close(a, b)
    assert fast.cache.capacity >= 35


# --- the decode loop --------------------------------------------------------------------------


def test_greedy_generation_is_identical(engines: tuple[FastEngine, HFEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, hf = engines
    params = SamplingParams(max_new_tokens=30, temperature=0.0)
    text_fast, tokens_fast = _decode(fast, params, monkeypatch)
    text_hf, tokens_hf = _decode(hf, params, monkeypatch)
    assert tokens_fast == tokens_hf
    assert text_fast == text_hf
    assert len(tokens_fast) >= 1


def test_seeded_sampling_is_identical(engines: tuple[FastEngine, HFEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, hf = engines
    params = SamplingParams(max_new_tokens=30, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.2, seed=7)
    first = _decode(fast, params, monkeypatch)
    assert first == _decode(hf, params, monkeypatch)
    assert first == _decode(fast, params, monkeypatch)  # and reproducible run to run


def test_overlong_prompt_is_truncated_not_fatal(
    make_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_model("gqa-tied")
    fast, hf = FastEngine(folder), HFEngine(folder)
    prompt = " ".join([PROMPT] * 40)
    assert len(fast.codec.encode(prompt)) > fast.context_length
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    result = _decode(fast, params, monkeypatch, prompt)
    assert fast.last_stats.extra.get("prompt_truncated") is True
    assert fast.last_stats.prompt_tokens < fast.context_length
    assert result == _decode(hf, params, monkeypatch, prompt)


def test_a_tied_head_is_one_contiguous_matrix_shared_with_the_embedding(make_model: Callable[..., Path]) -> None:
    """The decode step's largest matmul reads the head in the layout MKL reads fast, and the
    model still holds one copy of it (the embedding is its view), in every float format."""
    fast = FastEngine(make_model("gqa-tied"))
    spec = fast.spec
    want = fast.prefill([1, 5, 9, 13]).clone()
    for w in (fast.weights, fast.weights.to_dtype(torch.bfloat16)):
        assert w.head_is_embedding and w.head.is_contiguous() and w.head.shape == (spec.hidden_size, spec.vocab_size)
        assert torch.equal(w.embed, w.head.t())
    assert w.embed.dtype == torch.bfloat16
    fast.use_weights(fast.weights.quantized_int8())
    assert fast.weights.embed.shape == (spec.vocab_size, spec.hidden_size)
    fast.use_weights(FastEngine(make_model("gqa-tied")).weights)
    assert torch.allclose(fast.prefill([1, 5, 9, 13]), want, atol=ATOL, rtol=RTOL)


def test_step_past_context_raises(make_model: Callable[..., Path]) -> None:
    fast = FastEngine(make_model("gqa-tied"))
    fast.prefill(list(range(1, 128)))
    fast.step(5)
    with pytest.raises(EngineError, match="context of 128"):
        fast.step(5)
    with pytest.raises(EngineError, match="outside the vocabulary"):
        fast.step(512)


def test_thread_count_and_inference_mode_do_not_leak(make_model: Callable[..., Path]) -> None:
    before = torch.get_num_threads()
    fast = FastEngine(make_model("gqa-tied"), threads=1)
    pieces = 0
    for _ in fast.stream(PROMPT, SamplingParams(max_new_tokens=5, temperature=0.0)):
        pieces += 1
        assert torch.get_num_threads() == before  # the caller's code between pieces
        assert not torch.is_inference_mode_enabled()
    assert pieces > 0
    fast.step(5)
    assert torch.get_num_threads() == before
    assert fast.info()["threads"] == 1 and fast.info()["engine"] == "fast"


def test_bad_thread_count_is_refused(make_model: Callable[..., Path]) -> None:
    with pytest.raises(EngineError, match="threads must be >= 1"):
        FastEngine(make_model("gqa-tied"), threads=0)
    with pytest.raises(EngineError, match="threads_batch must be >= 1"):
        FastEngine(make_model("gqa-tied"), threads_batch=0)


def test_prompts_run_at_threads_batch_and_steps_at_threads(
    make_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp's --threads-batch: prefill at `threads_batch`, decoding steps at `threads`; the
    same logits either way, and nothing leaks into the caller's thread count."""
    before = torch.get_num_threads()
    folder = make_model("gqa-tied")
    one = FastEngine(folder, threads=1)
    two = FastEngine(folder, threads=1, threads_batch=2)
    assert one.threads_batch == 1 and two.threads_batch == 2 and two.info()["threads_batch"] == 2
    seen: list[int] = []
    real = fast_module.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(fast_module, "forward", spy)
    ids = list(range(1, 40))
    torch.testing.assert_close(two.prefill(ids), one.prefill(ids), rtol=1e-5, atol=1e-5)
    assert seen == [2, 1]
    torch.testing.assert_close(two.step(7), one.step(7), rtol=1e-5, atol=1e-5)
    assert torch.get_num_threads() == before


# --- what the engine refuses -------------------------------------------------------------------


def _edit_config(src: Path, dest: Path, **changes: Any) -> Path:
    import shutil

    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text()) | changes
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "'llama3' needs"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0}}, "rope type 'yarn'"),
        ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope type 'linear'"),
        ({"model_type": "gpt2"}, "model_type is 'gpt2'"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_unsupported_configs_are_refused_clearly(
    make_model: Callable[..., Path], tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    folder = _edit_config(make_model("gqa-tied"), tmp_path / "edited", **changes)
    assert not FastEngine.supports(folder)
    with pytest.raises(EngineError, match=message) as info:
        FastEngine(folder)
    assert "config.json" in str(info.value)


def test_supports(make_model: Callable[..., Path], tmp_path: Path) -> None:
    assert FastEngine.supports(make_model("gqa-tied"))
    assert not FastEngine.supports(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    assert not FastEngine.supports(tmp_path / "junk")


def test_legacy_rope_theta_key_is_read(make_model: Callable[..., Path], tmp_path: Path) -> None:
    """transformers 4.x writes `rope_theta` at the top level instead of `rope_parameters`."""
    src = make_model("mha-theta", **VARIANTS["mha-theta"])
    folder = _edit_config(src, tmp_path / "legacy", rope_parameters=None, rope_theta=500000.0)
    assert FastEngine(folder).spec.rope_theta == 500000.0


def test_missing_untied_head_is_a_clear_error(make_model: Callable[..., Path], tmp_path: Path) -> None:
    folder = _edit_config(make_model("gqa-tied"), tmp_path / "untied", tie_word_embeddings=False)
    with pytest.raises(EngineError, match=r"lm_head\.weight"):
        FastEngine(folder)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_float32_one_row_step_runs_in_numpy_at_the_engines_thread_count(
    variant: str, make_model: Callable[..., Path]
) -> None:
    """NumPy's step writes the cache torch's would and gives its logits (test_engine_architectures
    checks both against transformers on the other architectures)."""
    from models.engines.llama.blas import numpy_blas
    from models.engines.llama.block import OneRowStep

    blas = numpy_blas()
    if blas is None:
        pytest.skip("NumPy here does not use OpenBLAS")
    engine = FastEngine(make_model(variant, **VARIANTS[variant]), threads=2)
    ids = engine.codec.encode(PROMPT, add_bos=True)
    numpy_logits = [engine.prefill(ids)] + [engine.step(t) for t in (5, 9, 11)]
    numpy_cache = engine.cache.data.clone()
    assert engine._one_row.numpy_step is not None
    outside = blas.get_num_threads()
    with engine.scope():
        assert blas.get_num_threads() == 2 and torch.get_num_threads() == 2
    assert blas.get_num_threads() == outside  # restored, as torch's count is
    with torch.inference_mode():
        engine.cache.data.zero_()
    engine._held.clear()  # the cache no longer holds the prompt: prefill computes all of it again
    engine._one_row = OneRowStep(engine.weights, engine.spec, engine.cache, engine.rope)
    engine._one_row.numpy_step = None  # torch's step instead
    torch_logits = [engine.prefill(ids)] + [engine.step(t) for t in (5, 9, 11)]
    for a, b in zip(numpy_logits, torch_logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert torch.allclose(numpy_cache, engine.cache.data, atol=1e-6)
    assert engine.codec.decode([int(numpy_logits[-1].argmax())]) == engine.codec.decode(
        [int(torch_logits[-1].argmax())]
    )


def test_a_decoding_thread_sets_numpys_blas_threads_whichever_thread_set_them_first() -> None:
    """The scheduler steps on a thread of its own. threadpoolctl (3.8) ignores a count set from
    any thread but the first that set one, so the one-row step used to multiply on 2 OpenBLAS
    threads whatever the engine's count, and the idle worker spun on the other core."""
    import threading

    from models.engines.llama.blas import numpy_blas
    from models.engines.llama.engine import ThreadScope

    blas = numpy_blas()
    if blas is None:
        pytest.skip("NumPy here does not use OpenBLAS")
    before = blas.get_num_threads()
    try:
        blas.set_num_threads(2)
        with ThreadScope(1):  # this thread sets a count first
            assert blas.get_num_threads() == 1
        seen: list[int] = []

        def decode() -> None:
            with ThreadScope(1):
                seen.append(blas.get_num_threads())
            seen.append(blas.get_num_threads())

        worker = threading.Thread(target=decode)
        worker.start()
        worker.join()
        assert seen == [1, 2]  # set inside the scope, restored after it
    finally:
        blas.set_num_threads(before)


def test_bfloat16_matrices_are_packed_for_onednn_and_multiply_as_torch_does(tiny_model_dir: Path) -> None:
    from models.engines.llama.weights import onednn_bf16, unpacked

    if not onednn_bf16():
        pytest.skip("torch's oneDNN has no bfloat16 support on this CPU")
    plain = FastEngine(tiny_model_dir, threads=1)
    packed = FastEngine(tiny_model_dir, dtype=torch.bfloat16, threads=1)
    layer = packed.weights.layers[0]
    assert all(m.is_mkldnn for m in layer.each())
    want = plain.weights.to_dtype(torch.bfloat16)  # the same cast, multiplied by oneDNN as well
    for a, b in zip(layer.each(), want.layers[0].each(), strict=True):
        assert torch.equal(unpacked(a), unpacked(b))
    x = torch.randn(3, plain.spec.hidden_size).bfloat16()
    for m in layer.each()[:1]:  # oneDNN's product is torch's, to the bit, here
        assert torch.equal(packed.weights.mm(x, m), torch.mm(x, unpacked(m)))
    ids = packed.codec.encode("The lighthouse keeper", add_bos=True)
    a = [packed.prefill(ids)] + [packed.step(t) for t in (5, 9)]
    b = [plain.prefill(ids)] + [plain.step(t) for t in (5, 9)]
    for x16, x32 in zip(a, b, strict=True):  # bfloat16 against float32: within bfloat16's rounding
        assert torch.allclose(x16.float(), x32, atol=0.08, rtol=0.05)
    back = packed.weights.to_dtype(torch.float32)  # unpacked again, plain float32
    assert not back.layers[0].qkv.is_mkldnn and back.format == "float32"


def test_a_prompt_that_starts_like_the_last_computes_only_the_rest(
    make_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's cache still holds the last prompt and its reply: the next prompt's shared
    start (a card, the earlier turns) is not computed again, and the logits are a fresh
    engine's."""
    folder = make_model("mha-theta", **VARIANTS["mha-theta"])
    engine, fresh = FastEngine(folder, threads=1), FastEngine(folder, threads=1)
    first = engine.codec.encode(PROMPT, add_bos=True)
    engine.prefill(first)
    replied = [engine.step(t) for t in (5, 9)]
    assert len(replied) == 2
    computed: list[int] = []
    real = fast_module.forward

    def counting(w: Any, spec: Any, rope: Any, ids: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        computed.append(ids.shape[1])
        return real(w, spec, rope, ids, *a, **k)

    monkeypatch.setattr(fast_module, "forward", counting)
    turn = [*first, 5, 9, 11, 4]  # the cache holds first + [5, 9]
    other = [*turn[:3], 7, 7, 8]
    for nxt, new in ((turn, 2), (other, 3), (other, 1)):  # the last token is always computed
        computed.clear()
        got = engine.prefill(nxt)
        assert computed == [new]
        assert torch.allclose(got, fresh.prefill(nxt), atol=1e-5)
        first = nxt
    engine.use_weights(engine.weights)  # a format change drops what the cache held
    computed.clear()
    engine.prefill(first)
    assert computed == [len(first)]
