"""PreferenceLearner: cold start, online steps per event kind, fit, determinism, safe persistence."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from models.errors import DataError
from models.personalization.events import FeedbackEvent
from models.personalization.learner import PreferenceLearner
from tests.personalization.conftest import LONG_FORMAL, SHORT_CASUAL


def _state(learner: PreferenceLearner) -> dict[str, np.ndarray]:
    return learner.state()[0]


def test_cold_start_follows_explicit_preferences() -> None:
    short = PreferenceLearner.cold_start({"length": "short", "formality": "casual", "emoji": "some"})
    long = PreferenceLearner.cold_start({"length": "long", "formality": "formal", "emoji": "none"})
    assert short.score(SHORT_CASUAL) > short.score(LONG_FORMAL)
    assert long.score(LONG_FORMAL) > long.score(SHORT_CASUAL)
    assert short.profile()["length"] == 0.12 and long.profile()["formality"] == 0.85


def test_cold_start_uses_the_prior_where_nothing_is_said() -> None:
    prior = PreferenceLearner()
    prior.p[0] = 0.9  # a population that likes long replies
    learner = PreferenceLearner.cold_start({"formality": "formal"}, prior=prior)
    assert learner.profile()["length"] == 0.9 and learner.profile()["formality"] == 0.85


def _events(n: int, seed: int) -> list[FeedbackEvent]:
    """A user who likes short, warm replies and dislikes long ones."""
    rng = random.Random(seed)
    short = ["Lovely! Keep going.", "Yes, that works.", "Great start, dear.", "I love that line!"]
    long = [LONG_FORMAL, LONG_FORMAL.replace("harbour", "station"), LONG_FORMAL + " Perhaps add a storm."]
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append(FeedbackEvent(kind="rating", text=rng.choice(short), rating=rng.choice([4, 5]), scale="stars"))
        else:
            out.append(FeedbackEvent(kind="rating", text=rng.choice(long), rating=rng.choice([1, 2]), scale="stars"))
    return out


@pytest.mark.parametrize(
    "event",
    [
        {"kind": "rating", "text": SHORT_CASUAL, "rating": 1},
        {"kind": "choice", "text": SHORT_CASUAL, "rejected": [LONG_FORMAL]},
        {"kind": "edit", "text": LONG_FORMAL, "edited_text": SHORT_CASUAL},
    ],
)
def test_each_positive_event_raises_the_preferred_text(event: dict) -> None:
    learner = PreferenceLearner.cold_start({"length": "long", "formality": "formal"})
    gap = learner.score(SHORT_CASUAL) - learner.score(LONG_FORMAL)
    for _ in range(5):
        learner.update(event)
    assert learner.score(SHORT_CASUAL) - learner.score(LONG_FORMAL) > gap
    assert learner.updates == 5 and learner.counts[event["kind"]] == 5


def test_regenerate_lowers_the_score() -> None:
    learner = PreferenceLearner.cold_start(None)
    before = learner.score(LONG_FORMAL)
    learner.update({"kind": "regenerate", "text": LONG_FORMAL})
    assert learner.score(LONG_FORMAL) < before


def test_fit_learns_early_stops_and_reports() -> None:
    learner = PreferenceLearner.cold_start(None, learning_rate=0.3)
    events = _events(60, seed=1)
    metrics = learner.fit(events, epochs=40, seed=0, heldout_fraction=0.25)
    assert metrics["heldout_events"] == 15 and metrics["train_events"] == 45
    assert 1 <= metrics["epochs_run"] <= 40 and metrics["best_epoch"] <= metrics["epochs_run"]
    assert metrics["early_stopped"] == (metrics["epochs_run"] < 40)
    assert metrics["heldout_accuracy"] >= 0.9
    assert learner.score("Lovely, dear!") > learner.score(LONG_FORMAL)


def test_fit_is_deterministic_given_a_seed() -> None:
    events = _events(30, seed=2)
    a, b = PreferenceLearner.cold_start(None, seed=5), PreferenceLearner.cold_start(None, seed=5)
    ma, mb = a.fit(events, epochs=5, seed=7), b.fit(events, epochs=5, seed=7)
    assert ma == mb
    for key, value in _state(a).items():
        np.testing.assert_array_equal(value, _state(b)[key])
    c = PreferenceLearner.cold_start(None, seed=6)
    c.fit(events, epochs=5, seed=7)
    assert not np.array_equal(_state(c)["w_emb"], _state(a)["w_emb"])


def test_fit_rejects_bad_arguments() -> None:
    learner = PreferenceLearner()
    with pytest.raises(DataError, match="epochs"):
        learner.fit(_events(4, 0), epochs=0)
    with pytest.raises(DataError, match="heldout_fraction"):
        learner.fit(_events(4, 0), epochs=1, heldout_fraction=1.0)
    with pytest.raises(DataError, match="events: nothing"):
        learner.fit([], epochs=1)
    with pytest.raises(DataError, match=r"events\[1\]: rating"):
        learner.fit([_events(1, 0)[0], {"kind": "rating", "text": "x"}], epochs=1)


def test_save_and_load_round_trip_exactly(tmp_path: Path) -> None:
    learner = PreferenceLearner.cold_start({"length": "short"}, seed=3)
    for ev in _events(10, seed=3):
        learner.update(ev)
    learner.save(tmp_path / "l")
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["learner.json", "learner.safetensors"]
    again = PreferenceLearner.load(tmp_path / "l")
    for key, value in _state(learner).items():
        np.testing.assert_array_equal(value, _state(again)[key])
    assert again.updates == 10 and again.score(SHORT_CASUAL) == learner.score(SHORT_CASUAL)


def test_load_refuses_bad_state_and_names_the_file(tmp_path: Path) -> None:
    folder = PreferenceLearner().save(tmp_path / "l")
    meta = json.loads((folder / "learner.json").read_text())
    (folder / "learner.json").write_text(json.dumps({**meta, "features": ["length"]}))
    with pytest.raises(DataError, match=r"learner\.json: saved for features"):
        PreferenceLearner.load(folder)
    (folder / "learner.json").write_text(json.dumps(meta))
    (folder / "learner.safetensors").write_bytes(b"\x80\x04K\x01.")  # a pickle, not safetensors
    with pytest.raises(DataError, match=r"learner\.safetensors: not a readable safetensors"):
        PreferenceLearner.load(folder)
    (folder / "learner.safetensors").unlink()
    with pytest.raises(DataError, match=r"learner\.safetensors: missing"):
        PreferenceLearner.load(folder)


def test_a_crash_while_saving_keeps_the_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "l"
    old = PreferenceLearner.cold_start({"length": "short"})
    old.save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    new = PreferenceLearner.cold_start({"length": "long"})

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        new.save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no partial files left
    assert PreferenceLearner.load(folder).profile()["length"] == 0.12


def test_learning_rates_are_checked() -> None:
    with pytest.raises(DataError, match="learning_rate"):
        PreferenceLearner(learning_rate=0)
    with pytest.raises(DataError, match="adaptation_rate"):
        PreferenceLearner(adaptation_rate=2)
