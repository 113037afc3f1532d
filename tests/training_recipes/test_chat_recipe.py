"""The chat recipe (issue 18): whole conversations, loss on replies only, persona grounding,
dev splits kept apart, no safety nags; trains, resumes and exports on a tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.training.chat import train_chat
from models.training.chat_data import (
    ChatDataSettings,
    ChatEncoder,
    Conversation,
    build_chat_data,
    content_words,
    persona_chat_conversations,
    repeated_facts,
    split_of,
    states_fact,
    uses_persona,
)
from models.training.loop import IGNORE_INDEX, TrainSettings


class _Clf:
    """A stand-in classifier: every reply 'neutral' with confidence 0.4 (the writer's label wins)."""

    labels = ("neutral", "joy", "romantic", "caring", "playful", "curious", "surprise", "sadness", "fear", "anger")

    def predict_proba(self, texts: list[str]):
        import numpy as np

        p = np.full((len(texts), len(self.labels)), 0.6 / 9)
        p[:, 0] = 0.4
        return p

    def classify(self, texts: list[str]) -> list[str]:
        return ["neutral" for _ in texts]


def _shared(root: Path, n: int = 40) -> Path:
    tc = root / "dialogue" / "topical_chat"
    tc.mkdir(parents=True)
    convs = {}
    for i in range(n):
        convs[f"t{i}"] = {
            "content": [
                {"message": f"Do you like football {i}?", "agent": "agent_1", "sentiment": "Curious to dive deeper"},
                {"message": "Yes, I love it! Be careful with the ball.", "agent": "agent_2", "sentiment": "Happy"},
                {"message": "Did you know the locker room is pink?", "agent": "agent_1", "sentiment": "Surprised"},
                {"message": "No way, that is so strange.", "agent": "agent_2", "sentiment": "Surprised"},
            ]
        }
    (tc / "valid_freq.json").write_text(json.dumps(convs))
    spc = root / "dialogue" / "synthetic_persona_chat"
    spc.mkdir(parents=True)
    with (spc / "Synthetic-Persona-Chat_valid.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user 1 personas", "user 2 personas", "Best Generated Conversation"])
        for _i in range(n):
            w.writerow([
                "I bake cookies.\nI have a dog.",
                "I am a sailor.\nI collect lighthouse maps.",
                "User 1: Hi!\nUser 2: Hello!\nUser 1: What do you do?\nUser 2: I am a sailor and I collect maps.\n"
                "User 1: Cool. I bake.\nUser 2: Nice!",
            ])  # fmt: skip
    books = root / "books"
    books.mkdir()
    (books / "a.txt").write_text(("The sea was calm and the lamp was lit. " * 40 + "\n\n") * 30)
    return root


def test_windows_train_replies_only_and_keep_dev_apart(tmp_path: Path, tiny_model_dir: Path) -> None:
    from models.engines.codec import TextCodec

    shared = _shared(tmp_path / "shared")
    codec = TextCodec(tiny_model_dir)
    s = ChatDataSettings(seq_len=128, goemotions_per_label=0)
    train, convs = build_chat_data(codec, _Clf(), shared, "train", s)
    dev, dev_convs = build_chat_data(codec, _Clf(), shared, "dev", s)
    assert train.rows and dev.rows
    assert not {c.key.split(":")[1] for c in convs} & {c.key.split(":")[1] for c in dev_convs}
    assert split_of("topical:t3") in ("train", "dev")
    enc = ChatEncoder(codec)
    user_ids = set(enc.piece({"role": "user", "content": "x"}, train=False).ids[:1])  # the <|user|> token
    for ids, labels in train.rows:
        assert len(ids) == len(labels) <= 128
        trained = [t for t in labels if t != IGNORE_INDEX]
        assert trained and not user_ids & set(trained)  # no user or system token is a target
    # the nag reply ("Be careful with the ball.") is never a target
    texts = [codec.decode([t for t in lab if t != IGNORE_INDEX]) for _ids, lab in train.rows]
    assert not any("careful" in t for t in texts)
    assert any("strange" in t for t in texts)
    # the writer's own sentiment tags the reply when the classifier is unsure
    assert train.emotions["surprise"] > 0
    # persona windows whose reply uses the persona ("sailor") are drawn more often
    assert train.grounded_windows > 0 and max(train.weights) == s.grounded_weight


