"""UserMemory: facts per user, extracted, listed, edited, exported, erased, and budgeted for prompts."""

from __future__ import annotations

import pytest

from models.errors import DataError
from models.personalization.memory import UserMemory, extract_facts


def test_facts_are_extracted_from_what_the_user_says() -> None:
    facts = extract_facts("Hi! My name is Sam. I love gothic novels, and I'm writing a mystery about a lighthouse.")
    assert ("name", "Their name is Sam.") in facts
    assert ("like", "They like gothic novels.") in facts
    assert ("project", "They are writing a mystery about a lighthouse.") in facts
    assert extract_facts("My sister Ada reads everything I write.") == [("person", "Their sister is Ada.")]
    assert extract_facts("The weather is nice.") == []


def test_add_list_edit_remove_export_erase_per_user() -> None:
    sam, robin = UserMemory("sam"), UserMemory("robin")
    a = sam.add("Likes tea", kind="like")
    assert sam.add("Likes   tea", kind="like") == a  # the same fact once
    b = sam.add("Has a cat called Ink", kind="person")
    robin.add("Writes poems")
    assert [f.text for f in sam.list()] == ["Likes tea", "Has a cat called Ink"]
    sam.edit(a, "Likes green tea")
    assert sam.get(a).text == "Likes green tea" and sam.get(a).kind == "like"
    sam.remove(b)
    with pytest.raises(DataError, match="has no fact"):
        sam.remove(b)
    with pytest.raises(DataError, match="has no fact"):
        robin.edit(a, "not robin's")  # another user's fact cannot be touched
    exported = sam.export()
    assert exported["user"] == "sam" and [f["text"] for f in exported["facts"]] == ["Likes green tea"]
    assert sam.erase() == 1 and sam.list() == []
    assert [f.text for f in robin.list()] == ["Writes poems"]


def test_bad_facts_are_refused_and_nothing_is_stored() -> None:
    mem = UserMemory("sam")
    with pytest.raises(DataError, match="kind: unknown memory kind 'hobby'"):
        mem.add("Plays chess", kind="hobby")
    with pytest.raises(DataError, match="text: a fact needs"):
        mem.add("   ")
    with pytest.raises(DataError, match="at most 500"):
        mem.add("x" * 501)
    with pytest.raises(DataError, match="user: expected"):
        UserMemory("")
    assert mem.list() == []


def test_the_prompt_block_prefers_relevant_facts_within_the_budget() -> None:
    mem = UserMemory("sam")
    mem.add("Their name is Sam.", kind="name")
    for i in range(10):
        mem.add(f"Fact number {i} about gardening and roses.")
    mem.add("Their sister Ada loves lighthouses.", kind="person")
    block = mem.block(query="What would Ada like to read about lighthouses?", budget_tokens=30)
    assert block.startswith("What you know about the user:")
    assert "Ada loves lighthouses" in block and "Sam" in block
    assert len(block) // 4 <= 30
    assert mem.block(budget_tokens=0) == "" and UserMemory("nobody").block() == ""
    full = mem.block(budget_tokens=10_000)
    assert full.count("\n- ") == 12
