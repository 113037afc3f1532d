"""Shared fixtures: an isolated COMPANION_HOME per test and tiny models built in seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.context import Context

TINY_TEXT = """The lighthouse keeper wrote a letter every evening, though no ship ever came to carry it.
She kept the letters in a tin box under the stairs, next to the lamp oil and the spare wicks.
"Tell me about the sea," said the boy, and she told him about the grey mornings and the gulls.
A writer needs a quiet room, a warm cup of tea, and a stubborn heart.
Luna smiled at the moon and said that every story begins with a question.
The detective looked at the muddy boots by the door and knew who had lied.
In the kingdom beyond the hills, a bard sang of dragons, lost crowns and brave cooks.
"""


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models gain nothing from intra-op threads, and on a busy 2-core machine a second
    # thread stalls every op waiting for a descheduled worker: one thread keeps tests steady.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    """Each test discovers installed plugins anew (a test may install one) and leaves no
    registration behind (llm's conftest does the same)."""
    from models.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture(autouse=True)
def companion_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own COMPANION_HOME: no shared state, no user files touched. It lies
    beside the test's tmp_path, not in it, so a test that collects data from tmp_path does not
    read the home's own files (the audit head, keys)."""
    from models.context import reset_default_contexts

    home = tmp_path_factory.mktemp("companion_home")
    monkeypatch.setenv("COMPANION_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield home
    reset_default_contexts()  # the test's context (its manager and cached models) goes with it


@pytest.fixture
def context(companion_home: Path) -> Iterator[Context]:
    """The test's `models.context.Context` over its home, active for the test (the edge a
    library user builds; zero-argument APIs see it)."""
    from models.context import Context

    ctx = Context(companion_home)
    with ctx.activated():
        yield ctx


def build_tiny_model(
    folder: Path,
    *,
    vocab_size: int = 512,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    tie: bool = True,
    seed: int = 0,
    manifest: bool = True,
) -> Path:
    """A random-weights Llama (2 layers, 32 dims) with our tokenizer and chat template."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from models.store import write_manifest
    from models.tokens import EOS, PAD, TURN_END
    from models.training.tokenizer import save_tokenizer_files, train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([TINY_TEXT] * 20, vocab_size=vocab_size)
    save_tokenizer_files(tok, folder, model_max_length=128)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        bos_token_id=tok.token_to_id("<|bos|>"),
        eos_token_id=[tok.token_to_id(EOS), tok.token_to_id(TURN_END)],
        pad_token_id=tok.token_to_id(PAD),
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    GenerationConfig(eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id).save_pretrained(folder)
    (folder / "companion.json").write_text(json.dumps({"format": "companion-model/1", "kind": "test"}))
    if manifest:
        write_manifest(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny model shared by the session (copy it before changing anything)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model_dir, dest)
    return dest


@pytest.fixture
def user_config(companion_home: Path, tiny_model_dir: Path):
    """Write COMPANION_HOME/config.yaml; returns a function taking the YAML text."""

    def write(text: str) -> Path:
        path = companion_home / "config.yaml"
        path.write_text(text.replace("{tiny}", str(tiny_model_dir)))
        return path

    return write
