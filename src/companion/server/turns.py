"""The work of one answer, as `Job`s the runner runs in a worker thread (as the caller).

Chat on a personality goes one of two ways (so SillyTavern works with its own prompts):

* only user (and assistant) turns: the personality's card-driven prompt applies
  (`stream_response(message=last user turn, history=earlier turns)`), with the user's stated
  preferences and what we remember about them as a note just before the message
  (`models.personalization.turn`, the one place every chat path builds it);
* a system message: the client's messages go to the personality's base model as they are
  (access is still checked on the personality).

Every answer is logged (`personalized_responses`, under the server's personalization model) so
`record_feedback(response_id, ...)` can refer to it; the ids go back to the client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from companion.server.generation import Job, Turn
from models.personalization.turn import personal_note

__all__ = ["chat_job", "completion_job"]

Logger = Callable[..., Any]


def _logger(personalization: str | None, user: str) -> Logger:
    def log(category: str, name: str, version: str | None, text: str, where: str, **details: Any) -> str | None:
        if not personalization:
            return None
        from models.personalization.storage import log_response

        return log_response(
            user=user,
            category=category,
            model=name,
            version=version,
            personalization=personalization,
            context=where[:2000],
            text=text,
            candidates=[text],
            scores=[0.0],
            chosen=0,
            details={"source": "server", **details},
            background=True,
        )

    return log


def _with_images(target: Any, sent: list[dict[str, Any]], messages: list[dict[str, Any]], name: str
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """Image parts go to a remote model as OpenAI content parts (a vision model on Ollama, vLLM);
    a local model reads only text: a 400 naming the message."""
    with_images = [i for i, m in enumerate(messages) if m.get("images")]
    if not with_images:
        return sent
    if getattr(target, "codec", None) is not None:  # a local engine: text only
        from companion.server.errors import APIError

        problem = f"model {name!r} reads text only; images need a vision model on an OpenAI-compatible server"
        raise APIError(400, problem, param=f"messages.{with_images[0]}.content")
    images = {m["content"]: m["images"] for m in messages if m.get("images")}
    out = []
    for m in sent:  # after fitting: a kept message keeps its images
        parts = images.get(m["content"])
        if parts:
            m = {**m, "content": [{"type": "text", "text": m["content"]}, *parts]}
        out.append(m)
    return out


def _hold(pieces: Any, held: list[str]) -> Any:
    """Read the whole answer before anything is sent: it may be a tool call, not text."""
    held.append("".join(pieces))
    yield from ()


def _check_tools(target: Any, kw: dict[str, Any], name: str, messages: list[dict[str, Any]]) -> None:
    """Tools, and tool calls or results in the history, need a local model whose chat template
    has a tool format (a 400 naming the field otherwise)."""
    from companion.server.errors import APIError
    from models.engines.tools import supports_tools

    tooled = [i for i, m in enumerate(messages) if m["role"] == "tool" or m.get("tool_calls")]
    if not kw.get("tools") and not tooled:
        return
    param = "tools" if kw.get("tools") else f"messages.{tooled[0]}.role"
    codec = getattr(target, "codec", None)
    if codec is None:
        raise APIError(400, f"tools: {name} runs on a remote server; tool calls are not relayed to it", param=param)
    if not supports_tools(codec):
        raise APIError(
            400, f"tools: model {name!r} cannot call tools (its chat template has no tool format)", param=param
        )


def _check_logprobs(target: Any, kw: dict[str, Any], name: str) -> None:
    """logprobs come from a local engine's own distribution; a remote model's are not relayed."""
    if kw.get("logprobs") is not None and getattr(target, "codec", None) is None:  # no tokenizer here: remote
        from models.errors import DataError

        raise DataError(f"logprobs: {name} runs on a remote server; its log-probabilities are not relayed")


def _logprobs(target: Any, kw: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The answer's per-token logprobs, when the request asked for them."""
    if kw.get("logprobs") is None:
        return None
    return (getattr(target, "last_stats", None) and target.last_stats.extra.get("logprobs")) or []


def _stats_meta(stats: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": getattr(stats, "prompt_tokens", 0) or 0,
        "completion_tokens": getattr(stats, "completion_tokens", 0) or 0,
        "finish_reason": getattr(stats, "finish_reason", "stop"),
    }


