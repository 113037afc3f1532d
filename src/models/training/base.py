"""The base recipe: train the embedded default model from scratch (`companion train base`).

Corpus (`models.training.corpus`): public-domain fiction as plain text and permissively
licensed dialogue rendered through our chat template, so the model learns both prose and
turn-taking with role tokens. Sources and licences are listed in docs/embedded-model.md.

Output (an HF-format folder, loadable by `transformers` and by our fast engine):
`config.json`, `generation_config.json`, `model.safetensors`, `tokenizer.json`,
`tokenizer_config.json`, `chat_template.jinja`, `companion.json`, plus `training/` with the
loss curve and the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import DataError, TrainingError
from models.tokens import BOS, CHAT_TEMPLATE, EOS, PAD, TURN_END
from models.training.corpus import (
    Corpus,
    TokenWindows,
    book_token_ids,
    build_corpus,
    encode_documents,
)
from models.training.loop import TrainResult, TrainSettings, train

__all__ = ["EMBEDDED_SETTINGS", "BaseModelSpec", "export_model", "train_base"]


@dataclass
class BaseModelSpec:
    """Shape of the embedded model: a small Llama (about 5 M parameters)."""

    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0

    def llama_config(self, tokenizer_ids: dict[str, int]) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta,
            tie_word_embeddings=True,
            bos_token_id=tokenizer_ids["bos"],
            eos_token_id=[tokenizer_ids["eos"], tokenizer_ids["end"]],
            pad_token_id=tokenizer_ids["pad"],
            attention_bias=False,
            mlp_bias=False,
        )


#: The settings the shipped embedded model was trained with (`companion train base` defaults).
EMBEDDED_SETTINGS = TrainSettings(
    max_steps=1700,
    batch_size=16,
    micro_batch_size=16,
    lr=2e-3,
    min_lr_ratio=0.1,
    warmup_steps=100,
    schedule="cosine",
    weight_decay=0.1,
    grad_clip=1.0,
    eval_every=100,
    checkpoint_every=100,
    seed=1234,
    max_minutes=110,
    log_every=10,
)

# ----------------------------------------------------------------------------- recipe


def special_ids(tok: Any) -> dict[str, int]:
    """The ids `BaseModelSpec.llama_config` needs, from a `tokenizers.Tokenizer`."""
    return {name: tok.token_to_id(t) for name, t in (("bos", BOS), ("eos", EOS), ("pad", PAD), ("end", TURN_END))}


def export_model(model: torch.nn.Module, tok_dir: Path, folder: Path, extra: dict[str, Any]) -> None:
    """Write an HF-format model folder (safetensors only) with our `companion.json`."""
    import shutil

    from transformers import GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(tok_dir / name, folder / name)
    cfg = model.config
    gen = GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        top_k=50,
        repetition_penalty=1.1,
        max_new_tokens=200,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
    )
    gen.save_pretrained(folder)
    (folder / "companion.json").write_text(json.dumps(extra, indent=2) + "\n")


def train_base(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    spec: BaseModelSpec | None = None,
    settings: TrainSettings | None = None,
    seq_len: int = 256,
    resume: bool = False,
    progress: bool = True,
    threads: int | None = None,
    epochs: float | None = None,
) -> TrainResult:
    """Train the tokenizer (unless resuming) and the model; export to `output_dir/model`.

    `epochs` (passes over the training tokens) replaces `settings.max_steps` when given."""
    from transformers import LlamaForCausalLM

    if threads:
        torch.set_num_threads(threads)
    spec = spec or BaseModelSpec()
    settings = settings or EMBEDDED_SETTINGS
    data_dir, out = Path(data_dir), Path(output_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    t0 = time.time()
    corpus = build_corpus(data_dir)
    tok_dir = out / "tokenizer"
    tok = _base_tokenizer(corpus, tok_dir, spec, resume)
    ids = special_ids(tok)
    train_ids = encode_documents(tok, corpus.train)
    held_ids = encode_documents(tok, corpus.heldout)
    source = TokenWindows(train_ids, held_ids, seq_len, settings.seed)
    if epochs is not None:
        if epochs <= 0:
            raise TrainingError(f"epochs must be positive, not {epochs}")
        steps = max(1, math.ceil(epochs * len(train_ids) / (settings.batch_size * seq_len)))
        settings = settings.capped(steps)

    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(spec.llama_config(ids))
    n_params = sum(p.numel() for p in model.parameters())
    if progress:
        from rich.console import Console

        Console(stderr=True).print(
            f"[bold]base model[/]: {n_params / 1e6:.2f} M parameters, "
            f"{len(train_ids) / 1e6:.2f} M training tokens, {len(held_ids) / 1e3:.0f} k held-out tokens"
        )
    result = train(model, source, settings, out, resume=resume, progress=progress, description="base model")
    report = _base_report(n_params, spec, seq_len, settings, train_ids, held_ids, corpus, result, time.time() - t0)
    _export_base(model, tok_dir, out / "model", report, result)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return result


def _base_report(
    n_params: int,
    spec: BaseModelSpec,
    seq_len: int,
    settings: TrainSettings,
    train_ids: np.ndarray,
    held_ids: np.ndarray,
    corpus: Corpus,
    result: TrainResult,
    seconds: float,
) -> dict[str, Any]:
    """`report.json` of a base run: recipe, shape, settings, data (with the token stream's
    sha256) and the training result without its history."""
    return {
        "recipe": "companion train base",
        "parameters": n_params,
        "spec": asdict(spec),
        "seq_len": seq_len,
        "settings": asdict(settings),
        "train_tokens_in_corpus": len(train_ids),
        "heldout_tokens": len(held_ids),
        "data_sha256": hashlib.sha256(train_ids.tobytes()).hexdigest(),
        "sources": corpus.sources,
        "result": {k: v for k, v in result.to_json().items() if k != "history"},
        "total_wall_seconds": seconds,
        "torch_threads": torch.get_num_threads(),
    }


def _base_tokenizer(corpus: Corpus, tok_dir: Path, spec: BaseModelSpec, resume: bool) -> Any:
    """The run's tokenizer: the saved one when resuming, else trained on the corpus and saved;
    `spec.vocab_size` follows what the trainer produced."""
    from tokenizers import Tokenizer

    from models.training.tokenizer import save_tokenizer_files, train_tokenizer

    if resume and (tok_dir / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    elif resume:
        raise TrainingError(f"--resume: no tokenizer in {tok_dir}")
    else:
        tok = train_tokenizer(corpus.train, vocab_size=spec.vocab_size)
        save_tokenizer_files(tok, tok_dir, model_max_length=spec.max_position_embeddings)
    if tok.get_vocab_size() != spec.vocab_size:
        spec.vocab_size = tok.get_vocab_size()
    return tok


def _export_base(model: Any, tok_dir: Path, model_dir: Path, report: dict[str, Any], result: TrainResult) -> None:
    """The trained base as a model folder, its `companion.json` naming the recipe and data."""
    export_model(
        model,
        tok_dir,
        model_dir,
        {
            "format": "companion-model/1",
            "kind": "base",
            "name": "companion-base",
            "chat_template": "companion",
            "emotion_tokens": True,
            "training": {k: report[k] for k in ("recipe", "parameters", "data_sha256", "sources")}
            | {"heldout_perplexity": result.best_eval_perplexity, "tokens_seen": result.tokens_seen},
        },
    )


_ = CHAT_TEMPLATE  # the template the tokenizer files carry (re-exported for recipes)


def export_checkpoint(
    run_dir: str | Path, dest: str | Path, which: str = "best", spec: BaseModelSpec | None = None
) -> Path:
    """Export a run's `best/` (or `checkpoint/`) weights as an HF model folder, mid-run too."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    run, dest = Path(run_dir), Path(dest)
    tok_dir = run / "tokenizer"
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    spec = spec or BaseModelSpec(vocab_size=tok.get_vocab_size())
    ids = special_ids(tok)
    model = LlamaForCausalLM(spec.llama_config(ids))
    weights = load_file(str(run / which / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    real_missing = [m for m in missing if m != "lm_head.weight"]
    if real_missing or unexpected:
        raise TrainingError(f"{run / which}: weights do not fit the spec ({real_missing[:3]} {unexpected[:3]})")
    state = json.loads((run / which / "state.json").read_text())
    evals = [h for h in state["history"] if "eval_loss" in h]
    export_model(
        model,
        tok_dir,
        dest,
        {
            "format": "companion-model/1",
            "kind": "base",
            "name": "companion-base",
            "chat_template": "companion",
            "emotion_tokens": True,
            "training": {
                "recipe": "companion train base",
                "step": state["step"],
                "tokens_seen": state["tokens_seen"],
                "heldout_perplexity": math.exp(evals[-1]["eval_loss"]) if evals else None,
            },
        },
    )
    return dest


def extend_context(
    base_folder: str | Path,
    data_dir: str | Path,
    run_dir: str | Path,
    output_folder: str | Path,
    *,
    seq_len: int = 512,
    settings: TrainSettings | None = None,
    resume: bool = False,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Continue training a base model on `seq_len`-token windows of the books (issue 18: the base
    claimed 512 tokens of context but was trained on 256, and its perplexity doubled past 256)."""
    from transformers import LlamaForCausalLM

    from models.engines.codec import TextCodec
    from models.store import write_manifest

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    base_folder, run, out = Path(base_folder), Path(run_dir), Path(output_folder)
    codec = TextCodec(base_folder)
    train_ids = book_token_ids(codec, data_dir, "train")
    held_ids = book_token_ids(codec, data_dir, "heldout")
    settings = settings or TrainSettings(
        max_steps=220, batch_size=16, micro_batch_size=16, lr=6e-4, warmup_steps=20, eval_every=55,
        checkpoint_every=20, max_minutes=30.0, seed=4321, log_every=10,
    )  # fmt: skip
    source = TokenWindows(train_ids, held_ids, seq_len, settings.seed, eval_windows=64)
    model = LlamaForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    result = train(model, source, settings, run, resume=resume, progress=progress, description="context 512")
    meta = json.loads((base_folder / "companion.json").read_text())
    training = dict(meta.get("training", {}))
    training["context_extension"] = {
        "recipe": "models.training.base.extend_context",
        "seq_len": seq_len,
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "heldout_perplexity": result.best_eval_perplexity,
    }
    export_model(model, base_folder, out, {**meta, "training": training})
    write_manifest(out)
    report = {
        "recipe": "extend_context",
        "seq_len": seq_len,
        "settings": asdict(settings),
        "result": {k: v for k, v in result.to_json().items() if k != "history"},
        "wall_seconds": round(time.time() - t0, 1),
    }
    (run / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
