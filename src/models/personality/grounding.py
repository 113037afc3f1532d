"""Card grounding: leaning a small model's word choice toward the facts on its card (issue 18).

The embedded 5 M-parameter model reads a card's description in the system turn but rarely uses
it: asked "What do you do for fun?" under a card that says "I like hiking", it answers from
what most people in its training data said. Large models do not need help here; small ones do.

`CardGuide` is a `LogitsGuide` like emotion steering: at each step it adds `focus` to the logits
of the card's content words (words of 3+ letters that are not function words, see
`content_words`), but only where such a word is already among the model's own candidates
(within `margin` of the best logit) and only while the reply has not used it yet. So it changes
which plausible word the model picks; it never forces a word the model did not consider, and
never repeats one. Words that take several tokens are left alone: boosting only their first
piece produced broken words ("Bobb...") in trials.

Measured on held-out Synthetic-Persona-Chat questions (`python -m bench replies`): see
docs/personality.md for the table of focus against persona use and the control card.
"""

from __future__ import annotations

import re
from typing import Any

from models.engines.guides import GuideChain, NearBoost

__all__ = ["STOPWORDS", "CardGuide", "GuideChain", "card_text", "card_token_ids", "content_words"]

_WORD = re.compile(r"[a-z']+")
#: Function words and chat filler: not evidence that a reply uses a card's (or persona's) fact.
STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads best as words
        "i me my mine we our you your yours he she it its they them their a an the and or but if so to of in "
        "on at for with from by as is am are was were be been being have has had do does did not no yes that "
        "this these those there here what which who whom how when where why can could would should will just "
        "really very too also like love i'm i've it's don't im lot much many some any all more most one about "
        "out up get got go going know think well oh hi hello ok okay thanks thank sure good great nice fun "
        "things thing time"
    ).split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters that are not function words."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def card_text(card: Any, scenario: str | None = None) -> str:
    """The parts of a card that state facts about the character: description, personality and
    the scenario in use (the card's own unless `scenario` replaces it)."""
    parts = [card.description, card.personality, scenario if scenario is not None else card.scenario]
    return "\n".join(p for p in parts if p)


def card_token_ids(codec: Any, text: str, user: str = "", char: str = "") -> list[int]:
    """Token ids of the content words in `text` that the tokenizer spells as one token (with a
    leading space, bare, or capitalized); the `{{user}}` / `{{char}}` macros and the names they
    stand for are not facts and are left out."""
    words = content_words(text.replace("{{user}}", " ").replace("{{char}}", " "))
    words -= content_words(f"{user} {char}")
    ids: set[int] = set()
    for word in words:
        for form in (f" {word}", word, f" {word.capitalize()}"):
            got = codec.encode(form)
            if len(got) == 1:
                ids.add(int(got[0]))
    return sorted(ids)


class CardGuide(NearBoost):
    """Adds `focus` to the logits of the card's words that are within `margin` of the best
    token and not yet in this reply (a `models.engines.sampling.LogitsGuide`; stateless, so one
    guide serves every row of a batched decode). The arithmetic is `engines.guides.NearBoost`."""

    def __repr__(self) -> str:
        return f"CardGuide({len(self.ids)} tokens, focus={self.focus}, margin={self.margin})"
