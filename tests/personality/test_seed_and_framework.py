"""The seed's samples exactly as written, the framework's plugin registry, the CLI, the demo."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.errors import PluginError
from tests.personality.conftest import card_json, v3_card

runner = CliRunner()


def test_seed_personality_and_model_manager_samples() -> None:
    # --- "Personality Models" -------------------------------------------------------------
    from models.personality import load_personality_model

    # Load personality model
    personality_model = load_personality_model("luna_personality")

    # Generate personality-based response
    response = personality_model.generate_response(
        context="romantic_conversation",
        emotional_state="romantic"
    )  # fmt: skip
    assert isinstance(response, str) and response.emotion == "romantic" and response.model == "luna"

    # --- "Model Loading" --------------------------------------------------------------------
    from models.model_manager import ModelManager

    # Initialize model manager
    model_manager = ModelManager()

    # Load specific model
    personality_model = model_manager.load_model("personality", "luna")
    assert personality_model.card.name == "Luna" and "romantic_conversation" in personality_model.contexts()


def test_seed_framework_and_plugin_samples() -> None:
    context = "romantic_conversation"
    emotional_state = "romantic"

    # --- "Framework Integration" (the personality part) -----------------------------------
    from framework.framework_tool import get_framework
    from models.model_manager import ModelManager  # noqa: F401 - as in the sample

    # Get framework instance
    framework = get_framework()

    # Load models through framework
    personality_plugin = framework.get_plugin("personality_engine")

    # Use models
    response = personality_plugin.generate_response(context, emotional_state)
    assert response.emotion == "romantic" and response.context == "romantic_conversation"
    assert get_framework() is framework and framework.get_plugin("personality_engine") is personality_plugin

    # --- "Plugin Integration" -------------------------------------------------------------
    # Personality engine integration
    from framework.plugins.personality_engine import PersonalityEngine

    personality_engine = PersonalityEngine()
    personality_engine.load_model("luna_personality")

    # Generate personality-based response
    response = personality_engine.generate_response(
        message="Hello, how are you?",
        emotional_context="romantic"
    )  # fmt: skip
    assert isinstance(response, str) and response.emotion == "romantic"


def test_unknown_plugin_lists_the_known_ones() -> None:
    from framework.framework_tool import get_framework

    with pytest.raises(PluginError, match=r"Known plugins: .*personality_engine"):
        get_framework().get_plugin("no_such_engine")


def _fake_distribution(site: Path, module: str, source: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[companion.plugins]\n{module} = {module}\n")


def test_third_party_plugins_come_from_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from framework.framework_tool import Framework

    _fake_distribution(
        tmp_path,
        "echo_plugin",
        """
        from framework.hookspecs import hookimpl

        class Echo:
            def __init__(self, framework):
                self.framework = framework

            def generate_response(self, message=None, **_):
                return f"echo: {message}"

        @hookimpl
        def register_plugins(register):
            register("echo_engine", Echo)
            register("personality_engine", Echo)  # built-ins registered first keep their name

        @hookimpl
        def register_model_types(register):
            from pydantic import BaseModel

            class EchoParams(BaseModel):
                word: str = "hi"

            register("echo_type", EchoParams, lambda manager, request: request.params.word)
        """,
    )
    _fake_distribution(tmp_path, "broken_plugin", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fw = Framework()
    echo = fw.get_plugin("echo_engine")
    assert echo.generate_response(message="hi") == "echo: hi" and echo.framework is fw
    assert type(fw.get_plugin("personality_engine")).__name__ == "PersonalityEngine"
    sources = {p.name: p.source for p in fw.list_plugins()}
    assert sources["echo_engine"] == "entrypoint:echo_plugin:echo_plugin"
    assert sources["personality_engine"].startswith("builtin:")
    assert "missing dependency xyz" in fw.failed_plugins["broken_plugin"]
    with pytest.raises(PluginError, match="Failed to load: .*xyz"):
        fw.get_plugin("broken")
    assert "echo_engine" not in Framework(load_entrypoints=False).plugin_names()
    # the same plugin added a model type to the ModelManager
    (tmp_path / "home.yaml").write_text(
        "models:\n  toys:\n    parrot: {type: echo_type, path: '.', parameters: {word: hello}}\n"
    )
    from models.model_manager import ModelManager

    assert ModelManager(tmp_path / "home.yaml").load_model("toys", "parrot") == "hello"


def test_plugin_engine_conflicting_emotions(personality_config) -> None:
    from framework.plugins.personality_engine import PersonalityEngine

    engine = PersonalityEngine()
    engine.load_model("ada")
    with pytest.raises(Exception, match="conflicts"):
        engine.generate_response(emotional_state="joy", emotional_context="anger")
    assert engine.generate_response(message="hi", emotional_context="joy").emotion == "joy"


def test_cli_cards(tmp_path: Path) -> None:
    from companion.cli import app

    src = tmp_path / "ada.json"
    src.write_text(card_json(v3_card()), encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": 3}}))
    r = runner.invoke(app, ["cards", "validate", str(src), str(bad)])
    assert r.exit_code == 1 and "ok" in r.output and "data.name" in r.output
    r = runner.invoke(app, ["cards", "import", str(src)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "list", "--json"])
    assert ("personality", "ada") in {(m["category"], m["name"]) for m in json.loads(r.output)}
    from models.model_manager import ModelManager

    imported = ModelManager().load_model("personality", "ada")  # on the chat model, with its emotion tokens
    assert imported.info()["base_model"]["name"] == "companion-chat" and imported.control == "token"
    r = runner.invoke(app, ["cards", "import", str(src)])
    assert r.exit_code == 1 and "already exists" in r.output
    out = tmp_path / "ada.png"
    r = runner.invoke(app, ["cards", "export", "ada", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["cards", "show", str(out), "--json"])
    assert json.loads(r.output)["nickname"] == "Addie"
    r = runner.invoke(app, ["cards", "export", "luna", str(tmp_path / "luna.json"), "--spec", "v2"])
    assert r.exit_code == 0 and json.loads((tmp_path / "luna.json").read_text())["spec"] == "chara_card_v2"


def test_cli_chat_with_a_personality(personality_config, tmp_path: Path) -> None:
    from companion.cli import app

    saved = tmp_path / "chat.json"
    script = (
        f"hello there\n/emotion romantic\nI love you\n/state\n/scenario\n/scenario storm_night\n/save {saved}\n/quit\n"
    )
    r = runner.invoke(app, ["chat", "ada", "-n", "6", "--seed", "1"], input=script)
    assert r.exit_code == 0, r.output
    assert "You came!" in r.output and "(romantic;" in r.output and "storm_night" in r.output
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant", "user", "assistant"]
    assert messages[0]["details"]["greeting"] and messages[-1]["details"]["emotion"] == "romantic"


def test_cli_chat_for_a_user_records_feedback(user_config, personality_dir: Path, tiny_classifier_dir: Path) -> None:
    from companion.cli import app
    from models.personalization import storage

    user_config(
        "models:\n  personality:\n    ada:\n      type: personality\n"
        f"      path: '{personality_dir}'\n"
        f"      parameters: {{max_length: 12, seed: 3, classifier: '{tiny_classifier_dir}'}}\n"
        'security:\n  users:\n    ana:\n      grants: [{models: "*", level: generate}]\n'
    )
    script = (
        "/good\nMy name is Ana and I write mysteries.\n/good\n/regen\n/bad\n/swipe 1\n"
        "Tell me more.\n/edit A better answer.\n/help\n/quit\n"
    )
    r = runner.invoke(app, ["chat", "ada", "-n", "6", "--seed", "1", "--user", "ana"], input=script)
    assert r.exit_code == 0, r.output
    assert "personalized for ana" in r.output and "no reply to rate yet" in r.output
    assert "predicted satisfaction" in r.output and "/regen, /swipe" in r.output and "/good, /bad" in r.output
    assert "(2/2)" in r.output and "(1/2)" in r.output  # the regenerated answer, then swiped back
    storage.flush()
    kinds = sorted(row["kind"] for row in storage.list_feedback(user="ana"))
    # /good, /regen (on the first answer), /bad (on the second), the first kept over the second, the edit
    assert kinds == ["choice", "edit", "regenerate", "thumbs", "thumbs"], kinds
    r = runner.invoke(app, ["chat", "base/companion-base", "--user", "ana"], input="/quit\n")
    assert r.exit_code == 2 and "needs a personality" in r.output


@pytest.mark.slow
def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from companion import demo

    demo.main()
    text = capsys.readouterr().out
    assert "A conversation with Luna" in text and "(caring)" in text and "done in" in text
    demo.main()  # a fresh temporary home each run: the same story, replies and learning again
    again = capsys.readouterr().out

    def steady(out: str) -> list[str]:
        return [
            line for line in out.splitlines() if "tokens/s" not in line and "done in" not in line and " ms" not in line
        ]

    assert steady(again) == steady(text)


def test_every_builtin_personality_loads_and_speaks() -> None:
    from models.model_manager import ModelManager

    manager = ModelManager()
    names = [i.name for i in manager.list_models("personality")]
    assert {"luna", "marlowe", "quill"} <= set(names)
    models = [manager.load_model("personality", n) for n in ("luna", "marlowe", "quill")]
    # each built-in character has its own LoRA folded into a private copy of the shared base
    adapters = [m.base.engine.info()["adapter"] for m in models]
    assert all(a["modules"] == 4 * 7 and a["base"] == "builtin:companion-chat" for a in adapters)
    assert len({id(m.base) for m in models}) == 3
    assert manager.load_model("personality", "luna").base is models[0].base  # loaded once per character
    assert {m.character for m in models} == {"Luna", "Marlowe", "Quill"}
    for m in models:
        assert m.greeting() and m.contexts() and m.ext.default_context in m.contexts()
        r = m.generate_response(message="Hello!", max_length=8, seed=1)
        assert r.model in names and r.emotion in m.labels


def test_public_api() -> None:
    import framework.framework_tool as ft
    import models.personality as mp

    for name in mp.__all__:
        assert getattr(mp, name) is not None
    assert sorted(mp.__all__) == sorted(dir(mp))
    for name in ft.__all__:
        assert hasattr(ft, name)
