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
