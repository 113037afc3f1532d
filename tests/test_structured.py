"""Structured output (issue 24): OpenAI's response_format as a token mask (llguidance), on the
fast engine and on llama.cpp, and through the server with the official client."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from models.engines.base import SamplingParams
from models.errors import GenerationInputError
from models.paths import builtin_dir
from models.transformer_model import TransformerModel

CHAT = builtin_dir("companion-chat")
ASK = [{"role": "user", "content": "Describe a lighthouse keeper as JSON with a name and an age."}]
KEEPER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "keeper", "schema": KEEPER, "strict": True}}


@pytest.fixture(scope="module")
def chat_model() -> TransformerModel:
    return TransformerModel(str(CHAT), name="companion-chat")


def test_json_mode_and_a_schema_give_valid_json_20_of_20_on_the_embedded_model(chat_model: TransformerModel) -> None:
    for seed in range(20):
        text = chat_model.chat(ASK, 120, seed=seed, response_format={"type": "json_object"})
        assert isinstance(json.loads(text), dict), text
        assert chat_model.last_stats.finish_reason == "stop"
        value = json.loads(chat_model.chat(ASK, 120, seed=seed, response_format=SCHEMA))
        jsonschema.validate(value, KEEPER)


def test_greedy_and_a_plain_format_are_unchanged(chat_model: TransformerModel) -> None:
    plain = chat_model.chat(ASK, 20, temperature=0)
    assert chat_model.chat(ASK, 20, temperature=0, response_format={"type": "text"}) == plain
    assert json.loads(chat_model.chat(ASK, 120, temperature=0, response_format=SCHEMA))["name"]


def test_bad_formats_are_named(chat_model: TransformerModel) -> None:
    with pytest.raises(GenerationInputError, match="response_format: type"):
        chat_model.chat(ASK, 10, response_format={"type": "yaml"})
    with pytest.raises(GenerationInputError, match="response_format"):
        SamplingParams(response_format={"type": "json_schema", "json_schema": "nope"}).check()


def test_the_same_on_llama_cpp(tmp_path: Path) -> None:
    from models.engines.llamacpp import LlamaCppEngine, llama_cpp_available
    from models.export import export_gguf

    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'companion-models[gguf]')")
    engine = LlamaCppEngine(export_gguf(CHAT, tmp_path / "chat.gguf"), threads=1)
    for seed in range(5):
        params = SamplingParams(max_new_tokens=120, seed=seed, response_format=SCHEMA)
        jsonschema.validate(json.loads("".join(engine.stream_chat(ASK, params))), KEEPER)


def test_logprobs_are_the_models_own_and_sum_to_the_sequence_likelihood(chat_model: TransformerModel) -> None:
    """Temperature 1, nothing else: the sampler draws from the model's distribution, and the sum
    of the chosen tokens' logprobs is the log-likelihood of the answer given the prompt."""
    import torch

    from models.gate import inside_checked_call

    chat_model.chat(ASK, 24, seed=5, temperature=1.0, logprobs=3)
    entries = chat_model.last_stats.extra["logprobs"]
    assert len(entries) == chat_model.last_stats.completion_tokens
    assert all(len(e["top_logprobs"]) == 3 and e["top_logprobs"][0]["logprob"] >= e["logprob"] - 1e-6
               for e in entries)  # fmt: skip
    with inside_checked_call():
        engine = chat_model.engine
    prompt = engine.codec.encode(engine.chat_text(ASK, SamplingParams()), add_bos=True)
    ids = prompt + [e["id"] for e in entries]
    with torch.inference_mode():
        logp = torch.log_softmax(engine.forward_full(torch.tensor([ids]))[0].float(), -1)
    likelihood = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(ids[len(prompt) :]))
    assert abs(sum(e["logprob"] for e in entries) - likelihood) < 1e-4
