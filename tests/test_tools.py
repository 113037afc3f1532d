"""Tool calls (issue 24) on a tiny model whose chat template has a tool format (Hermes markup)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.engines.tools import parse_tool_calls
from models.errors import GenerationInputError
from models.transformer_model import TransformerModel

#: A Hermes-style template (the markup Qwen 2.5/3 use), on our role tokens.
TOOL_TEMPLATE = (
    "{%- if tools -%}<|system|>Tools:\n{% for t in tools %}{{ t.function | tojson }}\n{% endfor %}"
    'Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call>.<|end|>\n{%- endif -%}'
    "{%- for m in messages -%}"
    "{%- if m.role == 'tool' -%}<|user|><tool_response>{{ m.content }}</tool_response><|end|>\n"
    "{%- elif m.tool_calls -%}<|assistant|>{% for c in m.tool_calls %}<tool_call>\n"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>{% endfor %}<|end|>\n"
    "{%- else -%}<|{{ m.role }}|>{{ m.content }}<|end|>\n{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "What is the weather in Brest?"}]


@pytest.fixture
def tool_model(tiny_model_dir: Path, tmp_path: Path) -> TransformerModel:
    folder = tmp_path / "tools-tiny"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "manifest.json").unlink(missing_ok=True)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    return TransformerModel(str(folder), name="tools-tiny")


def test_a_forced_call_is_well_formed_and_round_trips(tool_model: TransformerModel) -> None:
    for seed in range(5):
        text = tool_model.chat(ASK, 80, seed=seed, tools=[WEATHER, CLOCK], tool_choice="get_weather")
        content, calls = parse_tool_calls(text)
        assert content is None and len(calls) == 1, text
        call = calls[0]
        assert call["function"]["name"] == "get_weather" and "city" in json.loads(call["function"]["arguments"])
    # required: one of the tools, any
    text = tool_model.chat(ASK, 80, seed=1, tools=[WEATHER, CLOCK], tool_choice="required")
    assert parse_tool_calls(text)[1][0]["function"]["name"] in ("get_weather", "get_time")
    # the result goes back as a tool message, through the template
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "grey"}'}]  # fmt: skip
    with_tools = tool_model.codec.render_chat(history, tools=[WEATHER])
    assert '"sky": "grey"' in with_tools and '"name": "get_weather"' in with_tools
    tool_model.chat(history, 10, seed=1, tools=[WEATHER])  # renders and answers


def test_parse_keeps_text_and_ignores_broken_calls() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><tool_call>{oops}</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert content == "Let me check.\n<tool_call>{oops}</tool_call>" and [c["function"]["name"] for c in calls] == [
        "get_time"
    ]
    assert parse_tool_calls("just text") == ("just text", [])


def test_models_without_a_tool_format_and_unknown_tools_are_refused(tool_model, tiny_model_dir: Path) -> None:
    plain = TransformerModel(str(tiny_model_dir), name="tiny")
    with pytest.raises(GenerationInputError, match="no tool format"):
        plain.chat(ASK, 5, tools=[WEATHER])
    with pytest.raises(GenerationInputError, match="no tool named 'nope'"):
        tool_model.chat(ASK, 5, tools=[WEATHER], tool_choice="nope")
    with pytest.raises(GenerationInputError, match=r"tools\[0\]"):
        tool_model.chat(ASK, 5, tools=[{"type": "function"}], tool_choice="required")