def _card_turn(
    model: Any,
    name: str,
    user: str,
    persona: str | None,
    messages: list[dict[str, str]],
    kw: dict[str, Any],
    log: Logger,
) -> Turn:
    """The personality's own prompt, with the user's note, over the client's turns."""
    message = messages[-1]["content"]
    history = messages[:-1]
    history = personal_note(user, message).before_message(history)
    # the caller's own state with the character (`session`); `user` is the name it calls them
    pieces = model.stream_response(message=message, history=history, user=persona, session=user, **kw)

    def finish(text: str) -> dict[str, Any]:
        r = model.last_response  # this turn's: the engine's lock is held until the turn ends
        meta = _stats_meta(_last_stats(model))
        if r is not None:
            meta.update(
                prompt_tokens=r.usage.get("prompt_tokens") or 0, completion_tokens=r.usage.get("completion_tokens") or 0
            )
        meta.update(
            text=r.text if r is not None else text.strip(),
            emotion=getattr(r, "emotion", None),
            detected_emotion=getattr(r, "detected_emotion", None),
            prompt={"used": "card", "fit": None},
        )
        meta["response_id"] = log(
            "personality", name, getattr(model, "version", None), meta["text"], message, emotion=meta["emotion"]
        )
        return meta

    return Turn(pieces, finish, {"used": "card", "fit": None})


def _last_stats(model: Any) -> Any:
    """The statistics of the turn `stream_response` just ran (its check and audit row cover
    them): reading them is bookkeeping, not a new use of the base, so it is not checked and
    audited again (it was: a second `generate` row for every served turn)."""
    from models.security.manager import inside_checked_call

    with inside_checked_call():
        return getattr(model.base, "last_stats", None)


def _can(target: Any, method: str, category: str, name: str, what: str) -> None:
    """A 400 (not a 500) for a model that cannot do what the endpoint asks (a personalization
    model adapts replies; it does not chat)."""
    if not callable(getattr(target, method, None)):
        from models.errors import DataError

        raise DataError(
            f"model {name!r} is a {category} model and cannot {what}; use a personality or a base model "
            "(GET /v1/models lists them)"
        )


def _target(model: Any, category: str, name: str, action: str) -> tuple[Any, Any]:
    """What generates for a client's own prompt, and the context to call it in: a personality's
    base, once `generate` on the personality is checked (the base is then not re-checked)."""
    if category != "personality":
        return model, contextlib.nullcontext()
    from models.security.manager import get_security_manager, inside_checked_call

    get_security_manager().require(None, f"{category}/{name}", "generate", action=action)
    return model.base, inside_checked_call()


