"""The personalization recipe: fit one user's model from what they have given us.

    trainer.train_personalization_model(model_name="user_prefs",
                                        training_data="models/training_data/user_data", epochs=50)

Inputs, whichever exist:

* a user-data folder (the seed's `models/training_data/user_data`, or one of the same shape):
  `preferences.json` (stated preferences), `feedback.jsonl` (ratings of suggestions),
  `writing/*.md|*.txt` (the user's own writing; front matter is skipped);
* or a user id: that user's feedback recorded in the database (`record_feedback`) and their
  stored preferences.

What is fitted:

1. the **preference learner** (`models.personalization.learner.PreferenceLearner`): cold-started
   from the stated preferences on top of the current model's prior, then `fit` over the feedback
   for at most `epochs` passes with a held-out share and early stopping (it says when it stops);
2. a **style adapter** when there is enough of the user's own writing (`style_min_words`, 1,500
   words by default): a LoRA on the base model trained on that writing with the one training
   loop (held-out perplexity, early stopping, checkpoints, resume). Less writing than that and
   the adapter is skipped, and the result says why.

The result is published as a new version of the personalization model (`preferences.json`,
`learner.safetensors` + `learner.json`, `adapter/`, `training/`, lineage and metrics).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.engines.codec import TextCodec
from models.errors import DataError, TrainingError
from models.integrity import weights_sha256
from models.model_manager import default_manager, resolve_path
from models.personalization import (
    PreferenceLearner,
    UserPreferences,
    events_from_feedback_file,
    load_preferences,
    read_personalization_folder,
    storage,
    write_personalization_folder,
)
from models.personalization.events import FeedbackEvent
from models.privacy.manager import subject_ref
from models.training.examples import EncodedExample, ExampleBatches, split_heldout
from models.training.loop import TrainSettings, evaluate, train
from models.training.lora import LoraSettings, attach_lora, save_adapter
from models.training.personality import TrainedVersion, load_for_training
from models.training.publish import check_epochs, publish_version, resolve_target, run_folder
from models.training_data.anonymize import anonymization_report, default_anonymizer
from models.training_data.locations import resolve_training_data

__all__ = [
    "PersonalizationFit",
    "PersonalizationPlan",
    "UserData",
    "fit_personalization",
    "plan_personalization",
    "read_user_data",
    "train_personalization",
    "write_personalization_version",
]

_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
DEFAULT_STYLE_BASE = "builtin:companion-base"
#: A user's style adapter; a federation's population adapter has the same shape.
STYLE_LORA = LoraSettings(r=8, alpha=16.0, dropout=0.05)
#: The model whose population style adapter (from `companion federate serve`) a user's first
#: style adapter starts from.
POPULATION_MODEL = "user_prefs"


class UserData:
    """What one user has given us: stated preferences, feedback events, their own writing."""

    def __init__(
        self, source: str, preferences: Any, events: list[Any], writing: list[tuple[str, str]], user: str | None
    ) -> None:
        self.source, self.preferences, self.events, self.writing = source, preferences, events, writing
        self.user = user  # whose data this is (a data subject of the trained version)

    @property
    def words(self) -> int:
        return sum(len(text.split()) for _name, text in self.writing)

    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.preferences.model_dump(), sort_keys=True, default=str).encode())
        for e in self.events:
            h.update(json.dumps(e.model_dump(exclude={"timestamp"}), sort_keys=True, default=str).encode())
        for name, text in self.writing:
            h.update(name.encode() + b"\0" + text.encode())
        return h.hexdigest()


def _writing(folder: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".md", ".txt") and p.is_file()):
        text = _FRONT_MATTER.sub("", path.read_text(encoding="utf-8")).strip()
        if text:
            out.append((path.relative_to(folder).as_posix(), text))
    return out


def read_user_data(training_data: Any) -> UserData:
    """The user data that `training_data` names: a folder (see the module docstring) or a user id."""

    raw = str(training_data)
    try:
        found = resolve_training_data(raw)
    except DataError as missing:
        try:
            rows = storage.list_feedback(user=raw, limit=100_000)
        except DataError:
            rows = []
        prefs = load_preferences(raw) if rows or _is_user(raw) else None
        if not rows and prefs is None:
            raise DataError(f"{missing} — and no user {raw!r} has feedback or preferences in the database") from None
        events = [FeedbackEvent.parse(r["event"], f"feedback row {r['id']}") for r in reversed(rows)]
        return UserData(f"user {raw!r} (database)", prefs or UserPreferences(), events, [], raw)
    folder = found.path if found.path.is_dir() else found.path.parent
    prefs_path = folder / "preferences.json"
    prefs = UserPreferences.from_file(prefs_path) if prefs_path.exists() else UserPreferences()
    feedback = folder / "feedback.jsonl"
    events = events_from_feedback_file(feedback) if feedback.exists() else []
    writing_dir = folder / "writing"
    writing = _writing(writing_dir if writing_dir.is_dir() else folder)
    if not events and not writing:
        raise DataError(
            f"{found.describe()}: nothing to learn from: expected feedback.jsonl (ratings of suggestions) "
            "and/or the user's writing (writing/*.md or *.txt)"
        )
    owner = _owner(prefs_path) or folder.name
    return UserData(found.describe(), prefs, events, writing, owner)


def _owner(prefs_path: Path) -> str | None:
    """The `user` a preferences file names (the sample format has one), if any."""
    try:
        value = json.loads(prefs_path.read_text(encoding="utf-8")).get("user")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _anonymize_writing(writing: list[tuple[str, str]], anonymizer: Any) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The user's writing through the pipeline's anonymizer before it trains an adapter."""

    anonymizer = anonymizer or default_anonymizer()
    record = anonymization_report(anonymizer)
    if not record["applied"]:
        return writing, record
    clean = [(name, anonymizer.anonymize(text)) for name, text in writing]
    record["changed"] = sum(a[1] != b[1] for a, b in zip(writing, clean, strict=True))
    return clean, record


