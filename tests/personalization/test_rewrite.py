"""Candidate rewrites never change meaning-bearing content: names and numbers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from models.personalization.preferences import UserPreferences
from models.personalization.rewrite import candidates, preserves_meaning, protected_tokens

NAMES = ["Ada", "Marlowe", "Okafor", "Lisbon", "Harold", "Robin"]
FILLER = [
    "I am so glad you wrote today",
    "do not worry about the ending",
    "it is a lovely scene",
    "you are close to the end",
    "Hello, the draft is ready",
    "we cannot rush the middle",
    "let us look at the harbour",
]
PREFS = [
    {"length": "short", "formality": "casual", "emoji": "some", "tone": "playful"},
    {"length": "long", "formality": "formal", "emoji": "none", "questions": "never"},
    {"questions": "often", "tone": "warm"},
    {},
]


def test_protected_tokens_are_names_and_numbers() -> None:
    found = protected_tokens("Hello, I met Ada at 7:30 in Lisbon. Marlowe's notes had 3 pages. I'm glad.")
    assert found == {"Ada": 1, "7:30": 1, "Lisbon": 1, "Marlowe": 1, "3": 1}


def test_the_guard_rejects_changed_names_and_numbers() -> None:
    base = "Ada wrote 3 chapters, and Harold read them."
    assert preserves_meaning(base, "Ada wrote 3 chapters, and Harold read them! 😊")
    assert not preserves_meaning(base, "Ada wrote 4 chapters, and Harold read them.")
    assert not preserves_meaning(base, "Ada wrote 3 chapters, and Harry read them.")
    assert not preserves_meaning(base, "Ada wrote 3 chapters, and Harold read them 2 times.")


def test_preferences_produce_visibly_different_rewrites() -> None:
    base = "Hello, I am so glad you came back. It is a lovely evening for the second chapter. Shall we begin?"
    short = candidates(base, UserPreferences.coerce(PREFS[0]))
    formal = candidates(base, UserPreferences.coerce(PREFS[1]))
    assert short[0] == base and formal[0] == base
    assert short[1] == "Hey, I'm so glad you came back. 😄"
    assert formal[1] == "Hello, I am so glad you came back. It is a lovely evening for the second chapter."


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.sampled_from(FILLER), st.sampled_from([*NAMES, None]), st.integers(0, 2030) | st.none()),
        min_size=1,
        max_size=6,
    ),
    ends=st.lists(st.sampled_from([".", "!", "?"]), min_size=6, max_size=6),
    prefs=st.sampled_from(PREFS),
)
def test_no_candidate_loses_or_invents_a_name_or_number(parts, ends, prefs) -> None:
    sentences = []
    for i, (text, name, number) in enumerate(parts):
        bits = [text]
        if name:
            bits.append(f"with {name}")
        if number is not None:
            bits.append(f"at {number}")
        sentences.append(" ".join(bits) + ends[i])
    base = " ".join(s[0].upper() + s[1:] for s in sentences)
    for cand in candidates(base, UserPreferences.coerce(prefs)):
        for token, n in protected_tokens(base).items():
            assert cand.count(token) >= n, (base, cand, token)
        for name in NAMES:
            assert cand.count(name) == base.count(name), (base, cand, name)
        for number in [p[2] for p in parts if p[2] is not None]:
            assert str(number) in cand


def test_engine_rewrites_that_lose_content_or_names_are_dropped() -> None:
    base = "Ada finished 2 chapters of the lighthouse novel."
    kept = candidates(base, None, extra=["Ada finished 2 chapters of her lighthouse novel today.", "Nice weather."])
    assert "Nice weather." not in kept and "Ada finished 2 chapters of her lighthouse novel today." in kept
    assert "Ben finished 2 chapters of the lighthouse novel." not in candidates(
        base, None, extra=["Ben finished 2 chapters of the lighthouse novel."]
    )
