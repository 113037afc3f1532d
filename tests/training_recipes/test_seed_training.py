"""The seed's "Model Training" sample, run as written on the embedded model (no shared data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_seed_training_sample_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, companion_home: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    # --- seed: Model Training ---
    from models.training import ModelTrainer

    # Initialize trainer
    trainer = ModelTrainer()

    # Train personality model
    trainer.train_personality_model(
        model_name="luna", training_data="models/training_data/personality_data", epochs=100
    )

    # Train personalization model
    trainer.train_personalization_model(
        model_name="user_prefs", training_data="models/training_data/user_data", epochs=50
    )
    # --- end of the seed's sample ---
    from models.model_manager import ModelManager
    from models.personalization import load_personalization_model

    luna_dir = companion_home / "store" / "personality" / "luna" / "1.0.0"
    version = json.loads((luna_dir / "version.json").read_text())
    assert (luna_dir / "adapter" / "adapter_model.safetensors").exists()
    assert version["lineage"]["base_model"] == "builtin:companion-chat"
    assert version["metrics"]["epochs_run"] <= 100 and version["metrics"]["training_lines"] > 40
    assert version["metrics"]["heldout_perplexity_ratio"] < 1.0  # the character's unseen lines got likelier
    luna = ModelManager().load_model("personality", "luna")
    assert luna.version == "1.0.0" and luna.base.engine.info()["adapter"]["modules"] == 4 * 7
    assert str(luna.generate_response(message="I finished my chapter!")).strip()

    prefs_dir = companion_home / "store" / "personalization" / "user_prefs" / "1.0.0"
    assert (prefs_dir / "learner.safetensors").exists() and (prefs_dir / "preferences.json").exists()
    assert load_personalization_model("user_prefs").version == "1.0.0"
    assert not (tmp_path / "models").exists()  # the seed's relative paths named shipped data, wrote nothing here
