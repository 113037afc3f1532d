"""Config loading: the seed's shape works; every bad input is one clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import load_config, load_effective_config
from models.errors import ConfigError

SEED_YAML = """
# Example: Model configuration
models:
  personality:
    luna:
      type: "transformer"
      path: "models/personality/luna_model"
      parameters:
        max_length: 512
        temperature: 0.8
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_seed_shape_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_YAML))
    luna = cfg.entry("personality", "luna")
    assert luna is not None
    assert luna.type == "transformer"
    assert luna.typed_parameters().max_length == 512
    assert luna.typed_parameters().temperature == 0.8


def test_every_problem_listed_with_file_and_key(tmp_path: Path) -> None:
    text = """
models:
  personality:
    luna:
      type: transformer
      path: builtin:companion-base
      colour: blue
      parameters:
        temprature: 0.8
        max_length: "long"
    Bad_Name:
      type: transformer
      path: builtin:companion-base
  base:
    other:
      type: transfomer
      path: /no/such/folder
telemetry: true
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    problems = info.value.problems
    joined = "\n".join(problems)
    assert "models.personality.luna.colour: unknown key" in joined
    assert "models.personality.luna.parameters.temprature: unknown key (did you mean 'temperature'?)" in joined
    assert "models.personality.luna.parameters.max_length" in joined
    assert "invalid model name 'Bad_Name'" in joined
    assert "unknown model type 'transfomer' (did you mean 'transformer'?)" in joined
    assert "models.base.other.path" in joined and "/no/such/folder" in joined
    assert "telemetry: unknown key" in joined
    assert len(problems) == 7


def test_python_tags_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "models: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match=r"line 1.*python.*refused"):
        load_config(path)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  personality: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "line" in str(info.value)


def test_duplicate_keys_refused(tmp_path: Path) -> None:
    text = (
        "models:\n  base:\n    a: {type: transformer, path: builtin:companion-base}\n"
        "    a: {type: transformer, path: x}\n"
    )
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_config(write(tmp_path, text))


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("models: {}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).models == {}


def test_relative_paths_resolve_against_the_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    sub = tmp_path / "proj"
    shutil.copytree(tiny_model_dir, sub / "weights" / "m")
    path = write(sub, "models:\n  base:\n    m: {type: transformer, path: weights/m}\n")
    cfg = load_config(path)
    assert cfg.entry("base", "m") is not None


def test_user_config_overrides_builtin(user_config) -> None:
    user_config(
        "models:\n  base:\n    companion-base:\n      type: transformer\n      path: builtin:companion-base\n"
        "      parameters: {temperature: 0.3}\n    tiny: {type: transformer, path: '{tiny}'}\n"
    )
    eff = load_effective_config()
    base = eff.entry("base", "companion-base")
    assert base is not None
    # Same type and path: parameters merge key by key, the built-in max_length survives.
    assert base.parameters["temperature"] == 0.3
    assert base.parameters["max_length"] == 200
    assert eff.entry("personality", "luna") is not None  # built-in entries stay
    assert eff.entry("base", "tiny") is not None
    assert len(eff.files) == 2


def test_user_entry_with_new_path_replaces(user_config) -> None:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}', parameters: {top_k: 5}}\n")
    luna = load_effective_config().entry("personality", "luna")
    assert luna is not None and luna.parameters == {"top_k": 5}


def test_bad_user_config_is_reported(user_config) -> None:
    user_config("models:\n  base:\n    x: {type: transformer}\n")
    with pytest.raises(ConfigError, match=r"models\.base\.x\.path: required key is missing"):
        load_effective_config()


def test_every_shipped_config_parses() -> None:
    from importlib import resources

    root = Path(str(resources.files("models")))
    files = [p for p in root.rglob("*.yaml") if "training_data" not in p.parts]
    assert files, "the built-in config must ship"
    for f in files:
        load_config(f)


def test_a_plain_model_over_a_card_personality_warns_with_what_to_write(
    user_config, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from models.config import load_effective_config

    path = user_config(
        "models:\n  personality:\n    luna:\n      type: transformer\n      path: 'openai:llama3.1:8b'\n"
        "      parameters: {base_url: 'http://localhost:11434/v1'}\n"
    )
    with caplog.at_level(logging.WARNING, logger="models.config"):
        load_effective_config(path)
    (record,) = [r for r in caplog.records if "models.personality.luna" in r.getMessage()]
    message = record.getMessage()
    assert "plain model with no card" in message
    assert "type: personality, path: builtin:luna, parameters: {base_model: openai:llama3.1:8b}" in message


def test_the_readme_configure_example_puts_luna_on_a_configured_model(user_config) -> None:
    import re

    from models.config import load_effective_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Configure.*?```yaml\n(.*?)```", readme, re.S).group(1)
    cfg = load_effective_config(user_config(block)).config
    luna = cfg.models["personality"]["luna"]
    assert luna.type == "personality" and luna.parameters["base_model"] == "base/llama"
    assert cfg.models["base"]["llama"].path == "openai:llama3.1:8b"
