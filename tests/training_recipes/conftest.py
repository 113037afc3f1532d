"""Fixtures for the training recipes: a personality on the tiny model and a character's lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

ADA_LINES = [
    (
        "Tell me about the sea.",
        "The sea keeps letters for the lighthouse keeper, and the gulls read them first.",
        "joy",
    ),
    ("Is the lamp lit?", "The lamp is lit, the wicks are trimmed, and the oil tin is under the stairs.", "caring"),
    ("What do you write?", "A letter every evening, though no ship ever came to carry it.", "sadness"),
    ("Who lied?", "The muddy boots by the door told me who had lied.", "curious"),
    (
        "Sing me something.",
        "A bard sang of dragons, lost crowns and brave cooks in the kingdom beyond the hills.",
        "playful",
    ),
    ("How do I start?", "Every story begins with a question, so ask the moon one.", "caring"),
    ("I need a quiet room.", "A writer needs a quiet room, a warm cup of tea, and a stubborn heart.", "caring"),
    ("Any ships today?", "No ship came, so I wrote the letter anyway and kept it in the tin box.", "sadness"),
    ("What are the gulls doing?", "The gulls circle the grey mornings and laugh at the lamp.", "playful"),
    ("Tell me about the boy.", "The boy asked about the sea, and I told him about the grey mornings.", "joy"),
    ("What is in the tin box?", "Letters, lamp oil and the spare wicks, under the stairs.", "neutral"),
    (
        "Do you like storms?",
        "I count the seconds between the lightning and the thunder, and I keep the lamp lit.",
        "fear",
    ),
]


def write_lines(folder: Path, character: str = "ada", name: str = "Ada", repeat: int = 2) -> Path:
    """A character_data-style folder: `<id>_dialogue.jsonl` with context/text/emotion rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(repeat):
        for i, (ctx, text, emo) in enumerate(ADA_LINES):
            text = text + (" Again." * r)
            rows.append({"character": character, "name": name, "context": ctx, "text": text, "emotion": emo, "i": i})
    (folder / f"{character}_dialogue.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    from models.personality.loader import reset_shared_manager

    reset_shared_manager()
    yield
    reset_shared_manager()


@pytest.fixture
def ada(tmp_path: Path, tiny_model_dir: Path, user_config) -> Path:
    """Personality `ada` (V2 card) on the tiny model, configured in COMPANION_HOME."""
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        "models:\n  personality:\n    ada:\n      type: personality\n"
        f"      path: '{folder}'\n      parameters: {{max_length: 6, seed: 3}}\n"
    )
    return folder


@pytest.fixture
def ada_lines(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "character_data")
