"""One plugin registry (issue 17 item 1): a model type and an engine from an installed plugin work
in a plain `ModelManager()` and through `companion serve`, with nothing else called first.

Before, a plugin's model type was rejected ("unknown model type") until something had called
`get_framework()`, and engines could not come from plugins at all.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

PLUGIN = '''
from collections.abc import Iterator

from pydantic import BaseModel

from models.config import TransformerParams
from models.engines.base import Engine, GenerationStats
from models.hookspecs import hookimpl


class ParrotEngine(Engine):
    """Repeats the last user message backwards: a deterministic engine for a `.parrot` file."""

    name = "parrot"

    def __init__(self, path):
        super().__init__()
        self.path = path

    def _say(self, text, params) -> Iterator[str]:
        words = text.split()[::-1][: params.max_new_tokens]
        self.last_stats = GenerationStats(prompt_tokens=len(text.split()), completion_tokens=len(words),
                                          finish_reason="stop")
        for w in words:
            yield w + " "

    def stream(self, prompt, params):
        return self._say(prompt, params)

    def stream_chat(self, messages, params):
        return self._say(messages[-1]["content"], params)

    def score(self, texts):
        return [-float(len(t)) for t in texts]


class ShoutParams(BaseModel):
    volume: int = 3


class Shouter:
    def __init__(self, volume):
        self.volume = volume

    def shout(self, text):
        return text.upper() + "!" * self.volume


@hookimpl
def register_engines(register):
    register("parrot", lambda ref, params, adapter: ParrotEngine(ref.raw),
             supports=lambda ref, params: ref.raw.endswith(".parrot"), priority=5)


@hookimpl
def register_model_types(register):
    register("shout", ShoutParams, lambda manager, request: Shouter(request.params.volume))
'''


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution `parrot_plugin` with a `companion.plugins` entry point, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "parrot_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "parrot_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: parrot-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[companion.plugins]\nparrot = parrot_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    from models.plugins import reset_plugins

    reset_plugins()
    return site


def _config(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "echo.parrot"
    model.write_text("a parrot model")
    (home / "config.yaml").write_text(
        "models:\n"
        "  base:\n"
        f"    parrot: {{type: transformer, path: '{model}', parameters: {{max_length: 8}}}}\n"
        "  toys:\n"
        "    loud: {type: shout, path: '.', parameters: {volume: 2}}\n"
    )


def test_a_plain_model_manager_uses_the_plugins_type_and_engine(
    installed: Path, companion_home: Path, tmp_path: Path
) -> None:
    from models.engines import engine_names
    from models.model_manager import ModelManager
    from models.registry import loader_types

    _config(companion_home, tmp_path)
    manager = ModelManager()  # no get_framework(), no import of the plugin by hand
    assert manager.load_model("toys", "loud").shout("hi") == "HI!!"
    parrot = manager.load_model("base", "parrot")
    assert parrot.engine_name == "parrot"
    assert parrot.chat([{"role": "user", "content": "one two three"}]) == "three two one "
    assert "shout" in loader_types() and engine_names()[0] == "parrot"
    # the built-ins came through the same hooks
    from models.plugins import model_types

    assert model_types()["transformer"].source == "builtin:models.builtin_plugins"
    assert model_types()["shout"].source == "entrypoint:parrot-plugin:parrot"


def test_the_plugins_engine_serves_over_the_api(installed: Path, companion_home: Path, tmp_path: Path) -> None:
    from companion.server import ServerSettings
    from tests.serving.conftest import start_server

    _config(companion_home, tmp_path)
    running = start_server(ServerSettings(host="127.0.0.1", port=0))
    try:
        ids = [m["id"] for m in httpx.get(running.base_url + "/models").json()["data"]]
        assert "parrot" in ids
        r = httpx.post(
            running.base_url + "/chat/completions",
            json={
                "model": "parrot",
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a b"}],
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip() == "b a"
    finally:
        running.stop()


def test_unknown_types_and_engines_name_the_known_ones(companion_home: Path) -> None:
    from models.config import TransformerParams
    from models.errors import ConfigError
    from models.registry import get_loader

    with pytest.raises(ConfigError, match="known: .*transformer"):
        get_loader("no_such_type")
    with pytest.raises(ValueError, match="auto, llamacpp, openai, fast, hf"):
        TransformerParams(engine="no_such_engine")
