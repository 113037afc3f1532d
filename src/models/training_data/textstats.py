"""Measurements of a text that the quality rules (`filters.py`) compare with thresholds.

Two views of a text are used. *Words* are whitespace-separated, as NOTES.md found necessary
for fiction: splitting punctuation off as separate "words" (spaCy, as datatrove does) makes
dialogue-heavy books fail Gopher's "80 % of words contain a letter" rule. *Tokens*
(`Tokens`) are lower-cased words with punctuation removed: the stop-word rule, the English
check, the repetition measures and MinHash (`dedup.py`) use them, so case and punctuation do
not hide a repeat. Tokens are hashed once with CRC-32 and n-grams are polynomials over those
hashes (numpy): deterministic, and a few array operations per text instead of Python loops
over every n-gram.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["ENGLISH_COMMON", "GOPHER_STOP_WORDS", "Tokens", "ngram_hashes", "text_stats"]

#: Gopher's stop words (Rae et al. 2021, §A.1.1): a document needs at least two of them.
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})

#: Very frequent English function words: the English check counts the share of tokens among them.
ENGLISH_COMMON = frozenset(
    """a about after again all also am an and any are as at back be because been before being but by
    can could did do does done down for from get got had has have he her here him his how i if in
    into is it its just know like me more my no not now of off on one only or our out over said
    say she so some than that the their them then there these they this those to too up us very
    was we were what when where which while who why will with would you your yes oh well don't
    i'm it's you're can't didn't isn't that's let's there's""".split()  # noqa: SIM905 - a readable word list
)

_PUNCT = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~“”„‘‚«»‹›¿¡…—–―·•§¶†‡′″'
_PUNCT_RUN = re.compile("[" + re.escape(_PUNCT) + "]+")
_NONALPHA_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
_PARAGRAPHS = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")
_PLACEHOLDER = re.compile(r"\[(?:image|file|media|link|sticker|embed[^\]]*|forwarded message)\]")
_TERMINAL = tuple(".!?…\"'”’)]:;—–*")
_BULLETS = ("•", "-", "*", "–", "·")
_BOILERPLATE = ("javascript", "cookie", "terms of use", "privacy policy", "all rights reserved", "project gutenberg")
_MULT = np.uint64(1_000_003)


@dataclass
class Tokens:
    """Lower-cased, punctuation-free tokens of a text and their CRC-32 hashes."""

    words: list[str]
    hashes: np.ndarray

    @classmethod
    def of(cls, text: str) -> Tokens:
        words = _PUNCT_RUN.sub(" ", text.lower().replace("’", "'")).split()
        hashes = np.fromiter(map(zlib.crc32, map(str.encode, words)), dtype=np.uint64, count=len(words))
        return cls(words, hashes)

    def __len__(self) -> int:
        return len(self.words)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every n-gram (a polynomial over the word hashes; wraps modulo 2**64)."""
    g = hashes[: len(hashes) - n + 1].copy()
    for k in range(1, n):
        g = g * _MULT + hashes[k : len(hashes) - n + 1 + k]
    return g


def _repetition(tok: Tokens, text_len: int) -> dict[str, float]:
    """Gopher's top-n-gram (2–4) and duplicate-n-gram (5–10) character fractions.

    Duplicate n-grams: the characters of tokens covered by an n-gram that already occurred
    earlier in the text, each character counted once however many n-grams cover it (the
    paper's wording). A text without a repeated 5-gram has no repeated longer n-gram either.
    """
    out = {f"top_{n}gram": 0.0 for n in (2, 3, 4)} | {f"dup_{n}gram": 0.0 for n in range(5, 11)}
    n_words = len(tok)
    if n_words < 2:
        return out
    h = tok.hashes
    lengths = np.fromiter(map(len, tok.words), dtype=np.int64, count=n_words)
    cum = np.concatenate(([0], np.cumsum(lengths)))
    denom = max(1, text_len)
    grams = h
    for n in range(2, 11):
        if n_words < n:
            break
        grams = grams[:-1] * _MULT + h[n - 1 :]
        if n <= 4:
            _, first, counts = np.unique(grams, return_index=True, return_counts=True)
            top = int(np.argmax(counts))
            if counts[top] > 1:
                start = int(first[top])
                chars = int(cum[start + n] - cum[start]) + (n - 1)
                out[f"top_{n}gram"] = float(counts[top] * chars / denom)
            continue
        _, first, inverse = np.unique(grams, return_index=True, return_inverse=True)
        repeats = np.nonzero(first[inverse] != np.arange(len(grams)))[0]
        if not len(repeats):
            break
        cover = np.zeros(n_words + 1, dtype=np.int64)
        np.add.at(cover, repeats, 1)
        np.add.at(cover, repeats + n, -1)
        covered = np.cumsum(cover[:-1]) > 0
        out[f"dup_{n}gram"] = float(lengths[covered].sum() / denom)
    return out


def _boilerplate(lower: str, lines: list[str]) -> int:
    if not any(b in lower for b in _BOILERPLATE):
        return 0
    return sum(any(b in line.lower() for b in _BOILERPLATE) for line in lines)


def _duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    dup, chars = 0, 0
    for item in items:
        if item in seen:
            dup += 1
            chars += len(item)
        else:
            seen.add(item)
    return dup, chars


def text_stats(text: str, assistant_text: str | None = None, tokens: Tokens | None = None) -> dict[str, float]:
    """Every measurement the rules use (see `filters.py` for what each threshold means).

    `tokens` (`Tokens.of(text)`) may be passed in when the caller has them already.
    """
    words = text.split()
    n = len(words)
    nw = max(1, n)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    paras = [p.strip() for p in _PARAGRAPHS.split(text) if p.strip()]
    n_lines = max(1, len(lines))
    lower = text.lower()
    tok = Tokens.of(text) if tokens is None else tokens
    dup_lines, dup_line_chars = _duplicates(lines)
    dup_paras, dup_para_chars = _duplicates(paras)
    stats = {
        "words": float(n),
        "mean_word_length": sum(map(len, tok.words)) / max(1, len(tok)),
        "hash_ratio": text.count("#") / nw,
        "ellipsis_ratio": (text.count("...") + text.count("…")) / nw,
        "bullet_lines": sum(line.startswith(_BULLETS) for line in lines) / n_lines,
        "ellipsis_lines": sum(line.endswith(("...", "…")) for line in lines) / n_lines,
        "alpha_words": 1.0 - len(_NONALPHA_WORD.findall(text)) / nw,
        "stop_words": float(len(GOPHER_STOP_WORDS.intersection(tok.words))),
        "english_ratio": sum(map(ENGLISH_COMMON.__contains__, tok.words)) / max(1, len(tok), n),
        "duplicate_lines": max(dup_lines / n_lines, dup_paras / max(1, len(paras))),
        "duplicate_line_chars": max(dup_line_chars, dup_para_chars) / max(1, len(text)),
        "terminal_punct_lines": sum(line.endswith(_TERMINAL) for line in lines) / n_lines,
        "short_lines": sum(len(line) <= 30 for line in lines) / n_lines,
        "list_ratio": text.count("\n") / nw,
        "sentences": float(len(_SENTENCE_END.findall(text))),
        "curly_braces": float("{" in text or "}" in text),
        "lorem_ipsum": float("lorem ipsum" in lower),
        "boilerplate_lines": _boilerplate(lower, lines) / n_lines,
        "placeholder_ratio": len(_PLACEHOLDER.findall(text)) / nw,
    }
    stats |= _repetition(tok, len(text))
    if assistant_text is not None:
        stats["assistant_words"] = float(len(assistant_text.split()))
    return stats
