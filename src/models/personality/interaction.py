"""Interaction style: greetings, how the user is addressed, history window, example dialogue.

* Greetings: `first_mes`, then `alternate_greetings` (a context's own `first_mes` wins); the
  character speaks first with exactly that text, macros expanded.
* Addressing: `{{user}}` is the caller's `user=` name, else the card's
  `interaction.user_name` ("friend" by default); `address_user_as` adds a fixed form of address.
* History: OpenAI-style messages, `(role, text)` pairs or plain strings (alternating user and
  character, user first) are accepted; the last `history_turns` messages are kept.
* Example dialogue (`mes_example`): `<START>` separates conversations; `{{user}}:`/`{{char}}:`
  lines become user/assistant messages. They are placed after the system message and are the
  first thing dropped when the context fills (`example_dialogue: auto`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from models.errors import CardError

__all__ = ["normalize_history", "parse_examples", "pick_greeting", "window"]

_SPEAKER = re.compile(r"^\s*(\{\{user\}\}|<user>|\{\{char\}\}|<bot>|<char>)\s*:\s?(.*)$", re.IGNORECASE)
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "char": "assistant", "bot": "assistant"}


def pick_greeting(
    greetings: Sequence[str], mode: str = "first", index: int | None = None, seed: int | None = None
) -> str:
    """One greeting: `index` if given, else the first (`mode="first"`) or a random one."""
    if not greetings:
        return ""
    if index is not None:
        if not 0 <= index < len(greetings):
            raise CardError("alternate_greetings", f"no greeting {index}; the card has {len(greetings)}")
        return greetings[index]
    if mode == "random":
        return random.Random(seed).choice(list(greetings))
    return greetings[0]


def parse_examples(mes_example: str) -> list[list[dict[str, str]]]:
    """`mes_example` → conversations of `{"role", "content"}` (macros left unexpanded)."""
    blocks: list[list[dict[str, str]]] = []
    current: list[dict[str, str]] = []
    for line in mes_example.splitlines():
        if line.strip().upper() == "<START>":
            if current:
                blocks.append(current)
            current = []
            continue
        m = _SPEAKER.match(line)
        if m:
            who = m.group(1).lower()
            role = "user" if who in ("{{user}}", "<user>") else "assistant"
            current.append({"role": role, "content": m.group(2).strip()})
        elif line.strip() and current:
            current[-1]["content"] += "\n" + line.strip()
    if current:
        blocks.append(current)
    return [b for b in blocks if any(m["role"] == "assistant" for m in b)]


def normalize_history(history: Sequence[Any] | None) -> list[dict[str, str]]:
    """Accept messages, `(role, text)` pairs or alternating strings; return OpenAI-style messages."""
    out: list[dict[str, str]] = []
    for i, item in enumerate(history or []):
        if isinstance(item, dict):
            role = _ROLES.get(str(item.get("role", "")).lower(), "system" if item.get("role") == "system" else None)
            if role is None or "content" not in item:
                raise CardError(f"history[{i}]", "a message needs 'role' (user/assistant/system) and 'content'")
            out.append({"role": role, "content": str(item["content"])})
        elif isinstance(item, tuple | list) and len(item) == 2:
            role = _ROLES.get(str(item[0]).lower())
            if role is None:
                raise CardError(f"history[{i}]", f"unknown speaker {item[0]!r}; use user or assistant")
            out.append({"role": role, "content": str(item[1])})
        elif isinstance(item, str):
            out.append({"role": "user" if i % 2 == 0 else "assistant", "content": item})
        else:
            raise CardError(f"history[{i}]", f"expected a message dict, a (role, text) pair or a string, got {item!r}")
    return out


def window(history: Sequence[dict[str, str]], turns: int) -> list[dict[str, str]]:
    """The last `turns` messages (0 keeps none)."""
    return list(history[-turns:]) if turns > 0 else []