def _card_mode(messages: list[dict[str, str]], prompt: str) -> bool:
    """Whether the character's own prompt answers (see the module docstring); `prompt` is the
    request's choice: auto (the rule), card (always: the client's system messages are left out)
    or client (never)."""
    if prompt == "client":
        return False
    if prompt == "card":
        turns = [m for m in messages if m["role"] in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user":
            from models.errors import DataError

            raise DataError("companion.prompt 'card' needs a user message last (the one the character answers)")
        return True
    return all(m["role"] in ("user", "assistant") for m in messages) and messages[-1]["role"] == "user"


def _speaker(name: str, persona: str | None) -> str:
    """How a message's `name` is shown: SillyTavern's example speakers become the user's name
    (or User) and Assistant; other names (group chats) as sent."""
    return {"example_user": persona or "User", "example_assistant": "Assistant"}.get(name, name)


def _client_prompt(target: Any, messages: list[dict[str, str]], max_length: int | None, persona: str | None
                   ) -> tuple[list[dict[str, str]], dict[str, Any]]:  # fmt: skip
    """The client's messages fitted to the model's context (`models.chat_fit`), names rendered."""
    from models.chat_fit import fit_messages

    engine = getattr(target, "engine", None)
    context = int(getattr(engine, "context_length", 0) or 0)
    count = getattr(engine, "count_tokens", None) or (lambda text: max(1, len(text) // 4))
    report = None
    if context:
        new = max_length or getattr(getattr(target, "params", None), "max_length", 0) or 0
        messages, report = fit_messages(messages, count, max(16, context - int(new) - 8))
        if report.changed:
            import logging

            logging.getLogger("companion.server").warning(
                "prompt over the context of %s (%d > %d tokens): dropped %d messages and %d examples%s",
                getattr(target, "name", "model"), report.tokens_sent, report.budget, report.dropped_messages,
                report.dropped_examples, ", shortened the system prompt" if report.shortened_system else "",
            )  # fmt: skip
    out = []
    for m in messages:
        name = m.get("name")
        content = f"{_speaker(name, persona)}: {m['content']}" if name else m["content"]
        out.append({"role": m["role"], "content": content})
    return out, {"used": "client", "fit": report.to_dict() if report is not None else None}


def chat_job(
    user: str,
    persona: str | None,
    messages: list[dict[str, str]],
    opts: dict[str, Any],
    personalization: str | None,
    prompt: str = "auto",
) -> Job:
    """One chat answer (see the module docstring). `opts`: max_length, temperature, top_p, seed, stop.
    `prompt`: auto, card or client (which prompt answers; the answer's meta says which did)."""
    kw = {k: v for k, v in opts.items() if v is not None}
    card_mode, card_only = _which_prompt(messages, kw, prompt)
    if card_mode:
        messages = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")
        ]
    log = _logger(personalization, user)

    def job(model: Any, category: str, name: str) -> Turn:
        if category == "personality" and card_mode and hasattr(model, "stream_response"):
            return _card_turn(model, name, user, persona, messages, kw, log)
        from models.errors import DataError

        if prompt == "card":
            raise DataError(f"companion.prompt 'card' needs a personality; {name} is a {category} model")
        if card_only:
            raise DataError(f"companion.emotion and companion.context need a personality; {name} is a {category} model")
        return _client_turn(model, category, name, persona, messages, kw, log)

    return job


def _which_prompt(messages: list[dict[str, Any]], kw: dict[str, Any], prompt: str) -> tuple[bool, list[str]]:
    """Whether the character's own prompt answers (`prompt` auto, card or client), and the
    card-only options asked for; a `DataError` for a combination one prompt cannot serve."""
    from models.errors import DataError

    if kw.get("tools") and prompt == "card":
        raise DataError("tools go with the client's prompt; companion.prompt 'card' cannot call them")
    pictures = any(m.get("images") for m in messages)
    if pictures and prompt == "card":
        raise DataError("images go with the client's prompt; companion.prompt 'card' cannot show them")
    card_mode = not kw.get("tools") and not pictures and _card_mode(messages, prompt)
    if card_mode and kw.get("logprobs") is not None:
        raise DataError(
            "logprobs: the character's own prompt picks among several answers; ask with the client's prompt "
            '(a system message, or "companion": {"prompt": "client"})'
        )
    card_only = sorted(k for k in ("emotional_state", "context") if k in kw)
    if card_only and not card_mode:
        raise DataError(
            "companion.emotion and companion.context shape the character's own prompt, which is used only "
            "when the request has just user and assistant turns; this one has a system message"
        )
    return card_mode, card_only


def _client_turn(
    model: Any,
    category: str,
    name: str,
    persona: str | None,
    messages: list[dict[str, Any]],
    kw: dict[str, Any],
    log: Logger,
) -> Turn:
    """The answer to the client's own messages (its system prompt, tools, images), streamed by
    the model (a personality's base model); tool calls are held back and parsed at the end."""
    target, scope = _target(model, category, name, "stream_chat")
    _can(target, "stream_chat", category, name, "chat")
    _check_logprobs(target, kw, name)
    _check_tools(target, kw, name, messages)
    max_length = kw.get("max_length")
    sent, used = _client_prompt(target, messages, max_length, persona)
    sent = _with_images(target, sent, messages, name)
    with scope:
        pieces = target.stream_chat(sent, max_length, **{k: v for k, v in kw.items() if k != "max_length"})
    held: list[str] = []
    if kw.get("tools") and kw.get("tool_choice") != "none":
        pieces = _hold(pieces, held)

    def finish(text: str) -> dict[str, Any]:
        meta = {**_stats_meta(getattr(target, "last_stats", None)), "text": held[0] if held else text}
        meta.update(emotion=None, detected_emotion=None, prompt=used, logprobs=_logprobs(target, kw))
        if held:
            from models.engines.tools import parse_tool_calls

            content, calls = parse_tool_calls(meta["text"])
            meta.update(text=content or "", tool_calls=calls or None, held=True)
            if calls:
                meta["finish_reason"] = "tool_calls"
            text = meta["text"]
        meta["response_id"] = log(category, name, getattr(model, "version", None), text, messages[-1]["content"])
        return meta

    return Turn(pieces, finish, used)


def completion_job(user: str, prompt: str, opts: dict[str, Any], personalization: str | None) -> Job:
    """One text completion of `prompt` (a personality completes with its base model)."""
    kw = {k: v for k, v in opts.items() if v is not None}
    log = _logger(personalization, user)

    def job(model: Any, category: str, name: str) -> Turn:
        target, scope = _target(model, category, name, "stream")
        _can(target, "stream", category, name, "complete text")
        _check_logprobs(target, kw, name)
        with scope:
            pieces = target.stream(prompt, kw.get("max_length"), **{k: v for k, v in kw.items() if k != "max_length"})

        def finish(text: str) -> dict[str, Any]:
            meta = {**_stats_meta(getattr(target, "last_stats", None)), "text": text}
            meta["response_id"] = log(category, name, getattr(model, "version", None), text, prompt)
            meta["logprobs"] = _logprobs(target, kw)
            return meta

        return Turn(pieces, finish)

    return job
