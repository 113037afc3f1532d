"""Hashed n-gram features: text → bucket ids, for small, fast, dependency-free text classifiers.

fastText-style: lower-cased word unigrams and bigrams, plus character n-grams of every word
with boundary marks (`<word>`), each hashed with CRC-32 into a fixed number of buckets. The
hash is stable across processes and platforms (unlike Python's `hash`), so a classifier saved
with its `FeatureSpec` predicts the same on any machine. Punctuation and emoji are tokens of
their own: `?`, `!` and `❤` carry a lot of emotion.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FeatureSpec", "featurize", "tokenize"]

_TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']", re.UNICODE)
_CAPS = re.compile(r"\b[A-Z]{2,}\b")
#: Words that negate what follows them up to the next punctuation (`FeatureSpec.negation`).
NEGATIONS = frozenset({
    "not", "no", "never", "nothing", "nobody", "without", "cannot", "n't", "dont", "don't", "cant", "can't",
    "won't", "isn't", "wasn't", "didn't", "doesn't", "aren't", "couldn't", "wouldn't", "shouldn't", "haven't",
    "hasn't",
})  # fmt: skip


@dataclass(frozen=True)
class FeatureSpec:
    """How text becomes features (saved next to the weights as JSON)."""

    buckets: int = 1 << 16
    """Number of hash buckets (rows of the embedding table)."""
    char_min: int = 3
    """Shortest character n-gram of a word (0 = no character n-grams)."""
    char_max: int = 5
    """Longest character n-gram of a word."""
    bigrams: bool = True
    """Add word bigrams."""
    negation: bool = False
    """Mark each word after a negation (*not*, *never*, *don't*, ...) up to the next punctuation
    as a feature of its own ("not happy" then differs from "happy")."""
    trigrams: bool = False
    """Add word trigrams."""
    shape: bool = False
    """Add flags for shouting: an all-caps word, two or more, "!!" and "??" (read from the
    text before lower-casing)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters, digits, apostrophes) and single punctuation/emoji marks."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return _TOKEN.findall(text)


def _h(feature: str, buckets: int) -> int:
    return zlib.crc32(feature.encode("utf-8")) % buckets


def featurize(text: str, spec: FeatureSpec) -> list[int]:
    """The bucket ids of `text` (with repeats; never empty: an empty text maps to one bucket)."""
    words = tokenize(text)
    b = spec.buckets
    ids = [_h("w:" + w, b) for w in words]
    if spec.bigrams:
        ids += [_h(f"b:{x} {y}", b) for x, y in itertools.pairwise(words)]
    if spec.char_min > 0:
        for w in words:
            if len(w) < 2 or not w[0].isalnum():
                continue
            marked = f"<{w}>"
            for n in range(spec.char_min, spec.char_max + 1):
                ids += [_h("c:" + marked[i : i + n], b) for i in range(len(marked) - n + 1)]
    if spec.negation:
        ids += [_h("n:" + w, b) for w in _negated(words)]
    if spec.trigrams:
        ids += [_h(f"t:{x} {y} {z}", b) for x, y, z in zip(words, words[1:], words[2:], strict=False)]
    if spec.shape:
        caps = len(_CAPS.findall(text))
        flags = ("caps",) * (caps >= 1) + ("caps2",) * (caps >= 2) + ("!!",) * ("!!" in text) + ("??",) * ("??" in text)
        ids += [_h("f:" + f, b) for f in flags]
    return ids or [_h("<empty>", b)]


def _negated(words: list[str]) -> list[str]:
    """The words in the scope of a negation: after one, up to the next punctuation mark."""
    out, on = [], False
    for w in words:
        if w in NEGATIONS:
            on = True
        elif not w[0].isalnum():
            on = False
        elif on:
            out.append(w)
    return out
