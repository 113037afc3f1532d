"""TransformerModel: the seed's sample, streaming, chat, scoring, seeding, refusals."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from models.engines.base import SamplingParams
from models.errors import EngineError, IntegrityError, UnsafeFileError
from models.transformer_model import TransformerModel


def test_seed_sample_runs_as_written(user_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}'}\n")
    monkeypatch.chdir(tmp_path)  # any working directory
    model = TransformerModel(
        model_path="models/personality/luna_transformer",
        max_length=512,
        temperature=0.8,
    )
    generated_text = model.generate(prompt="The character walked into the room", max_length=100)
    assert isinstance(generated_text, str)
    assert model.last_stats.completion_tokens <= 100


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_seeded_generation_is_reproducible(tiny_model_dir: Path, engine: str) -> None:
    m = TransformerModel(tiny_model_dir, engine=engine, seed=7, max_length=20)
    a = m.generate("The lighthouse")
    b = m.generate("The lighthouse")
    assert a == b
    assert m.engine_name == engine


def test_fast_and_hf_agree_greedily(tiny_model_dir: Path) -> None:
    hf = TransformerModel(tiny_model_dir, engine="hf", temperature=0.0, max_length=30)
    fast = TransformerModel(tiny_model_dir, engine="fast", temperature=0.0, max_length=30)
    assert hf.generate("A writer needs") == fast.generate("A writer needs")


def test_stream_yields_pieces_that_join_to_generate(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir, seed=3, max_length=25)
    pieces = list(m.stream("Luna smiled"))
    assert "".join(pieces) == m.generate("Luna smiled")
    assert all(isinstance(p, str) for p in pieces)


def test_chat_uses_the_template(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir, seed=1, max_length=10)
    rendered = m.engine.codec.render_chat([{"role": "user", "content": "hi"}], emotion="joy")
    assert rendered == "<|user|>hi<|end|>\n<|assistant|><|emotion:joy|>"
    assert isinstance(m.chat([{"role": "user", "content": "Tell me a story"}]), str)


def test_score_prefers_seen_text_after_training_like_signal(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir)
    scores = m.score(["The lighthouse keeper", "keeper lighthouse The"])
    assert len(scores) == 2 and all(s < 0 for s in scores)
    assert m.perplexity("The lighthouse keeper wrote a letter") > 1


def test_stop_strings_cut_the_output(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir, temperature=0.0, max_length=40)
    full = m.generate("The detective")
    if len(full) > 3:
        stop = full[2:4]
        cut = m.generate("The detective", stop=[stop])
        assert stop not in cut
        assert full.startswith(cut)


def test_bad_options_are_clear(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir)
    with pytest.raises(EngineError, match="unknown generation option"):
        m.generate("x", temprature=0.1)
    with pytest.raises(EngineError, match="top_p"):
        list(m.engine.stream("x", SamplingParams(top_p=0)))


def test_pickle_file_refused(tiny_model_copy: Path) -> None:
    (tiny_model_copy / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(UnsafeFileError, match="pytorch_model.bin"):
        TransformerModel(tiny_model_copy)


def test_disguised_pickle_refused(tiny_model_copy: Path) -> None:
    (tiny_model_copy / "extra.dat").write_bytes(pickle.dumps({"payload": [1.0, 2.0]}, protocol=4))
    with pytest.raises(UnsafeFileError, match="extra.dat"):
        TransformerModel(tiny_model_copy)


def test_flipped_byte_in_weights_refused(tiny_model_copy: Path) -> None:
    w = tiny_model_copy / "model.safetensors"
    os.chmod(w, 0o644)
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        TransformerModel(tiny_model_copy)


def test_folder_without_manifest_still_loads_but_is_checked(tiny_model_copy: Path) -> None:
    (tiny_model_copy / "manifest.json").unlink()
    assert TransformerModel(tiny_model_copy).generate("a", max_length=2) is not None
    (tiny_model_copy / "optimizer.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(UnsafeFileError, match="optimizer.pt"):
        TransformerModel(tiny_model_copy)


def test_missing_model_is_clear(tmp_path: Path) -> None:
    from models.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        TransformerModel(tmp_path / "nothing-here")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError):
        TransformerModel(empty, engine="hf")


def test_long_prompt_is_truncated_not_crashing(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir, max_length=10, seed=0)
    text = m.generate("word " * 400)
    assert isinstance(text, str)
    assert m.last_stats.extra.get("prompt_truncated")


def test_builtin_model_loads_and_writes(tmp_path: Path) -> None:
    from models.paths import builtin_dir

    if not (builtin_dir("companion-base") / "model.safetensors").exists():
        pytest.skip("embedded model not built in this checkout")
    m = TransformerModel("builtin:companion-base", seed=0, max_length=20)
    assert m.engine_name == "fast"
    assert m.generate("The").strip()


def test_copy_is_independent(tiny_model_copy: Path, tiny_model_dir: Path) -> None:
    shutil.rmtree(tiny_model_copy)
    assert (tiny_model_dir / "model.safetensors").exists()


def test_plain_text_never_samples_chat_markup(tiny_model_dir: Path) -> None:
    m = TransformerModel(tiny_model_dir, engine="hf", temperature=0.0, max_length=5)
    codec = m.engine.codec
    end, word = codec.token_id("<|end|>"), codec.encode("lighthouse")[0]
    assert end in codec.chat_control_ids.tolist()
    logits = torch.zeros(codec.vocab_size)
    logits[end], logits[word] = 10.0, 5.0  # the model "wants" to end the turn
    m.engine.prefill = lambda ids: logits.clone()  # type: ignore[method-assign]
    m.engine.step = lambda token: logits.clone()  # type: ignore[method-assign]
    assert m.generate("The") == codec.decode([word]) * 5  # continuation: turn markup is not text
    assert m.chat([{"role": "user", "content": "hi"}]) == ""  # chat: the turn ends


def test_a_gguf_file_picks_llamacpp_and_a_broken_one_is_a_clear_error(tmp_path) -> None:
    """`llamacpp` is a real engine now (tests/test_llamacpp.py); a file that is not a GGUF
    model is an EngineError naming it, not a crash inside llama.cpp."""
    import pytest

    from models.config import TransformerParams
    from models.engines import ENGINES
    from models.errors import EngineError
    from models.transformer_model import TransformerModel

    assert "llamacpp" in ENGINES and TransformerParams(engine="llamacpp").engine == "llamacpp"
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 32)
    with pytest.raises(EngineError, match="model.gguf"):
        TransformerModel(str(gguf))
