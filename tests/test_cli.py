"""The CLI: thin over the library, clear one-line errors, JSON for scripts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from companion.cli import app

runner = CliRunner()


@pytest.fixture
def tiny_config(user_config):
    return user_config("models:\n  base:\n    tiny: {type: transformer, path: '{tiny}', parameters: {max_length: 8}}\n")


def test_models_list_json(tiny_config) -> None:
    r = runner.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0, r.output
    names = {(m["category"], m["name"]) for m in json.loads(r.output)}
    assert ("base", "tiny") in names and ("base", "companion-base") in names


def test_models_list_table(tiny_config) -> None:
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "tiny" in r.output


def test_models_show(tiny_config) -> None:
    r = runner.invoke(app, ["models", "show", "base/tiny", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["type"] == "transformer" and "model.safetensors" in data["files"]


def test_generate_streams_and_json(tiny_config) -> None:
    r = runner.invoke(app, ["generate", "The lighthouse", "-m", "tiny", "-n", "5", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("The lighthouse")
    r = runner.invoke(app, ["generate", "The", "-m", "base/tiny", "-n", "5", "--seed", "1", "--json"])
    data = json.loads(r.stdout)
    assert data["completion_tokens"] <= 5 and isinstance(data["text"], str)


def test_generate_with_a_personality_replies_in_character_and_reads_pipes(tiny_config) -> None:
    """`companion generate -m luna` crashed ('PersonalityModel' object has no attribute 'stream');
    now the personality answers the message, and the prompt may come from a pipe (like `llm -m`)."""
    r = runner.invoke(app, ["generate", "-m", "luna", "Hello, Luna!", "-n", "8", "--seed", "1", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["message"] == "Hello, Luna!" and data["text"] and data["emotion"] in (
        "neutral", "joy", "romantic", "caring", "playful", "curious", "surprise", "sadness", "fear", "anger",
    )  # fmt: skip
    piped = runner.invoke(app, ["generate", "-m", "luna", "-n", "8", "--seed", "1"], input="Hello, Luna!\n")
    assert piped.exit_code == 0, piped.output
    assert piped.stdout.strip() and "Hello, Luna!" not in piped.stdout  # a reply, not an echo
    plain = runner.invoke(app, ["generate", "-m", "tiny", "-n", "3", "--seed", "1"], input="The lighthouse")
    assert plain.exit_code == 0 and plain.stdout.startswith("The lighthouse")
    empty = runner.invoke(app, ["generate", "-m", "tiny"], input="")
    assert empty.exit_code != 0 and "empty" in empty.output


def test_unknown_model_is_one_clear_line(tiny_config) -> None:
    r = runner.invoke(app, ["generate", "x", "-m", "tinny"])
    assert r.exit_code == 1
    assert "error:" in r.output and "Did you mean 'tiny'" in r.output
    assert "Traceback" not in r.output


def test_bad_config_is_one_clear_error(user_config) -> None:
    user_config("models:\n  base:\n    x: {type: transformer, path: builtin:companion-base, oops: 1}\n")
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 1
    assert "models.base.x.oops: unknown key" in r.output and "Traceback" not in r.output


def test_chat_session(tiny_config) -> None:
    r = runner.invoke(app, ["chat", "tiny", "-n", "4", "--seed", "2"], input="hello\n/reset\nagain\n/quit\n")
    assert r.exit_code == 0, r.output
    assert r.output.count("bot>") == 2


def test_home_option(tmp_path, tiny_config) -> None:
    other = tmp_path / "elsewhere"
    r = runner.invoke(app, ["--home", str(other), "models", "list", "--json"])
    assert r.exit_code == 0
    assert "tiny" not in r.output  # the other home has no user config
    assert other.exists()


def test_doctor_reports_each_check(tiny_config) -> None:
    r = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    for name in (
        "environment",
        "configuration",
        "model paths",
        "store integrity",
        "metrics database",
        "training data",
        "framework integration",
    ):
        assert name in checks
    assert checks["configuration"]["status"] == "ok"


def test_doctor_names_a_broken_path(user_config) -> None:
    user_config("models:\n  personality:\n    ghost: {type: transformer, path: models/personality/ghost}\n")
    r = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["model paths"]["status"] == "fail"
    assert "ghost" in checks["model paths"]["detail"]
    assert r.exit_code == 1


def test_a_missing_file_is_one_line_naming_it(companion_home) -> None:
    r = runner.invoke(app, ["privacy", "anonymize", "no-such-chats.jsonl", "-l", "medium"])
    assert r.exit_code == 1 and "no-such-chats.jsonl: No such file or directory" in r.output
    assert "Traceback" not in r.output


def test_generate_with_a_system_message_chats_with_a_plain_model(tiny_config) -> None:
    r = runner.invoke(app, ["generate", "Name a dragon.", "-m", "tiny", "-s", "You are terse.", "-n", "4", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["system"] == "You are terse." and isinstance(data["text"], str)
    r = runner.invoke(app, ["generate", "Hi", "-m", "luna", "-s", "You are terse."])
    assert r.exit_code == 2 and "--system is for plain models" in r.output


def test_generate_and_chat_reach_a_remote_server_from_the_command_line(companion_home, monkeypatch) -> None:
    from tests.openai_fake_server import FakeOpenAIServer

    monkeypatch.setenv("FAKE_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with FakeOpenAIServer(api_key="sk-test") as server:
        args = ["--base-url", server.url, "--api-key-env", "FAKE_KEY"]
        r = runner.invoke(app, ["generate", "Hello", "-m", "fake-model", "-s", "Be brief.", *args])
        assert r.exit_code == 0 and "Hello there, friend." in r.output, r.output
        r = runner.invoke(app, ["chat", "fake-model", *args], input="Hi!\n/quit\n")
        assert r.exit_code == 0 and "Hello there, friend." in r.output, r.output
        sent = [req for req in server.requests if req.path.endswith("/chat/completions")]
        assert sent and sent[0].body["messages"][0] == {"role": "system", "content": "Be brief."}
    r = runner.invoke(app, ["generate", "Hello", "-m", "openai:fake-model"])
    assert r.exit_code == 2 and "--base-url" in r.output


def test_help_shows_flags_bare_and_options_with_their_type() -> None:
    r = runner.invoke(app, ["privacy", "erase", "--help"])
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if "--yes" in x)
    assert "<bool>" not in line and "Do not ask" in line
    r = runner.invoke(app, ["generate", "--help"])
    seed = next(x for x in r.output.splitlines() if "--seed" in x)
    assert "<int>" in seed or "INTEGER" in seed  # typer 0.29 / older typer (the federated extra pins it)


def test_piped_tables_are_not_cut_at_80_columns(tiny_config) -> None:
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "builtin:companion-chat" in r.output and "…" not in r.output
