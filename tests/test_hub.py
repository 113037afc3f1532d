"""`companion models pull` against a loopback fake Hub, and `companion run` on what it pulled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from companion.cli import app
from models.errors import ModelNotFoundError
from models.hub import HubError, default_name, parse_repo, pull
from models.lifecycle.version_control import ModelVersionControl
from models.runner import companion_for
from models.store import ModelStore, verify_manifest
from tests.fake_hub import FakeHub

runner = CliRunner()


@pytest.fixture
def hub(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeHub() as h:
        h.add("acme/Tiny-Chat", tiny_model_dir, {"pytorch_model.bin": b"\x80\x04K\x01.", "notes/extra.txt": b"x"})
        h.add("acme/pickles-only", tiny_model_dir / "config.json", {})  # replaced below
        h.repos["acme/pickles-only"] = ("f" * 40, {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04K\x01."})
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield h


def test_names_and_specs() -> None:
    assert parse_repo("Qwen/Qwen2.5-0.5B@v1") == ("Qwen/Qwen2.5-0.5B", "v1")
    assert parse_repo("Qwen/Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B", "main")
    assert default_name("Qwen/Qwen2.5-0.5B-Instruct") == "qwen2.5-0.5b-instruct"
    for bad in ("qwen", "a/b/c", "../x/y", "a/..", ""):
        with pytest.raises(HubError, match="not a Hugging Face model id"):
            parse_repo(bad)


def test_pull_keeps_safe_files_pins_the_commit_and_publishes_a_verified_version(hub: FakeHub) -> None:
    info = pull("acme/Tiny-Chat", progress=False)
    commit = hub.repos["acme/Tiny-Chat"][0]
    assert (info.category, info.name) == ("base", "tiny-chat")
    folder = ModelStore().open("base", "tiny-chat")
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "source.json", "manifest.json"} <= names
    assert "pytorch_model.bin" not in names and "notes" not in names  # never the pickle, nothing unlisted
    source = json.loads((folder / "source.json").read_text())
    assert source["commit"] == commit and source["repo"] == "acme/Tiny-Chat" and source["requested_revision"] == "main"
    assert "pytorch_model.bin" in source["skipped"]
    verify_manifest(folder)
    assert ModelVersionControl().show("base/tiny-chat").lineage["hub"]["commit"] == commit
    # every file came from the pinned commit, not from a moving branch
    assert all(f"/resolve/{commit}/" in path for method, path, _ in hub.requests if "/resolve/" in path)
    assert not (Path(info.path).parents[3] / "downloads").exists() or not any(
        (Path(info.path).parents[3] / "downloads").rglob("*.safetensors")
    )


def test_pull_at_a_revision_and_the_errors_a_user_can_fix(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = hub.repos["acme/Tiny-Chat"][0]
    assert pull(f"acme/Tiny-Chat@{commit}", name="pinned", progress=False).name == "pinned"
    with pytest.raises(HubError, match="no revision 'v9'"):
        pull("acme/Tiny-Chat@v9", progress=False)
    with pytest.raises(HubError, match="no model acme/nope"):
        pull("acme/nope", progress=False)
    with pytest.raises(HubError, match=r"only pickled weights \(pytorch_model.bin\)"):
        pull("acme/pickles-only", progress=False)
    assert ModelStore().list_versions("base", "pickles-only") == []
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubError, match="cannot reach"):
        pull("acme/Tiny-Chat", progress=False)


def test_an_interrupted_download_resumes(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection drops a third of the way into the weights: the client asks for the rest
    (a byte range from where it stopped) and the published file is whole."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # small chunks, so part of the body lands
    size = len(hub.repos["acme/Tiny-Chat"][1]["model.safetensors"])
    hub.fail_after["model.safetensors"] = size // 3
    pull("acme/Tiny-Chat", progress=False)
    gets = [r for m, p, r in hub.requests if p.endswith("model.safetensors") and m == "GET"]
    assert len(gets) == 2 and gets[0] is None and gets[1] is not None, gets
    start = int(gets[1].removeprefix("bytes=").split("-")[0])
    assert 0 < start <= size // 3
    verify_manifest(ModelStore().open("base", "tiny-chat"))


def test_cli_pull_then_run_the_pulled_model_as_a_companion(hub: FakeHub, user_config) -> None:
    user_config("models: {}\n")
    r = runner.invoke(app, ["models", "pull", "acme/Tiny-Chat", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["name"] == "tiny-chat"
    r = runner.invoke(app, ["run", "tiny-chat", "Hello there", "-n", "6", "--seed", "1"])
    assert r.exit_code == 0, r.output
    luna = companion_for("tiny-chat", character="luna", max_length=6)
    assert luna.card.name == "Luna" and luna.base.ref.folder == ModelStore().open("base", "tiny-chat")
    reply = luna.generate_response(message="I finished my chapter!", emotional_state="joy", seed=2)
    assert reply.emotion == "joy" and reply.character == "Luna"


def test_run_pulls_a_hub_model_only_when_allowed(hub: FakeHub, user_config) -> None:
    user_config("models: {}\n")
    r = runner.invoke(app, ["run", "acme/Tiny-Chat", "Hi", "-n", "4"])
    assert r.exit_code == 2 and "--yes" in r.output
    assert ModelStore().list_versions("base", "tiny-chat") == []
    with pytest.raises(ModelNotFoundError, match="not pulled"):
        companion_for("acme/Tiny-Chat", confirm=lambda q: False)
    r = runner.invoke(app, ["run", "acme/Tiny-Chat", "Hi", "-n", "4", "--yes", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert ModelStore().list_versions("base", "tiny-chat")
    plain = companion_for("acme/Tiny-Chat", max_length=4)  # pulled once: no second pull
    assert plain.card.name == "Assistant" and len([p for _, p, _ in hub.requests if "/tree/" in p]) == 1


def test_run_a_model_on_an_openai_compatible_server(companion_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.openai_fake_server import FakeOpenAIServer

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with FakeOpenAIServer() as server:
        r = runner.invoke(app, ["run", "fake-model", "Hi!", "-c", "luna", "--base-url", server.url, "-n", "8"])
        assert r.exit_code == 0 and "Hello there, friend." in r.output, r.output
        system = next(q.body["messages"][0] for q in server.requests if q.path.endswith("/chat/completions"))
        assert system["role"] == "system" and "Luna" in system["content"]  # the card reached the server
    with pytest.raises(ModelNotFoundError, match="--base-url"):
        companion_for("openai:fake-model")
