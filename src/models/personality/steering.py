"""Emotion steering: nudge each decoding step toward the requested emotion.

Why: the embedded model's emotion control tokens alone make about half of Luna's replies read
as the requested emotion (`python -m bench.emotion`); best-of-N reranking gets past 80 % but
decodes N replies. Steering gets there at the cost of one reply. It is *weighted decoding*
(Ghazvininejad et al. 2017, "Hafez"; See et al. 2019, "What makes a good conversation?") with
the emotion classifier's view of each word as the weight, and one guard for fluency, in the
spirit of FUDGE (Yang & Klein 2021), which only re-ranks the language model's likely candidates:

1. **A bias per token.** For every vocabulary token that is a whole word (or `?` / `!`), the
   classifier's log-probability of each label for that word alone (logits divided by
   `WORD_TEMPERATURE`), minus its mean over all such tokens: a pointwise-mutual-information
   score, clipped to ±`clip`, times `strength`. Built once per (classifier, tokenizer) pair.
2. **Plausible tokens only.** The bias applies only to tokens whose logit is within `margin`
   nats of the best one: it reorders what the model already considers likely and never brings
   in a word the model would not have said.
3. **Length unchanged.** Raising emotion words would lower the end-of-turn token's share and
   make replies ramble on; the end tokens are lifted by the same log-mass as the tokens that go
   on, so the odds of ending the reply at each step are what the model gave.

Each step costs one masked vector add over the vocabulary. The classifier is not consulted
while decoding: a variant that stopped steering once the reply *read* as the emotion to the
shipped classifier scored as well on that classifier but worse on an independent judge and on
fluency (docs/personality.md). `bench/emotion.py` reports agreement, the independent judge's
agreement and the fluency cost for tokens alone, steering and reranking side by side.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from models.engines.guides import NearBias

__all__ = ["EmotionGuide", "EmotionSteering", "token_emotion_scores"]

#: Divides single-word logits of an embedding-kind classifier (see `token_emotion_scores`);
#: chosen so that a few percent of the vocabulary, not a third, stands out for each label.
WORD_TEMPERATURE = 4.0

_WORD_PIECE = re.compile(r"^[A-Za-z'][A-Za-z']+$")  # two letters or more: 'ĠW' says nothing
_MARKS = ("?", "!")


def _whole_word_tokens(codec: Any) -> dict[int, str]:
    """Token id → the word it spells, for tokens that start a word and are one whole word.

    Byte-level BPE marks a leading space with `Ġ` (GPT-2) and SentencePiece with `▁`; a piece
    without the mark continues the previous word, and its letters alone say nothing."""
    out: dict[int, str] = {}
    for tid in range(codec.vocab_size):
        piece = codec.id_to_token(tid)
        if not piece:
            continue
        if piece in _MARKS or (piece[1:] in _MARKS and piece[0] in "Ġ▁"):
            out[tid] = piece[-1]
        elif piece[0] in "Ġ▁" and _WORD_PIECE.match(piece[1:]):
            out[tid] = piece[1:]
    return out


def token_emotion_scores(
    classifier: Any, codec: Any, temperature: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(vocab, classifier labels) centered log-probabilities of each label for each whole-word
    token read alone, and the (vocab,) mask of the tokens that have one (zero elsewhere).

    One word is a handful of n-gram features, whose mean is far from the averaged-out mean of a
    sentence: read alone, words get over-confident logits (a third of the vocabulary would sit
    more than 3 nats above the mean). `temperature` divides them back to a sentence's scale
    (default: the classifier's `word_temperature`; a TF-IDF linear classifier normalizes a lone
    word like a sentence and needs none)."""
    words = _whole_word_tokens(codec)
    vocab = codec.vocab_size
    logp = np.zeros((vocab, len(classifier.labels)), dtype=np.float64)
    mask = np.zeros(vocab, dtype=bool)
    if not words:
        return logp.astype(np.float32), mask
    ids = np.fromiter(words, dtype=np.int64, count=len(words))
    if temperature is None:
        temperature = float(getattr(classifier, "word_temperature", WORD_TEMPERATURE))
    z = classifier.logits(list(words.values())).astype(np.float64)
    z /= temperature
    z -= z.max(axis=1, keepdims=True)
    lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp[ids] = lp - lp.mean(axis=0, keepdims=True)
    mask[ids] = True
    return logp.astype(np.float32), mask


