"""The personalization recipe: the learner from feedback (files or the database), a style
adapter when there is enough of the user's writing, published as a version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import DataError
from models.training import ModelTrainer

STORY = (
    "The lighthouse keeper wrote a letter every evening, though no ship ever came to carry it. "
    "She kept the letters in a tin box under the stairs, next to the lamp oil and the spare wicks. "
)


def _user_folder(tmp_path: Path, words: int = 0) -> Path:
    folder = tmp_path / "robin"
    (folder / "writing").mkdir(parents=True)
    rows = [
        {"id": f"fb-{i}", "piece": "writing/a.md", "suggestion": s, "response": r, "rating": k}
        for i, (s, r, k) in enumerate(
            [
                ("Cut the adverbs in the dialogue tags.", "accepted", 5),
                ("Add a long description of the harbour at dawn.", "rejected", 1),
                ("End on the line of dialogue.", "accepted", 5),
                ("Explain what she feels in a new paragraph.", "rejected", 2),
                ("Trim the opening sentence.", "accepted", 4),
                ("Describe the weather for a page.", "rejected", 1),
            ]
            * 2
        )
    ]
    (folder / "feedback.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "preferences.json").write_text(json.dumps({"length": "short", "formality": "casual"}))
    text = "---\ntitle: A\n---\n" + STORY * max(1, words // len(STORY.split()))
    (folder / "writing" / "a.md").write_text(text)
    return folder


def test_learner_only_when_the_writing_is_short(tmp_path: Path, companion_home: Path) -> None:
    result = ModelTrainer(progress=False).train_personalization_model("robin", _user_folder(tmp_path), epochs=30)
    assert result.published and result.version == "1.0.0"
    assert "style adapter skipped" in result.stop_reason and "needed" in result.stop_reason
    assert result.metrics["learner_train_events"] + result.metrics["learner_heldout_events"] == 12
    folder = companion_home / "store" / "personalization" / "robin" / "1.0.0"
    assert (folder / "learner.safetensors").exists() and not (folder / "adapter").exists()
    assert json.loads((folder / "preferences.json").read_text())["length"] == "short"
    lineage = json.loads((folder / "version.json").read_text())["lineage"]
    assert lineage["feedback_events"] == 12 and len(lineage["data_sha256"]) == 64

    from models.personalization import load_personalization_model

    model = load_personalization_model("robin")
    long = "I think that, on reflection, the harbour at dawn deserves a long and careful description of every boat."
    assert model.learner_for(None).score("Cut it.") != model.learner_for(None).score(long)


def test_style_adapter_with_enough_writing(tmp_path: Path, tiny_model_dir: Path, companion_home: Path) -> None:
    from models.model_manager import resolve_path
    from models.transformer_model import TransformerModel

    result = ModelTrainer(progress=False).train_personalization_model(
        "robin", _user_folder(tmp_path, words=400), epochs=5, style_min_words=300, style_base=str(tiny_model_dir),
        style_epochs=2,
    )  # fmt: skip
    assert "style adapter trained" in result.stop_reason
    assert result.metrics["style_heldout_perplexity"] > 0 and result.metrics["style_windows"] >= 2
    folder = companion_home / "store" / "personalization" / "robin" / result.version
    cfg = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["base_model_name_or_path"] == str(tiny_model_dir)
    styled = TransformerModel(str(tiny_model_dir), ref=resolve_path(str(tiny_model_dir)), adapter=folder / "adapter")
    assert styled.engine.info()["adapter"]["modules"] == 2 * 7


def test_feedback_from_the_database_for_a_user_id(companion_home: Path) -> None:
    from models.personalization import storage
    from models.personalization.events import FeedbackEvent

    for i, (text, stars) in enumerate([("Short and kind.", 5), ("A long, winding, formal reply.", 1)] * 3):
        event = FeedbackEvent.parse({"kind": "rating", "text": text, "rating": stars, "user": "sam"})
        storage.insert_feedback(
            {"at": "2026-11-30T10:00:00+00:00", "category": "personality", "model": "luna", "version": None,
             "kind": "rating", "value": float(stars), "user_hash": None, "user_id": "sam",
             "response_id": f"r{i}", "personalization": "user_prefs", "event": event.model_dump()}
        )  # fmt: skip
    result = ModelTrainer(progress=False).train_personalization_model("sam", "sam", epochs=10)
    assert result.lineage["data_source"] == "user 'sam' (database)" and result.lineage["feedback_events"] == 6


def test_nothing_to_learn_from_is_refused(tmp_path: Path, companion_home: Path) -> None:
    empty = tmp_path / "nobody"
    (empty / "writing").mkdir(parents=True)
    with pytest.raises(DataError, match="nothing to learn from"):
        ModelTrainer(progress=False).train_personalization_model("robin", empty, epochs=3)
    with pytest.raises(DataError, match="no user 'ghost'"):
        ModelTrainer(progress=False).train_personalization_model("robin", "ghost", epochs=3)
    assert not (companion_home / "store" / "personalization").exists() or not list(
        (companion_home / "store" / "personalization").glob("robin/*")
    )
