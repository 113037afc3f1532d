"""Candidate rewrites of a response, and the guard that keeps its meaning.

`candidates(base, prefs)` returns the base response, the combination the preferences ask for,
then every combination of: shorter (whole sentences dropped from the end, never one that holds
a name or number), casual (contractions, "Hey") or formal (expanded forms, no "!"), "." → "!",
with or without a closing question, with or without emoji (duplicates collapse: a reply without
contractions has no casual variant, and so on). An engine may add free rewrites; those
must also keep most of the content words.

`preserves_meaning(base, candidate)` is the final check every candidate passes: each
meaning-bearing token of the base (numbers, and names: capitalized words inside a sentence,
or at its start when followed by a comma or "'s") appears in the candidate at least as often,
and the candidate adds no number. A candidate that fails is dropped, so the answer can only be
the base or a rewrite that keeps them all.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable

from models.personalization.features import content_words, sentences
from models.personalization.preferences import UserPreferences

__all__ = ["candidates", "meaning_guard", "preserves_meaning", "protected_tokens"]

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_TOKEN = re.compile(r"[A-Za-z][\w'’-]*|\d+(?:[.,:]\d+)*")
_NOT_NAMES = {"I", "I'm", "I've", "I'll", "I'd", "OK", "Hello", "Hey", "Hi", "Greetings", "Yes", "No", "Oh", "Ah"}
_NOT_NAMES |= {"Well", "Sure", "Okay", "Indeed", "Alas", "Wow", "Please", "Thanks", "So", "Now", "Then", "Still"}
#: Words that start sentences without naming anything; any other capitalized first word counts as a name.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_COMMON_STARTS = _words(
    "a an the and or but so yet for nor of to in on at by with from into about after before as if then "
    "than i i'm i've i'll i'd me my mine you you're you've you'll your yours he he's him his she she's "
    "her hers it it's its we we're we've we'll us our they they're they've them their this that that's "
    "these those there there's here here's what what's when where why how who which whose whom is are was "
    "were be been being am do does did don't doesn't didn't can can't cannot could couldn't will won't "
    "would wouldn't shall should shouldn't may might must have has had let let's not no yes oh ah hey hi "
    "hello greetings well sure okay ok indeed alas wow please thanks thank now still also just maybe "
    "perhaps really very some any all each every one two once today tonight tomorrow yesterday always "
    "never sometimes often good great lovely dear my dear of course"
)
_EMOJI = re.compile("\\s?[\U0001f300-\U0001faff\u2600-\u27bf\u2764\u2b50]\ufe0f?")
_CONTRACT = [
    (r"\bI am\b", "I'm"),
    (r"\byou are\b", "you're"),
    (r"\bwe are\b", "we're"),
    (r"\bthey are\b", "they're"),
    (r"\bit is\b", "it's"),
    (r"\bthat is\b", "that's"),
    (r"\bdo not\b", "don't"),
    (r"\bdoes not\b", "doesn't"),
    (r"\bdid not\b", "didn't"),
    (r"\bcannot\b", "can't"),
    (r"\bwill not\b", "won't"),
    (r"\bis not\b", "isn't"),
    (r"\bare not\b", "aren't"),
    (r"\bI will\b", "I'll"),
    (r"\bI have\b", "I've"),
    (r"\blet us\b", "let's"),
    (r"\byou have\b", "you've"),
    (r"\byou will\b", "you'll"),
    (r"\bwe will\b", "we'll"),
    (r"\bthey will\b", "they'll"),
]
_EXPAND = [
    (r"\bI'm\b", "I am"),
    (r"\byou're\b", "you are"),
    (r"\bwe're\b", "we are"),
    (r"\bthey're\b", "they are"),
    (r"\bit's\b", "it is"),
    (r"\bthat's\b", "that is"),
    (r"\bdon't\b", "do not"),
    (r"\bdoesn't\b", "does not"),
    (r"\bdidn't\b", "did not"),
    (r"\bcan't\b", "cannot"),
    (r"\bwon't\b", "will not"),
    (r"\bisn't\b", "is not"),
    (r"\baren't\b", "are not"),
    (r"\bI'll\b", "I will"),
    (r"\bI've\b", "I have"),
    (r"\blet's\b", "let us"),
    (r"\byou've\b", "you have"),
    (r"\byou'll\b", "you will"),
    (r"\bwe'll\b", "we will"),
    (r"\bwe've\b", "we have"),
    (r"\bthey'll\b", "they will"),
    (r"\bthey've\b", "they have"),
]
_GREET_CASUAL = [(r"^(Hello|Greetings)\b", "Hey")]
_GREET_FORMAL = [(r"^(Hey|Hi)\b", "Hello")]
_EMOJI_FOR = {"playful": "😄", "enthusiastic": "🎉", "romantic": "💕", "warm": "😊", "friendly": "😊"}
_QUESTION_FOR = {"formal": "Would you like to continue?", "casual": "What do you think?"}


def protected_tokens(text: str) -> Counter[str]:
    """Meaning-bearing tokens of `text` with their counts (numbers and names; see module doc)."""
    found: Counter[str] = Counter(_NUMBER.findall(text))
    for sent in sentences(text) or [text]:
        tokens = list(_TOKEN.finditer(sent))
        for i, m in enumerate(tokens):
            raw = m.group(0)
            word = raw[:-2] if raw.endswith(("'s", "’s")) else raw.rstrip("'’")
            if not word or not word[0].isupper() or raw.replace("’", "'") in _NOT_NAMES or word in _NOT_NAMES:
                continue
            if i == 0 and word.lower() in _COMMON_STARTS:
                continue  # "The", "That's", "It's": the first word of a sentence that names nothing
            found[word] += 1
    return found


def _count(token: str, text: str) -> int:
    if token[0].isdigit():
        return sum(1 for n in _NUMBER.findall(text) if n == token)
    return len(re.findall(rf"(?<![\w'’]){re.escape(token)}(?![\w])", text))


def meaning_guard(base: str) -> Callable[[str], bool]:
    """`preserves_meaning(base, ·)` with the base's tokens found once (for many candidates)."""
    protected = protected_tokens(base)
    base_numbers = Counter(_NUMBER.findall(base))

    def check(candidate: str) -> bool:
        if any(_count(token, candidate) < n for token, n in protected.items()):
            return False
        return all(base_numbers[k] >= v for k, v in Counter(_NUMBER.findall(candidate)).items())

    return check


