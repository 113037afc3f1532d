"""The personality recipe: tune a character's voice on its lines (`companion train personality`).

    trainer.train_personality_model(model_name="luna",
                                    training_data="models/training_data/personality_data", epochs=100)

1. Find the personality (config, store, or built-in) and its base model (`base_model` in its
   `companion.json`). The base must be a local HF folder: a remote model cannot be tuned here.
2. Collect the character's lines from the data (a path, a saved dataset, a named data source,
   or a `datasets.Dataset`; see `models.training.examples` for the row shapes) and render each as a
   chat through the base model's template: the character's system prompt as the personality
   builds it, what was said to the character as the user turn, the line as the assistant turn
   (with its emotion control token when the base has them). A seeded share of distinct lines
   is held out: the perplexity on those unseen lines is the run's measure.
3. `method="lora"` trains a PEFT LoRA adapter on every linear layer of the base (the base stays
   frozen); `method="full"` fine-tunes all weights. One loop (`models.training.loop.train`), so
   checkpoints, exact resume, early stopping on held-out perplexity, the progress bar and the
   loss curve are the same as for every recipe. `epochs` is a maximum.
4. Publish a new version of the personality (`ModelVersionControl.create_version`): the card,
   `companion.json` (base, adapter and its base's weight hash), `adapter/` in PEFT format or
   the full HF weights, `training/` (report, loss curve), and lineage (data hash and source,
   base model and version, settings, metrics). `ModelManager` serves it at once (`current`).

Nothing is published when anything fails, including when the data is empty or unusable.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.engines.codec import TextCodec
from models.errors import DataError, TrainingError
from models.integrity import weights_sha256
from models.model_manager import default_manager, resolve_path
from models.personality.loader import CONFIG_REF, DEFAULT_BASE, read_personality_folder
from models.store import check_safe_files, verify_manifest
from models.training.base import export_model
from models.training.examples import (
    ExampleBatches,
    data_hash,
    encode_chat_examples,
    examples_from_rows,
    split_heldout,
)
from models.training.loop import TrainSettings, evaluate, train
from models.training.lora import LoraSettings, attach_lora, save_adapter
from models.training.personality_data import (
    anonymize_examples,
    has_emotion_control,
    known_emotion,
    load_rows,
    rehearsal_examples,
    system_message,
)
from models.training.publish import check_epochs, publish_version, resolve_target, run_folder

__all__ = [
    "PersonalityFit",
    "PersonalityPlan",
    "PersonalityRun",
    "TrainedVersion",
    "base_of",
    "fit_personality",
    "load_rows",
    "plan_personality",
    "train_personality",
    "write_personality_version",
]

METHODS = ("lora", "full")
#: The personality folder's own files that a new version carries over (never old weights).
_CARRY = ("persona.json", "avatar.png", "lorebook.json")


@dataclass
class PersonalityRun:
    """Knobs of a personality run beyond the seed's three arguments (defaults fit the embedded model)."""

    method: str = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    lr: float | None = None  # None: 2e-3 for LoRA, 1e-4 for a full fine-tune
    batch_size: int = 16
    seq_len: int = 192
    heldout_fraction: float = 0.15
    patience: int = 3
    plateau_factor: float | None = 0.5
    seed: int = 1234
    max_minutes: float | None = None
    anonymizer: Any = None
    """None: the pipeline's default (config.yaml `privacy:`); `PassThroughAnonymizer(reason=...)` opts out."""
    rehearsal: int = 12
    """Per emotion label, up to this many replies the base model writes itself with that emotion's
    control token (kept where the classifier agrees) are mixed into the training lines, under the
    character's system prompt and answering the character's own prompts, so the adapter keeps what
    the base's emotion tokens mean (0: none). Only when the base has emotion tokens; never in the
    held-out lines."""


@dataclass
class TrainedVersion:
    """What a training recipe returns: the published version and what was measured."""

    model: str
    version: str | None
    method: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    run_dir: str
    stop_reason: str
    published: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        v = f"{self.model} {self.version}" if self.version else f"{self.model} (not published)"
        return f"{v}: {self.stop_reason}"