class EmotionSteering:
    """Per-label token biases for one (classifier, tokenizer, character labels) triple; hands out
    an `EmotionGuide` per requested label (`guide(label)`). The token table is cached per (classifier, tokenizer)."""

    _cache: ClassVar[dict[tuple[int, int, float], tuple[Any, Any, np.ndarray, np.ndarray]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        classifier: Any,
        codec: Any,
        labels: Sequence[str],
        label_map: dict[str, list[str]] | None = None,
        strength: float = 1.0,
        margin: float = 4.0,
        clip: float = 3.0,
        word_temperature: float | None = None,
    ) -> None:
        self.classifier = classifier
        self.codec = codec
        self.labels = tuple(labels)
        self.strength = float(strength)
        self.margin = float(margin)
        self.clip = float(clip)
        if word_temperature is None:
            word_temperature = float(getattr(classifier, "word_temperature", WORD_TEMPERATURE))
        scores, mask = self._scores(classifier, codec, float(word_temperature))
        index = {lab: i for i, lab in enumerate(classifier.labels)}
        label_map = label_map or {}
        # character label → classifier columns it sums (as `emotion.project` does)
        self.sources = {lab: [index[s] for s in label_map.get(lab, [lab]) if s in index] for lab in self.labels}
        self._scores_np, self._mask = scores, mask
        self._biases: dict[str, torch.Tensor] = {}
        vocab = len(mask)
        #: Tokens that end the reply: steering must not make them less likely (see `adjust`).
        self.stop_ids = torch.tensor(
            sorted(t for t in getattr(codec, "stop_ids", ()) if 0 <= t < vocab), dtype=torch.long
        )
        #: Names this steering's table for batching (and for an engine process, which rebuilds
        #: its guides from plain data: `engines.guides.guide_spec`).
        self.key = f"{os.getpid()}:{id(self)}"

    @classmethod
    def reuse_or_build(
        cls,
        current: EmotionSteering | None,
        classifier: Any,
        codec: Any,
        labels: Sequence[str],
        label_map: dict[str, list[str]] | None,
        strength: float,
        margin: float,
    ) -> EmotionSteering:
        """`current` when it was built for this classifier, tokenizer, strength and margin, else
        a new one (a character's settings may change between turns)."""
        wanted = (classifier, codec, strength, margin)
        if current is not None and (current.classifier, current.codec, current.strength, current.margin) == wanted:
            return current
        return cls(classifier, codec, labels, label_map, strength=strength, margin=margin)

    @classmethod
    def _scores(cls, classifier: Any, codec: Any, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        key = (id(classifier), id(codec), temperature)
        with cls._lock:
            hit = cls._cache.get(key)
            if hit is not None and hit[0] is classifier and hit[1] is codec:
                return hit[2], hit[3]
            scores, mask = token_emotion_scores(classifier, codec, temperature)
            if len(cls._cache) > 16:
                cls._cache.clear()
            cls._cache[key] = (classifier, codec, scores, mask)
            return scores, mask

    def bias(self, label: str) -> torch.Tensor:
        """The (vocab,) bias toward `label` (already times `strength`)."""
        if label not in self._biases:
            cols = self.sources.get(label) or []
            if not cols:
                vec = np.zeros(len(self._mask), dtype=np.float32)
            else:
                # log of the summed probability of the label's sources, centered again
                lp = np.logaddexp.reduce(self._scores_np[:, cols].astype(np.float64), axis=1)
                lp = np.where(self._mask, lp - lp[self._mask].mean(), 0.0)
                vec = (np.clip(lp, -self.clip, self.clip) * self.strength).astype(np.float32)
            self._biases[label] = torch.from_numpy(vec)
        return self._biases[label]

    def guide(self, label: str | None) -> EmotionGuide | None:
        """A guide toward `label` (None for no label, a label with no classifier source, or
        strength 0)."""
        if label is None or self.strength == 0 or not self.sources.get(label):
            return None
        return EmotionGuide(self, label)


class EmotionGuide(NearBias):
    """Steers replies toward `label` (a `models.engines.sampling.LogitsGuide`; stateless, so one
    guide serves every row of a batched decode). The arithmetic is `engines.guides.NearBias`,
    with this steering's bias for the label; guides of one steering are adjusted together."""

    def __init__(self, steering: EmotionSteering, label: str) -> None:
        self.steering = steering
        self.label = label
        super().__init__(steering.bias(label), steering.margin, steering.stop_ids, key=steering.key)

    def __repr__(self) -> str:
        s = self.steering
        return f"EmotionGuide({self.label!r}, strength={s.strength}, margin={s.margin})"
