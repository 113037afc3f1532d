"""Fitting a client's chat to a model's context, as chat front ends do.

A client such as SillyTavern sends its whole prompt: system prompt, character card, example
dialogue, the chat so far. When that is longer than the model's context, cutting tokens from
the front (what an engine does last) loses the system prompt and the card first. Here whole
messages go instead, in this order, until the prompt fits:

1. the oldest turns of the conversation (never the last message);
2. example dialogue (system messages named `example_user` / `example_assistant`), oldest first;
3. the end of the longest system message, as a last resort.

`fit_messages` returns the kept messages and a `FitReport` of what went, which the server
returns to the client (`companion.prompt`) and logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PER_MESSAGE", "FitReport", "fit_messages", "is_example"]

#: Tokens a chat template adds around each message (role markers, turn end): an estimate.
PER_MESSAGE = 4


@dataclass
class FitReport:
    """What fitting removed (all zero and False when the prompt fitted as sent)."""

    budget: int
    tokens_sent: int
    tokens_kept: int
    dropped_messages: int = 0
    dropped_examples: int = 0
    shortened_system: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.dropped_messages or self.dropped_examples or self.shortened_system)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def is_example(message: dict[str, Any]) -> bool:
    return message.get("role") == "system" and str(message.get("name") or "").startswith("example_")


def fit_messages(
    messages: Sequence[dict[str, Any]], count_tokens: Callable[[str], int], budget: int
) -> tuple[list[dict[str, Any]], FitReport]:
    """`messages` cut to about `budget` tokens (see the module docstring)."""
    msgs = [dict(m) for m in messages]
    sizes = [count_tokens(str(m.get("content") or "")) + PER_MESSAGE for m in msgs]
    sent = sum(sizes)
    report = FitReport(budget=budget, tokens_sent=sent, tokens_kept=sent)
    total = sent

    def drop(i: int) -> None:
        nonlocal total
        total -= sizes[i]
        del msgs[i], sizes[i]

    # 1. the oldest conversation turns (not system messages, not the last message)
    i = 0
    while total > budget and i < len(msgs) - 1:
        if msgs[i].get("role") != "system":
            drop(i)
            report.dropped_messages += 1
        else:
            i += 1
    # 2. example dialogue, oldest first
    i = 0
    while total > budget and i < len(msgs) - 1:
        if is_example(msgs[i]):
            drop(i)
            report.dropped_examples += 1
        else:
            i += 1
    # 3. the end of the longest system message
    if total > budget:
        systems = [j for j, m in enumerate(msgs[:-1]) if m.get("role") == "system"]
        if systems:
            j = max(systems, key=lambda k: sizes[k])
            text = str(msgs[j].get("content") or "")
            keep_tokens = max(0, sizes[j] - (total - budget) - PER_MESSAGE)
            keep_chars = int(len(text) * keep_tokens / max(1, sizes[j] - PER_MESSAGE))
            msgs[j]["content"] = text[:keep_chars].rstrip()
            new = count_tokens(msgs[j]["content"]) + PER_MESSAGE
            total += new - sizes[j]
            sizes[j] = new
            report.shortened_system = True
    report.tokens_kept = total
    return msgs, report
