"""Emotion control: tag dialogue with the classifier, fine-tune with control tokens, export."""

from __future__ import annotations

import json
from pathlib import Path

from models.personality.card import CharacterCard
from models.personality.emotion import EmotionClassifier
from models.training.control import ControlBatches, build_examples, encode_examples
from models.training.loop import IGNORE_INDEX, TrainSettings
from tests.personality.conftest import v2_card

PERSONA_CSV = (
    "user 1 personas,user 2 personas,Best Generated Conversation\n"
    '"I like tea.","I love to laugh.","User 1: Hi! How are you?\n'
    "User 2: haha lol so funny, I am great\n"
    "User 1: I feel sad today.\n"
    "User 2: take care, I hope you feel better\n"
    "User 1: Why is the sky blue?\n"
    'User 2: i wonder, tell me more, curious"\n'
)


def _examples(tmp_path: Path, classifier_dir: Path, tiny_goemotions: Path | None = None, character_lines: bool = True):
    csv = tmp_path / "spc.csv"
    csv.write_text(PERSONA_CSV, encoding="utf-8")
    clf = EmotionClassifier.load(classifier_dir)
    cards = {"ada": CharacterCard(v2_card())}
    dialogue = tmp_path / "character_data"
    dialogue.mkdir()
    (dialogue / "ada_dialogue.jsonl").write_text(
        json.dumps({"context": "A storm!", "text": "I am so scared, terrified of the thunder", "emotion": "fear"})
        + "\n"
    )
    return build_examples(
        clf,
        persona_chat=csv,
        cards=cards,
        dialogue_dir=dialogue,
        goemotions=tiny_goemotions,
        character_lines=character_lines,
    )


def test_examples_are_tagged_by_the_classifier(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    examples = _examples(tmp_path, tiny_classifier_dir)
    by_source = {}
    for ex in examples:
        by_source.setdefault(ex.source, []).append(ex)
        assert ex.messages[-1]["role"] == "assistant" and ex.messages[-1]["emotion"] == ex.emotion
        assert ex.messages[0]["role"] == "system"
    assert [ex.emotion for ex in by_source["persona_chat"]] == ["playful", "caring", "curious"]
    ada = by_source["ada"]
    assert any(ex.emotion == "fear" for ex in ada)  # the character's own line, tagged
    assert ada[0].messages[0]["content"].startswith("You are Ada")  # the card's real system prompt


def test_character_lines_stay_out_by_default(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    # The shared chat model must not see a character's lines: its LoRA does, and they are held out there.
    examples = _examples(tmp_path, tiny_classifier_dir, character_lines=False)
    assert examples and not [ex for ex in examples if ex.source == "ada"]
    assert all("terrified of the thunder" not in ex.messages[-1]["content"] for ex in examples)


def test_goemotions_tops_up_rare_labels(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    from tests.personality.conftest import write_synthetic_goemotions

    goemo = write_synthetic_goemotions(tmp_path / "goemo") / "train.tsv"
    examples = _examples(tmp_path, tiny_classifier_dir, goemo)
    topped = [ex for ex in examples if ex.source == "goemotions"]
    assert topped and {ex.emotion for ex in topped} >= {"anger", "surprise"}


def test_encoding_masks_everything_but_the_reply(
    tmp_path: Path, tiny_classifier_dir: Path, tiny_model_dir: Path
) -> None:
    from models.engines.codec import TextCodec

    codec = TextCodec(tiny_model_dir)
    encoded = encode_examples(codec, _examples(tmp_path, tiny_classifier_dir), seq_len=96)
    ids, labels, emotion, _source = encoded[0]
    reply = [t for t in labels if t != IGNORE_INDEX]
    text = codec.decode(ids, skip_special_tokens=False)
    assert f"<|assistant|><|emotion:{emotion}|>" in text
    assert codec.decode(reply, skip_special_tokens=False).endswith("<|end|>\n")
    batches = ControlBatches(encoded, codec.pad_id or 0, seed=1, character_share=0.5)
    a, b = batches.global_batch(3, 4), batches.global_batch(3, 4)
    assert all((a[k] == b[k]).all() for k in a)  # deterministic in (seed, step)
    assert a["input_ids"].shape == a["labels"].shape == a["attention_mask"].shape


def test_fine_tune_exports_an_emotion_controlled_model(
    tmp_path: Path, tiny_classifier_dir: Path, tiny_model_dir: Path, user_config
) -> None:
    from models.personality import load_personality_model
    from models.personality.loader import write_personality_folder
    from models.training.control import train_emotion_control

    csv = tmp_path / "spc.csv"
    csv.write_text(PERSONA_CSV, encoding="utf-8")
    out = tmp_path / "chat-model"
    settings = TrainSettings(max_steps=2, batch_size=4, micro_batch_size=4, warmup_steps=1, eval_every=2)
    report = train_emotion_control(
        tiny_model_dir, out, tmp_path / "run", persona_chat=csv, cards={"ada": CharacterCard(v2_card())},
        settings=settings, seq_len=96, classifier=EmotionClassifier.load(tiny_classifier_dir), progress=False,
    )  # fmt: skip
    meta = json.loads((out / "companion.json").read_text())
    assert meta["emotion_control"] is True and report["result"]["steps"] == 2
    assert (out / "manifest.json").exists() and (out / "model.safetensors").exists()
    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(out))
    user_config(
        f"models:\n  personality:\n    ada: {{type: personality, path: '{folder}', parameters: {{max_length: 4}}}}\n"
    )
    model = load_personality_model("ada")
    assert model.control == "token"
    assert model.generate_response(emotional_state="joy", message="hi").emotion == "joy"
