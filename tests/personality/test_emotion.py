"""The emotional model: label mapping, the classifier (trained here), the state dynamics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.errors import DataError, UnknownContextError
from models.personality.emotion import (
    GOEMOTIONS_LABELS,
    GOEMOTIONS_MAP,
    EmotionalState,
    EmotionClassifier,
    default_classifier,
    project,
)
from models.personality.emotion_training import evaluate_sets, read_goemotions
from models.tokens import EMOTIONS


def test_mapping_covers_goemotions_and_our_labels() -> None:
    assert set(GOEMOTIONS_MAP) == set(GOEMOTIONS_LABELS) and len(GOEMOTIONS_LABELS) == 28
    assert set(GOEMOTIONS_MAP.values()) == set(EMOTIONS) and len(EMOTIONS) >= 8
    assert GOEMOTIONS_MAP["love"] == "romantic" and GOEMOTIONS_MAP["amusement"] == "playful"


def test_tiny_classifier_learns_the_synthetic_labels(tiny_classifier_dir: Path) -> None:
    clf = EmotionClassifier.load(tiny_classifier_dir)
    assert clf.labels == EMOTIONS
    assert clf.classify(["haha lol so funny", "i love you my darling", "i am so scared and afraid"]) == [
        "playful",
        "romantic",
        "fear",
    ]
    det = clf.detect("so sad, crying all night")
    assert det.label == "sadness" and 0 < det.intensity <= 1 and abs(sum(det.distribution.values()) - 1) < 1e-5
    report = json.loads((tiny_classifier_dir / "report.json").read_text())
    assert report["dev"]["macro_f1"] > 0.8 and set(report["dev"]["per_label"]) == set(EMOTIONS)
    assert (tiny_classifier_dir / "manifest.json").exists()


def test_retraining_over_a_shipped_folder_swaps_it_whole(
    tiny_classifier_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retraining into a folder that already holds a classifier and its manifest works (it used
    to fail verifying the new weights against the old manifest, leaving the folder half new),
    and a failure midway leaves the old folder byte for byte."""
    import shutil

    from models.personality import emotion_training
    from models.personality.emotion_training import EmotionTrainSettings, train_emotion_classifier
    from tests.personality.conftest import write_synthetic_goemotions

    out = tmp_path / "emotion"
    shutil.copytree(tiny_classifier_dir, out)
    data = write_synthetic_goemotions(tmp_path / "goemo")
    settings = EmotionTrainSettings(buckets=4096, epochs=2, batch_size=16, nb_power=0.5)
    train_emotion_classifier(data, out, settings)
    assert EmotionClassifier.load(out).meta is not None  # manifest-verified load of the new files
    assert json.loads((out / "report.json").read_text())["settings"]["nb_power"] == 0.5
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(emotion_training, "evaluate_classifier", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        train_emotion_classifier(data, out, settings)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_trains_with_nb_scaling(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from companion.cli import app
    from tests.personality.conftest import write_synthetic_goemotions

    data = write_synthetic_goemotions(tmp_path / "goemo")
    out = tmp_path / "emotion"
    args = ["train", "emotion", "--data", str(data), "--output", str(out), "--epochs", "2", "--nb-power", "0.5"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "macro-F1 on dev" in r.output
    assert json.loads((out / "report.json").read_text())["settings"]["nb_power"] == 0.5


def test_read_goemotions_maps_and_errors(tmp_path: Path) -> None:
    tsv = tmp_path / "x.tsv"
    tsv.write_text("I love it lol\t18,1\ta\nfine\t27\tb\n", encoding="utf-8")
    texts, targets = read_goemotions(tsv)
    assert texts == ["I love it lol", "fine"]
    assert [[EMOTIONS[i] for i in t] for t in targets] == [["romantic", "playful"], ["neutral"]]
    tsv.write_text("bad line without tabs\n")
    with pytest.raises(DataError, match="line 1"):
        read_goemotions(tsv)


def test_evaluate_sets_macro_f1() -> None:
    gold = [{"joy"}, {"anger"}, {"joy", "playful"}]
    pred = [{"joy"}, {"joy"}, {"playful"}]
    r = evaluate_sets(gold, pred, ["joy", "anger", "playful"])
    assert r["per_label"]["playful"]["f1"] == 1.0 and r["per_label"]["anger"]["f1"] == 0.0
    assert r["per_label"]["joy"]["f1"] == pytest.approx(0.5)


def test_nb_scale_weighs_features_by_their_evidence() -> None:
    import numpy as np

    from models.personality.emotion_training import nb_scale

    # 4 features over 100 texts, 2 labels: feature 0 only in label-0 texts, feature 1 in both
    # labels alike, feature 2 only in label-1 texts, feature 3 never seen.
    present = np.array([[30.0, 0.0], [20.0, 20.0], [0.0, 30.0], [0.0, 0.0]])
    df = np.array([30.0, 40.0, 30.0, 0.0])
    r = nb_scale(present, df, 1.0)
    assert r.shape == (4, 2) and r.dtype == np.float32
    assert r[0, 0] > 5 * r[1, 0] and r[2, 1] > 5 * r[1, 1]  # evidence counts, shared words barely
    assert r[2, 0] > r[1, 0]  # evidence against a label is evidence too (the sign is learned)
    half = nb_scale(present, df, 0.5)
    assert np.allclose(half, np.sqrt(r), atol=1e-6)
    assert (nb_scale(present, df, 0.0) == 1).all()


def test_shipped_classifier_and_report() -> None:
    from models.paths import builtin_dir

    report = json.loads((builtin_dir("emotion") / "report.json").read_text())
    assert report["dev"]["macro_f1"] >= 0.58 and len(report["dev"]["per_label"]) == len(EMOTIONS)
    assert min(v["f1"] for v in report["dev"]["per_label"].values()) >= 0.35
    clf = default_classifier()
    assert clf.kind == "linear" and clf.thresholds is not None
    assert clf.detect("I love you so much, my darling").label == "romantic"
    assert clf.predict_sets(["Thank you so much, I'm so scared though"])[0] >= {"fear"}
    size = sum(p.stat().st_size for p in builtin_dir("emotion").iterdir())
    assert size < 8_000_000  # a 2^18 x 10 float16 table: part of the <= 120 MB of built-in weights


def test_state_moves_decays_and_reacts() -> None:
    state = EmotionalState(baseline={"joy": 1.0}, decay=0.5, sensitivity=1.0)
    assert state.emotion == "joy"
    state.observe({"anger": 0.9, "neutral": 0.1})
    assert state.emotion == "caring"  # a companion meets anger with care (default reaction)
    state.observe({"playful": 1.0, "neutral": 0.0})
    assert state.emotion == "playful"
    for _ in range(8):
        state.relax()
    assert state.emotion == "joy" and state.values["joy"] > 0.99
    calm = EmotionalState(baseline={"neutral": 1.0}, sensitivity=1.0)
    calm.observe({"neutral": 1.0, "joy": 0.0})  # a neutral message has no intensity: nothing moves
    assert calm.values["neutral"] == pytest.approx(1.0)


def test_state_set_and_errors() -> None:
    state = EmotionalState()
    state.set("romantic", 0.8)
    assert state.dominant == ("romantic", pytest.approx(0.8))
    with pytest.raises(UnknownContextError, match="Valid emotions"):
        state.set("bliss")
    custom = project(
        {"joy": 0.5, "playful": 0.3, "neutral": 0.2},
        ["happy", "calm"],
        {"happy": ["joy", "playful"], "calm": ["neutral"]},
    )
    assert custom == pytest.approx({"happy": 0.8, "calm": 0.2})


def test_per_label_thresholds_decide_the_sets_and_round_trip(tmp_path: Path) -> None:
    import numpy as np

    from models.personality.emotion_training import choose_thresholds
    from models.personality.features import FeatureSpec

    spec = FeatureSpec(buckets=64, char_min=0, bigrams=False)
    labels = ("neutral", "joy", "fear")
    table = np.zeros((64, 3), dtype=np.float32)
    clf = EmotionClassifier(
        labels,
        spec,
        table,
        None,
        np.array([0.0, -1.0, -3.0]),
        kind="linear",
        idf=np.ones(64),
        thresholds=[0.6, 0.2, 0.9],
    )
    # sigmoid(0) = 0.5 < 0.6, sigmoid(-1) = 0.27 >= 0.2: joy alone, though neutral scores higher
    assert clf.predict_sets(["anything"]) == [{"joy"}]
    clf.thresholds = np.array([0.9, 0.9, 0.9], dtype=np.float32)
    assert clf.predict_sets(["anything"]) == [{"neutral"}]  # none reaches its threshold: the top label
    assert abs(clf.predict_proba("x").sum() - 1) < 1e-6
    back = EmotionClassifier.load(clf.save(tmp_path / "clf"))
    assert back.kind == "linear" and back.thresholds.tolist() == pytest.approx([0.9, 0.9, 0.9])
    # thresholds are chosen per label: a label whose scores are shifted gets its own cut
    scores = np.array([[0.9, 0.1], [0.2, 0.35], [0.8, 0.4], [0.1, 0.05]], dtype=np.float32)
    gold = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)
    th = choose_thresholds(scores, gold)
    assert 0.05 < th[1] <= 0.35 and 0.2 < th[0] <= 0.8


def test_a_linear_table_must_match_the_labels() -> None:
    import numpy as np

    from models.personality.features import FeatureSpec

    with pytest.raises(DataError, match="one column per label"):
        EmotionClassifier(
            ("a", "b"), FeatureSpec(buckets=8), np.zeros((8, 3)), None, np.zeros(2), kind="linear", idf=np.ones(8)
        )


def test_listener_features_mark_negation_trigrams_and_shouting() -> None:
    from models.personality.features import FeatureSpec, _h, featurize

    plain, rich = FeatureSpec(buckets=1 << 20), FeatureSpec(buckets=1 << 20, negation=True, trigrams=True, shape=True)
    b = rich.buckets
    text = "I am NOT happy about THIS!!"
    assert set(featurize(text, rich)) > set(featurize(text, plain))  # the plain features stay as they were
    ids = set(featurize(text, rich))
    assert {_h("n:happy", b), _h("n:about", b), _h("t:i am not", b), _h("f:caps2", b), _h("f:!!", b)} <= ids
    calm = set(featurize("I am happy about this.", rich))
    assert _h("n:happy", b) not in calm and _h("f:caps", b) not in calm and _h("f:!!", b) not in calm
    # a negation's scope ends at the next punctuation mark
    assert _h("n:fine", b) not in set(featurize("I don't like it. Fine", rich))


def test_the_listener_recipe_trains_with_liblinear_and_out_of_fold_thresholds(tmp_path: Path) -> None:
    import dataclasses

    from models.personality.emotion_training import LISTENER_SETTINGS, train_emotion_classifier
    from tests.personality.conftest import write_synthetic_goemotions

    data = write_synthetic_goemotions(tmp_path / "goemo")
    settings = dataclasses.replace(LISTENER_SETTINGS, buckets=4096)
    report = train_emotion_classifier(data, tmp_path / "listener", settings)
    assert report["heldout_examples"] == 0 and report["train_examples"] == 400  # folds use all of train
    assert report["settings"]["solver"] == "liblinear" and report["dev"]["macro_f1"] > 0.8
    clf = EmotionClassifier.load(tmp_path / "listener")
    assert clf.spec.negation and clf.spec.trigrams and clf.spec.shape and clf.thresholds is not None
    assert clf.classify(["haha lol so funny", "i am so scared and afraid"]) == ["playful", "fear"]
    with pytest.raises(DataError, match="solver"):
        train_emotion_classifier(data, tmp_path / "bad", dataclasses.replace(settings, solver="sgd"))


def test_the_listener_hears_messages_and_the_classifier_still_ranks(
    tiny_classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.personality import emotion as emotion_module
    from models.personality.extension import EmotionSettings
    from models.personality.feeling import CharacterFeeling
    from models.personality.params import PersonalityParams
    from models.personality.sessions import Session

    plain = EmotionClassifier.load(tiny_classifier_dir)
    heard: list[str] = []

    class Listener:
        def detect(self, text: str) -> Any:
            heard.append(text)
            return plain.detect("i am so scared and afraid")

    monkeypatch.setattr(emotion_module, "default_listener", Listener)
    monkeypatch.setattr("models.personality.feeling.default_listener", Listener)
    monkeypatch.setattr("models.personality.feeling.default_classifier", lambda folder=None: plain)
    emo = EmotionSettings()
    feeling = CharacterFeeling("Ada", emo, lambda: PersonalityParams(), None)
    session = Session(state=EmotionalState(emo.labels))
    feeling.observe(session, "haha lol so funny")
    expected = EmotionalState(emo.labels)  # as if the message had said what the listener heard
    expected.relax()
    det = plain.detect("i am so scared and afraid")
    expected.observe(project(det.distribution, emo.labels, emo.label_map), det.intensity)
    assert heard == ["haha lol so funny"] and session.state.values == pytest.approx(expected.values)
    assert feeling.agreement("haha lol so funny", "playful") > 0.5  # ranking reads the plain classifier
    named = CharacterFeeling("Ada", emo, lambda: PersonalityParams(classifier=str(tiny_classifier_dir)), None)
    assert named.listener is named.classifier  # a classifier the user names does both


def test_shipped_listener_hears_better_than_the_classifier_and_is_verified() -> None:
    from models.paths import builtin_dir
    from models.personality.emotion import default_listener
    from models.store import verify_manifest

    folder = builtin_dir("emotion-listener")
    verify_manifest(folder)
    listener = json.loads((folder / "report.json").read_text())["dev"]
    plain = json.loads((builtin_dir("emotion") / "report.json").read_text())["dev"]
    assert listener["macro_f1"] >= plain["macro_f1"] + 0.015  # 0.617 against 0.597 on GoEmotions dev
    assert min(v["f1"] for v in listener["per_label"].values()) >= 0.35
    clf = default_listener()
    assert clf is not default_classifier() and clf.spec.negation and clf.thresholds is not None
    # negation marks: the plain classifier reads "good" as joy here
    assert clf.detect("This is not good at all").label != "joy"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 8_000_000