def _conv(key: str, source: str, *texts: str) -> Conversation:
    return Conversation(key, source, "You are A, talking with B.", [{"role": "user", "content": t} for t in texts])


def test_repeated_facts_are_trivia_said_in_many_conversations() -> None:
    topical = [
        _conv(f"topical:{i}:{side}", "topical_chat", f"Hi there number {i}! Did you know that it is so strange?",
              "Did you know the NFL game has only 11 minutes of live play?" if i % 2 else "I like the sea.")
        for i in range(20) for side in ("agent_1", "agent_2")
    ]  # fmt: skip
    ordinary = [
        _conv(f"persona:{i}:1", "persona_chat", "Did you know that it is so strange? I like it.") for i in range(50)
    ]
    facts = repeated_facts(topical + ordinary, min_conversations=8)
    # said in 10 conversations, with words ordinary chat never uses
    assert "has only 11 minutes of" in facts and "game has only 11 minutes" in facts
    # said in all 20 conversations but made of ordinary chat's words
    assert "did you know that it" not in facts
    assert states_fact("Fun fact: the NFL game has only 11 minutes of live play!", facts)
    assert not states_fact("Did you know that it is so strange?", facts)
    # each conversation counts once (both sides are the same conversation)
    assert repeated_facts(topical + ordinary, min_conversations=11) == set()


def test_repeated_facts_are_context_not_targets(tmp_path: Path, tiny_model_dir: Path) -> None:
    from models.engines.codec import TextCodec

    shared = _shared(tmp_path / "shared")
    codec = TextCodec(tiny_model_dir)
    s = ChatDataSettings(seq_len=128, goemotions_per_label=0, repeated_fact_conversations=8)
    train, _ = build_chat_data(codec, _Clf(), shared, "train", s)
    texts = [codec.decode([t for t in lab if t != IGNORE_INDEX]) for _ids, lab in train.rows]
    assert train.facts_skipped > 0
    assert not any("locker" in t for t in texts)
    assert any("sailor" in t for t in texts)  # persona chat is untouched
    plain, _ = build_chat_data(codec, _Clf(), shared, "train", ChatDataSettings(seq_len=128, goemotions_per_label=0))
    assert plain.facts_skipped == 0 and any("locker" in t for t in (
        codec.decode([t for t in lab if t != IGNORE_INDEX]) for _ids, lab in plain.rows))  # fmt: skip


def test_persona_overlap_measure() -> None:
    assert content_words("I collect lighthouse maps!") == {"collect", "lighthouse", "maps"}
    assert uses_persona("I am a sailor.", "Yes, I sail, I'm a sailor.", "What do you do?")
    assert not uses_persona("I am a sailor.", "A sailor? Me too.", "Are you a sailor?")  # only echoing the question
    conv = next(persona_chat_conversations(_shared_csv_only(), "train", 0), None)
    assert conv is None or conv.system.startswith("You are ")


def _shared_csv_only() -> Path:
    import tempfile

    root = Path(tempfile.mkdtemp())
    return _shared(root) / "dialogue" / "synthetic_persona_chat" / "Synthetic-Persona-Chat_valid.csv"


@pytest.mark.slow
def test_train_resume_and_export(tmp_path: Path, tiny_model_copy: Path) -> None:
    from models.personality.emotion import default_classifier

    shared = _shared(tmp_path / "shared")
    settings = TrainSettings(max_steps=4, batch_size=4, micro_batch_size=4, lr=1e-3, warmup_steps=1,
                             eval_every=2, checkpoint_every=2, seed=7, log_every=1)  # fmt: skip
    data = ChatDataSettings(seq_len=128, goemotions_per_label=0)
    report = train_chat(tiny_model_copy, tmp_path / "run" / "model", tmp_path / "run", shared, settings=settings,
                        data_settings=data, classifier=default_classifier(), progress=False)  # fmt: skip
    assert report["recipe"] == "companion train chat" and report["result"]["steps"] == 4
    meta = json.loads((tmp_path / "run" / "model" / "companion.json").read_text())
    assert meta["kind"] == "chat" and meta["emotion_control"] is True
    assert (tmp_path / "run" / "model" / "manifest.json").exists()
    assert not list((tmp_path / "run" / "model").glob("*.bin"))
