"""GGUF: export (`models.export`), the `llamacpp` engine, `companion run FILE.gguf`, Ollama Modelfile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from companion.cli import app
from models.engines.base import SamplingParams
from models.engines.llama import FastEngine
from models.engines.llamacpp import LlamaCppEngine, gguf_metadata, llama_cpp_available
from models.errors import AdapterError, ExportTargetError
from models.export import export_gguf, ollama_template, write_modelfile
from models.paths import builtin_dir
from models.runner import companion_for
from models.transformer_model import TransformerModel

runner = CliRunner()
CHAT = builtin_dir("companion-chat")
PROMPTS = ["The lighthouse keeper opened the door and", "Once upon a time, in a small village,"]
MESSAGES = [[{"role": "user", "content": "Hello! What do you like to write about?"}]]


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_gguf(CHAT, tmp_path_factory.mktemp("gguf") / "companion-chat.gguf")


@pytest.fixture(scope="module")
def both(chat_gguf: Path) -> tuple[FastEngine, LlamaCppEngine]:
    return FastEngine(CHAT, threads=1), LlamaCppEngine(chat_gguf, threads=1)


def test_llama_cpp_is_installed_and_doctor_says_so(companion_home: Path) -> None:
    assert llama_cpp_available()
    r = runner.invoke(app, ["doctor", "--json"])
    engines = next(c for c in json.loads(r.output) if c["name"] == "engines")
    assert engines["status"] == "ok" and "llama.cpp" in engines["detail"] and "llamacpp" in engines["detail"]


def test_the_export_carries_shape_tokenizer_and_template(chat_gguf: Path) -> None:
    meta = gguf_metadata(chat_gguf)
    config = json.loads((CHAT / "config.json").read_text())
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == config["num_hidden_layers"]
    assert meta["llama.context_length"] == config["max_position_embeddings"]
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["tokenizer.chat_template"] == (CHAT / "chat_template.jinja").read_text()


def test_same_greedy_tokens_as_the_fast_engine_for_32_tokens_at_f32(both) -> None:
    fast, cpp = both
    greedy = SamplingParams(max_new_tokens=32, temperature=0.0)
    for prompt in [*PROMPTS, *MESSAGES]:
        a = "".join(fast.stream(prompt, greedy) if isinstance(prompt, str) else fast.stream_chat(prompt, greedy))
        b = "".join(cpp.stream(prompt, greedy) if isinstance(prompt, str) else cpp.stream_chat(prompt, greedy))
        assert a == b and cpp.last_stats.completion_tokens == fast.last_stats.completion_tokens
        assert a.strip()


def test_tokenizer_and_logits_match(both) -> None:
    import torch

    fast, cpp = both
    text = "Luna smiled. <|user|>Hi there!<|end|>\n<|assistant|>"
    assert cpp.codec.encode(text, add_bos=True) == fast.codec.encode(text, add_bos=True)
    ids = fast.codec.encode(PROMPTS[0], add_bos=True)
    a, b = fast.prefill(ids), cpp.prefill(ids)
    assert torch.allclose(a, b, atol=1e-3), float((a - b).abs().max())
    assert cpp.codec.stop_ids >= {fast.codec.token_id("<|end|>"), fast.codec.eos_id}
    assert cpp.score(["The sea was calm."])[0] == pytest.approx(fast.score(["The sea was calm."])[0], abs=1e-2)


def test_every_sampling_option_goes_through_our_sampler(both) -> None:
    _, cpp = both
    p = SamplingParams(max_new_tokens=24, temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=7)
    assert "".join(cpp.stream(PROMPTS[1], p)) == "".join(cpp.stream(PROMPTS[1], p))  # seeded
    first = cpp.codec.encode(" the")[0]
    banned = "".join(cpp.stream(PROMPTS[1], p.but(logit_bias={first: -100})))
    assert first not in cpp.codec.encode(banned)
    stopped = "".join(cpp.stream(PROMPTS[0], SamplingParams(max_new_tokens=32, temperature=0.0, stop=(" ",))))
    assert " " not in stopped and cpp.last_stats.finish_reason == "stop"


def test_q8_0_export_is_smaller_and_agrees_with_int8(tmp_path: Path) -> None:
    path = export_gguf(CHAT, tmp_path / "chat-q8.gguf", quant="q8_0")
    assert path.stat().st_size < 0.35 * (CHAT / "model.safetensors").stat().st_size
    engine = LlamaCppEngine(path, threads=1)
    fast = FastEngine(CHAT, threads=1)
    ids = fast.codec.encode(PROMPTS[0], add_bos=True)
    a, b = fast.prefill(ids), engine.prefill(ids)
    assert int(a.argmax()) == int(b.argmax())
    assert float((a.softmax(-1) - b.softmax(-1)).abs().sum()) < 0.2


def test_run_a_gguf_export_with_lunas_card_and_emotions(chat_gguf: Path) -> None:
    luna = companion_for(str(chat_gguf), character="luna", max_length=24)
    assert luna.base.engine_name == "llamacpp" and luna.steering is not None  # steering on llama.cpp logits
    assert luna.control == "token"  # the export keeps the emotion tokens and the template uses them
    reply = luna.generate_response(message="I finished my first chapter today!", emotional_state="joy", seed=3)
    assert reply.text and reply.emotion == "joy" and reply.character == "Luna"
    r = runner.invoke(app, ["run", str(chat_gguf), "Hello Luna!", "-c", "luna", "-n", "16", "--seed", "1"])
    assert r.exit_code == 0 and r.output.strip(), r.output


def test_the_model_type_picks_llamacpp_and_peft_adapters_are_refused(chat_gguf: Path, tmp_path: Path) -> None:
    model = TransformerModel(str(chat_gguf), max_length=8)
    assert model.engine_name == "llamacpp" and model.info()["engine"] == "llamacpp"
    peft = tmp_path / "adapter"
    peft.mkdir()
    with pytest.raises(AdapterError, match="convert_lora_to_gguf"):
        LlamaCppEngine(chat_gguf, adapter=peft)


def test_export_cli_merges_a_personalitys_adapter_and_writes_a_modelfile(tmp_path: Path) -> None:
    r = runner.invoke(app, ["models", "export", "luna", "--ollama", "-o", str(tmp_path / "luna.gguf"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    modelfile = Path(out["modelfile"]).read_text()
    assert modelfile.startswith("FROM ./luna.gguf") and 'PARAMETER stop "<|end|>"' in modelfile
    assert "SYSTEM" in modelfile and "Luna" in modelfile and "TEMPLATE" in modelfile
    merged = LlamaCppEngine(Path(out["gguf"]), threads=1)
    plain = FastEngine(CHAT, threads=1)
    ids = plain.codec.encode("Luna wrote a letter", add_bos=True)
    assert float((merged.prefill(ids) - plain.prefill(ids)).abs().max()) > 1e-3  # the adapter changed weights
    r = runner.invoke(app, ["models", "export", "luna", "--format", "onnx"])
    assert r.exit_code == 1 and "only gguf" in r.output


def test_ollama_template_only_for_our_format(tmp_path: Path) -> None:
    ours = ollama_template((CHAT / "chat_template.jinja").read_text())
    assert ours is not None and "<|{{ .Role }}|>" in ours and ours.endswith("<|assistant|>")
    assert ollama_template("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    with pytest.raises(ExportTargetError, match="unknown quantization"):
        export_gguf(CHAT, tmp_path / "x.gguf", quant="q4_k")
    path = write_modelfile(tmp_path / "x.gguf", CHAT, system="Be kind.", parameters={"temperature": 0.5})
    text = path.read_text()
    assert 'SYSTEM """Be kind."""' in text and "PARAMETER temperature 0.5" in text and "PARAMETER num_ctx 512" in text
