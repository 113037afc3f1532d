"""Prompt assembly: card + context + lorebook + examples + history + emotion, within a budget.

The messages, in order (then rendered by the base model's chat template):

1. `system`: the card's `system_prompt` (`{{original}}` = our default; empty = our default),
   `before_char` lore, description, personality, the scenario of the `context=` key (or the
   card's), `after_char` lore, the context's instructions, behaviour instructions, how to
   address the user and, for prompt-controlled models, the emotion in words;
2. example dialogue (`mes_example`) as user/assistant turns;
3. the history window, with `@@depth N` lore entries inserted N messages from the end;
4. the user's message;
5. `post_history_instructions`, when the card has them, as a final system message.

Budget = the model's context − the reply's tokens. The system message, the user's message and
post-history instructions are always kept; history fills the rest newest first, and example
dialogue takes what is left (so examples are the first thing dropped as the chat grows; with
`example_dialogue: always` they go before history). Macros are expanded last.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.personality.interaction import parse_examples
from models.personality.lorebook import ActiveEntry
from models.personality.macros import expand_macros

__all__ = ["DEFAULT_SYSTEM", "AssembledPrompt", "assemble_prompt", "emotion_sentence"]

DEFAULT_SYSTEM = "You are {{char}}, talking with {{user}}. Stay in character."
_PER_MESSAGE = 3  # role token, end token, newline


@dataclass
class AssembledPrompt:
    """The messages for the chat template and what had to be left out."""

    messages: list[dict[str, str]]
    emotion: str | None
    """The emotion label to pass as a control token (None for prompt-controlled models)."""
    prompt_tokens: int
    budget: int
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def emotion_sentence(label: str, expression: str = "") -> str:
    """The emotion in words, for models without emotion control tokens."""
    how = f" {expression.strip()}" if expression.strip() else ""
    return f"Right now {{{{char}}}} feels {label}; let it show in the reply.{how}"


def _system_text(card: Any, scenario_text: str, lore: Sequence[ActiveEntry], extra: Sequence[str]) -> str:
    own = card.system_prompt.strip()
    head = own if own and "{{original}}" in own.lower() else (own or DEFAULT_SYSTEM)
    parts = [head]
    parts += [e.content for e in lore if e.position == "before_char" and e.depth is None]
    parts += [card.description.strip()]
    if card.personality.strip():
        parts.append(f"{{{{char}}}}'s personality: {card.personality.strip()}")
    if scenario_text.strip():
        parts.append(f"Scenario: {scenario_text.strip()}")
    parts += [e.content for e in lore if e.position == "after_char" and e.depth is None]
    parts += list(extra)
    return "\n".join(p for p in parts if p and p.strip())


def _cost(messages: Sequence[dict[str, str]], count: Callable[[str], int]) -> int:
    return sum(count(m["content"]) + _PER_MESSAGE for m in messages)


def _insert_depth_lore(history: list[dict[str, str]], lore: Sequence[ActiveEntry]) -> list[dict[str, str]]:
    out = list(history)
    for entry in sorted((e for e in lore if e.depth is not None), key=lambda e: -(e.depth or 0)):
        at = max(0, len(out) - int(entry.depth or 0))
        out.insert(at, {"role": entry.role, "content": entry.content})
    return out


def assemble_prompt(
    card: Any,
    *,
    user: str,
    message: str | None,
    history: Sequence[dict[str, str]],
    scenario_text: str,
    lore: Sequence[ActiveEntry] = (),
    instructions: Sequence[str] = (),
    emotion: str | None = None,
    emotion_in_prompt: str | None = None,
    example_mode: str = "auto",
    count_tokens: Callable[[str], int] = lambda s: max(1, len(s) // 4),
    budget: int = 4096,
    rng: random.Random | None = None,
) -> AssembledPrompt:
    """Build the messages (see the module docstring); `emotion_in_prompt` is a sentence or None."""
    rng = rng or random.Random()
    char = card.display_name
    original = expand_macros(DEFAULT_SYSTEM, char=char, user=user)

    def expand(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        return [
            {
                "role": m["role"],
                "content": expand_macros(m["content"], char=char, user=user, original=original, rng=rng),
            }
            for m in messages
        ]

    extra = list(instructions) + ([emotion_in_prompt] if emotion_in_prompt else [])
    system = expand([{"role": "system", "content": _system_text(card, scenario_text, lore, extra)}])
    tail = [{"role": "user", "content": message}] if message is not None else []
    if card.post_history_instructions.strip():
        tail.append({"role": "system", "content": card.post_history_instructions.strip()})
    tail = expand(tail)
    examples = [expand(b) for b in parse_examples(card.mes_example)] if example_mode != "never" else []
    hist = expand(_insert_depth_lore(list(history), lore))
    left = budget - _cost([*system, *tail], count_tokens)
    if example_mode == "always":
        ex, left = _take_examples(examples, left, count_tokens)
        kept_hist, left = _take_history(hist, left, count_tokens)
    else:  # examples only while the whole history fits: they are the first thing to go
        kept_hist, left = _take_history(hist, left, count_tokens)
        ex, left = _take_examples(examples, left, count_tokens) if len(kept_hist) == len(hist) else ([], left)
    messages = [*system, *(m for block in ex for m in block), *kept_hist, *tail]
    return AssembledPrompt(
        messages=messages,
        emotion=emotion,
        prompt_tokens=_cost(messages, count_tokens),
        budget=budget,
        kept={"history": len(kept_hist), "examples": len(ex), "lore": len(lore)},
        dropped={"history": len(hist) - len(kept_hist), "examples": len(examples) - len(ex)},
    )


def _take_examples(
    blocks: Sequence[list[dict[str, str]]], room: int, count: Callable[[str], int]
) -> tuple[list[list[dict[str, str]]], int]:
    """Whole example conversations, in order, while they fit."""
    chosen = []
    for block in blocks:
        c = _cost(block, count)
        if c > room:
            break
        chosen.append(block)
        room -= c
    return chosen, room


def _take_history(
    history: Sequence[dict[str, str]], room: int, count: Callable[[str], int]
) -> tuple[list[dict[str, str]], int]:
    """The newest messages that fit (a contiguous tail)."""
    kept: list[dict[str, str]] = []
    for m in reversed(history):
        c = _cost([m], count)
        if c > room:
            break
        kept.insert(0, m)
        room -= c
    return kept, room
