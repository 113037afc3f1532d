"""Conversation windows: which turns form one training example, and who plays the assistant.

For each speaker to imitate (`target_speakers`, default: every participant), a conversation's
turns (consecutive turns by one speaker merged) are cut into windows of at most
`context_window` turns. In a window the imitated speaker's turns are `assistant` messages and
everyone else's are `user` messages (several people in a row merge into one user message). In
group chats (more than two participants), user messages are prefixed with the speaker's name
so the model knows who said what. A window ends on the imitated speaker's last turn (later
turns would teach nothing) and must contain a turn by someone else; the next window starts
after it (or `window_stride` turns later when given, which makes windows overlap).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Window", "conversation_windows", "merge_turns"]


@dataclass
class Window:
    """One training example before rendering."""

    speaker: str
    speaker_id: str
    messages: list[dict[str, str]]
    first_turn: int
    n_turns: int


def merge_turns(turns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive turns by the same speaker become one (texts joined by newlines)."""
    merged: list[dict[str, Any]] = []
    for t in turns:
        text = str(t.get("text") or "").strip()
        if not text:
            continue
        if merged and merged[-1]["speaker_id"] == t.get("speaker_id") and merged[-1]["speaker"] == t.get("speaker"):
            merged[-1]["text"] += "\n" + text
            merged[-1]["emotion"] = t.get("emotion") or merged[-1]["emotion"]
        else:
            merged.append(
                {
                    "speaker": str(t.get("speaker") or ""),
                    "speaker_id": str(t.get("speaker_id") or t.get("speaker") or ""),
                    "text": text,
                    "emotion": str(t.get("emotion") or ""),
                }
            )
    return merged


def _is_target(turn: dict[str, Any], targets: set[str] | None) -> bool:
    return targets is None or turn["speaker"].lower() in targets or turn["speaker_id"].lower() in targets


def _messages(turns: list[dict[str, Any]], speaker_id: str, group: bool) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for t in turns:
        if t["speaker_id"] == speaker_id:
            msg = {"role": "assistant", "content": t["text"]}
            if t["emotion"]:
                msg["emotion"] = t["emotion"]
            messages.append(msg)
            continue
        content = f"{t['speaker']}: {t['text']}" if group else t["text"]
        if messages and messages[-1]["role"] == "user":
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": "user", "content": content})
    return messages


def conversation_windows(
    turns: Sequence[dict[str, Any]],
    context_window: int,
    *,
    target_speakers: Sequence[str] | None = None,
    window_stride: int | None = None,
) -> Iterator[Window]:
    """The windows of one conversation (see the module docstring)."""
    merged = merge_turns(turns)
    ids = {t["speaker_id"] for t in merged}
    if len(ids) < 2:
        return
    group = len(ids) > 2
    targets = {s.lower() for s in target_speakers} if target_speakers else None
    seen: list[tuple[str, str]] = []
    for t in merged:
        key = (t["speaker_id"], t["speaker"])
        if key not in seen and _is_target(t, targets):
            seen.append(key)
    for speaker_id, speaker in seen:
        start = 0
        while start < len(merged):
            block = merged[start : start + context_window]
            last = max((i for i, t in enumerate(block) if t["speaker_id"] == speaker_id), default=-1)
            others = any(t["speaker_id"] != speaker_id for t in block[: last + 1])
            if last >= 0 and others:
                body = block[: last + 1]
                yield Window(speaker, speaker_id, _messages(body, speaker_id, group), start, len(body))
            advance = window_stride or (last + 1 if last >= 0 else len(block))
            start += max(1, advance)
