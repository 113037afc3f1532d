"""Quality rules: thresholds, where they come from, how they were adapted, and the score.

Each rule compares one measurement of `textstats.text_stats` with a threshold. A record's
quality score is `1 − Σ weight × severity`, clipped to [0, 1], where a rule's severity is 0
when the threshold is met, ½ just past it, and grows linearly to 1 at `margin` beyond it
(hard rules, margin 0, go straight to 1). Weights: 1.0 for rules that make a text useless
(too short, not English, placeholder text), 0.3 for Gopher's quality and repetition rules,
0.15 for line-shape heuristics that fiction and chat break for good reasons. With the seed's
thresholds (0.8 for writing, 0.7 for conversations) a record may brush one rule but not fail
one clearly.

Sources (thresholds carried over as facts, with the adaptation stated on each rule):

* Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
  Training Gopher", §A.1.1 quality filters and Table A1 repetition thresholds (the same
  numbers as datatrove's `GopherQualityFilter` / `GopherRepetitionFilter` defaults).
* C4: Raffel et al. 2020, §2.2 (terminal punctuation, ≥ 5 sentences, "lorem ipsum", curly
  braces, "javascript" and cookie-policy lines).
* FineWeb: Penedo et al. 2024, the FineWeb quality filter (line-ending punctuation ≥ 0.12,
  short lines ≤ 0.67, newline/word ≤ 0.3).
* ours: measured on `shared/data` (29 public-domain books cut into ~2 kB pieces, Persona-Chat
  conversations) as noted on each rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CONVERSATION_RULES", "WRITING_RULES", "Rule", "rules_for", "score_stats"]


@dataclass(frozen=True)
class Rule:
    """Keep when `stat` is ≥ (`kind="min"`) or ≤ (`kind="max"`) `threshold`."""

    name: str
    stat: str
    kind: str
    threshold: float
    weight: float
    margin: float
    source: str
    note: str = ""

    def severity(self, value: float) -> float:
        excess = (self.threshold - value) if self.kind == "min" else (value - self.threshold)
        if excess <= 0:
            return 0.0
        if self.margin <= 0:
            return 1.0
        return min(1.0, 0.5 + 0.5 * excess / self.margin)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_GOPHER = "Gopher (Rae et al. 2021, §A.1.1)"
_GOPHER_REP = "Gopher (Rae et al. 2021, Table A1)"
_C4 = "C4 (Raffel et al. 2020, §2.2)"
_FINEWEB = "FineWeb (Penedo et al. 2024)"

#: Gopher's Table A1 limits per n: top n-gram character fraction and duplicate n-gram fraction.
TOP_NGRAM_LIMITS = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAM_LIMITS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

WRITING_RULES: tuple[Rule, ...] = (
    Rule("too_short", "words", "min", 50, 1.0, 0, _GOPHER, "≥ 50 words per record (a chunk, not a whole page)."),
    Rule("too_long", "words", "max", 100_000, 1.0, 0, _GOPHER),
    Rule("short_words", "mean_word_length", "min", 3, 0.3, 1.0, _GOPHER, "Mean word length without punctuation."),
    Rule("long_words", "mean_word_length", "max", 10, 0.3, 2.0, _GOPHER),
    Rule("hash_symbols", "hash_ratio", "max", 0.1, 0.3, 0.1, _GOPHER),
    Rule("ellipses", "ellipsis_ratio", "max", 0.1, 0.3, 0.1, _GOPHER),
    Rule("bullet_lines", "bullet_lines", "max", 0.9, 0.3, 0.1, _GOPHER),
    Rule("ellipsis_lines", "ellipsis_lines", "max", 0.3, 0.3, 0.2, _GOPHER),
    Rule(
        "few_alphabetic_words", "alpha_words", "min", 0.8, 0.5, 0.3, _GOPHER,
        "Words split on whitespace, not by spaCy: punctuation-as-words failed dialogue-heavy fiction "
        "(194 of 1,512 book chunks with datatrove; ≈ 0.9995 pass rate split on whitespace, NOTES.md).",
    ),
    Rule("no_stop_words", "stop_words", "min", 2, 0.5, 0, _GOPHER, "At least 2 of: the be to of and that have with."),
    Rule(
        "duplicate_lines", "duplicate_lines", "max", 0.3, 0.3, 0.2, _GOPHER_REP,
        "Lines and paragraphs are one rule: after unwrapping, a book's lines are its paragraphs.",
    ),
    Rule("duplicate_line_chars", "duplicate_line_chars", "max", 0.2, 0.3, 0.2, _GOPHER_REP),
    Rule(
        "repeated_top_ngram", "top_ngram_ratio", "max", 1.0, 0.3, 0.5, _GOPHER_REP,
        "Largest of top-n-gram fraction / limit for n = 2, 3, 4 (limits 0.20, 0.18, 0.16).",
    ),
    Rule(
        "duplicate_ngrams", "dup_ngram_ratio", "max", 1.0, 0.3, 0.5, _GOPHER_REP,
        "Largest of duplicate-n-gram fraction / limit for n = 5..10 (limits 0.15 down to 0.10).",
    ),
    Rule(
        "few_sentences", "sentences", "min", 5, 0.15, 0, _C4,
        "C4 drops pages under 5 sentences; here a soft rule, since a stanza of verse may have fewer.",
    ),
    Rule(
        "no_terminal_punctuation", "terminal_punct_lines", "min", 0.12, 0.15, 0.12, _FINEWEB,
        "Closing quotes, dashes and brackets count as line ends (fiction ends lines in dialogue). C4's line "
        "filter is not used: it drops lines under 3 words and loses paragraph breaks in books.",
    ),
    Rule(
        "short_lines", "short_lines", "max", 0.9, 0.15, 0.1, _FINEWEB,
        "FineWeb uses 0.67; raised to 0.9 because play dialogue and verse are short lines by nature.",
    ),
    Rule("list_like", "list_ratio", "max", 0.3, 0.15, 0.3, _FINEWEB),
    Rule("code_braces", "curly_braces", "max", 0, 0.3, 0, _C4, "C4 drops the page; here a penalty."),
    Rule("lorem_ipsum", "lorem_ipsum", "max", 0, 1.0, 0, _C4),
    Rule("boilerplate", "boilerplate_lines", "max", 0.1, 0.3, 0.2, _C4, "C4's javascript/cookie-policy lines."),
    Rule(
        "not_english", "english_ratio", "min", 0.2, 1.0, 0, "ours",
        "Share of very common English function words; English book pieces: 5th percentile 0.45; "
        "French 0.02, German 0.04, Spanish 0.13.",
    ),
)  # fmt: skip

CONVERSATION_RULES: tuple[Rule, ...] = (
    Rule(
        "too_short", "words", "min", 20, 1.0, 0, _GOPHER,
        "Gopher's 50-word minimum is for documents; a window of chat turns needs ≥ 20 words in all.",
    ),
    Rule("assistant_too_short", "assistant_words", "min", 3, 0.4, 0, "ours", "Replies to learn from: ≥ 3 words."),
    Rule("short_words", "mean_word_length", "min", 2, 0.3, 1.0, _GOPHER, "Lowered from 3: chat says ok, no, lol."),
    Rule("long_words", "mean_word_length", "max", 12, 0.3, 2.0, _GOPHER, "Raised from 10: links and handles."),
    Rule("hash_symbols", "hash_ratio", "max", 0.1, 0.3, 0.1, _GOPHER),
    Rule("ellipses", "ellipsis_ratio", "max", 0.2, 0.3, 0.1, _GOPHER, "Raised from 0.1: chat trails off often."),
    Rule("ellipsis_lines", "ellipsis_lines", "max", 0.5, 0.3, 0.2, _GOPHER, "Raised from 0.3 for chat."),
    Rule(
        "few_alphabetic_words", "alpha_words", "min", 0.6, 0.5, 0.3, _GOPHER,
        "Lowered from 0.8: emoji, numbers and placeholders are normal in chat.",
    ),
    Rule("no_stop_words", "stop_words", "min", 2, 0.3, 0, _GOPHER),
    Rule("duplicate_lines", "duplicate_lines", "max", 0.3, 0.3, 0.2, _GOPHER_REP, "A line is one message line."),
    Rule("duplicate_line_chars", "duplicate_line_chars", "max", 0.2, 0.3, 0.2, _GOPHER_REP),
    Rule("repeated_top_ngram", "top_ngram_ratio", "max", 1.0, 0.3, 0.5, _GOPHER_REP),
    Rule("duplicate_ngrams", "dup_ngram_ratio", "max", 1.0, 0.3, 0.5, _GOPHER_REP),
    Rule(
        "placeholders", "placeholder_ratio", "max", 0.3, 0.3, 0.3, "ours",
        "Attachments, links and embeds reduced to [image]/[link]/...: mostly-placeholder windows teach little.",
    ),
    Rule("code_braces", "curly_braces", "max", 0, 0.15, 0, _C4, "A small penalty: code pasted into chat."),
    Rule("lorem_ipsum", "lorem_ipsum", "max", 0, 1.0, 0, _C4),
    Rule(
        "not_english", "english_ratio", "min", 0.15, 1.0, 0, "ours",
        "Lower than for writing (0.2): chat turns are short and informal.",
    ),
)  # fmt: skip


def rules_for(kind: str) -> tuple[Rule, ...]:
    return CONVERSATION_RULES if kind == "conversations" else WRITING_RULES


def _derived(stats: dict[str, float]) -> dict[str, float]:
    stats["top_ngram_ratio"] = max(stats.get(f"top_{n}gram", 0.0) / lim for n, lim in TOP_NGRAM_LIMITS.items())
    stats["dup_ngram_ratio"] = max(stats.get(f"dup_{n}gram", 0.0) / lim for n, lim in DUP_NGRAM_LIMITS.items())
    return stats


def score_stats(stats: dict[str, float], rules: tuple[Rule, ...], english: bool = True) -> tuple[float, list[str]]:
    """(quality score in [0, 1], names of the rules that were not met)."""
    stats = _derived(stats)
    penalty, reasons = 0.0, []
    for rule in rules:
        if rule.name == "not_english" and not english:
            continue
        value = stats.get(rule.stat)
        if value is None:
            continue
        sev = rule.severity(value)
        if sev > 0:
            penalty += rule.weight * sev
            reasons.append(rule.name)
    return max(0.0, min(1.0, 1.0 - penalty)), reasons
