"""record_feedback: stored for the monitor, trains the user's learner, refuses bad input cleanly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.personalization import FeedbackError, load_personalization_model, record_feedback
from models.personalization.storage import count_rows, learner_dir, list_feedback
from tests.personalization.conftest import LONG_FORMAL


def _answer(user: str | None = "sam"):
    model = load_personalization_model("user_prefs")
    return model, model.adapt_response(LONG_FORMAL, {"length": "long", "formality": "formal"}, user=user)


def test_every_kind_is_recorded_with_the_monitor_columns() -> None:
    _, r = _answer()
    assert r.response_id and len(r.candidates) > 2
    record_feedback(r.response_id, rating=1)
    record_feedback(r.response_id, rating=4, scale="stars")
    record_feedback(r.response_id, choice=1)
    record_feedback(r.response_id, regenerate=True)
    record_feedback(r.response_id, edited_text=r.text + " Thank you.")
    rows = list_feedback(user="sam")
    assert [row["kind"] for row in reversed(rows)] == ["thumbs", "rating", "choice", "regenerate", "edit"]
    assert [row["value"] for row in reversed(rows)][:2] == [1.0, 4.0]
    assert 0 < rows[0]["value"] < 0.1  # the edit: a small share of the reply changed
    assert {row["category"] for row in rows} == {"personalization"} and rows[0]["model"] == "user_prefs"
    assert rows[0]["user_hash"] and rows[0]["event"]["kind"] == "edit"


def test_the_monitor_counts_the_feedback() -> None:
    from models.monitoring.feedback import TableFeedbackSource, satisfaction

    _, r = _answer()
    record_feedback(r.response_id, rating=5)
    record_feedback(r.response_id, rating=-1)
    record_feedback(r.response_id, choice=0)
    now = datetime.now(UTC)
    events = TableFeedbackSource().read_feedback("personalization", "user_prefs", now - timedelta(hours=1), None)
    s = satisfaction(events)
    assert (s.positive, s.negative) == (2, 1)


def test_feedback_trains_and_saves_the_users_learner() -> None:
    model, r = _answer()
    folder = learner_dir("sam", "user_prefs")
    assert not folder.exists()
    short = min(r.candidates, key=len)
    before = model.learner_for("sam").score(short, None)
    idx = r.candidates.index(short)
    for _ in range(3):
        record_feedback(r.response_id, choice=idx)
    after = model.learner_for("sam")
    assert (folder / "learner.safetensors").exists() and after.updates == 3
    assert after.score(short, None) > before
    from models.personalization.preferences import load_preferences

    assert load_preferences("sam").learned == after.profile()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rating": 9}, "star ratings are 1 to 5"),
        ({"choice": 99}, "choice: expected a candidate index"),
        ({"choice": True}, "choice: expected a candidate index"),
        ({"edited_text": "  "}, "edited_text: expected"),
        ({"rating": 1, "regenerate": True}, "exactly one of"),
        ({}, "exactly one of"),
        ({"rating": 1, "user": "robin"}, "belongs to another user"),
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_stored(kwargs: dict, expected: str) -> None:
    _, r = _answer()
    with pytest.raises(FeedbackError, match=expected):
        record_feedback(r.response_id, **kwargs)
    assert count_rows("feedback") == 0 and not learner_dir("sam", "user_prefs").exists()


def test_feedback_for_an_unknown_response_id_is_refused() -> None:
    _answer()
    with pytest.raises(FeedbackError, match="no logged response 'pr-nope'"):
        record_feedback("pr-nope", rating=1)
    assert count_rows("feedback") == 0


def test_answers_without_a_user_take_feedback_but_train_no_one() -> None:
    _, r = _answer(user=None)
    record_feedback(r.response_id, rating=-1)
    assert list_feedback()[0]["user_id"] is None
