"""Tool calls (OpenAI's `tools`) for local models whose chat template has a tool format.

The template renders the tools and the history (assistant `tool_calls`, `role: "tool"`
results) as the model was trained to see them; the model answers in the Hermes markup that
Qwen 2.5/3, Hermes and most tool-trained open models use:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Brest"}}
    </tool_call>

`parse_tool_calls` turns that back into OpenAI's `tool_calls`; with `tool_choice` "required" or
a function's name the call is decoded under a grammar (`structured.tool_grammar`), so even a
small model emits a well-formed call with valid arguments.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from models.errors import GenerationInputError

__all__ = ["CLOSE", "OPEN", "parse_tool_calls", "supports_tools", "template_messages", "tool_specs"]

OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def supports_tools(codec: Any) -> bool:
    """Whether the model's chat template renders `tools` (a codec without a template: no)."""
    source = getattr(codec, "template_source", "") or ""
    return "tools" in source


def tool_specs(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `function` part of each OpenAI tool, checked (GenerationInputError names the bad one)."""
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" or not isinstance(fn, Mapping):
            raise GenerationInputError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ...}}}}")
        if not isinstance(fn.get("name"), str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", fn["name"]):
            raise GenerationInputError(f"tools[{i}].function.name: 1-64 letters, digits, _ . -")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], Mapping):
            raise GenerationInputError(f"tools[{i}].function.parameters: a JSON schema object")
        out.append(dict(fn))
    return out


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates take them: an assistant's `tool_calls` with their
    `arguments` as objects (OpenAI sends them as JSON text), tool results kept with their id."""
    out = []
    for m in messages:
        msg = dict(m)
        if msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = dict(call.get("function") or {})
                if isinstance(fn.get("arguments"), str):
                    with contextlib.suppress(ValueError):  # not JSON: the template gets the text
                        fn["arguments"] = json.loads(fn["arguments"])
                calls.append({**call, "function": fn})
            msg["tool_calls"] = calls
            msg["content"] = msg.get("content") or ""
        out.append(msg)
    return out


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The text outside any calls (None if empty) and the calls, in OpenAI's shape."""
    calls, spans = [], []
    for match in _CALL.finditer(text):
        try:
            body = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        spans.append(match.span())
        args = body.get("arguments", body.get("parameters", {}))
        calls.append({
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": body["name"], "arguments": json.dumps(args, ensure_ascii=False)},
        })  # fmt: skip
    if not calls:
        return text, []
    rest, at = [], 0
    for start, end in spans:
        rest.append(text[at:start])
        at = end
    rest.append(text[at:])
    left = "".join(rest).strip()
    return left or None, calls