def base_of(category: str, name: str, folder: Path, meta: Mapping[str, Any], manager: Any) -> tuple[str, Any]:
    """The base model's reference and resolved `PathRef` for a personality folder. A version that
    carries its own weights (a full fine-tune) is its own base, pinned by store version."""

    ref = str(meta.get("base_model") or DEFAULT_BASE)
    if (folder / "config.json").exists():
        served = manager.resolve(category, name)
        ref = f"store:{category}/{name}@{served.version}" if served.version else str(folder)
        return ref, resolve_path(ref, folder)
    m = CONFIG_REF.match(ref)
    if m and not (folder / ref).exists():
        try:
            return ref, manager.resolve(m.group(1), m.group(2))
        except Exception:
            pass
    return ref, resolve_path(ref, folder)


def load_for_training(folder: Path) -> Any:
    """The base model in float32 from safetensors, without transformers' loading bar."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{folder}: transformers could not load the base model ({exc})") from exc
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _base_version(ref: Any) -> str | None:
    if ref.version:
        return ref.version
    meta_path = Path(ref.folder) / "companion.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return meta.get("version") or (meta.get("training") or {}).get("recipe")
    return None


@dataclass
class PersonalityPlan:
    """Step 1 of the recipe: everything checked and prepared before any weights load."""

    vc: Any
    name: str
    method: str
    epochs: int
    run: PersonalityRun
    folder: Path
    card: Any
    meta: dict[str, Any]
    base_ref: str
    base: Any
    where: str
    anonymization: dict[str, Any]
    emotion_tokens: bool
    encoded: list[Any]
    train_rows: list[Any]
    held_rows: list[Any]
    rehearsed: int
    too_long: int
    codec: Any = field(repr=False, default=None)

    @property
    def model(self) -> str:
        return f"personality/{self.name}"

    @property
    def base_folder(self) -> Path:
        return Path(self.base.folder)


@dataclass
class PersonalityFit:
    """Step 2's outcome: the trained model (still in memory) and what was measured."""

    model: Any
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    stop: str
    why: str


def plan_personality(
    model_name: str,
    training_data: Any,
    epochs: int,
    method: str,
    run: PersonalityRun,
    manager: Any,
    user: str | None,
) -> PersonalityPlan:
    """Resolve the personality and its base, check access, load, anonymize and encode the data."""

    run.method = method
    if method not in METHODS:
        raise TrainingError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    check_epochs(epochs)
    manager = manager or default_manager()
    vc, name = resolve_target(model_name, "personality", user, "train_personality_model")
    folder, card, meta, base_ref, base, base_folder = _personality_and_base(name, manager)
    rows, where, anonymized = load_rows(training_data, card.name)
    examples, tokenized = examples_from_rows(rows, [card.name, name])
    if not examples and not tokenized:
        raise DataError(
            f"no lines of {card.name} in {where}: need rows with the character's replies "
            "(character rows, conversations where they speak, or chat messages ending with their turn)"
        )
    anonymization = _anonymized(anonymized, examples, tokenized, run)
    codec = TextCodec(base_folder)
    emotion_tokens = has_emotion_control(base_folder, codec)
    for ex in examples:
        ex.emotion = known_emotion(codec, ex.emotion) if emotion_tokens else None
    system = system_message(card)
    encoded, too_long = encode_chat_examples(
        codec, examples, tokenized, run.seq_len, system=system, emotion_tokens=emotion_tokens
    )
    if not encoded:
        raise DataError(f"none of the {len(examples) + len(tokenized)} examples in {where} fit {run.seq_len} tokens")
    held_keys = split_heldout([e.key for e in encoded], run.heldout_fraction, run.seed)
    train_rows = [e for e in encoded if e.key not in held_keys]
    held_rows = [e for e in encoded if e.key in held_keys]
    rehearsed = 0
    if emotion_tokens and run.rehearsal > 0:
        extra = rehearsal_examples(codec, examples, run.rehearsal, run.seed, base_folder, system)
        more, _ = encode_chat_examples(codec, extra, [], run.seq_len, system=system, emotion_tokens=True)
        train_rows += [e for e in more if e.key not in held_keys]
        rehearsed = len(more)
    return PersonalityPlan(
        vc, name, method, epochs, run, folder, card, meta, base_ref, base, where, anonymization, emotion_tokens,
        encoded, train_rows, held_rows, rehearsed, too_long, codec,
    )  # fmt: skip