def preserves_meaning(base: str, candidate: str) -> bool:
    """True when `candidate` keeps every name and number of `base` and adds no number."""
    return meaning_guard(base)(candidate)


def _same_case(repl: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        found = m.group(0)
        return repl[0].upper() + repl[1:] if found[0].isupper() and repl[0].islower() else repl

    return sub


def _sub_all(text: str, rules: list[tuple[str, str]]) -> str:
    """Apply `(pattern, replacement)` rules: case-insensitive, the first letter's case kept,
    straight and curly apostrophes alike."""
    for pattern, repl in rules:
        text = re.sub(pattern.replace("'", "['’]"), _same_case(repl), text, flags=re.MULTILINE | re.IGNORECASE)
    return text


@functools.lru_cache(maxsize=4096)
def casual(text: str) -> str:
    return _sub_all(_sub_all(text, _CONTRACT), _GREET_CASUAL)


@functools.lru_cache(maxsize=4096)
def formal(text: str) -> str:
    out = _sub_all(_sub_all(text, _EXPAND), _GREET_FORMAL)
    out = strip_emoji(out)
    return re.sub(r"!+", ".", out)


@functools.lru_cache(maxsize=4096)
def strip_emoji(text: str) -> str:
    return re.sub(r"\s+([.!?])", r"\1", _EMOJI.sub("", text)).strip()


@functools.lru_cache(maxsize=4096)
def add_emoji(text: str, tone: tuple[str, ...] = ()) -> str:
    if _EMOJI.search(text):
        return text
    emoji = next((_EMOJI_FOR[t] for t in tone if t in _EMOJI_FOR), "😊")
    return f"{text.rstrip()} {emoji}"


@functools.lru_cache(maxsize=4096)
def shorten(text: str, max_sentences: int = 2) -> str:
    """Keep the first `max_sentences` sentences and every later one that holds a name or number."""
    sents = sentences(text)
    if len(sents) <= max_sentences:
        return text.strip()
    kept = [s for i, s in enumerate(sents) if i < max_sentences or protected_tokens(s)]
    return " ".join(kept)


@functools.lru_cache(maxsize=4096)
def drop_questions(text: str) -> str:
    """Remove question sentences that hold no name or number (never leaves the text empty)."""
    sents = sentences(text)
    kept = [s for s in sents if not s.rstrip().endswith("?") or protected_tokens(s)]
    return " ".join(kept) if kept else text.strip()


@functools.lru_cache(maxsize=4096)
def add_question(text: str, register: str = "casual") -> str:
    text = text.rstrip()
    if text.endswith("?"):
        return text
    if text and text[-1].isalnum():
        text += "."
    return f"{text} {_QUESTION_FOR.get(register, _QUESTION_FOR['casual'])}"


def _preferred(text: str, prefs: UserPreferences) -> str:
    """Every transform the explicit preferences ask for, applied together (the transforms are
    pure string functions, memoized: the grid asks for the same intermediate texts many times)."""
    out = text
    if prefs.length == "short":
        out = shorten(out, 1 if prefs.questions != "often" else 2)
    if prefs.formality == "casual":
        out = casual(out)
    elif prefs.formality == "formal":
        out = formal(out)
    if prefs.questions == "never":
        out = drop_questions(out)
    elif prefs.questions == "often":
        out = add_question(out, prefs.formality or "casual")
    if prefs.emoji == "none":
        out = strip_emoji(out)
    elif prefs.emoji in ("some", "lots") and prefs.formality != "formal":
        out = add_emoji(out, tuple(prefs.tone))
    return out


@functools.lru_cache(maxsize=4096)
def exclaim(text: str) -> str:
    """Sentences that end with "." end with "!" instead (warmer, more excited)."""
    return re.sub(r"\.(\s|$)", r"!\1", text)


def _grid(base: str, tone: tuple[str, ...]) -> list[str]:
    """Every combination of length (1, 2 sentences, all), register (as is, casual, formal),
    exclamations, questions (as is, none, one added) and emoji; duplicates collapse."""
    out: list[str] = []
    for n in (1, 2, 0):
        a = shorten(base, n) if n else base
        for register in ("as is", "casual", "formal"):
            b = casual(a) if register == "casual" else formal(a) if register == "formal" else a
            for loud in (False, True):
                c = exclaim(b) if loud and register != "formal" else b
                for ask in ("as is", "drop", "add"):
                    asked = "formal" if register == "formal" else "casual"
                    d = drop_questions(c) if ask == "drop" else add_question(c, asked) if ask == "add" else c
                    for emoji in (False, True):
                        e = add_emoji(d, tone) if emoji and register != "formal" else strip_emoji(d)
                        if e not in out:
                            out.append(e)
    return out


def candidates(base: str, prefs: UserPreferences | None = None, extra: list[str] | None = None) -> list[str]:
    """The base response first, then distinct meaning-preserving rewrites (see module doc)."""
    prefs = prefs or UserPreferences()
    base = base.strip()
    pool = [base, _preferred(base, prefs), *_grid(base, tuple(prefs.tone))]
    words = content_words(base)
    for text in extra or []:
        text = text.strip()
        mine = content_words(text)
        if words and len(mine & words) < 0.5 * len(words):
            continue  # an engine rewrite that lost most of the content
        pool.append(text)
    keeps_meaning = meaning_guard(base)
    out: list[str] = []
    for text in pool:
        if text and text not in out and keeps_meaning(text):
            out.append(text)
    return out
