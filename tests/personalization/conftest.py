"""Fixtures for personalization tests: fresh process-wide state, a tiny personality, sample texts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

#: Replies with the features users disagree about: length, register, emoji, questions.
SHORT_CASUAL = "Hey, I'm glad you're here! 😊"
LONG_FORMAL = (
    "Good evening. I am delighted that you have returned to your manuscript tonight. "
    "The second chapter is where the story finally finds its shape, and the scene at the harbour "
    "is the strongest one you have written so far. Would you like to continue with it?"
)


#: End users of these tests may use every model (the built-in policy grants only the local owner).
GRANT_ALL = 'security:\n  users:\n    "*":\n      grants: [{models: "*", level: generate}]\n'


@pytest.fixture(autouse=True)
def users_may_generate(companion_home: Path) -> Path:
    path = companion_home / "config.yaml"
    path.write_text(GRANT_ALL)
    return path


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    """No process-wide manager, framework or database engine survives a test."""
    from framework.framework_tool import reset_framework
    from models import db
    from models.personality.loader import reset_shared_manager

    reset_shared_manager()
    reset_framework()
    yield
    from models.personalization.storage import flush

    flush()  # responses logged in the background are written before the home goes away
    reset_shared_manager()
    reset_framework()
    db.dispose_engines()


@pytest.fixture
def tiny_personality(tmp_path: Path, tiny_model_dir: Path, user_config) -> str:
    """COMPANION_HOME/config.yaml with personality `ada` on the tiny model, and a hybrid `ada_for_you`."""
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        GRANT_ALL + "models:\n"
        "  personality:\n"
        "    ada:\n"
        "      type: personality\n"
        f"      path: '{folder}'\n"
        "      parameters: {max_length: 24, seed: 3}\n"
        "  personalization:\n"
        "    ada_for_you:\n"
        "      type: hybrid\n"
        "      path: models/personalization/user_prefs\n"
        "      parameters: {personality: ada, candidates: 2}\n"
    )
    return "ada"
