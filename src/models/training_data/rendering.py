"""Rendering a conversation window through a chat template, with the assistant-token mask.

The template is rendered for every prefix of the messages; where each rendering extends the
previous one (true for our template and for the usual ones), message k spans the characters
between the k-th and (k+1)-th renderings, and the tokens of an assistant message's content and
closing tokens are marked in `assistant_mask`. A template without that prefix property gets a
mask of all ones (train on everything) and the report says so. Too long a window loses its
oldest messages first; if the last exchange alone is still longer than `max_length`, its
oldest tokens are cut (`truncated`).
"""

from __future__ import annotations

from typing import Any

from models.training_data.schema import sha256_text
from models.training_data.tokenization import TokenizerHandle
from models.training_data.windows import Window

__all__ = ["assistant_spans", "render_window"]


def assistant_spans(tok: TokenizerHandle, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]] | None]:
    """The rendered text and the character spans of assistant content (None if not computable)."""
    renders = [tok.render_chat(messages[:k]) for k in range(len(messages) + 1)]
    text = renders[-1]
    spans: list[tuple[int, int]] = []
    for k, msg in enumerate(messages):
        before, after = renders[k], renders[k + 1]
        if not after.startswith(before):
            return text, None
        if msg["role"] == "assistant":
            start = after.find(msg["content"].strip(), len(before))
            spans.append((start if start >= 0 else len(before), len(after)))
    return text, spans


def _mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]] | None) -> list[int]:
    if spans is None:
        return [1] * len(offsets)
    out = []
    for a, b in offsets:
        out.append(int(any(s <= a and b <= e and b > a for s, e in spans)))
    return out


def render_window(
    window: Window,
    convo: dict[str, Any],
    tok: TokenizerHandle,
    max_length: int,
    system_prompt: str | None = None,
) -> dict[str, Any] | None:
    """One `WINDOW_FEATURES` row for `window`, or None when nothing fits."""
    messages = [dict(m) for m in window.messages]
    if not tok.has_emotion_tokens:
        for m in messages:
            m.pop("emotion", None)
    system = []
    if system_prompt:
        content = system_prompt.replace("{speaker}", window.speaker).replace("{title}", str(convo.get("title") or ""))
        system = [{"role": "system", "content": content}]
    truncated = False
    while True:
        text, spans = assistant_spans(tok, system + messages)
        ids, offsets = tok.encode(text)
        if len(ids) <= max_length:
            break
        if len(messages) > 2:
            messages.pop(0)
            truncated = True
            continue
        cut = len(ids) - max_length
        ids, offsets, truncated = ids[cut:], offsets[cut:], True
        break
    mask = _mask(offsets, spans)
    if not any(mask):
        return None
    shown = text[offsets[0][0] :] if truncated and offsets else text
    assistant = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
    rows = [{"role": m["role"], "content": m["content"], "emotion": m.get("emotion", "")} for m in system + messages]
    return {
        "text": shown,
        "messages": rows,
        "input_ids": list(ids),
        "assistant_mask": mask,
        "length": len(ids),
        "assistant_text": assistant,
        "conversation_id": str(convo.get("conversation_id") or ""),
        "title": str(convo.get("title") or ""),
        "speaker": window.speaker,
        "speaker_id": window.speaker_id,
        "n_turns": window.n_turns,
        "truncated": truncated,
        "source": str(convo.get("source") or ""),
        "file": str(convo.get("file") or ""),
        "position": f"{convo.get('position') or ''}+turn:{window.first_turn}",
        "sha256": sha256_text(text),
    }
