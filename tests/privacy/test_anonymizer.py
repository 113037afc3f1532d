"""Anonymization levels, chat recognizers, keyed pseudonyms and the shapes of data it accepts.

Runs with `spacy_model="none"` (regex, checksum and chat recognizers only: what works with no
spaCy model installed), except one test that uses NER when a spaCy English model is installed.
"""

from __future__ import annotations

import pytest

from models.errors import PrivacyError
from models.privacy.anonymizer import Anonymizer, find_spacy_model

KEY = b"k" * 32
CHAT = (
    "hey @quill_fan it's <@123456789012345678>, my name is Ada Byron. mail ada@example.com or "
    "call (212) 555-0199, card 4111 1111 1111 1111, server 10.1.2.3. join discord.gg/writers "
    "and see https://files.example.com/draft?access_token=abc123. I live at 221b Baker Street, "
    "I'm 35 years old, born on 3 March 1990; we met on 2021-05-04."
)


def anon(level: str, key: bytes = KEY) -> Anonymizer:
    return Anonymizer(level, key=key, spacy_model="none")


def test_low_removes_direct_identifiers_only() -> None:
    out = anon("low").anonymize(CHAT)
    for gone in ("ada@example.com", "555-0199", "4111 1111", "10.1.2.3", "access_token=abc123", "123456789012345678"):
        assert gone not in out
    assert "<EMAIL_ADDRESS>" in out and "<CREDIT_CARD>" in out and "<PHONE_NUMBER>" in out
    assert "@quill_fan" in out and "Ada Byron" in out and "Baker Street" in out  # medium's job


def test_medium_adds_names_handles_invites_addresses_as_pseudonyms() -> None:
    out = anon("medium").anonymize(CHAT)
    for gone in ("@quill_fan", "Ada Byron", "discord.gg/writers", "221b Baker Street"):
        assert gone not in out
    assert "@user_" in out and "Person_" in out and "<STREET_ADDRESS>" in out
    assert "35 years old" in out  # high's job
    assert "2021-05-04" not in out and "<DATE>" in out  # exact dates go from medium up (they point at someone)


def test_high_adds_ages_birth_dates_and_generalises_dates() -> None:
    out = anon("high").anonymize(CHAT)
    assert "35 years old" not in out and "3 March 1990" not in out and "2021-05-04" not in out
    assert "<AGE>" in out and "<DATE_OF_BIRTH>" in out and "met on <DATE>." in out  # not even the year stays
    assert anon("high").anonymize("see you today") == "see you today"  # relative words are not dates of anyone


def test_pseudonyms_are_consistent_and_keyed() -> None:
    a = anon("medium")
    texts = ["thanks @Quill_Fan!", "@quill_fan wrote chapter two", "my name is Ada and @bob replied"]
    out = a.anonymize_texts(texts)
    handle = a.pseudonym("USER_HANDLE", "@quill_fan")
    assert out[0] == f"thanks {handle}!" and out[1].startswith(handle)  # one person, one pseudonym
    assert a.pseudonym("USER_HANDLE", "@bob") != handle
    assert anon("medium", key=b"x" * 32).pseudonym("USER_HANDLE", "@quill_fan") != handle
    assert anon("medium").pseudonym("PERSON", "Ada") == a.pseudonym("PERSON", "  ada ")


def test_emails_are_not_read_as_handles_and_plain_text_is_untouched() -> None:
    a = anon("medium")
    assert a.anonymize("write to me@example.org") == "write to <EMAIL_ADDRESS>"
    prose = "The lighthouse keeper wrote a letter every evening, though no ship ever came."
    assert a.anonymize(prose) == prose
    assert a.anonymize("") == "" and a.anonymize("   ") == "   "


