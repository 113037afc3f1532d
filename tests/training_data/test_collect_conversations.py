"""Collecting conversations: DiscordChatExporter exports, plain logs, Persona-Chat CSV, JSONL, time periods."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from models.errors import DataError
from models.training_data import DataCollector
from tests.training_data.conftest import ADA, BEN, NOW, channel, export, message, workshop_export, write_json


def collect(source: Path | str, **kw) -> tuple:
    from models.training_data.anonymize import PassThroughAnonymizer

    # These tests check parsing; anonymization (on by default) is tested in tests/privacy.
    collector = DataCollector(now=NOW, anonymizer=PassThroughAnonymizer(reason="test of raw parsing"))
    ds = collector.collect_conversation_data(source, **kw)
    return ds, collector.last_report


def test_discord_export_channels_threads_sessions(discord_dir: Path) -> None:
    ds, report = collect(discord_dir)
    assert report.files_read == 2 and not report.problems
    titles = sorted(set(ds["title"]))
    assert titles == [
        "Quill & Lantern Writers / #chapter-one (thread in #daily-prompts)",
        "Quill & Lantern Writers / #daily-prompts",
    ]
    workshop = ds.filter(lambda r: r["title"].endswith("#daily-prompts"))
    assert len(workshop) == 2  # a ten-hour silence splits the channel into two sessions
    first = workshop[0]["turns"]
    texts = [t["text"] for t in first]
    assert texts[0] == "Okay this one got me. Draft attached, I'm nervous about the ending :quill: [file]"
    assert texts[1].startswith("@Ada the last line")  # mention resolved from `mentions`
    assert texts[2] == "Here's the article I mentioned [link] about endings [embed: On Endings]"
    assert texts[3] == "thank you both, rewriting tonight [sticker]"
    assert len(first) == 4  # join, pin, bot prompt, attachment-only and forward-only messages dropped
    assert first[0]["edited"] and not first[1]["edited"]
    assert first[1]["reply_to"] == "1003"
    assert report.skipped == {"system_message": 2, "bot": 1, "no_text_of_its_own": 2}
    assert workshop[0]["position"] == "message:1003" and workshop[0]["format"] == "discord"


def test_speakers_get_stable_pseudonyms_and_ids_never_appear_in_text(discord_dir: Path) -> None:
    ds, _ = collect(discord_dir)
    ds2, _ = collect(discord_dir)
    turns = [t for r in ds for t in r["turns"]]
    ids = {t["speaker"]: t["speaker_id"] for t in turns}
    assert set(ids) == {"Ada", "Moss", "Ben"} and len(set(ids.values())) == 3
    assert all(v.startswith("spk_") for v in ids.values())
    assert ids == {t["speaker"]: t["speaker_id"] for r in ds2 for t in r["turns"]}
    blob = json.dumps(ds.to_list())
    assert ADA["id"] not in blob and "700000000000000" not in blob


def test_bots_can_be_included(discord_dir: Path) -> None:
    ds, report = collect(discord_dir, include_bots=True)
    assert "bot" not in report.skipped
    assert any(t["speaker"] == "PromptBot" for r in ds for t in r["turns"])


def test_time_period_filters_messages(discord_dir: Path) -> None:
    ds, report = collect(discord_dir, time_period="last_30_days")
    assert all("thread" not in t for t in ds["title"])  # the thread is 40 days old
    assert report.skipped["outside_time_period"] == 3
    ds, _ = collect(discord_dir, time_period="last_2_days")
    assert len(ds) == 0
    ds, _ = collect(
        discord_dir, time_period=f"{(NOW - timedelta(days=41)).date()}..{(NOW - timedelta(days=39)).date()}"
    )
    assert [r["title"].split("#")[1] for r in ds] == ["chapter-one (thread in "]


def test_malformed_and_truncated_exports_name_file_and_position(discord_dir: Path) -> None:
    good = json.dumps(workshop_export(), indent=2)
    cut = good.index('"id": "1006"')
    (discord_dir / "truncated.json").write_text(good[:cut])
    broken = good.replace('"content": "thank you both', '"content": "thank you both" oops', 1)
    (discord_dir / "broken.json").write_text(broken)
    (discord_dir / "not_an_export.json").write_text('{"hello": "world"}')
    ds, report = collect(discord_dir)
    problems = {p.file: p for p in report.problems}
    assert set(problems) == {"truncated.json", "broken.json", "not_an_export.json"}
    trunc = problems["truncated.json"]
    assert "truncated" in trunc.message and "the 5 messages before it were kept" in trunc.message
    assert trunc.position.startswith("line ") and "after message 5, id 1005" in trunc.position
    line = broken[: broken.index("oops")].count("\n") + 1
    assert problems["broken.json"].position.startswith(f"line {line}, column")
    assert "malformed" in problems["broken.json"].message
    assert "not a DiscordChatExporter" in problems["not_an_export.json"].message
    # the other files were still read, and the truncated one kept what came before the damage
    assert report.files_read == 2 and len(ds) == 5  # 3 from the good files, 1 each from the damaged ones
    with pytest.raises(DataError, match=r"problem\(s\) while collecting"):
        DataCollector(now=NOW, strict=True).collect_conversation_data(discord_dir)


def test_reverse_order_exports_come_out_in_time_order(tmp_path: Path) -> None:
    t0 = NOW - timedelta(days=1)
    msgs = [
        message(str(3000 + i), (ADA, BEN)[i % 2], f"message number {i} in order", t0 + timedelta(minutes=i))
        for i in range(6)
    ]
    write_json(tmp_path / "rev.json", export(channel("5", "rev"), msgs[::-1]))
    ds, _ = collect(tmp_path)
    assert [t["text"] for t in ds[0]["turns"]] == [f"message number {i} in order" for i in range(6)]


def test_plain_text_chat_logs(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text(
        "# Tuesday\n[2024-05-19 18:02] Ada: first line\ncontinued on a second line\n"
        "[2024-05-19 18:03] Inspector Marlowe: Facts first.\nnot a speaker line\n---\nBen: new chat\nAda: hi Ben\n"
    )
    ds, report = collect(tmp_path)
    assert len(ds) == 2
    first = ds[0]["turns"]
    assert ds[0]["title"] == "Tuesday" and first[0]["timestamp"] == "2024-05-19T18:02"
    assert first[0]["text"] == "first line\ncontinued on a second line"
    assert first[1]["speaker"] == "Inspector Marlowe" and first[1]["text"] == "Facts first.\nnot a speaker line"
    assert ds[1]["participants"] == ["Ben", "Ada"] and ds[1]["position"] == "line:7"
    ds, report = collect(tmp_path, time_period="last_7_days")
    assert report.skipped["undated_kept"] == 2 and any("cannot apply" in n for n in report.notes)
    ds, _ = collect(tmp_path, time_period="last_7_days", undated="drop")
    assert len(ds) == 1


def test_persona_chat_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "spc.csv").write_text(
        "user 1 personas,user 2 personas,Best Generated Conversation\n"
        '"I bake.\nI knit.","I am a boy.","User 1: Hi!\nUser 2: Hello!\nUser 1: What do you like?\nUser 2: Games."\n'
    )
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"id": "x", "title": "t", "characters": ["Luna"], "turns": [
            {"speaker": "Writer", "text": "hello"}, {"speaker": "Luna", "text": "hi", "emotion": "joy"}]}) + "\n"
        + "{broken\n"
        + json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                   {"role": "assistant", "content": "a"}]}) + "\n"
    )  # fmt: skip
    ds, report = collect(tmp_path)
    by_format = {r["format"]: r for r in ds}
    spc = by_format["persona_chat"]
    assert [t["speaker"] for t in spc["turns"]] == ["User 1", "User 2"] * 2
    assert json.loads(spc["meta"])["personas"]["user 1"] == ["I bake.", "I knit."]
    convs = ds.filter(lambda r: r["format"] == "jsonl")
    assert convs[0]["turns"][1]["emotion"] == "joy" and json.loads(convs[0]["meta"])["characters"] == ["Luna"]
    assert [t["speaker"] for t in convs[1]["turns"]] == ["user", "assistant"]
    assert [str(p) for p in report.problems] == [
        "c.jsonl at line 2, column 2: malformed JSON (Expecting property name enclosed in double quotes)"
    ]


def test_discord_logs_falls_back_to_the_shipped_conversations_and_says_so(companion_home: Path) -> None:
    ds, report = collect("discord_logs", time_period="last_30_days")
    assert report.used_fallback and "fallback" in report.notes[0]
    assert str(companion_home / "data" / "discord") in report.notes[0]
    assert len(ds) >= 10 and report.skipped["undated_kept"] > 0
    # once the user has exports there, they are used instead
    write_json(companion_home / "data" / "discord" / "x.json", workshop_export())
    ds, report = collect("discord_logs", time_period="last_30_days")
    assert not report.used_fallback and set(ds["format"]) == {"discord"}


def test_character_data_from_sheets_dialogue_and_cards(tmp_path: Path) -> None:
    collector = DataCollector()
    ds = collector.collect_character_data("characters", ["luna"])
    kinds = set(ds["kind"])
    assert {"dialogue", "greeting", "description", "personality"} <= kinds and set(ds["character"]) == {"luna"}
    assert len(ds.filter(lambda r: r["kind"] == "dialogue")) >= 60
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Nova", "description": "{{char}} helps {{user}}.", "personality": "bright", "scenario": "",
        "first_mes": "Hello {{user}}!", "mes_example": "<START>\n{{user}}: hi\n{{char}}: Hi there, <USER>.",
        "creator_notes": "never in prompts", "alternate_greetings": ["Hey."], "tags": ["x"],
        "extensions": {}}}  # fmt: skip
    write_json(tmp_path / "nova.json", card)
    rows = collector.collect_character_data(tmp_path, user_name="Sam").to_list()
    assert [(r["kind"], r["context"], r["text"]) for r in rows] == [
        ("description", "", "Nova helps Sam."),
        ("personality", "", "bright"),
        ("greeting", "", "Hello Sam!"),
        ("greeting", "", "Hey."),
        ("example", "hi", "Hi there, Sam."),
    ]
    assert "never in prompts" not in json.dumps(rows)
    with pytest.raises(DataError, match="no character zed"):
        collector.collect_character_data("characters", ["zed"])
