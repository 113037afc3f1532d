"""Validation: documented quality rules, English check, exact and MinHash near-duplicates, the report."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasets import Dataset

from models.errors import DataError
from models.training_data import DataValidator
from models.training_data.dedup import MinHasher, shingle_hash
from models.training_data.filters import CONVERSATION_RULES, WRITING_RULES, score_stats
from models.training_data.textstats import text_stats

STORY = (
    "Maren's father drew maps of places that did not exist yet. He would sit at the long table with his inks "
    "and his compass and his cup of bitter tea, and he would draw a river. A week later the river would be "
    "there, cutting a new silver line through the meadow behind the mill. The village tolerated this because "
    "his rivers were useful. When a well ran dry, he drew a spring. When the road washed out, he drew a bridge, "
    "and the carpenters woke to find the timber already stacked. Nobody thanked him for any of it."
)


def stories(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = STORY.split()
    out = []
    for i in range(n):
        w = words[:]
        rng.shuffle(w)
        out.append(f"Story {i}. " + " ".join(w[:70]) + ". It was the end of the day, and that was that.")
    return out


def reasons_for(text: str, kind: str = "writing") -> list[str]:
    rules = WRITING_RULES if kind == "writing" else CONVERSATION_RULES
    return score_stats(text_stats(text), rules)[1]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Too short to be a story.", "too_short"),
        (STORY + " " + "# " * 60, "hash_symbols"),
        (STORY + "\n" + "\n".join(f"- item {i}" for i in range(80)), "bullet_lines"),
        (STORY + "\n" + "\n".join(f"apple{i}" for i in range(120)), "list_like"),
        ("\n".join(["The end came quietly and then the door opened."] * 12), "duplicate_lines"),
        (STORY + " " + "the cat sat on the mat " * 40, "repeated_top_ngram"),
        (STORY + " " + "{ 'code': 1 }", "code_braces"),
        (STORY + " Lorem ipsum dolor sit amet.", "lorem_ipsum"),
        ("1 2 3 4 5 6 7 8 9 10 " * 10 + STORY[:200], "few_alphabetic_words"),
        (
            "Il était une fois une petite fille qui vivait dans un village au bord de la forêt. Tous les matins, "
            "elle allait chercher de l'eau à la fontaine, et sa grand-mère lui racontait des histoires de loups "
            "et de fées. Un jour, elle décida de partir seule dans la forêt pour cueillir des fleurs pour sa mère.",
            "not_english",
        ),
    ],
)
def test_each_rule_catches_what_it_is_for(text: str, reason: str) -> None:
    assert reason in reasons_for(text)


def test_good_fiction_passes_including_dialogue() -> None:
    dialogue = (
        "“Tell me about the sea,” said the boy.\n\n“It is grey in the morning,” she said. “Then blue.”\n\n"
        "“And at night?”\n\n“At night it is only a sound.” She smiled. “You’ll hear it soon enough.”\n\n" + STORY
    )
    for text in (STORY, dialogue):
        score, why = score_stats(text_stats(text), WRITING_RULES)
        assert why == [] and score == 1.0


def test_every_rule_documents_its_source_and_scores_stay_in_range() -> None:
    for rule in (*WRITING_RULES, *CONVERSATION_RULES):
        assert rule.source and rule.weight > 0 and rule.kind in ("min", "max")
    score, _ = score_stats(text_stats("x"), WRITING_RULES)
    assert 0.0 <= score <= 1.0


def test_validation_keeps_good_records_and_reports() -> None:
    texts = [*stories(30), "Too short.", "Il était une fois une petite fille qui vivait au bord de la forêt. " * 8]
    result = DataValidator().validate_writing_data(Dataset.from_dict({"text": texts}), quality_threshold=0.8)
    kept, report = result
    assert len(kept) == 30 and report.kept == 30 and report.total == 32
    assert report.pass_rate == round(30 / 32, 4)
    assert report.removed == {"low_quality": 2, "exact_duplicate": 0, "near_duplicate": 0}
    assert report.reasons["too_short"] == 1 and report.reasons["not_english"] == 1
    assert sum(report.histogram["counts"]) == 32 and len(report.histogram["edges"]) == 11
    assert all(s >= 0.8 for s in kept["quality_score"])
    assert sorted(result.rejected["text"]) == sorted(texts[30:])
    assert (
        "too_short" in result.rejected[0]["rejection_reasons"]
        or "not_english" in result.rejected[0]["rejection_reasons"]
    )
    assert report.rules and all("source" in r for r in report.rules)
    with pytest.raises(DataError, match="between 0 and 1"):
        DataValidator().validate_writing_data(kept, quality_threshold=80)


def test_planted_exact_and_near_duplicates_are_found_first_copy_kept() -> None:
    base = stories(60, seed=1)
    rng = random.Random(2)
    exact = base[:10]
    near = []
    for t in base[10:20]:
        words = t.split()
        i = rng.randrange(len(words))
        words[i] = "zebra"  # one word of ~80 changed: Jaccard of 5-gram sets ≈ 0.88
        near.append(" ".join(words))
    exact_case = [t.upper().replace("  ", " ") for t in base[20:22]]  # case and spacing do not matter
    data = Dataset.from_dict({"text": base + exact + near + exact_case})
    kept, report = DataValidator().validate_writing_data(data)
    assert report.removed["exact_duplicate"] == 12
    assert report.removed["near_duplicate"] >= 9  # LSH finds pairs at J ≈ 0.88 with probability ≈ 0.997
    assert kept["text"][:60] == base  # originals come first and stay
    _, report = DataValidator(dedup=False).validate_writing_data(data)
    assert report.removed["exact_duplicate"] == 0 and report.removed["near_duplicate"] == 0


def test_signatures_are_exactly_datasketch_minhash() -> None:
    from datasketch import MinHash, MinHashLSH

    hasher = MinHasher()
    sigs = {}
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    for i, text in enumerate([*stories(5), stories(1)[0].replace("Story 0", "Story zero")]):
        ref = MinHash(num_perm=112, seed=1, hashfunc=shingle_hash)
        ref.update_batch(hasher.shingles(text).tolist())
        sig = hasher.signature(text)
        assert np.array_equal(sig, ref.hashvalues)
        sigs[i] = hasher.to_datasketch(sig)
        lsh.insert(str(i), sigs[i])
    assert "0" in lsh.query(sigs[5])  # datasketch's own LSH agrees that 5 is a near-copy of 0
    assert sigs[0].jaccard(sigs[5]) > 0.7


def test_conversation_windows_are_compared_on_assistant_text() -> None:
    def window(user: str, assistant: str) -> dict:
        msgs = [
            {"role": "user", "content": user, "emotion": ""},
            {"role": "assistant", "content": assistant, "emotion": ""},
        ]
        return {"messages": msgs, "text": user + assistant}

    shared_context = "Can you tell me what you think about the opening chapter of my mystery novel please?"
    a = "I think the opening works, but the detective needs one small flaw that we can see on the first page."
    b = "The villain arrives too late; move the dinner party scene to the first chapter and give her a motive."
    rows = [window(shared_context, a), window(shared_context, b), window("Another question about it?", a)]
    kept, report = DataValidator().validate_conversation_data(rows, quality_threshold=0.7)
    assert len(kept) == 2 and report.removed["near_duplicate"] + report.removed["exact_duplicate"] == 1
    assert report.dedup["compared_on"] == "assistant text"


def test_raw_collected_data_can_be_validated_too() -> None:
    from models.training_data import DataCollector

    result = DataValidator().validate_writing_data(DataCollector().collect_writing_samples("Book_Collection"))
    assert result.report.total == 13 and result.report.kept == 13
    convs = DataCollector().collect_conversation_data("discord_logs")
    result = DataValidator().validate_conversation_data(convs)
    assert result.report.total == len(convs) and result.report.kept >= 10
