"""Preprocessing: cleaning, tokenization with the target model's BPE, windows, chat rendering, anonymization."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset

from models.errors import DataError
from models.training_data import DataPreprocessor
from models.training_data.anonymize import PrivacyAnonymizer
from models.training_data.chunking import window_spans
from models.training_data.tokenization import load_tokenizer

PARA = (
    "The lamplighter told the flame a small true thing, and the flame woke. "
    "Down the pier, lamp after lamp caught from it, and a bell rang out on the water. "
)


def long_doc(n: int = 40) -> str:
    return "\n\n".join(f"Part {i}. " + (PARA * 3).strip() for i in range(n))


def test_window_spans_overlap_by_stride() -> None:
    assert window_spans(10, 4, 0) == [(0, 4), (4, 8), (8, 10)]
    assert window_spans(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_spans(3, 4, 1) == [(0, 3)]


def test_gpt2_means_the_builtin_byte_level_bpe_and_chunks_are_exact() -> None:
    pre = DataPreprocessor()
    text = long_doc()
    out = pre.preprocess_writing_data([text], tokenization="gpt2", max_length=128, stride=16)
    tok = load_tokenizer("gpt2")
    ids = [*tok.tokenizer.encode(text, add_special_tokens=False).ids, tok.eos_id]
    assert out[0]["input_ids"] == ids[:128]
    assert out[1]["input_ids"][:16] == ids[112:128]  # 16 tokens shared with the previous window
    assert all(n <= 128 for n in out["length"]) and out[-1]["input_ids"][-1] == tok.eos_id
    for row in out:  # each window's text is the exact span its tokens cover
        assert text.find(row["text"]) >= 0
        assert tok.tokenizer.decode(row["input_ids"]).strip().startswith(row["text"][:40].strip())
    assert out[1]["position"] == "token:112" and out["chunk_index"][:3] == [0, 1, 2]
    report = pre.last_report
    assert report is not None and report.tokens == sum(out["length"]) and "gpt2" in report.tokenizer


def test_packing_fills_windows_across_documents() -> None:
    docs = [(PARA * k).strip() for k in (1, 2, 3, 5, 8)]
    packed = DataPreprocessor().preprocess_writing_data(docs, max_length=64, packing=True)
    tok = load_tokenizer()
    total = sum(len(tok.tokenizer.encode(d, add_special_tokens=False).ids) + 1 for d in docs)
    assert all(n == 64 for n in packed["length"][:-1])
    assert sum(packed["length"]) == total
    assert any(r["input_ids"].count(tok.eos_id) >= 1 and r["input_ids"][-1] != tok.eos_id for r in packed)


def test_cleaning_applies_nfc_and_removes_boilerplate() -> None:
    raw = (
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nCafe\u0301   at\ndawn,\n\n\n\nthe end.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence"
    )
    # regex-only anonymization: this is about cleaning ("Café" at a line start reads as a name to NER)
    out = DataPreprocessor(anonymizer=PrivacyAnonymizer("medium", "none")).preprocess_writing_data([raw], max_length=64)
    assert out[0]["text"] == "Café   at\ndawn,\n\nthe end."


def test_any_tokenizer_folder_works(tmp_path: Path) -> None:
    from models.training.tokenizer import save_tokenizer_files, train_tokenizer

    tok = train_tokenizer([PARA] * 50, vocab_size=300)
    save_tokenizer_files(tok, tmp_path / "tok", model_max_length=64)
    out = DataPreprocessor().preprocess_writing_data([PARA * 4], tokenization=str(tmp_path / "tok"), max_length=32)
    assert max(max(r) for r in out["input_ids"]) < 300
    with pytest.raises(DataError, match="not a tokenizer"):
        DataPreprocessor().preprocess_writing_data([PARA], tokenization=str(tmp_path / "missing"))


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(DataError, match="stride"):
        DataPreprocessor().preprocess_writing_data([PARA], max_length=16, stride=16)
    with pytest.raises(DataError, match="context_window"):
        DataPreprocessor().preprocess_conversation_data([{"turns": []}], context_window=1)
    with pytest.raises(DataError, match="'text' column"):
        DataPreprocessor().preprocess_writing_data(Dataset.from_dict({"body": ["x"]}))


def turn(speaker: str, text: str, emotion: str = "") -> dict:
    return {"speaker": speaker, "speaker_id": speaker.lower(), "text": text, "timestamp": "", "message_id": "",
            "reply_to": "", "edited": False, "emotion": emotion}  # fmt: skip


def convo(turns: list[dict], **extra) -> dict:
    return {
        "conversation_id": "c1",
        "title": "t",
        "turns": turns,
        "source": "s",
        "file": "f",
        "position": "line:1",
    } | extra


def test_conversation_windows_imitate_each_speaker_with_assistant_mask() -> None:
    turns = [turn("Ada", "Have you read the draft?"), turn("Ben", "Yes, twice."), turn("Ben", "The ending works."),
             turn("Ada", "Thank you, that is a relief.", "joy")]  # fmt: skip
    pre = DataPreprocessor(anonymizer=PrivacyAnonymizer("medium", "none"))  # names kept: the test reads them
    out = pre.preprocess_conversation_data([convo(turns)], context_window=10)
    assert sorted(out["speaker"]) == ["Ada", "Ben"]
    ada = out.filter(lambda r: r["speaker"] == "Ada")[0]
    assert [m["role"] for m in ada["messages"]] == ["assistant", "user", "assistant"]
    assert ada["messages"][1]["content"] == "Yes, twice.\nThe ending works."  # same speaker merged
    assert ada["text"] == (
        "<|assistant|>Have you read the draft?<|end|>\n<|user|>Yes, twice.\nThe ending works.<|end|>\n"
        "<|assistant|><|emotion:joy|>Thank you, that is a relief.<|end|>\n"
    )
    tok = load_tokenizer()
    learned = tok.tokenizer.decode(
        [i for i, m in zip(ada["input_ids"], ada["assistant_mask"], strict=True) if m], skip_special_tokens=False
    )
    assert "Have you read the draft?<|end|>" in learned and "Thank you, that is a relief.<|end|>" in learned
    assert "Yes, twice" not in learned and "<|user|>" not in learned
    ben = out.filter(lambda r: r["speaker"] == "Ben")[0]
    assert [m["role"] for m in ben["messages"]] == ["user", "assistant"]  # ends on Ben's last turn
    assert ben["assistant_text"] == "Yes, twice.\nThe ending works." and ben["position"] == "line:1+turn:0"


def test_group_chats_name_the_other_speakers_and_windows_advance() -> None:
    names = ["Ada", "Ben", "Cy"]
    turns = [turn(names[i % 3], f"message number {i} about the plot") for i in range(12)]
    out = DataPreprocessor(anonymizer=PrivacyAnonymizer("medium", "none")).preprocess_conversation_data(
        [convo(turns)], context_window=4, target_speakers="Cy"
    )
    assert set(out["speaker"]) == {"Cy"} and len(out) == 4
    first = out[0]["messages"]
    assert first[0] == {
        "role": "user",
        "content": "Ada: message number 0 about the plot\nBen: message number 1 about the plot",
        "emotion": "",
    }
    assert first[1]["content"] == "message number 2 about the plot"


def test_named_characters_are_imitated_by_default_and_long_windows_truncate() -> None:
    turns = [turn("Writer", "Tell me a story. " * 40), turn("Luna", "Once upon a time. " * 40)] * 3
    out = DataPreprocessor().preprocess_conversation_data(
        [convo(turns, meta='{"characters": ["Luna"]}')], context_window=6, max_length=128
    )
    assert set(out["speaker"]) == {"Luna"} and all(r["length"] <= 128 for r in out)
    assert out[0]["truncated"] and out[0]["messages"][-1]["role"] == "assistant"


class Redactor:
    name = "redact-test"

    def anonymize(self, text: str) -> str:
        return text.replace("Ada", "[NAME]")


def test_anonymization_hook_anonymizes_by_default_and_records_opt_outs() -> None:
    from models.training_data.anonymize import PassThroughAnonymizer

    pre = DataPreprocessor()
    out = pre.preprocess_conversation_data([convo([turn("Ada", "mail me at ada@example.com"), turn("Ben", "ok")])])
    assert pre.last_report is not None and pre.last_report.anonymization["applied"] is True
    assert "ada@example.com" not in "".join(out["text"]) and "<EMAIL_ADDRESS>" in "".join(out["text"])
    pre = DataPreprocessor(anonymizer=PassThroughAnonymizer(reason="test opt-out"))
    pre.preprocess_conversation_data([convo([turn("Ada", "hi Ben"), turn("Ben", "hi Ada")])])
    assert pre.last_report.anonymization["applied"] is False
    assert "test opt-out" in pre.last_report.anonymization["note"]
    pre = DataPreprocessor(anonymizer=Redactor())
    out = pre.preprocess_conversation_data([convo([turn("Ada", "hi Ben"), turn("Ben", "hi Ada")])])
    assert "Ada" not in "".join(out["text"]) and "[NAME]" in "".join(out["text"])
    assert pre.last_report.anonymization["applied"] is True
