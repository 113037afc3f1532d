"""Lorebook activation (keys, selective, constant, regex, decorators, budget) and macros."""

from __future__ import annotations

import random

from models.personality.card import CharacterCard
from models.personality.lorebook import Lorebook, parse_decorators
from models.personality.macros import expand_macros
from tests.personality.conftest import v2_card, v3_card


def _entry(keys, content, **kw):
    return {"keys": keys, "content": content, "extensions": {}, "enabled": True, "insertion_order": 0} | kw


def test_keys_match_whole_words_case_insensitively() -> None:
    book = Lorebook({"entries": [_entry(["storm"], "storm lore")]})
    assert [e.content for e in book.activate(["A STORM is coming"])] == ["storm lore"]
    assert book.activate(["a brainstorm"]) == []
    sensitive = Lorebook({"entries": [_entry(["Storm"], "x", case_sensitive=True)]})
    assert sensitive.activate(["storm"]) == [] and sensitive.activate(["Storm!"])


def test_scan_depth_limits_to_recent_messages() -> None:
    book = Lorebook({"scan_depth": 2, "entries": [_entry(["ship"], "ship lore")]})
    assert book.activate(["the ship", "hello", "how are you"]) == []
    assert book.activate(["hello", "the ship", "how are you"])


def test_selective_needs_a_secondary_key_and_constant_always_fires() -> None:
    card = CharacterCard(v2_card())
    book = card.lorebook
    assert [e.name for e in book.activate(["a ship"])] == []
    assert [e.name for e in book.activate(["the ship came in spring"])] == ["ship"]
    const = Lorebook({"entries": [_entry([], "always", constant=True), _entry(["x"], "off", enabled=False)]})
    assert [e.content for e in const.activate(["x"])] == ["always"]


def test_insertion_order_and_positions() -> None:
    book = CharacterCard(v2_card()).lorebook
    active = book.activate(["storm over the ship in spring"])
    assert [e.name for e in active] == ["ship", "storms"]  # insertion_order 5 before 10
    assert [e.position for e in active] == ["before_char", "after_char"]


def test_budget_drops_lowest_priority_first() -> None:
    entries = [
        _entry(["a"], "alpha " * 20, priority=1, insertion_order=1),
        _entry(["a"], "beta " * 20, priority=9, insertion_order=2),
    ]
    book = Lorebook({"token_budget": 30, "entries": entries})
    kept = book.activate(["a"], count_tokens=lambda s: len(s.split()))
    assert [e.content.split()[0] for e in kept] == ["beta"]


def test_v3_regex_keys_and_decorators() -> None:
    card = CharacterCard(v3_card())
    active = card.lorebook.activate(["I cleaned the LAMPS"])
    lamp = [e for e in active if "polishes" in e.content]
    assert lamp and lamp[0].depth == 1 and lamp[0].role == "system"
    assert not lamp[0].content.startswith("@@")
    decorators, content = parse_decorators("@@activate_only_after 2\n@@@fallback x\n@@exclude_keys calm\nbody")
    assert decorators == {"activate_only_after": "2", "exclude_keys": "calm"} and content == "body"
    gated = Lorebook({"entries": [_entry(["sea"], "@@activate_only_after 2\n@@exclude_keys calm\nsea lore")]})
    assert gated.activate(["sea"], turn=1) == []
    assert gated.activate(["sea"], turn=2) and gated.activate(["calm sea"], turn=3) == []


def test_recursive_scanning() -> None:
    entries = [_entry(["moon"], "The moon hides a key."), _entry(["key"], "The key opens the tower.")]
    flat = Lorebook({"entries": entries})
    assert len(flat.activate(["the moon"])) == 1
    assert len(Lorebook({"recursive_scanning": True, "entries": entries}).activate(["the moon"])) == 2


def test_macros() -> None:
    rng = random.Random(0)
    text = "{{char}} and <BOT> greet {{User}} and <user>.{{// hidden}} {{reverse:abc}} {{roll:1}}"
    assert expand_macros(text, char="Ada", user="Sam", rng=rng) == "Ada and Ada greet Sam and Sam. cba 1"
    assert expand_macros("{{random:a\\,b,c}}", char="", user="", rng=rng) in ("a,b", "c")
    once = expand_macros("{{pick:x,y,z}}", char="", user="")
    assert all(expand_macros("{{pick:x,y,z}}", char="", user="") == once for _ in range(5))
    assert expand_macros("{{original}} more", char="A", user="B", original="base") == "base more"
    assert expand_macros("{{comment: note}}{{hidden_key:k}}ok", char="", user="") == "ok"


def test_a_catastrophic_regex_key_costs_at_most_the_budget() -> None:
    """Issue 16 item 1: `/(a|aa)+$/` against forty a's and '!' runs for minutes; stdlib `re` also
    blows up on `/^(a+)+$/`. The regex package's timeout bounds each search and the activation."""
    import time

    from models.personality.lorebook import ACTIVATION_BUDGET_S, Lorebook

    hostile = [{"keys": [k], "content": "boom", "use_regex": True} for k in ("/(a|aa)+$/", "/^(a+)+$/")] * 50
    book = Lorebook({"entries": [*hostile, {"keys": ["lamp"], "content": "The lamp is lit."}]}, v3=True)
    t0 = time.monotonic()
    active = book.activate(["a" * 40 + "!", "is the lamp lit?"])
    elapsed = time.monotonic() - t0
    assert [e.content for e in active] == ["The lamp is lit."]
    assert elapsed < ACTIVATION_BUDGET_S + 1.0, elapsed
    assert len(book.activate(["x" * 5_000_000])) == 0  # the scanned text is bounded too


def test_activation_cost_does_not_grow_with_history() -> None:
    """Issue 16 item 5: each reply cleaned the whole history; now only what entries can scan."""
    import time

    from models.personality.lorebook import Lorebook

    book = Lorebook({"scan_depth": 2, "entries": [{"keys": [f"key{i}"], "content": f"c{i}"} for i in range(2000)]})
    short = ["nothing here"] * 4
    long = ["nothing here " * 50] * 20_000
    t0 = time.perf_counter()
    book.activate(short)
    t_short = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert book.activate([*long, "key7 appears"]) == book.activate(["key7 appears"])
    assert time.perf_counter() - t0 < max(1.0, 20 * t_short)
