"""NER in the default install (issue 22): the test environment, built by `make test` from
pyproject's dependencies alone, detects people, places and organisations."""

from __future__ import annotations

import logging

import pytest

from models.privacy.anonymizer import NO_NER, Anonymizer, find_spacy_model


def test_the_default_install_detects_mary_jones_as_a_person() -> None:
    assert find_spacy_model("auto") is not None, NO_NER
    anon = Anonymizer("medium", key=b"k" * 32)
    (spans,) = anon.analyze(["Mary Jones SSN 536-22-1479"])
    kinds = {e: "Mary Jones SSN 536-22-1479"[s:t] for e, s, t, _ in spans}
    assert kinds.get("PERSON") == "Mary Jones" and kinds.get("US_SSN") == "536-22-1479"
    out = anon.anonymize("Mary Jones SSN 536-22-1479")
    assert "Mary" not in out and "Jones" not in out and "536-22-1479" not in out


def test_medium_removes_identities_and_high_every_date() -> None:
    text = (
        "Mary Jones moved to Lisbon in March 2019 to work for Tagus Press Ltd; her zip was 94105. "
        "Later Jones wrote to me on Monday."
    )
    medium = Anonymizer("medium", key=b"k" * 32).anonymize(text)
    for gone in ("Mary", "Jones", "Lisbon", "Tagus Press", "March 2019", "94105"):
        assert gone not in medium, (gone, medium)
    assert "Monday" in medium  # medium keeps dates without digits
    high = Anonymizer("high", key=b"k" * 32).anonymize(text)
    assert "Monday" not in high and "2019" not in high


def test_without_a_spacy_model_the_commands_say_names_are_not_detected(caplog: pytest.LogCaptureFixture) -> None:
    import models.privacy.anonymizer as mod

    mod._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="models.privacy"):
        anon = Anonymizer("medium", key=b"k" * 32, spacy_model="auto")
        if anon.ner_model is None:  # pragma: no cover - the default install has one
            assert NO_NER in caplog.text
    from typer.testing import CliRunner

    from companion.cli import app

    r = CliRunner().invoke(app, ["privacy", "anonymize", "--spacy-model", "en_core_web_xx"], input="Mary Jones")
    assert r.exit_code == 1 and "not installed" in r.output


def test_the_cli_warns_when_no_ner_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import models.privacy.anonymizer as mod
    from companion.cli import app

    monkeypatch.setattr(mod, "_SPACY_MODELS", ("not_a_spacy_model",))
    r = CliRunner().invoke(app, ["privacy", "anonymize", "-l", "medium"], input="Mary Jones SSN 536-22-1479")
    assert r.exit_code == 0 and "NOT detected" in r.output and "<US_SSN>" in r.output