def _is_user(raw: str) -> bool:

    try:
        return load_preferences(raw) is not None
    except Exception:
        return False


def _style_examples(codec: Any, writing: list[tuple[str, str]], seq_len: int) -> list[EncodedExample]:
    """The writing as language-model windows (loss on every token), half-overlapping."""
    out = []
    stride = seq_len // 2
    for name, text in writing:
        ids = codec.encode(text, add_bos=True)
        for start in range(0, max(1, len(ids) - stride), stride):
            window = ids[start : start + seq_len]
            if len(window) >= 16:
                key = hashlib.sha256(f"{name}:{start}".encode()).hexdigest()
                out.append(EncodedExample(window, list(window), key))
    return out


def _train_style(
    writing: list[tuple[str, str]],
    base_ref: str,
    epochs: int,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    seed: int,
    lora: LoraSettings,
    seq_len: int = 128,
    start: tuple[str, Path] | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:

    ref = resolve_path(base_ref)
    if ref.folder is None:
        raise TrainingError(f"style adapter base {base_ref!r} is not a local model folder")
    codec = TextCodec(Path(ref.folder))
    windows = _style_examples(codec, writing, seq_len)
    held_keys = split_heldout([w.key for w in windows], 0.15, seed)
    source = ExampleBatches(
        [w for w in windows if w.key not in held_keys],
        [w for w in windows if w.key in held_keys],
        codec.pad_id or 0,
        seed,
    )
    torch.manual_seed(seed)
    model = load_for_training(Path(ref.folder))
    baseline = evaluate(model, source.eval_batches(), torch.device("cpu"))
    model = attach_lora(model, lora, base_ref)
    started = None
    if start is not None and _load_start(model, lora, start[1]):
        started = start[0]
        metrics_start = evaluate(model, source.eval_batches(), torch.device("cpu"))["eval_perplexity"]
    batch = min(8, len(source.train))
    per_epoch = source.steps_per_epoch(batch)
    settings = TrainSettings(
        max_steps=epochs * per_epoch, batch_size=batch, micro_batch_size=batch, lr=1e-3,
        warmup_steps=min(10, max(1, epochs * per_epoch // 10)), weight_decay=0.0, eval_every=per_epoch,
        patience=3, checkpoint_every=per_epoch, seed=seed, log_every=per_epoch,
        extra={"recipe": "personalization-style"},
    )  # fmt: skip
    result = train(model, source, settings, run_dir, resume=resume, progress=progress, description="style adapter")
    after = evaluate(model, source.eval_batches(), torch.device("cpu"))
    metrics = {
        "style_heldout_perplexity": after["eval_perplexity"],
        "style_heldout_perplexity_base": baseline["eval_perplexity"],
        "style_windows": len(windows),
        "style_epochs_run": math.ceil(result.steps / per_epoch),
        "style_stopped_early": result.stopped_early,
    }
    if started is not None:
        metrics["style_heldout_perplexity_start"] = metrics_start
    lineage = {
        "base_model": base_ref, "base_weights_sha256": weights_sha256(Path(ref.folder)), "lora": lora.to_json(),
        "started_from": started,
    }  # fmt: skip
    return model, metrics, lineage


def _load_start(model: Any, lora: LoraSettings, folder: Path) -> bool:
    """Load the adapter in `folder` into `model`'s fresh LoRA weights when it has the same
    rank, alpha and targets; False (and `model` untouched) when it does not."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from models.adapters import ADAPTER_WEIGHTS, read_adapter_config

    cfg = read_adapter_config(folder)
    same = (
        cfg.get("r") == lora.r
        and float(cfg.get("lora_alpha", 0)) == lora.alpha
        and sorted(cfg.get("target_modules") or []) == sorted(lora.target_modules)
    )
    if not same:
        return False
    state = {k: v.float() for k, v in load_file(str(folder / ADAPTER_WEIGHTS)).items()}
    set_peft_model_state_dict(model, state)
    return True


def _style_start(plan: PersonalizationPlan, base_ref: str) -> tuple[str, Path] | None:
    """Where a new style adapter starts: the model's current adapter, else the population
    model's (a federation's average of users' adapters), when trained on `base_ref`'s weights."""
    ref = resolve_path(base_ref)
    if ref.folder is None:
        return None
    sha = weights_sha256(Path(ref.folder))
    candidates: list[tuple[str, Path | None]] = [(f"{plan.model}@{plan.meta.get('version')}", plan.folder)]
    if plan.name != POPULATION_MODEL:
        try:
            served = (plan.manager or default_manager()).resolve("personalization", POPULATION_MODEL)
            candidates.append((f"personalization/{POPULATION_MODEL}@{served.version or served.raw}", served.folder))
        except Exception:
            pass
    for label, folder in candidates:
        if folder is None or not (folder / "adapter" / "adapter_config.json").exists():
            continue
        try:
            meta = json.loads((folder / "companion.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (meta.get("adapter") or {}).get("base_sha256") == sha:
            return label, folder / "adapter"
    return None


@dataclass
class PersonalizationPlan:
    """Step 1: the model resolved, access checked, its current prior and the user's data read."""

    vc: Any
    name: str
    prior: Any
    meta: dict[str, Any]
    data: UserData
    folder: Path | None = None
    manager: Any = None

    @property
    def model(self) -> str:
        return f"personalization/{self.name}"


@dataclass
class PersonalizationFit:
    """Step 2's outcome: the fitted learner, the style adapter (if trained) and the record."""

    learner: Any
    style_model: Any
    style_base: str
    style_lineage: dict[str, Any] | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    stop: str
    why: str


def plan_personalization(
    model_name: str, training_data: Any, epochs: int, manager: Any, user: str | None
) -> PersonalizationPlan:

    check_epochs(epochs)
    manager = manager or default_manager()
    vc, name = resolve_target(model_name, "personalization", user, "train_personalization_model")
    prior, meta, folder = None, {}, None
    try:
        served = manager.resolve("personalization", name)
        if served.folder is not None and (served.folder / "companion.json").exists():
            _prefs, prior, meta = read_personalization_folder(served.folder)
            folder = Path(served.folder)
    except Exception:
        prior = None
    return PersonalizationPlan(vc, name, prior, meta, read_user_data(training_data), folder, manager)


def fit_personalization(
    plan: PersonalizationPlan,
    run_dir: Path,
    epochs: int,
    *,
    seed: int,
    style_min_words: int,
    style_base: str | None,
    style_epochs: int,
    anonymizer: Any,
    resume: bool,
    progress: bool,
) -> PersonalizationFit:
    """Fit the preference learner on the feedback and, with enough writing, a style adapter."""

    t0, data, meta = time.time(), plan.data, plan.meta
    learner = PreferenceLearner.cold_start(data.preferences, seed, prior=plan.prior)
    if data.events:
        fit = learner.fit(data.events, epochs, seed=seed)
        history = fit.pop("history", [])
        learner_stop = (
            f"learner stopped early after {fit['epochs_run']} of {epochs} epochs (held-out loss flat for 3)"
            if fit["early_stopped"]
            else f"learner ran all {epochs} epochs"
        )
    else:
        fit, history, learner_stop = {"train_events": 0}, [], "no feedback: learner cold-started from the preferences"
    metrics: dict[str, Any] = {f"learner_{k}": v for k, v in fit.items()}
    metrics["writing_words"] = data.words
    style_model, style_lineage, anonymization = None, None, None
    base_ref = style_base or str(meta.get("style_base") or DEFAULT_STYLE_BASE)
    if data.words >= style_min_words:
        data.writing, anonymization = _anonymize_writing(data.writing, anonymizer)
        style_model, style_metrics, style_lineage = _train_style(
            data.writing, base_ref, style_epochs, run_dir / "style", resume=resume, progress=progress, seed=seed,
            lora=STYLE_LORA, start=_style_start(plan, base_ref),
        )  # fmt: skip
        metrics.update(style_metrics)
        style_note = f"style adapter trained on {data.words} words"
    else:
        style_note = f"style adapter skipped: {data.words} words of the user's writing, {style_min_words} needed"
    metrics["wall_seconds"] = round(time.time() - t0, 1)
    lineage = {
        "recipe": "personalization",
        "data_sha256": data.sha256(),
        "data_source": data.source,
        "feedback_events": len(data.events),
        "prior": meta.get("version") if plan.prior is not None else "neutral",
        "settings": {"epochs": epochs, "seed": seed, "heldout_fraction": 0.2, "style_min_words": style_min_words},
        "style_adapter": style_lineage,
        "anonymization": anonymization
        or {"applied": True, "note": "no text trained on: the learner keeps feature weights only"},
        "data_subjects": [subject_ref(data.user)] if data.user else [],
        "contains_user_data": True,
    }
    (run_dir / "report.json").write_text(
        json.dumps({"metrics": metrics, "lineage": lineage, "learner_history": history}, indent=1, default=str) + "\n"
    )
    why = f"fitted on {len(data.events)} feedback events from {data.source}; {style_note}"
    return PersonalizationFit(
        learner, style_model, base_ref, style_lineage, metrics, lineage, f"{learner_stop}; {style_note}", why
    )


def write_personalization_version(stage: Path, plan: PersonalizationPlan, fit: PersonalizationFit) -> None:
    """The new version's folder: preferences, learner weights, the style adapter if any."""

    if fit.style_model is not None:
        save_adapter(fit.style_model, stage / "adapter", fit.style_base)
    extra: dict[str, Any] = {"name": plan.name, "training": {"recipe": "personalization", "metrics": fit.metrics}}
    if fit.style_lineage is not None:
        extra["style_base"] = fit.style_base
        extra["adapter"] = {
            "path": "adapter",
            "base_model": fit.style_base,
            "base_sha256": fit.style_lineage["base_weights_sha256"],
        }
    write_personalization_folder(stage, plan.data.preferences, fit.learner, extra, manifest=False)


def train_personalization(
    model_name: str,
    training_data: Any,
    epochs: int = 50,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    publish: bool = True,
    seed: int = 0,
    style_min_words: int = 1500,
    style_base: str | None = None,
    style_epochs: int = 20,
    notes: str | None = None,
    manager: Any = None,
    user: str | None = None,
    anonymizer: Any = None,
) -> TrainedVersion:
    """Fit and publish a new version of personalization model `model_name`: plan, fit, publish."""

    plan = plan_personalization(model_name, training_data, epochs, manager, user)
    run_dir = run_folder(output_dir, f"personalization-{plan.name}", resume)
    fit = fit_personalization(
        plan, run_dir, epochs, seed=seed, style_min_words=style_min_words, style_base=style_base,
        style_epochs=style_epochs, anonymizer=anonymizer, resume=resume, progress=progress,
    )  # fmt: skip
    version = None
    if publish:
        write = lambda stage: write_personalization_version(stage, plan, fit)  # noqa: E731
        version = publish_version(plan.vc, plan.model, run_dir, write, notes or fit.why, fit.lineage, fit.metrics)
    return TrainedVersion(plan.model, version, "learner", fit.metrics, fit.lineage, str(run_dir), fit.stop, publish)
