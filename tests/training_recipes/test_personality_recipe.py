"""The personality recipe: LoRA and full fine-tunes, published as versions and served at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from models.errors import AdapterError, DataError
from models.training import LoraSettings, ModelTrainer

SMALL = {"lora": LoraSettings(r=4, alpha=8.0, dropout=0.0), "batch_size": 8}


def _trainer() -> ModelTrainer:
    return ModelTrainer(progress=False)


def test_lora_run_publishes_a_version_with_lineage_and_serves_it(
    ada: Path, ada_lines: Path, tiny_model_dir: Path, companion_home: Path
) -> None:
    from models.model_manager import ModelManager

    result = _trainer().train_personality_model("ada", ada_lines, epochs=3, **SMALL)
    assert result.published and result.version == "1.0.0" and result.method == "lora"
    m = result.metrics
    assert m["training_lines"] + m["heldout_lines"] == 24 and m["heldout_lines"] >= 1
    assert m["heldout_perplexity"] > 0 and m["heldout_perplexity_base"] > 0
    assert m["epochs_run"] <= 3 and m["steps"] >= 1

    folder = companion_home / "store" / "personality" / "ada" / "1.0.0"
    cfg = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["base_model_name_or_path"] == str(tiny_model_dir)
    assert (folder / "adapter" / "adapter_model.safetensors").exists()
    assert not list(folder.rglob("*.bin"))
    meta = json.loads((folder / "companion.json").read_text())
    assert meta["adapter"]["base_sha256"] and meta["base_model"] == str(tiny_model_dir)
    version = json.loads((folder / "version.json").read_text())
    lineage = version["lineage"]
    assert lineage["data_sha256"] == result.lineage["data_sha256"] and len(lineage["data_sha256"]) == 64
    assert lineage["base_model"] == str(tiny_model_dir) and lineage["method"] == "lora"
    assert lineage["settings"]["lr"] == pytest.approx(2e-3)
    assert version["metrics"]["heldout_perplexity"] == pytest.approx(m["heldout_perplexity"])
    assert (folder / "training" / "loss_curve.png").exists()

    model = ModelManager().load_model("personality", "ada")
    assert model.version == "1.0.0"
    adapter = model.base.engine.info()["adapter"]
    assert adapter["modules"] == 2 * 7 and adapter["r"] == 4  # every linear layer of both blocks
    assert isinstance(str(model.generate_response(message="Tell me about the sea.")), str)


def test_merged_adapter_matches_peft_in_both_engines(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import LlamaForCausalLM

    from models.engines.hf import HFEngine
    from models.engines.llama import FastEngine
    from models.training.lora import attach_lora, save_adapter

    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = attach_lora(base, LoraSettings(r=4, alpha=16.0, dropout=0.0), "tiny")
    with torch.no_grad():  # B starts at zero; make the adapter do something
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    peft_model.eval()
    save_adapter(peft_model, tmp_path / "adapter", "tiny")
    ids = torch.tensor([[1, 5, 9, 14, 27, 3, 40]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits[0]
        plain = LlamaForCausalLM.from_pretrained(str(tiny_model_dir))(input_ids=ids).logits[0]
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter changes the model
    adapter = tmp_path / "adapter"
    for engine in (FastEngine(tiny_model_dir, adapter=adapter), HFEngine(tiny_model_dir, adapter=adapter)):
        got = engine.forward_full(ids)[0]
        assert torch.allclose(got, want, atol=1e-4), engine.name


def test_full_fine_tune_publishes_weights_of_its_own(ada: Path, ada_lines: Path, companion_home: Path) -> None:
    from models.model_manager import ModelManager

    result = _trainer().train_personality_model("ada", ada_lines, epochs=2, method="full", batch_size=8)
    folder = companion_home / "store" / "personality" / "ada" / result.version
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert not (folder / "adapter").exists()
    assert json.loads((folder / "companion.json").read_text())["base_model"] == "."
    model = ModelManager().load_model("personality", "ada")
    assert model.base.ref.folder == folder.resolve()
    # a LoRA on top of the fully tuned version is trained against that version's weights
    again = _trainer().train_personality_model("ada", ada_lines, epochs=1, **SMALL)
    assert again.lineage["base_model"] == f"store:personality/ada@{result.version}"
    assert ModelManager().load_model("personality", "ada").version == again.version


def test_epochs_are_a_maximum_and_early_stopping_says_so(ada: Path, ada_lines: Path) -> None:
    result = _trainer().train_personality_model("ada", ada_lines, epochs=40, patience=1, lr=0.05, **SMALL)
    assert result.metrics["stopped_early"] and result.metrics["epochs_run"] < 40
    assert result.stop_reason.startswith("stopped early after") and "of 40 epochs" in result.stop_reason


def test_runs_are_deterministic_given_the_seed(ada: Path, ada_lines: Path, tmp_path: Path) -> None:
    a = _trainer().train_personality_model(
        "ada", ada_lines, epochs=2, publish=False, output_dir=tmp_path / "a", **SMALL
    )
    b = _trainer().train_personality_model(
        "ada", ada_lines, epochs=2, publish=False, output_dir=tmp_path / "b", **SMALL
    )
    assert a.metrics["heldout_perplexity"] == b.metrics["heldout_perplexity"]
    assert a.lineage["data_sha256"] == b.lineage["data_sha256"]


# ----------------------------------------------------------------------------- bad input


def _versions(companion_home: Path) -> list[Path]:
    return list((companion_home / "store").glob("personality/ada/*"))


def test_empty_data_is_refused_and_nothing_is_published(ada: Path, tmp_path: Path, companion_home: Path) -> None:
    from tests.training_recipes.conftest import write_lines

    other = write_lines(tmp_path / "others", character="bob", name="Bob")
    with pytest.raises(DataError, match="no .*Ada|no character"):
        _trainer().train_personality_model("ada", other, epochs=1)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        _trainer().train_personality_model("ada", [], epochs=1)
    assert _versions(companion_home) == []


def test_data_tokenized_for_another_tokenizer_is_refused(ada: Path, companion_home: Path) -> None:
    from datasets import Dataset

    rows = {
        "text": ["<|user|>hi<|end|>\n<|assistant|>hello there<|end|>\n"] * 4,
        "input_ids": [[50000, 50001, 50002, 12]] * 4,  # ids from a 50k vocabulary; ours has 512
        "assistant_mask": [[0, 0, 1, 1]] * 4,
    }
    with pytest.raises(DataError, match="different tokenizer"):
        _trainer().train_personality_model("ada", Dataset.from_dict(rows), epochs=1)
    in_range = dict(rows, input_ids=[[7, 8, 9, 12]] * 4)  # in range, but not what our tokenizer makes
    with pytest.raises(DataError, match="different tokenizer"):
        _trainer().train_personality_model("ada", Dataset.from_dict(in_range), epochs=1)
    assert _versions(companion_home) == []


def test_an_adapter_for_another_base_is_refused_at_load(
    ada: Path, ada_lines: Path, tmp_path: Path, companion_home: Path, user_config
) -> None:
    from models.model_manager import ModelManager
    from models.personality.loader import read_personality_folder, write_personality_folder
    from models.store import write_manifest
    from tests.conftest import build_tiny_model

    result = _trainer().train_personality_model("ada", ada_lines, epochs=1, **SMALL)
    trained = companion_home / "store" / "personality" / "ada" / result.version
    card, _meta = read_personality_folder(trained)

    def moved_to(base: Path, name: str) -> None:
        folder = write_personality_folder(tmp_path / name, card, base_model=str(base), manifest=False)
        shutil.copytree(trained / "adapter", folder / "adapter")
        meta = json.loads((trained / "companion.json").read_text()) | {"base_model": str(base)}
        (folder / "companion.json").write_text(json.dumps(meta))
        write_manifest(folder)
        user_config(f"models:\n  personality:\n    {name}: {{type: personality, path: '{folder}'}}\n")

    wider = build_tiny_model(tmp_path / "wider", hidden=48)  # another shape: the adapter cannot fit
    moved_to(wider, "ada-wide")
    with pytest.raises(AdapterError, match="does not fit this base model"):
        ModelManager().load_model("personality", "ada-wide")
    twin = build_tiny_model(tmp_path / "twin", seed=5)  # same shape, other weights: caught by the hash
    moved_to(twin, "ada-twin")
    with pytest.raises(AdapterError, match="trained on base"):
        ModelManager().load_model("personality", "ada-twin")


def test_malformed_adapters_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from models.engines.llama import FastEngine

    bad = tmp_path / "adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True})
    )
    with pytest.raises(AdapterError, match="use_dora"):
        FastEngine(tiny_model_dir, adapter=bad)
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "r": 4, "lora_alpha": 8}))
    with pytest.raises(AdapterError, match="only LORA"):
        FastEngine(tiny_model_dir, adapter=bad)
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(AdapterError, match="safetensors only"):
        FastEngine(tiny_model_dir, adapter=bad)


def test_a_remote_base_cannot_be_tuned(tmp_path: Path, user_config, ada_lines: Path) -> None:
    from models.errors import TrainingError
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "remote", CharacterCard(v2_card()), base_model="openai:llama3.1:8b")
    user_config(f"models:\n  personality:\n    ada: {{type: personality, path: '{folder}'}}\n")
    with pytest.raises(TrainingError, match="remote model"):
        _trainer().train_personality_model("ada", ada_lines, epochs=1)


def test_training_needs_the_train_level_and_publishes_nothing_without_it(
    tmp_path: Path, tiny_model_dir: Path, user_config, ada_lines: Path, companion_home: Path
) -> None:
    from models.errors import AccessDenied
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        f"models:\n  personality:\n    ada: {{type: personality, path: '{folder}'}}\n"
        "security:\n  users:\n    writer: {grants: [{models: 'personality/*', level: generate}]}\n"
        "    editor: {grants: [{models: 'personality/ada', level: train}]}\n"
    )
    with pytest.raises(AccessDenied, match="writer"):
        ModelTrainer(progress=False, user="writer").train_personality_model("ada", ada_lines, epochs=1, **SMALL)
    assert _versions(companion_home) == []
    done = ModelTrainer(progress=False, user="editor").train_personality_model("ada", ada_lines, epochs=1, **SMALL)
    assert done.published and done.lineage["anonymization"]["applied"] is True
    assert done.lineage["contains_user_data"] is False


def test_rehearsal_keeps_emotion_tokens_meaningful_and_stays_out_of_the_heldout_lines(
    tmp_path: Path, tiny_model_copy: Path, user_config, ada_lines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.personality.emotion as emotion
    from models.tokens import EMOTIONS

    class Judge:  # the tiny model writes noise: a judge that hears only joy keeps 3 joy replies
        labels = EMOTIONS

        def classify(self, texts: list[str]) -> list[str]:
            return ["joy" for _ in texts]

    monkeypatch.setattr(emotion, "default_classifier", lambda *a, **k: Judge())
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from models.store import write_manifest
    from tests.personality.conftest import v2_card

    meta = json.loads((tiny_model_copy / "companion.json").read_text()) | {"emotion_control": True}
    (tiny_model_copy / "companion.json").write_text(json.dumps(meta))
    write_manifest(tiny_model_copy)
    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_copy))
    user_config(f"models:\n  personality:\n    ada: {{type: personality, path: '{folder}'}}\n")
    kw = {**SMALL, "publish": False}
    plain = _trainer().train_personality_model("ada", ada_lines, epochs=1, rehearsal=0, output_dir=tmp_path / "a", **kw)
    mixed = _trainer().train_personality_model("ada", ada_lines, epochs=1, rehearsal=3, output_dir=tmp_path / "b", **kw)
    assert plain.lineage["emotion_tokens"] and plain.metrics["rehearsal_examples"] == 0
    # Self-rehearsal (issue 18): the base's own replies, kept only where the judge agrees.
    assert mixed.metrics["rehearsal_examples"] == 3
    assert mixed.metrics["training_lines"] == plain.metrics["training_lines"]
    # the measure is on the character's own held-out lines either way
    assert mixed.metrics["heldout_lines"] == plain.metrics["heldout_lines"]
    assert mixed.metrics["heldout_perplexity_base"] == plain.metrics["heldout_perplexity_base"]


def test_attaching_lora_prints_no_deprecation_warning(tiny_model_dir: Path) -> None:
    """peft reads a property transformers 5 deprecates; users saw the FutureWarning on every run."""
    import warnings

    from transformers import LlamaForCausalLM

    from models.training.lora import attach_lora

    base = LlamaForCausalLM.from_pretrained(str(tiny_model_dir))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        attach_lora(base, LoraSettings(r=4, alpha=16.0, dropout=0.0), "tiny")
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)]


def test_rehearsal_leaves_out_farewells_and_safety_nags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base's own replies are rehearsed, but not its conversation closings: a character
    rehearsing its chat base's "Goodbye!" said goodbye in answer to anything (issue 18)."""
    from models.engines.codec import TextCodec
    from models.paths import builtin_dir
    from models.tokens import EMOTIONS
    from models.training import personality_data
    from models.training.examples import ChatExample

    lines = ["That is great! Goodbye!", "Well, it was nice chatting with you!", "Please take care of yourself.",
             "The moon is bright over the harbour tonight.", "I wrote three pages about the lighthouse."]  # fmt: skip

    class Base:
        def __init__(self, *a: Any, **k: Any) -> None:
            self.n = 0

        def chat(self, messages: Any, max_length: int, **options: Any) -> str:
            self.n += 1
            return lines[self.n % len(lines)]

        def close(self) -> None:
            pass

    class Judge:
        labels = EMOTIONS

        def classify(self, texts: list[str]) -> list[str]:
            return ["joy" for _ in texts]

    monkeypatch.setattr(personality_data, "TransformerModel", Base)
    monkeypatch.setattr(personality_data, "default_classifier", lambda: Judge())
    folder = builtin_dir("companion-chat")
    example = ChatExample([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}], None, "x")
    kept = personality_data.rehearsal_examples(
        TextCodec(folder), [example], 4, 1, folder, {"role": "system", "content": ""}
    )
    replies = [ex.messages[-1]["content"] for ex in kept]
    assert replies and set(replies) <= set(lines[3:])


def test_a_line_that_changes_between_runs_moves_only_itself_in_the_held_out_split() -> None:
    """The anonymizer gives names fresh pseudonyms each run: the other lines' sides must not move."""
    from models.training.examples import split_heldout

    keys = [f"line {i}" for i in range(400)]
    held = split_heldout(keys, 0.15, 1234)
    assert 0.1 < len(held) / len(keys) < 0.2
    changed = split_heldout([*keys[:-1], "line 399 with Person_3fa2c1"], 0.15, 1234)
    assert held - {"line 399"} == changed - {"line 399 with Person_3fa2c1"}
    assert split_heldout(keys, 0.15, 1234) == held  # deterministic
    assert split_heldout(keys, 0.15, 7) != held  # the seed picks the split
    two = split_heldout(["a", "b"], 0.15, 1234)
    assert len(two) == 1  # at least one held out, never all
    assert len(split_heldout(["a", "b"], 0.99, 1234)) == 1
