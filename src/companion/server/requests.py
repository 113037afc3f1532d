"""What an OpenAI request asks for, checked at the edge and translated for the library.

`chat_messages` turns a chat's messages into the library's (text, image parts, tool calls and
results, names), `sampling_options` the sampling fields into generation options after the server's
limits (penalties, `logit_bias`, `response_format`, `logprobs`, `tools`), refusing with a 400
that names the field whatever the request relies on that is not honoured (`_refuse_unsupported`).
`chat_logprobs` and `completion_logprobs` shape the engine's per-token records as OpenAI does.
The endpoints themselves are in `companion.server.openai_api`.
"""

from __future__ import annotations

import re
from typing import Any

from companion.server.errors import APIError
from companion.server.schemas import ChatMessage, ChatRequest, CompletionRequest

__all__ = ["chat_logprobs", "chat_messages", "completion_logprobs", "encodable", "sampling_options"]


#: Largest image a request may carry inline (a data: URL), in characters of its base64.
MAX_IMAGE_CHARS = 8_000_000


def _text(message: ChatMessage, index: int) -> str:
    """The message's text (its text parts joined; image parts are taken by `_images`)."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for k, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind != "image_url":
            raise APIError(400, f"content part {kind!r}: text and image_url parts are supported",
                           param=f"messages.{index}.content.{k}")  # fmt: skip
    return "".join(parts)


def _images(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    """The message's image parts (OpenAI's `image_url`), checked: an http(s) URL or a data: image."""
    if not isinstance(message.content, list):
        return []
    out = []
    for k, part in enumerate(message.content):
        if part.get("type") != "image_url":
            continue
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else None
        where = f"messages.{index}.content.{k}.image_url"
        if not isinstance(url, str) or not re.match(r"(?:https?://|data:image/[a-z+.-]+;base64,)", url):
            raise APIError(400, "image_url.url: an http(s) URL or a data:image/...;base64, URL", param=where)
        if len(url) > MAX_IMAGE_CHARS:
            raise APIError(400, f"image_url.url: at most {MAX_IMAGE_CHARS:,} characters inline", param=where)
        out.append({"type": "image_url", "image_url": dict(spec)})
    return out


def encodable(text: str, param: str) -> str:
    """`text` if it is valid Unicode text (JSON lets a client send a lone surrogate, `\\ud800`,
    which no tokenizer can encode), else a 400 naming the field."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(
            400, f"{param}: not valid Unicode text (a lone surrogate at {exc.start})", param=param, code="invalid_value"
        ) from None
    return text


def chat_messages(req: ChatRequest) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        msg: dict[str, Any] = {"role": role, "content": encodable(_text(m, i), f"messages.{i}.content")}
        if images := _images(m, i):
            msg["images"] = images
        if m.name:
            msg["name"] = encodable(m.name, f"messages.{i}.name")
        extra = m.model_extra or {}
        if role == "tool":
            if not isinstance(extra.get("tool_call_id"), str):
                raise APIError(
                    400, "a tool message needs the tool_call_id it answers", param=f"messages.{i}.tool_call_id"
                )
            msg["tool_call_id"] = extra["tool_call_id"]
        if role == "assistant" and extra.get("tool_calls"):
            calls = extra["tool_calls"]
            if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                                      for c in calls):  # fmt: skip
                raise APIError(400, "tool_calls: a list of {id, type, function: {name, arguments}}",
                               param=f"messages.{i}.tool_calls")  # fmt: skip
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def _refuse_unsupported(req: ChatRequest | CompletionRequest) -> None:
    """A 400 naming any OpenAI field we would otherwise drop while the client relies on it."""
    extra = req.model_extra or {}

    def refuse(field: str, why: str) -> None:
        raise APIError(400, f"{field}: {why}", param=field, code="unsupported_parameter")

    fmt = extra.get("response_format")
    if fmt is not None:
        from models.engines.structured import check_response_format

        if (problem := check_response_format(fmt)) is not None:
            raise APIError(400, f"response_format: {problem}", param="response_format")
    if extra.get("functions") or extra.get("function_call"):
        refuse("functions", "the deprecated functions/function_call: send tools and tool_choice")
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (modalities is not None and list(modalities) != ["text"]):
        refuse("audio" if extra.get("audio") is not None else "modalities", "only text is generated here")
    if extra.get("web_search_options") is not None:
        refuse("web_search_options", "this server does not search the web")
    if extra.get("suffix"):
        refuse("suffix", "insertion (text after the completion) is not supported")
    best_of = extra.get("best_of")
    if best_of not in (None, 1) and best_of != getattr(req, "n", 1):
        refuse("best_of", "choosing the best of several completions is not supported; use n")


