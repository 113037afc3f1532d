"""Fixtures for personality tests: cards written here, a tiny classifier, a tiny personality."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# GoEmotions label ids (emotions.txt order) and words that make each of our labels obvious.
_SYNTHETIC = {
    17: ["happy", "great news", "wonderful", "so glad", "yay", "delighted"],  # joy
    18: ["love you", "my darling", "kiss", "my sweetheart", "adore you", "romance"],  # love → romantic
    5: ["take care", "hope you feel better", "here for you", "be gentle with yourself", "rest well"],  # caring
    1: ["haha", "lol", "so funny", "hilarious", "what a joke", "lmao"],  # amusement → playful
    7: ["why", "how does", "what happens", "i wonder", "tell me more", "curious"],  # curiosity
    26: ["wow", "no way", "unbelievable", "what a surprise", "omg", "shocked"],  # surprise
    25: ["sad", "crying", "miss her", "heartbroken", "so lonely", "tears"],  # sadness
    14: ["scared", "afraid", "terrified", "nightmare", "panic", "fear"],  # fear
    2: ["angry", "furious", "hate this", "so annoyed", "rage", "mad"],  # anger
    27: ["the bus leaves at noon", "it is a table", "the report is due", "we moved the file", "ok"],  # neutral
}
_FILLER = ["today", "right now", "honestly", "again", "at the market", "this evening", "with my friend", ""]


def write_synthetic_goemotions(folder: Path, per_label: int = 40, seed: int = 0) -> Path:
    """A tiny GoEmotions-format folder (train.tsv, dev.tsv) with obvious emotion words."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", per_label), ("dev", per_label // 4)):
        lines = []
        for label, words in _SYNTHETIC.items():
            for i in range(n):
                text = f"{rng.choice(words)} {rng.choice(_FILLER)} {rng.choice(words)}".strip()
                lines.append(f"{text}\t{label}\tid{label}x{i}")
        rng.shuffle(lines)
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    """Each test starts with no process-wide manager or framework (they cache loaded models)."""
    from framework.framework_tool import reset_framework
    from models.personality.loader import reset_shared_manager

    reset_shared_manager()
    reset_framework()
    yield
    reset_shared_manager()
    reset_framework()


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An emotion classifier trained in about a second on synthetic GoEmotions-format data."""
    from models.personality.emotion_training import EmotionTrainSettings, train_emotion_classifier

    data = write_synthetic_goemotions(tmp_path_factory.mktemp("goemo"))
    out = tmp_path_factory.mktemp("clf") / "emotion"
    settings = EmotionTrainSettings(buckets=4096, dim=8, epochs=8, lr=0.05, batch_size=16, heldout_fraction=0.1)
    train_emotion_classifier(data, out, settings)
    return out


V1_CARD: dict[str, Any] = {
    "name": "Ada",
    "description": "{{char}} is a patient lighthouse keeper who writes letters to {{user}}.",
    "personality": "calm, kind, observant",
    "scenario": "{{user}} climbs the lighthouse stairs at dusk.",
    "first_mes": "*{{char}} looks up from the lamp.* You came! Sit by the window.",
    "mes_example": "<START>\n{{user}}: Is the lamp lit?\n{{char}}: Always, before the first star.\n"
    "<START>\n{{user}}: I wrote a poem.\n<BOT>: Read it to me, <USER>.",
}


def v2_card() -> dict[str, Any]:
    data = copy.deepcopy(V1_CARD) | {
        "creator_notes": "Written for the tests. CC0-1.0.",
        "system_prompt": "{{original}}\nYou are {{char}}, a gentle keeper.",
        "post_history_instructions": "Stay in character as {{char}}.",
        "alternate_greetings": ["Ah, {{user}}. The gulls told me you'd come.", "Evening! Tea is on the stove."],
        "character_book": {
            "name": "Ada's logbook",
            "description": "Facts.",
            "scan_depth": 2,
            "token_budget": 64,
            "recursive_scanning": False,
            "extensions": {},
            "entries": [
                {
                    "keys": ["storm", "thunder"],
                    "content": "During storms {{char}} counts seconds between lightning and thunder.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 10,
                    "case_sensitive": False,
                    "name": "storms",
                    "priority": 10,
                    "id": 1,
                    "comment": "",
                    "selective": False,
                    "secondary_keys": [],
                    "constant": False,
                    "position": "after_char",
                },
                {
                    "keys": ["ship"],
                    "content": "The last ship, the Marigold, passed in spring.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 5,
                    "case_sensitive": True,
                    "name": "ship",
                    "priority": 5,
                    "id": 2,
                    "comment": "",
                    "selective": True,
                    "secondary_keys": ["spring", "Marigold"],
                    "constant": False,
                    "position": "before_char",
                },
            ],
        },
        "tags": ["test", "lighthouse"],
        "creator": "tests",
        "character_version": "2.1",
        "extensions": {
            "x-other-app/avatar_crop": {"x": 0.25, "y": 1e-7, "big": 12345678901234567890, "name": "é✓"},
            "companion": {
                "emotion": {"baseline": {"caring": 0.6, "curious": 0.4}, "decay": 0.5},
                "behavior": {"verbosity": 0.2, "initiative": 0.8, "boundaries": ["politics"]},
                "interaction": {"user_name": "sailor", "history_turns": 4},
                "scenarios": {
                    "romantic_conversation": {
                        "scenario": "A quiet evening; {{char}} and {{user}} talk about love letters.",
                        "emotion": "romantic",
                    },
                    "storm_night": {"scenario": "A storm rages outside.", "emotion": "fear"},
                },
            },
        },
    }
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def v3_card() -> dict[str, Any]:
    card = v2_card()
    data = card["data"]
    for e in data["character_book"]["entries"]:
        e["use_regex"] = False
    data["character_book"]["entries"].append(
        {
            "keys": ["/\\blamp(s)?\\b/i"],
            "content": "@@depth 1\n@@role system\n{{char}} polishes the lamp. {{random:Twice.,Thrice.}}",
            "extensions": {},
            "enabled": True,
            "insertion_order": 30,
            "use_regex": True,
            "constant": False,
            "id": "lamp",
            "comment": "regex + decorators",
        }
    )
    data |= {
        "nickname": "Addie",
        "creator_notes_multilingual": {"en": "Test card.", "fr": "Carte de test."},
        "source": ["tests:ada"],
        "group_only_greetings": ["Welcome, all of you!"],
        "creation_date": 1714521600,
        "modification_date": 1714608000,
        "assets": [
            {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
            {"type": "emotion", "uri": "embeded://assets/emotion/images/happy.png", "name": "happy", "ext": "png"},
        ],
    }
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def card_json(obj: dict[str, Any]) -> str:
    """A card file as the examples are written: 2-space indent, UTF-8, trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


@pytest.fixture
def personality_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A personality folder (V2 card written here) on the tiny test model."""
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder

    return write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))


@pytest.fixture
def personality_config(user_config, personality_dir: Path, tiny_classifier_dir: Path):
    """COMPANION_HOME/config.yaml with personality `ada` (tiny model, tiny classifier)."""
    return user_config(
        "models:\n  personality:\n    ada:\n      type: personality\n"
        f"      path: '{personality_dir}'\n"
        f"      parameters: {{max_length: 12, seed: 3, classifier: '{tiny_classifier_dir}'}}\n"
    )