def _personality_and_base(name: str, manager: Any) -> tuple[Path, Any, dict[str, Any], str, Any, Path]:
    """The personality's folder, card and metadata, and its base model: a local, safe, verified
    model folder (a remote base cannot be fine-tuned)."""
    served = manager.resolve("personality", name)
    folder = served.folder
    if folder is None or not (folder / "persona.json").exists():
        raise TrainingError(f"personality {name!r} is served from {served.raw!r}, which has no persona.json")
    card, meta = read_personality_folder(folder)
    base_ref, base = base_of("personality", name, folder, meta, manager)
    if base.folder is None:
        raise TrainingError(
            f"personality {name!r} runs on {base.raw!r}, a remote model: only a local HF model folder can be "
            "fine-tuned (point base_model at one, e.g. builtin:companion-chat)"
        )
    base_folder = Path(base.folder)
    check_safe_files(base_folder)
    if (base_folder / "manifest.json").exists():
        verify_manifest(base_folder)
    return folder, card, meta, base_ref, base, base_folder


def _anonymized(
    anonymized: dict[str, Any] | None, examples: list[Any], tokenized: list[Any], run: PersonalityRun
) -> dict[str, Any]:
    """How the lines were anonymized: by the pipeline that collected them, or here, now."""
    if anonymized and anonymized.get("applied"):
        return anonymized
    anonymization = anonymize_examples(examples, run.anonymizer)
    if tokenized:
        anonymization["pretokenized_rows"] = len(tokenized)
        anonymization["note"] += "; pre-tokenized rows are as given (DataPreprocessor anonymizes what it tokenizes)"
    return anonymization


