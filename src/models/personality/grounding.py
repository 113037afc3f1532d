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
from collections.abc import Iterable, Sequence
from typing import Any

import torch

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


class CardGuide:
    """Adds `focus` to the logits of the card's words that are within `margin` of the best
    token and not yet in this reply (a `models.engines.sampling.LogitsGuide`; stateless, so one
    guide serves every row of a batched decode)."""

    def __init__(self, ids: Iterable[int], focus: float, margin: float = 3.0) -> None:
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)
        self.focus = float(focus)
        self.margin = float(margin)
        self._masks: dict[int, torch.Tensor] = {}

    def batch_key(self) -> tuple[str]:
        """Rows whose guides share this key are adjusted together (`adjust_rows`)."""
        return ("card",)

    def vocab_mask(self, vocab: int) -> torch.Tensor:
        """The card's word tokens as a (vocab,) mask."""
        mask = self._masks.get(vocab)
        if mask is None:
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[self.ids[self.ids < vocab]] = True
            self._masks[vocab] = mask
        return mask

    @staticmethod
    def adjust_rows(
        guides: Sequence[CardGuide], logits: torch.Tensor, generated: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """`adjust` for each row of (rows, vocab) `logits` with its own guide and reply so far,
        in a few whole-batch operations (the same additions, so the same numbers)."""
        vocab = logits.shape[-1]
        allowed = torch.stack([g.vocab_mask(vocab) for g in guides])
        for j, done in enumerate(generated):
            if done:
                allowed[j, torch.tensor([t for t in done if 0 <= t < vocab], dtype=torch.long)] = False
        margin = torch.tensor([g.margin for g in guides], dtype=logits.dtype)[:, None]
        focus = torch.tensor([g.focus for g in guides], dtype=logits.dtype)[:, None]
        near = logits >= logits.max(dim=-1, keepdim=True).values - margin
        return torch.where(allowed & near & (focus != 0), logits + focus, logits)

    def adjust(self, logits: torch.Tensor, generated: Sequence[int] = ()) -> torch.Tensor:
        ids = self.ids[self.ids < logits.shape[-1]]
        if not len(ids) or self.focus == 0:
            return logits
        if generated:
            ids = ids[~torch.isin(ids, torch.tensor(list(generated), dtype=torch.long))]
        near = logits[ids] >= logits.max() - self.margin
        ids = ids[near]
        if not len(ids):
            return logits
        out = logits.clone()
        out[ids] += self.focus
        return out

    def __repr__(self) -> str:
        return f"CardGuide({len(self.ids)} tokens, focus={self.focus}, margin={self.margin})"


class GuideChain:
    """Several guides applied in order (emotion steering, then card grounding)."""

    def __init__(self, guides: Sequence[Any]) -> None:
        self.guides = [g for g in guides if g is not None]

    @classmethod
    def of(cls, guides: Sequence[Any]) -> Any:
        """The guide that applies `guides` (Nones skipped): None, the one guide, or a chain."""
        present = [g for g in guides if g is not None]
        if len(present) <= 1:
            return present[0] if present else None
        return cls(present)

    def batch_key(self) -> tuple[Any, ...] | None:
        keys = tuple(g.batch_key() if hasattr(g, "batch_key") else None for g in self.guides)
        return None if None in keys else ("chain", keys)

    @staticmethod
    def adjust_rows(
        chains: Sequence[GuideChain], logits: torch.Tensor, generated: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Each chain's guides in order over the rows, a position's guides together (chains
        with one `batch_key` have guides of the same kinds in the same order)."""
        for at, first in enumerate(chains[0].guides):
            logits = type(first).adjust_rows([c.guides[at] for c in chains], logits, generated)
        return logits

    def adjust(self, logits: torch.Tensor, generated: Sequence[int] = ()) -> torch.Tensor:
        for guide in self.guides:
            logits = guide.adjust(logits, generated)
        return logits

    def __repr__(self) -> str:
        return f"GuideChain({self.guides!r})"