def sampling_options(req: ChatRequest | CompletionRequest, limits: Any) -> dict[str, Any]:
    """Sampling options for the library, after the server's limits."""
    if req.max_tokens is not None and req.max_tokens > limits.max_tokens:
        raise APIError(
            400, f"max_tokens is at most {limits.max_tokens} on this server", param="max_tokens", code="invalid_value"
        )
    if req.n > limits.max_n:
        raise APIError(400, f"n is at most {limits.max_n} on this server", param="n", code="invalid_value")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > limits.max_stop or any(not s or len(s) > 200 for s in stop):
        raise APIError(
            400, f"stop: up to {limits.max_stop} non-empty sequences of at most 200 characters", param="stop"
        )
    _refuse_unsupported(req)
    max_completion = (req.model_extra or {}).get("max_completion_tokens")
    if max_completion is not None and req.max_tokens is None:  # OpenAI's newer name for max_tokens
        if isinstance(max_completion, bool) or not isinstance(max_completion, int) or max_completion < 1:
            raise APIError(400, "max_completion_tokens: a positive integer", param="max_completion_tokens")
        if max_completion > limits.max_tokens:
            raise APIError(
                400,
                f"max_completion_tokens is at most {limits.max_tokens} on this server",
                param="max_completion_tokens",
            )
        req.max_tokens = max_completion
    opts: dict[str, Any] = {"max_length": req.max_tokens or None}
    sampling = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "top_k", "min_p")
    for key in (*sampling, "repetition_penalty"):
        if getattr(req, key) is not None:
            opts[key] = getattr(req, key)
    if opts.get("top_p") == 0:  # only the most likely token is left: greedy
        opts.pop("top_p")
        opts["temperature"] = 0.0
    if stop:
        opts["stop"] = stop
    if req.logit_bias:
        opts["logit_bias"] = _logit_bias(req.logit_bias)
    fmt = (req.model_extra or {}).get("response_format")
    if fmt is not None and fmt.get("type") != "text":
        opts["response_format"] = fmt
    top = _logprobs(req)
    if top is not None:
        opts["logprobs"] = top
    if isinstance(req, ChatRequest):
        opts.update(_tools(req))
    return opts


def _tools(req: ChatRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` as the library takes them (none, auto, required, or a name)."""
    extra = req.model_extra or {}
    tools, choice = extra.get("tools"), extra.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        return {}
    if not isinstance(tools, list) or len(tools) > 128:
        raise APIError(400, "tools: a list of up to 128 functions", param="tools")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if not isinstance(name, str):
            raise APIError(400, "tool_choice: none, auto, required or {type: function, function: {name}}",
                           param="tool_choice")  # fmt: skip
        choice = name
    elif choice not in (None, "none", "auto", "required"):
        raise APIError(400, "tool_choice: none, auto, required or {type: function, function: {name}}",
                       param="tool_choice")  # fmt: skip
    return {"tools": tools, "tool_choice": choice or "auto"}


def _logprobs(req: ChatRequest | CompletionRequest) -> int | None:
    """How many top alternatives per token to return (None: no logprobs). Chat: `logprobs: true`
    and `top_logprobs` 0..20; completions: `logprobs` 0..5, as OpenAI takes them."""
    extra = req.model_extra or {}
    value, top = extra.get("logprobs"), extra.get("top_logprobs")
    if isinstance(req, ChatRequest):
        if value not in (None, True, False):
            raise APIError(400, "logprobs: true or false (top_logprobs says how many alternatives)", param="logprobs")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
            raise APIError(400, "top_logprobs: an integer 0..20", param="top_logprobs")
        if top is not None and not value:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return int(top or 0) if value else None
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise APIError(400, "logprobs: an integer 0..5 (alternatives per token)", param="logprobs")
    return value


def chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """OpenAI's chat `logprobs` object from the engine's per-token records."""
    if entries is None:
        return None

    def item(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"]}

    content = [{**item(e), "top_logprobs": [item(t) for t in e["top_logprobs"]]} for e in entries]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's legacy completions `logprobs` object (tokens, token_logprobs, top_logprobs, text_offset)."""
    if entries is None:
        return None
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


#: Most entries in one request's `logit_bias` (ours: it keeps a request's work bounded).
MAX_LOGIT_BIAS = 300


def _logit_bias(raw: dict[str, float]) -> dict[int, float]:
    """OpenAI's `logit_bias` ({"token id": bias}) as the library takes it, checked."""
    if len(raw) > MAX_LOGIT_BIAS:
        raise APIError(400, f"logit_bias: at most {MAX_LOGIT_BIAS} tokens", param="logit_bias", code="invalid_value")
    out: dict[int, float] = {}
    for key, value in raw.items():
        if not re.fullmatch(r"[0-9]{1,9}", key):  # ASCII digits: str.isdigit() also takes "²"
            raise APIError(400, f"logit_bias: {key!r} is not a token id", param="logit_bias", code="invalid_value")
        if not -100 <= value <= 100:
            raise APIError(
                400, f"logit_bias[{key}] must be in [-100, 100], not {value}", param="logit_bias", code="invalid_value"
            )
        out[int(key)] = float(value)
    return out