def test_records_conversations_lists_and_datasets() -> None:
    from datasets import Dataset

    a = anon("medium")
    record = {"id": "ada@example.com", "text": "mail ada@example.com", "meta": {"note": "@ada"}, "n": 3}
    out = a.anonymize_data(record)
    assert out["id"] == "ada@example.com"  # identifiers of our own records are not free text
    assert out["text"] == "mail <EMAIL_ADDRESS>" and out["meta"]["note"].startswith("@user_") and out["n"] == 3
    convo = [{"role": "user", "content": "I'm @ada"}, {"role": "assistant", "content": "Hi!"}]
    assert a.anonymize_data(convo)[0]["content"] == f"I'm {a.pseudonym('USER_HANDLE', '@ada')}"
    ds = Dataset.from_list(
        [{"text": "call 212-555-0199", "turns": [{"speaker": "ada", "text": "@bob hi"}]} for _ in range(5)]
    )
    done = a.anonymize_data(ds)
    assert isinstance(done, Dataset) and len(done) == 5
    assert done[0]["text"] == "call <PHONE_NUMBER>" and done[4]["turns"][0]["text"].startswith("@user_")
    assert a.anonymize_data(("a@b.co", 1)) == ("<EMAIL_ADDRESS>", 1)


def test_bad_level_and_bad_spacy_model_are_clear_errors() -> None:
    with pytest.raises(PrivacyError, match="anonymization_level 'extreme'"):
        Anonymizer("extreme")
    with pytest.raises(PrivacyError, match="privacy.spacy_model: 'no_such_model' is not installed"):
        Anonymizer("high", spacy_model="no_such_model")


def test_ner_finds_people_and_places_when_a_spacy_model_is_installed() -> None:
    model = find_spacy_model("auto")
    if model is None:
        pytest.skip("no spaCy English model installed (docs/privacy.md says how to add one)")
    out = Anonymizer("high", key=KEY, spacy_model=model).anonymize("Yesterday Margaret Thatcher flew to Paris.")
    assert "Margaret Thatcher" not in out and "Paris" not in out


def test_seed_data_privacy_anonymize_sample_runs_as_written() -> None:
    from models.privacy import PrivacyManager

    conversation_data = [
        {"role": "user", "content": "Hi Luna! I'm @ada_writes, reach me at ada@example.com"},
        {"role": "assistant", "content": "Hello! Shall we write?"},
    ]
    privacy_manager = PrivacyManager()

    # Anonymize training data
    anonymized_data = privacy_manager.anonymize_data(raw_data=conversation_data, anonymization_level="high")

    # Check privacy compliance
    compliance_status = privacy_manager.check_compliance(
        model_name="user_personalization", privacy_standards=["GDPR", "CCPA"]
    )
    text = anonymized_data[0]["content"]
    assert "ada@example.com" not in text and "@ada_writes" not in text and "Luna" in text  # characters stay
    assert {c.standard for c in compliance_status.checks} == {"GDPR", "CCPA"}
    assert compliance_status.status in ("compliant", "non-compliant")


def test_pipeline_hook_anonymizes_and_records_opt_outs() -> None:
    from models.audit import AuditLog
    from models.training_data import DataPreprocessor
    from models.training_data.anonymize import PassThroughAnonymizer, default_anonymizer

    assert default_anonymizer().name == "presidio-medium"
    pre = DataPreprocessor()
    out = pre.preprocess_writing_data([{"text": "Write to ada@example.com, love @ada"}], max_length=64)
    assert "ada@example.com" not in out[0]["text"] and "@ada" not in out[0]["text"]
    assert pre.last_report.anonymization["applied"] is True
    DataPreprocessor(anonymizer=PassThroughAnonymizer("raw books, public domain", user="ada")).preprocess_writing_data(
        [{"text": "x y z"}], max_length=64
    )
    rows = AuditLog().show(action="anonymization_opt_out")
    assert rows and rows[-1].user == "ada" and rows[-1].detail["reason"] == "raw books, public domain"


def test_training_anonymization_off_is_an_explicit_recorded_opt_out(user_config) -> None:
    from models.training_data.anonymize import anonymization_report, default_anonymizer

    user_config("privacy:\n  training_anonymization: 'off'\n")
    report = anonymization_report(default_anonymizer())
    assert report["applied"] is False and "privacy.training_anonymization: off" in report["note"]