def _settings(plan: PersonalityPlan, per_epoch: int, batch: int) -> TrainSettings:
    run, method, epochs = plan.run, plan.method, plan.epochs
    return TrainSettings(
        max_steps=epochs * per_epoch,
        batch_size=batch,
        micro_batch_size=batch,
        lr=run.lr or (2e-3 if method == "lora" else 1e-4),
        min_lr_ratio=0.1,
        warmup_steps=min(20, max(1, epochs * per_epoch // 10)),
        weight_decay=0.0 if method == "lora" else 0.01,
        eval_every=per_epoch,
        patience=run.patience,
        plateau_factor=run.plateau_factor,
        checkpoint_every=per_epoch,
        seed=run.seed,
        max_minutes=run.max_minutes,
        log_every=max(1, per_epoch),
        extra={"recipe": "personality", "method": method, "epochs": epochs},
    )


def fit_personality(
    plan: PersonalityPlan,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    on_eval: Callable[[int, dict[str, float], float], bool] | None = None,
) -> PersonalityFit:
    """Train in `run_dir` (checkpoints, exact resume, early stopping) and measure on held-out lines.
    `on_eval(step, metrics, base_perplexity)` sees each evaluation; True stops the run (pruning)."""

    t0 = time.time()
    run, method, epochs = plan.run, plan.method, plan.epochs
    source = ExampleBatches(plan.train_rows, plan.held_rows, plan.codec.pad_id or 0, run.seed)
    torch.manual_seed(run.seed)
    model = load_for_training(plan.base_folder)
    baseline = evaluate(model, source.eval_batches(), torch.device("cpu"))
    if method == "lora":
        model = attach_lora(model, run.lora, plan.base_ref)
    batch = min(run.batch_size, len(plan.train_rows))
    per_epoch = source.steps_per_epoch(batch)
    settings = _settings(plan, per_epoch, batch)
    lines = len(plan.train_rows) - plan.rehearsed
    if progress:
        from rich.console import Console

        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        Console(stderr=True).print(
            f"[bold]{plan.card.name}[/] ({method}) on {plan.base_ref}: {lines} training lines "
            f"(+{plan.rehearsed} rehearsal), {len(plan.held_rows)} held out, {trainable / 1e3:.0f} k trainable "
            f"parameters, at most {epochs} epochs of {per_epoch} steps; base perplexity on held-out lines "
            f"{baseline['eval_perplexity']:.1f}"
        )
    hook = (lambda step, ev: on_eval(step, ev, baseline["eval_perplexity"])) if on_eval is not None else None
    result = train(
        model, source, settings, run_dir, resume=resume, progress=progress, description=plan.card.name, on_eval=hook
    )
    after = evaluate(model, source.eval_batches(), torch.device("cpu"))
    epochs_run = math.ceil(result.steps / per_epoch)
    stop = (
        f"stopped early after {epochs_run} of {epochs} epochs ({result.stop_reason})"
        if result.stopped_early
        else f"ran all {epochs} epochs"
    )
    metrics = _fit_metrics(plan, result, baseline, after, per_epoch, lines, time.time() - t0)
    lineage = _fit_lineage(plan, settings)
    report = {"metrics": metrics, "lineage": lineage, "history": result.history}
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    why = (
        f"{method} on {lines} lines of {plan.card.name} (+{plan.rehearsed} rehearsal): held-out perplexity "
        f"{baseline['eval_perplexity']:.1f} → {after['eval_perplexity']:.1f}"
    )
    return PersonalityFit(model, metrics, lineage, stop, why)


def _fit_metrics(
    plan: PersonalityPlan,
    result: Any,
    baseline: dict[str, float],
    after: dict[str, float],
    per_epoch: int,
    lines: int,
    seconds: float,
) -> dict[str, Any]:
    """What a personality run measured: held-out perplexity before and after, and how it ran."""
    return {
        "heldout_perplexity": after["eval_perplexity"],
        "heldout_perplexity_base": baseline["eval_perplexity"],
        "heldout_perplexity_ratio": after["eval_perplexity"] / baseline["eval_perplexity"],
        "heldout_accuracy": after["eval_accuracy"],
        "heldout_lines": len(plan.held_rows),
        "training_lines": lines,
        "rehearsal_examples": plan.rehearsed,
        "skipped_too_long": plan.too_long,
        "epochs_run": math.ceil(result.steps / per_epoch),
        "epochs_max": plan.epochs,
        "steps": result.steps,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "tokens_seen": result.tokens_seen,
        "wall_seconds": round(seconds, 1),
    }


def _fit_lineage(plan: PersonalityPlan, settings: TrainSettings) -> dict[str, Any]:
    """Where a personality version comes from: recipe, data, base model and settings."""
    method = plan.method
    return {
        "recipe": "personality",
        "method": method,
        "data_sha256": data_hash(plan.encoded),
        "data_source": plan.where,
        "base_model": plan.base_ref,
        "base_version": _base_version(plan.base),
        "base_weights_sha256": weights_sha256(plan.base_folder),
        "settings": asdict(settings),
        "lora": plan.run.lora.to_json() if method == "lora" else None,
        "emotion_tokens": plan.emotion_tokens,
        "anonymization": plan.anonymization,
        "data_subjects": [],
        "contains_user_data": False,  # a character's lines; a user's data goes to personalization models
    }


def write_personality_version(stage: Path, plan: PersonalityPlan, fit: PersonalityFit) -> None:
    """The new version's folder: the card and its files, `companion.json`, the adapter or weights."""
    for item in _CARRY:
        if (plan.folder / item).exists():
            shutil.copy2(plan.folder / item, stage / item)
    meta = {k: v for k, v in plan.meta.items() if k not in ("version", "adapter", "training")}
    meta.update({"format": "companion-model/1", "kind": "personality", "name": plan.name, "character": plan.card.name})
    if plan.method == "lora":
        save_adapter(fit.model, stage / "adapter", plan.base_ref)
        meta["base_model"] = plan.base_ref
        meta["adapter"] = {
            "path": "adapter",
            "base_model": plan.base_ref,
            "base_sha256": fit.lineage["base_weights_sha256"],
        }
    else:
        export_model(fit.model, plan.base_folder, stage, {})
        meta["base_model"] = "."
        meta["emotion_control"] = plan.emotion_tokens
    meta["training"] = {"recipe": "personality", "method": plan.method, "metrics": fit.metrics}
    (stage / "companion.json").write_text(json.dumps(meta, indent=2) + "\n")


def train_personality(
    model_name: str,
    training_data: Any,
    epochs: int = 3,
    method: str = "lora",
    *,
    run: PersonalityRun | None = None,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    publish: bool = True,
    notes: str | None = None,
    manager: Any = None,
    user: str | None = None,
) -> TrainedVersion:
    """Train and publish a new version of personality `model_name`: plan, fit, publish."""

    plan = plan_personality(model_name, training_data, epochs, method, run or PersonalityRun(), manager, user)
    run_dir = run_folder(output_dir, f"personality-{plan.name}", resume)
    fit = fit_personality(plan, run_dir, resume=resume, progress=progress)
    version = None
    if publish:
        write = lambda stage: write_personality_version(stage, plan, fit)  # noqa: E731
        version = publish_version(plan.vc, plan.model, run_dir, write, notes or fit.why, fit.lineage, fit.metrics)
    return TrainedVersion(plan.model, version, method, fit.metrics, fit.lineage, str(run_dir), fit.stop, publish)
