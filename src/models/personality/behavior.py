"""Behaviour traits → generation settings and instructions, and their measurement on outputs.

| trait | generation setting | instruction (prompt) | measured as |
| --- | --- | --- | --- |
| verbosity | `max_new_tokens` = (0.35 + 0.65·v)·max_length | short / rich replies | mean words per reply |
| initiative | rerank bonus for replies with a question | ask follow-up questions / don't | question rate |
| humour | temperature + 0.3·(h − 0.5) | be playful / stay earnest | exclamation and laughter rate |
| formality | repetition penalty nudge | formal / casual register | contraction rate |
| boundaries | — | decline these topics | boundary hits in user messages |

Instructions go into the system prompt (they steer instruction-following models); settings and
the rerank score steer the small embedded model, which follows instructions poorly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.personality.extension import BehaviorTraits

__all__ = [
    "BehaviorMeasures",
    "GenerationPlan",
    "behavior_score",
    "boundary_hits",
    "measure",
    "plan_generation",
    "plan_turn",
    "token_label",
]

_WORD = re.compile(r"[A-Za-z0-9']+")
_CONTRACTION = re.compile(r"\b\w+'(s|re|ve|ll|d|m|t)\b", re.IGNORECASE)
_LAUGH = re.compile(r"\b(ha(ha)+|hehe|lol)\b|!", re.IGNORECASE)


@dataclass(frozen=True)
class GenerationPlan:
    """What the traits ask of one generation."""

    max_new_tokens: int
    temperature: float
    repetition_penalty: float
    instructions: list[str] = field(default_factory=list)
    target_words: float = 0.0
    wants_question: float = 0.5

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "repetition_penalty": self.repetition_penalty}


def plan_generation(
    traits: BehaviorTraits, *, max_length: int, temperature: float, repetition_penalty: float
) -> GenerationPlan:
    """Settings and instructions for one reply from the character's traits."""
    max_new = max(8, round(max_length * (0.35 + 0.65 * traits.verbosity)))
    temp = max(0.0, temperature + 0.3 * (traits.humour - 0.5)) if temperature > 0 else 0.0
    rep = max(1.0, repetition_penalty + 0.1 * (traits.formality - 0.5))
    instructions = []
    if traits.verbosity <= 0.35:
        instructions.append("Reply in one or two short sentences.")
    elif traits.verbosity >= 0.65:
        instructions.append("Reply with a few vivid, descriptive sentences.")
    if traits.initiative >= 0.6:
        instructions.append("Take the lead: end most replies with a question that moves things forward.")
    elif traits.initiative <= 0.3:
        instructions.append("Answer what is asked; rarely ask questions back.")
    if traits.humour >= 0.6:
        instructions.append("Be playful; a light joke is welcome.")
    elif traits.humour <= 0.2:
        instructions.append("Stay earnest; no jokes.")
    if traits.formality >= 0.65:
        instructions.append("Speak formally: complete sentences, no slang, no contractions.")
    elif traits.formality <= 0.3:
        instructions.append("Speak casually and warmly.")
    if traits.boundaries:
        instructions.append(f"Politely decline to discuss: {', '.join(traits.boundaries)}.")
    return GenerationPlan(
        max_new_tokens=max_new,
        temperature=round(temp, 4),
        repetition_penalty=round(rep, 4),
        instructions=instructions,
        target_words=max_new * 0.75,
        wants_question=traits.initiative,
    )


def boundary_hits(text: str, traits: BehaviorTraits) -> list[str]:
    """The boundary topics a message touches (whole-word, case-insensitive)."""
    hits = []
    for topic in traits.boundaries:
        if topic.strip() and re.search(r"\b" + re.escape(topic.strip()) + r"\b", text, re.IGNORECASE):
            hits.append(topic)
    return hits


@dataclass(frozen=True)
class BehaviorMeasures:
    """Behaviour measured on a set of replies."""

    replies: int
    mean_words: float
    question_rate: float
    exclamation_rate: float
    contraction_rate: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def measure(texts: Sequence[str]) -> BehaviorMeasures:
    """Length, question rate (share of replies with a '?'), laughter/exclamation and contractions."""
    n = len(texts)
    if n == 0:
        return BehaviorMeasures(0, 0.0, 0.0, 0.0, 0.0)
    words = [len(_WORD.findall(t)) for t in texts]
    total_words = max(1, sum(words))
    return BehaviorMeasures(
        replies=n,
        mean_words=round(sum(words) / n, 2),
        question_rate=round(sum(1 for t in texts if "?" in t) / n, 4),
        exclamation_rate=round(sum(1 for t in texts if _LAUGH.search(t)) / n, 4),
        contraction_rate=round(sum(len(_CONTRACTION.findall(t)) for t in texts) / total_words, 4),
    )


def behavior_score(text: str, plan: GenerationPlan) -> float:
    """How well one reply fits the plan, in [0, 1] (used to rerank candidates)."""
    words = len(_WORD.findall(text))
    if words == 0:
        return 0.0
    length_fit = 1.0 - min(1.0, abs(words - plan.target_words) / max(1.0, plan.target_words))
    has_q = 1.0 if "?" in text else 0.0
    question_fit = 1.0 - abs(has_q - plan.wants_question)
    return 0.5 * length_fit + 0.5 * question_fit


def plan_turn(
    ext: Any, message: str | None, scenario: Any, max_length: int, temperature: float, repetition_penalty: float
) -> tuple[GenerationPlan, list[str]]:
    """A turn's generation settings and instructions, from the card's traits (`ext`, its
    `CompanionExtension`), the scenario and the user's message (boundaries it touches)."""
    plan = plan_generation(
        ext.behavior, max_length=max_length, temperature=temperature, repetition_penalty=repetition_penalty
    )
    instructions = list(plan.instructions) + ([scenario.instructions] if scenario and scenario.instructions else [])
    if ext.interaction.address_user_as:
        instructions.append(f'Address {{{{user}}}} as "{ext.interaction.address_user_as}".')
    if message and (hits := boundary_hits(message, ext.behavior)):
        instructions.append(f"{{{{user}}}} asked about {', '.join(hits)}: kindly decline and change the subject.")
    return plan, instructions


def token_label(emotion_settings: Any, emotion: str | None) -> str | None:
    """The control token's label for a character's emotion label (custom labels via `label_map`)."""
    from models.tokens import EMOTIONS

    if emotion in EMOTIONS:
        return emotion
    mapped = emotion_settings.label_map.get(emotion or "", [])
    return mapped[0] if mapped and mapped[0] in EMOTIONS else None
