"""Feedback events: validation, satisfaction values, the shipped sample file."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from models.personalization.events import FeedbackError, FeedbackEvent, edit_distance, events_from_feedback_file


def test_ratings_thumbs_and_stars() -> None:
    assert FeedbackEvent.parse({"kind": "rating", "text": "x", "rating": 1}).value == 1.0
    assert FeedbackEvent.parse({"kind": "rating", "text": "x", "rating": -1}).value == 0.0
    assert FeedbackEvent.parse({"kind": "rating", "text": "x", "rating": 1, "scale": "stars"}).value == 0.0
    assert FeedbackEvent.parse({"kind": "rating", "text": "x", "rating": 4}).value == 0.75


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "rating", "text": "x"}, "rating: required"),
        ({"kind": "rating", "text": "x", "rating": 9}, "star ratings are 1 to 5"),
        ({"kind": "rating", "text": "x", "rating": 0, "scale": "thumbs"}, "thumbs ratings are -1 or"),
        ({"kind": "choice", "text": "x"}, "rejected: a choice event needs"),
        ({"kind": "edit", "text": "x"}, "edited_text: required"),
        ({"kind": "like", "text": "x"}, "kind"),
        ({"kind": "regenerate", "text": "x", "colour": 1}, "colour"),
    ],
)
def test_bad_events_name_the_field(data: dict, expected: str) -> None:
    with pytest.raises(FeedbackError, match=expected):
        FeedbackEvent.parse(data)


def test_edit_distance_and_fraction() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0
    ev = FeedbackEvent.parse({"kind": "edit", "text": "Hello there", "edited_text": "Hello there!"})
    assert 0 < ev.edit_fraction < 0.1 and ev.value > 0.9
    assert ev.timestamp.endswith("+00:00")


def test_the_shipped_feedback_file_becomes_events() -> None:
    path = Path(str(resources.files("models") / "training_data" / "user_data" / "feedback.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    events = events_from_feedback_file(path)
    assert len(events) == len(rows) == 20
    first = events[0]
    assert first.kind == "rating" and first.scale == "stars" and first.rating == rows[0]["rating"]
    assert first.text == rows[0]["suggestion"] and first.context == rows[0]["piece"]
    assert first.meta["response"] == rows[0]["response"] and first.response_id == rows[0]["id"]
    assert events_from_feedback_file(path.parent)[0] == first  # the folder works too


def test_bad_feedback_rows_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "feedback.jsonl"
    path.write_text('{"suggestion": "a", "rating": 3}\n{"suggestion": "b", "rating": 7}\n')
    with pytest.raises(FeedbackError, match=r"feedback\.jsonl:2: .*star ratings"):
        events_from_feedback_file(path)
    path.write_text('{"suggestion": "a", "rating": 3, "response": "maybe"}\n')
    with pytest.raises(FeedbackError, match=r":1: response: expected accepted"):
        events_from_feedback_file(path)
    path.write_text('{"rating": 3}\n')
    with pytest.raises(FeedbackError, match="missing field 'suggestion'"):
        events_from_feedback_file(path)
