"""The personal part of one turn, built in one place for every way a user chats.

`personal_note(user, message)` gives what goes into the prompt just before the user's message:
their preferences in words and what we remember about them (facts they state in the message,
"my name is ...", are remembered first), within the memory's token budget. `HybridModel`, the
server's card turns and `companion chat --user` all build the note here, so a rule about what
the model is told of a user changes once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.personalization.memory import UserMemory
from models.personalization.params import PersonalizationParams
from models.personalization.preferences import UserPreferences, load_preferences

__all__ = ["PersonalNote", "personal_note"]


@dataclass(frozen=True)
class PersonalNote:
    """A user's preferences and remembered facts for one turn, and the note they make."""

    preferences: UserPreferences | None
    memory: str

    @property
    def text(self) -> str:
        instructions = self.preferences.instructions() if self.preferences is not None else []
        return "\n".join(x for x in ("\n".join(instructions), self.memory) if x)

    def before_message(self, history: Sequence[Any]) -> list[Any]:
        """`history` with the note as a system turn at its end (where the message follows)."""
        text = self.text
        return [*history, {"role": "system", "content": text}] if text else list(history)


def personal_note(
    user: str | None,
    message: str | None,
    *,
    preferences: UserPreferences | None = None,
    remember: bool = True,
    query: str | None = None,
    memory_tokens: int | None = None,
) -> PersonalNote:
    """The note for `user`'s turn: `preferences` (default: their stored ones) and the memory
    block for `query` (default: the message). No user: preferences only, nothing remembered."""
    if user is not None and preferences is None:
        preferences = load_preferences(user)
    memory = ""
    if user is not None:
        mem = UserMemory(user)
        if remember and message:
            mem.remember_from(message)
        budget = PersonalizationParams().memory_tokens if memory_tokens is None else memory_tokens
        memory = mem.block(query=query or message, budget_tokens=budget)
    return PersonalNote(preferences, memory)
