"""The seed's "Data Collection", "Data Preprocessing" and "Data Validation" samples, run as written.

The code between the markers is copied verbatim from the seed document; it runs from an empty
working folder with a fresh COMPANION_HOME (autouse fixture) and no shared data folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_seed_samples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # --- seed: Data Collection ---
    from models.training_data import DataCollector

    collector = DataCollector()

    # Collect writing samples
    writing_samples = collector.collect_writing_samples(
        source="Book_Collection", genres=["fantasy", "romance", "mystery"]
    )

    # Collect conversation data
    conversation_data = collector.collect_conversation_data(source="discord_logs", time_period="last_30_days")
    # --- seed: Data Preprocessing ---
    from models.training_data import DataPreprocessor

    preprocessor = DataPreprocessor()

    # Preprocess writing data
    processed_writing = preprocessor.preprocess_writing_data(
        raw_data=writing_samples, tokenization="gpt2", max_length=512
    )

    # Preprocess conversation data
    processed_conversations = preprocessor.preprocess_conversation_data(raw_data=conversation_data, context_window=10)
    # --- seed: Data Validation ---
    from models.training_data import DataValidator

    validator = DataValidator()

    # Validate writing data
    writing_validation = validator.validate_writing_data(data=processed_writing, quality_threshold=0.8)

    # Validate conversation data
    conversation_validation = validator.validate_conversation_data(data=processed_conversations, quality_threshold=0.7)
    # --- end of the seed's samples ---

    assert len(writing_samples) == 9 and set(writing_samples["genre"]) == {"fantasy", "romance", "mystery"}
    assert collector.last_report is not None and collector.last_report.used_fallback
    assert len(conversation_data) >= 10
    assert all(n <= 512 for n in processed_writing["length"])
    assert {"Luna", "Inspector Marlowe", "Quill"} <= set(processed_conversations["speaker"])
    assert writing_validation.report.pass_rate == 1.0 and len(writing_validation.data) == len(processed_writing)
    assert conversation_validation.report.pass_rate > 0.9
    assert not (tmp_path / "models").exists()  # nothing written into the working folder
