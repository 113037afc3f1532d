"""Structured output on local engines: OpenAI's `response_format` as a token mask, with llguidance.

    params = SamplingParams(response_format={"type": "json_schema", "json_schema": {"schema": {...}}})
    model.chat(messages, **params)      # the reply parses as JSON and validates against the schema

`response_format` is OpenAI's: `{"type": "text"}` (nothing to do), `{"type": "json_object"}`
(any JSON object) or `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
Each decoded row gets its own `Structure` (`DecodeRow` makes it): llguidance's matcher (the
library llama.cpp and vLLM use for grammars) computes which tokens keep the text a valid prefix
of the grammar, every other logit becomes -inf before sampling, and once the value is complete
only the end of the turn is allowed. The JSON is written compactly (`", "` and `": "`, no free
whitespace): small models otherwise wander into endless blank lines.

The tokenizer is the model's own: `tokenizer.json` for Hugging Face folders, the GGUF's token
pieces for llama.cpp models (`TextCodec.guidance_tokenizer`), built once per codec.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from models.errors import GenerationInputError

__all__ = ["Structure", "check_response_format", "grammar_for", "needs_structure", "row_grammar", "tool_grammar"]

#: How the JSON compiler writes separators (no free whitespace: see the module docstring).
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def needs_structure(response_format: Mapping[str, Any] | None) -> bool:
    return bool(response_format) and response_format.get("type") != "text"  # type: ignore[union-attr]


def check_response_format(response_format: Any) -> str | None:
    """What is wrong with a `response_format` (None when it is usable)."""
    if not isinstance(response_format, Mapping):
        return f"expected an object like {{'type': 'json_object'}}, got {type(response_format).__name__}"
    kind = response_format.get("type")
    if kind in ("text", "json_object"):
        return None
    if kind != "json_schema":
        return f"type: expected text, json_object or json_schema, got {kind!r}"
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), Mapping):
        return "json_schema: expected {'name': ..., 'schema': {...}}"
    return None


def grammar_for(response_format: Mapping[str, Any]) -> str:
    """llguidance's grammar for a `response_format` (GenerationInputError if it is not usable);
    compiled once per schema (the last 64 are kept)."""
    problem = check_response_format(response_format)
    if problem is not None:
        raise GenerationInputError(f"response_format: {problem}")
    if response_format["type"] == "json_object":
        schema: Mapping[str, Any] = {"type": "object"}
    else:
        schema = response_format["json_schema"].get("schema") or {"type": "object"}
    return _compiled(json.dumps(schema))  # key order kept: properties come out in the order defined


def tool_grammar(tools: Sequence[Mapping[str, Any]], name: str | None = None) -> str:
    """A grammar that is one tool call in the Hermes / Qwen markup (`<tool_call>` + JSON with the
    tool's `name` and `arguments` valid against its parameters + `</tool_call>`): what a forced
    `tool_choice` (required, or one function by name) decodes. `models.engines.tools` parses it."""
    from models.engines.tools import CLOSE, OPEN, tool_specs

    choices = []
    for spec in tool_specs(tools):
        if name is not None and spec["name"] != name:
            continue
        params = spec.get("parameters") or {"type": "object"}
        choices.append({
            "type": "object",
            "properties": {"name": {"const": spec["name"]}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })  # fmt: skip
    if not choices:
        raise GenerationInputError(f"tool_choice: no tool named {name!r} among the request's tools")
    schema = {"oneOf": choices, "x-guidance": dict(JSON_STYLE)}
    return _lark(f"start: {json.dumps(OPEN)} call {json.dumps(CLOSE)}\ncall: %json {json.dumps(schema)}")


def row_grammar(params: Any) -> str | None:
    """The grammar a decoded row must follow for these `SamplingParams`, if any: a forced tool
    call (it wins over `response_format`), else a JSON `response_format`."""
    choice = getattr(params, "tool_choice", None)
    if params.tools and choice not in (None, "auto", "none"):
        return tool_grammar(params.tools, None if choice == "required" else str(choice))
    if needs_structure(params.response_format):
        return grammar_for(params.response_format)
    return None


@functools.lru_cache(maxsize=64)
def _lark(source: str) -> str:
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_lark(source)
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise GenerationInputError(f"tools: a tool's parameters are not a usable JSON schema ({error})")
    return grammar


@functools.lru_cache(maxsize=64)
def _compiled(schema: str) -> str:
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, overrides=JSON_STYLE)  # type: ignore[arg-type]
    except ValueError as exc:
        raise GenerationInputError(f"response_format: the schema is not usable ({exc})") from None
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise GenerationInputError(f"response_format: the schema is not usable ({error})")
    return grammar


#: Closing pressure: a string this many characters long (or a number this many digits) starts
#: favouring the tokens that end it, and so does the last part of the token budget.
LONG_STRING, LONG_NUMBER, BUDGET_SHARE = 48, 6, 0.6
_KINDS: weakref.WeakKeyDictionary[Any, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()


def token_kinds(codec: Any) -> dict[str, torch.Tensor]:
    """(vocab,) bool tensors of the tokens whose text holds a `"` (ends a string), a `}` or `]`
    (ends an object or array) or a `,` (ends a number), computed once per tokenizer."""
    found = _KINDS.get(codec)
    if found is None:
        n = codec.vocab_size
        found = {k: torch.zeros(n, dtype=torch.bool) for k in ("quote", "end", "comma")}
        for i in range(n):
            text = codec.decode([i], skip_special_tokens=True)
            found["quote"][i] = '"' in text
            found["end"][i] = "}" in text or "]" in text
            found["comma"][i] = "," in text
        _KINDS[codec] = found
    return found


class Structure:
    """One row's grammar state: `mask(logits)` before sampling, `consume(token)` after.

    The mask keeps the text valid; it cannot make a small model finish a value. So tokens that
    close the current value get a bonus (only ever among the valid tokens): a `"` once a string
    runs past `LONG_STRING` characters, a `,`, `}` or `]` once a number runs past `LONG_NUMBER`
    digits, and over the last `1 - BUDGET_SHARE` of the token budget the end of the string, then
    of the object or array. The value completes before `max_tokens` instead of being cut."""

    def __init__(self, codec: Any, grammar: str, max_new: int = 0) -> None:
        from llguidance import LLMatcher

        self.codec, self.max_new, self.done = codec, max_new, 0
        self.in_string = self.escape = False
        self.run = 0  # characters in the current string, or digits in the current number
        tokenizer = codec.guidance_tokenizer()
        self.matcher = LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise GenerationInputError(f"response_format: {self.matcher.get_error()}")
        self.vocab = int(tokenizer.vocab_size)
        self.words = torch.zeros((1, (self.vocab + 31) // 32), dtype=torch.int32)
        self.bits = torch.arange(32, dtype=torch.int32)

    def allowed(self) -> torch.Tensor:
        """A (vocab,) bool tensor: the tokens that keep the output valid."""
        from llguidance.torch import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self.words)
        bits = (self.words[0].unsqueeze(-1) >> self.bits) & 1
        return bits.flatten()[: self.vocab].bool()

    def bonuses(self) -> dict[str, float]:
        """The bonus per token kind now (empty while the value is short and the budget ample)."""
        out: dict[str, float] = {}
        late = max(0.0, self.done / self.max_new - BUDGET_SHARE) / (1 - BUDGET_SHARE) * 12.0 if self.max_new else 0.0
        if self.in_string:
            out["quote"] = max(0.0, (self.run - LONG_STRING) * 0.25) + late
        else:
            if self.run:  # inside a number
                out["comma"] = out["end"] = max(0.0, float(self.run - LONG_NUMBER))
            out["end"] = out.get("end", 0.0) + late
        return {k: min(v, 30.0) for k, v in out.items() if v > 0}

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = self.allowed()
        n = min(len(allowed), logits.shape[-1])
        out = torch.full_like(logits, float("-inf"))
        out[:n] = logits[:n].masked_fill(~allowed[:n], float("-inf"))
        if not torch.isfinite(out).any():
            raise GenerationInputError("response_format: no token can continue the output (the schema cannot be met)")
        bonuses = self.bonuses()
        if bonuses:
            kinds = token_kinds(self.codec)
            for kind, bonus in bonuses.items():
                out[:n] = out[:n] + kinds[kind][:n].float() * bonus
        return out

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise GenerationInputError(f"response_format: {self.matcher.get_error() or 'token refused'}")
        self.done += 1
        for c in self.codec.decode([int(token)], skip_special_tokens=True):
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif c == "\\":
                    self.escape = True
                elif c == '"':
                    self.in_string, self.run = False, 0
                else:
                    self.run += 1
            elif c == '"':
                self.in_string, self.run = True, 0
            elif c in "0123456789-+.eE":
                self.run += 1
            elif not c.isspace():
                self.run = 0
