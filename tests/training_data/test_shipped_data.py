"""The shipped data loads, is small, has what later recipes need; seed paths and config resolve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import models.training_data as td
from models.errors import DataError
from models.tokens import EMOTIONS
from models.training_data import DataCollector, load_character_sheets, load_training_data, resolve_training_data
from models.training_data.locations import data_root, shipped_dir

SHIPPED = [data_root() / "writing_assistant", data_root() / "user_data"]


def shipped_files() -> list[Path]:
    return sorted(p for root in SHIPPED for p in root.rglob("*") if p.is_file())


def test_shipped_data_is_small_and_every_structured_file_parses() -> None:
    files = shipped_files()
    assert sum(p.stat().st_size for p in files) < 1_000_000
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                assert isinstance(json.loads(line), dict), path


def test_four_seed_folders_exist_with_real_content() -> None:
    for part in ("writing_samples", "conversation_data", "character_data", "style_data"):
        assert any(shipped_dir(part).iterdir()), part
    index = json.loads((shipped_dir("writing_samples") / "index.json").read_text())
    genres = {f["genre"] for f in index["files"]}
    assert {"fantasy", "romance", "mystery"} <= genres
    for entry in index["files"]:
        assert (shipped_dir("writing_samples") / entry["file"]).is_file()


@pytest.mark.parametrize("character", ["luna", "marlowe", "quill"])
def test_each_character_has_a_sheet_and_enough_labelled_lines(character: str) -> None:
    sheets = load_character_sheets(shipped_dir("character_data"))
    sheet = sheets[character]
    assert (
        sheet["name"] and sheet["summary"] and sheet["personality"] and set(sheet["emotional_range"]) <= set(EMOTIONS)
    )
    lines = [
        json.loads(x) for x in (shipped_dir("character_data") / f"{character}_dialogue.jsonl").read_text().splitlines()
    ]
    assert 130 <= len(lines) <= 200  # enough for a LoRA with a 15 % held-out share (docs/training.md)
    assert all(x["context"] and x["text"] and x["emotion"] in EMOTIONS for x in lines)
    assert all(sum(x["emotion"] == e for x in lines) >= 4 for e in EMOTIONS)  # every label is represented
    assert len({x["text"] for x in lines}) == len(lines)


def test_every_shipped_source_collects_and_validates_cleanly() -> None:
    from models.training_data import DataValidator

    collector = DataCollector()
    writing = collector.collect_writing_samples("Book_Collection")
    assert len(writing) == 13 and not collector.last_report.problems
    assert DataValidator().validate_writing_data(writing).report.kept == 13
    chars = collector.collect_character_data("characters")
    assert set(chars["character"]) == {"luna", "marlowe", "quill"} and not collector.last_report.problems
    user = collector.collect_writing_samples("user_data")
    assert len(user) == 3 and not collector.last_report.problems
    convs = collector.collect_conversation_data(shipped_dir("conversation_data"))
    assert len(convs) == 12 and not collector.last_report.problems


def test_seed_training_paths_name_shipped_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    personality = resolve_training_data("models/training_data/personality_data")
    assert (
        personality.kind == "characters" and personality.shipped and personality.path == shipped_dir("character_data")
    )
    user = resolve_training_data("models/training_data/user_data")
    assert user.kind == "user" and (user.path / "feedback.jsonl").is_file()
    assert resolve_training_data("models/training_data/writing_assistant/style_data").kind == "style"
    luna = load_training_data("models/training_data/personality_data", character="luna")
    assert set(luna["character"]) == {"luna"} and len(luna) > 60
    assert set(load_training_data("models/training_data/user_data")["genre"]) == {"literary", "romance", "mystery"}
    (tmp_path / "models" / "training_data" / "user_data").mkdir(parents=True)  # a real folder wins
    assert (
        resolve_training_data("models/training_data/user_data").path == Path("models/training_data/user_data").resolve()
    )
    with pytest.raises(DataError, match="personality_data"):
        resolve_training_data("models/training_data/nothing_here")


def test_builtin_config_defines_the_seed_sources() -> None:
    sources = DataCollector().data_sources()
    assert sources["Book_Collection"].type == "writing"
    assert sources["discord_logs"].path == "home:data/discord" and sources["discord_logs"].fallback


def test_public_api() -> None:
    assert {"DataCollector", "DataPreprocessor", "DataValidator"} <= set(td.__all__)
    for name in td.__all__:
        assert getattr(td, name) is not None
    with pytest.raises(AttributeError):
        _ = td.NoSuchThing
