"""Measurable features of a response, each in [0, 1], plus a small hashed text embedding.

| feature | measured as |
| --- | --- |
| length | words / 100 (capped at 1) |
| formality | formal / (formal + casual markers), 0.5 with neither (see `_CASUAL`, `_FORMAL`) |
| emoji | emoji per sentence (capped at 1) |
| questions | share of sentences that end with "?" |
| exclamation | share of sentences that end with "!" |
| sentiment | 0.5 + 0.5 · (positive − negative) / (positive + negative + 1), from a small word list |
| reading_level | Flesch–Kincaid grade / 16 (capped) |
| vocabulary | (mean word length − 3) / 5 (capped) |
| relevance | share of the response's content words that appear in the context (0 without one) |

The embedding hashes lower-cased words (CRC-32, stable across processes) into 16 signed
buckets and L2-normalizes them: a cheap "what is it about" signal the learner can weigh.
"""

from __future__ import annotations

import functools
import math
import re
import zlib

import numpy as np

__all__ = ["EMBED_DIM", "SCALAR_FEATURES", "content_words", "embed", "features", "measure", "sentences"]

SCALAR_FEATURES: tuple[str, ...] = (
    "length",
    "formality",
    "emoji",
    "questions",
    "exclamation",
    "sentiment",
    "reading_level",
    "vocabulary",
    "relevance",
)
EMBED_DIM = 16

_WORD = re.compile(r"[A-Za-z][A-Za-z']*|\d+(?:[.,:]\d+)*")
_SENT = re.compile(r"[^.!?…]+(?:[.!?…]+|$)")
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\u2764\u2b50]")
_CONTRACTION = re.compile(r"\b\w+'(s|re|ve|ll|d|m|t)\b", re.IGNORECASE)
_EXPANDED = re.compile(
    r"\b(do not|does not|did not|can ?not|will not|would not|is not|are not|I am|it is|you are|we are|"
    r"they are|I have|I will|let us|that is)\b",
    re.IGNORECASE,
)
_CASUAL = {"hey", "yeah", "yep", "gonna", "wanna", "kinda", "lol", "haha", "awesome", "cool", "okay", "ok", "omg"}
_CASUAL |= {"stuff", "super", "totally", "hi", "nope", "btw"}
_FORMAL = {"certainly", "indeed", "however", "therefore", "regards", "shall", "would", "kindly", "furthermore"}
_FORMAL |= {"moreover", "perhaps", "hello", "please", "sincerely", "delighted"}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_POSITIVE = _words(
    "love lovely wonderful great good glad happy joy delight delighted beautiful warm kind brilliant "
    "amazing enjoy enjoyed enjoying hope hopeful proud excited gentle sweet dear wonderful fun perfect "
    "thanks thank nice best bright smile smiles laugh care caring yes strong yay"
)
_NEGATIVE = _words(
    "sad bad awful terrible hate angry sorry fear afraid boring dull wrong worse worst cry tears lonely "
    "pain hurt miss lost tired weak ugly broken fail failed dark awful"
)
_STOP = _words(
    "the a an and or but of to in on at for with is are was were be been it its this that i you he she we "
    "they me my your our their his her them us do does did have has had so as if then than there what how "
    "why when where who which will would can could should just very really not no yes about"
)


def sentences(text: str) -> list[str]:
    """Sentences of `text` (each with its end punctuation; a trailing emoji joins the sentence before)."""
    out: list[str] = []
    for part in (s.strip() for s in _SENT.findall(text)):
        if not part:
            continue
        if out and not any(c.isalnum() for c in part):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


@functools.lru_cache(maxsize=65536)
def _syllables(word: str) -> int:
    groups = re.findall(r"[aeiouy]+", word.lower())
    n = len(groups) - (1 if word.lower().endswith("e") and len(groups) > 1 else 0)
    return max(1, n)


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 2}


@functools.lru_cache(maxsize=1024)
def _context_words(context: str) -> frozenset[str]:
    return frozenset(content_words(context))


def measure(text: str, context: str | None = None) -> dict[str, float]:
    """The named scalar features of `text` (see the module table)."""
    words = _WORD.findall(text)
    sents = sentences(text) or [text]
    n_words, n_sents = len(words), max(1, len(sents))
    lower = [w.lower() for w in words]
    emoji = len(_EMOJI.findall(text))
    casual = len(_CONTRACTION.findall(text)) + sum(1 for w in lower if w in _CASUAL) + emoji + text.count("!")
    formal = len(_EXPANDED.findall(text)) + sum(1 for w in lower if w in _FORMAL)
    pos = sum(1 for w in lower if w in _POSITIVE)
    neg = sum(1 for w in lower if w in _NEGATIVE)
    if n_words:
        syll = sum(_syllables(w) for w in words if w[0].isalpha())
        grade = 0.39 * (n_words / n_sents) + 11.8 * (syll / n_words) - 15.59
        mean_len = sum(len(w) for w in words) / n_words
    else:
        grade, mean_len = 0.0, 3.0
    relevance = 0.0
    if context:
        mine, theirs = content_words(text), _context_words(context)
        relevance = len(mine & theirs) / len(mine) if mine else 0.0
    return {
        "length": min(1.0, n_words / 100.0),
        "formality": formal / (formal + casual) if formal + casual else 0.5,
        "emoji": min(1.0, emoji / n_sents),
        "questions": sum(s.rstrip().endswith("?") for s in sents) / n_sents,
        "exclamation": sum(s.rstrip().endswith("!") for s in sents) / n_sents,
        "sentiment": 0.5 + 0.5 * (pos - neg) / (pos + neg + 1),
        "reading_level": min(1.0, max(0.0, grade) / 16.0),
        "vocabulary": min(1.0, max(0.0, (mean_len - 3.0) / 5.0)),
        "relevance": relevance,
    }


def embed(text: str) -> np.ndarray:
    """A 16-dim signed hashed bag of words, L2-normalized (zeros for an empty text)."""
    vec = np.zeros(EMBED_DIM, dtype=np.float64)
    for w in _WORD.findall(text.lower()):
        h = zlib.crc32(w.encode("utf-8"))
        vec[h % EMBED_DIM] += 1.0 if (h >> 16) & 1 else -1.0
    norm = math.sqrt(float(vec @ vec))
    return vec / norm if norm else vec


def features(text: str, context: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(scalars, embedding)`: the scalar features in `SCALAR_FEATURES` order and the embedding."""
    m = measure(text, context)
    return np.array([m[k] for k in SCALAR_FEATURES], dtype=np.float64), embed(text)
