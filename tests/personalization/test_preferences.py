"""UserPreferences: validation with clear errors, meaning (targets, instructions), per-user storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.personalization.preferences import (
    PreferenceError,
    UserPreferences,
    delete_preferences,
    load_preferences,
    save_preferences,
)


def test_the_seed_dict_is_accepted_and_means_something() -> None:
    prefs = UserPreferences.coerce({"tone": "warm", "length": "short", "formality": "casual"})
    assert prefs.tone == ["warm"] and prefs.length == "short"
    targets = prefs.targets()
    assert targets["length"] < 0.2 and targets["formality"] < 0.3 and targets["sentiment"] > 0.7
    assert any("short" in line for line in prefs.instructions())


def test_tone_emoji_and_lists_are_normalized() -> None:
    prefs = UserPreferences.coerce({"tone": "Dry, warm", "emoji": False, "genres": "mystery, romance"})
    assert prefs.tone == ["dry", "warm"] and prefs.emoji == "none" and prefs.genres == ["mystery", "romance"]
    assert UserPreferences.coerce({"emoji": True}).emoji == "some"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"lenght": "short"}, r"lenght: unknown preference \(did you mean 'length'\?\)"),
        ({"length": "tiny"}, r"length: Input should be 'short', 'medium' or 'long'"),
        ({"tone": "grumpy"}, r"unknown tone 'grumpy'"),
        ({"language": "English!"}, r"language: expected a BCP 47 tag"),
        ({"learned": {"length": 3.0}}, r"outside \[0, 1\]"),
        ({"learned": {"height": 0.5}}, r"unknown feature 'height'"),
    ],
)
def test_bad_preferences_name_the_field(data: dict, expected: str) -> None:
    with pytest.raises(PreferenceError, match=expected):
        UserPreferences.coerce(data)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(PreferenceError) as info:
        UserPreferences.coerce({"length": "tiny", "colour": "blue"})
    assert len(info.value.problems) == 2


def test_per_user_storage_round_trips_and_bad_input_stores_nothing() -> None:
    assert load_preferences("sam") is None
    save_preferences("sam", {"length": "long", "tone": ["dry"]})
    assert load_preferences("sam") == UserPreferences(length="long", tone=["dry"])
    with pytest.raises(PreferenceError):
        save_preferences("sam", {"length": "enormous"})
    assert load_preferences("sam").length == "long"  # the bad call changed nothing
    assert load_preferences("robin") is None
    assert delete_preferences("sam") and load_preferences("sam") is None


def test_merged_keeps_only_what_was_set() -> None:
    base = UserPreferences(length="long", formality="formal")
    over = base.merged({"length": "short"})
    assert over.length == "short" and over.formality == "formal"


def test_the_shipped_sample_preferences_file_loads() -> None:
    from importlib import resources

    path = Path(str(resources.files("models") / "training_data" / "user_data" / "preferences.json"))
    prefs = UserPreferences.from_file(path)
    assert prefs.genres == ["literary", "romance", "mystery"]
    assert set(prefs.tone) >= {"dry", "understated", "warm"}


def test_from_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "prefs.json"
    bad.write_text(json.dumps({"length": "short", "mood": "happy"}))
    with pytest.raises(PreferenceError, match=r"prefs\.json: mood: unknown preference"):
        UserPreferences.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(PreferenceError, match="not JSON"):
        UserPreferences.from_file(bad)
