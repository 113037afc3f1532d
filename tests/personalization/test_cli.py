"""`companion users ...`: thin commands over the library, errors as one line and exit 1."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from companion.cli import app

runner = CliRunner()


def test_prefs_set_show_and_clear() -> None:
    r = runner.invoke(app, ["users", "prefs", "sam", "length=short", "tone=warm,playful", "emoji=true", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["length"] == "short" and data["tone"] == ["warm", "playful"] and data["emoji"] == "some"
    r = runner.invoke(app, ["users", "prefs", "sam", "length=tiny"])
    assert r.exit_code == 1 and "length: Input should be 'short', 'medium' or 'long'" in r.output
    r = runner.invoke(app, ["users", "show", "sam", "--json"])
    assert json.loads(r.stdout)["preferences"]["length"] == "short"  # the bad call changed nothing
    assert runner.invoke(app, ["users", "prefs", "sam", "--clear"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["users", "show", "sam", "--json"]).stdout)["preferences"] == {}


def test_memory_feedback_export_and_forget() -> None:
    from models.personalization import load_personalization_model

    r = runner.invoke(app, ["users", "memory", "sam", "--add", "Has a cat called Ink", "--kind", "person", "--json"])
    assert r.exit_code == 0, r.output
    facts = json.loads(r.stdout)
    assert facts[0]["text"] == "Has a cat called Ink"
    fid = str(facts[0]["id"])
    r = runner.invoke(app, ["users", "memory", "sam", "--edit", fid, "Has two cats", "--json"])
    assert json.loads(r.stdout)[0]["text"] == "Has two cats"
    answer = load_personalization_model("user_prefs").adapt_response("Hello there, friend.", user="sam")
    r = runner.invoke(app, ["users", "feedback", answer.response_id, "--rating", "5", "--stars"])
    assert r.exit_code == 0 and "recorded rating for sam" in r.output
    r = runner.invoke(app, ["users", "feedback", "pr-unknown", "--rating", "1"])
    assert r.exit_code == 1 and "no logged response" in r.output
    r = runner.invoke(app, ["users", "export", "sam"])
    exported = json.loads(r.stdout)
    assert exported["memory"][0]["text"] == "Has two cats" and len(exported["feedback"]) == 1
    assert "user_prefs" in exported["learners"]
    r = runner.invoke(app, ["users", "forget", "sam", "--yes"])
    assert r.exit_code == 0 and "user_memory: 1" in r.output
    assert json.loads(runner.invoke(app, ["users", "memory", "sam", "--json"]).stdout) == []
