"""AutoML for a personality's LoRA with Optuna: `companion tune personality NAME --trials N --budget MINUTES`.

    result = tune_personality("luna", settings=TuneSettings(trials=8, budget_minutes=30))
    result.pareto        # the trials no other trial beats on both objectives
    result.version       # the chosen trial, published as a new version of luna

Each trial trains a LoRA (the personality recipe's plan and fit, in its own run folder) with
sampled settings: rank, alpha (a multiple of the rank), learning rate, epochs and the rehearsal
share (how many of the base model's own chat examples are mixed in). Two objectives, as an
Optuna multi-objective study: held-out perplexity relative to the base model (lower is better)
and emotion agreement (the share of replies, asked in an emotion, that the classifier reads as
that emotion; higher is better).

* The study lives in the project's database (Optuna's RDB storage on the same SQLite file or
  PostgreSQL URL), named `tune-personality-NAME`: running the command again resumes it, adding
  trials to those already done; `--study` picks another name.
* Pruning: after each epoch a trial whose perplexity ratio is worse than the median of the
  finished trials at that epoch stops (Optuna's `TrialPruned`; multi-objective studies have no
  built-in pruner, so this is the median rule done here).
* The published version is the Pareto trial with the best sum of the two objectives scaled to
  the front's range; its lineage holds the study, the trial, its settings and the whole front.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import TrainingError

__all__ = ["SPACE", "TuneResult", "TuneSettings", "tune_personality"]

#: The search space (each trial samples one value of each).
SPACE: dict[str, Any] = {
    "r": (4, 8, 16, 32),
    "alpha_per_rank": (1.0, 2.0, 4.0),
    "lr": (3e-4, 5e-3),  # log-uniform
    "rehearsal": (0, 6, 12, 24),
}


#: The data the shipped adapters were trained on (`tools/ship_personality_adapters.py`).
SHIPPED_DATA = "models/training_data/personality_data"


@dataclass
class TuneSettings:
    trials: int = 8
    """Trials to run in this call (a resumed study keeps the ones it has)."""
    budget_minutes: float | None = None
    """Stop starting trials after this long (a running trial finishes)."""
    epochs_max: int = 4
    """Epochs are sampled from 1 to this."""
    emotion_samples: int = 8
    """Replies per trial for emotion agreement."""
    seed: int = 1234
    """The recipe's default seed: the held-out split is the one the shipped adapters were measured on."""
    study: str | None = None
    """Study name (default: tune-personality-NAME)."""


@dataclass
class TuneResult:
    study: str
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    version: str | None
    pruned: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _storage() -> Any:
    import optuna

    from models import db

    url = db.connect().url.render_as_string(hide_password=False)
    return optuna.storages.RDBStorage(url)


def _row(trial: Any) -> dict[str, Any]:
    values = trial.values or [None, None]
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "params": dict(trial.params),
        "perplexity_ratio": values[0],
        "emotion_agreement": values[1],
        "folder": trial.user_attrs.get("folder"),
    }


def trial_personality(folder: Path, name: str, manager: Any = None) -> Any:
    """A trial's version folder loaded as the personality it is (its card, its adapter)."""
    from models.config import ModelEntry
    from models.model_manager import ModelManager
    from models.paths import PathRef
    from models.personality.loader import load_personality
    from models.registry import LoadRequest

    entry = ModelEntry(type="personality", path=str(folder))
    ref = PathRef("folder", str(folder), folder=folder, category="personality", name=name)
    return load_personality(manager or ModelManager(), LoadRequest("personality", name, entry, ref,
                                                                   entry.typed_parameters()))  # fmt: skip


def _emotion_agreement(folder: Path, name: str, samples: int, seed: int, manager: Any) -> float:
    """Emotion agreement of the trial's personality version."""
    from models.evaluation import _emotion_agreement as agreement

    found = agreement(trial_personality(folder, name, manager), samples, seed)
    if found is None:
        raise TrainingError(f"{folder}: the trial's personality has no emotion classifier to measure agreement")
    return float(found[0])


def _pruner(study: Any, trial: Any) -> Any:
    """The median rule: stop this trial at an epoch where it is worse than the median finished trial."""
    import optuna

    finished = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    epoch = {"n": 0}

    def on_eval(step: int, metrics: dict[str, float], base_ppl: float) -> bool:
        epoch["n"] += 1
        ratio = metrics["eval_perplexity"] / base_ppl
        trial.set_user_attr(f"ratio_epoch_{epoch['n']}", ratio)
        seen = sorted(v for t in finished if (v := t.user_attrs.get(f"ratio_epoch_{epoch['n']}")) is not None)
        if len(seen) >= 2 and ratio > seen[len(seen) // 2]:
            trial.set_user_attr("pruned_at_epoch", epoch["n"])
            return True
        return False

    return on_eval


def _choose(pareto: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not pareto:
        return None
    ppl = [t["perplexity_ratio"] for t in pareto]
    agr = [t["emotion_agreement"] for t in pareto]

    def scaled(v: float, lo: float, hi: float) -> float:
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    return min(pareto, key=lambda t: scaled(t["perplexity_ratio"], min(ppl), max(ppl))
               - scaled(t["emotion_agreement"], min(agr), max(agr)))  # fmt: skip


def tune_personality(
    name: str,
    training_data: Any = None,
    settings: TuneSettings | None = None,
    *,
    manager: Any = None,
    user: str | None = None,
    output_dir: str | Path | None = None,
    publish: bool = True,
    progress: bool = True,
) -> TuneResult:
    """Search LoRA settings for personality `name` (see the module docstring)."""
    import optuna

    from models.home import companion_home

    settings = settings or TuneSettings()
    training_data = training_data or SHIPPED_DATA  # the characters' own lines, as the shipped adapters use
    t0 = time.time()
    study_name = settings.study or f"tune-personality-{name}"
    root = Path(output_dir) if output_dir else companion_home() / "runs" / study_name
    root.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=_storage(),
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        load_if_exists=True,
    )
    plans: dict[int, Any] = {}

    def objective(trial: Any) -> tuple[float, float]:
        plan, fit, agreement = _trial(trial, study, name, training_data, settings, root, manager, user, progress)
        plans[trial.number] = (plan, fit)
        return fit.metrics["heldout_perplexity_ratio"], agreement

    timeout = settings.budget_minutes * 60 if settings.budget_minutes else None
    study.optimize(objective, n_trials=settings.trials, timeout=timeout, catch=())
    trials = [_row(t) for t in study.get_trials(deepcopy=False)]
    pareto = [_row(t) for t in study.best_trials]
    chosen = _choose(pareto)
    version = None
    if publish and chosen is not None and chosen["folder"] and Path(chosen["folder"]).is_dir():
        version = _publish(name, chosen, pareto, study_name, plans, manager, user)
    pruned = sum(1 for t in trials if t["state"] == "pruned")
    return TuneResult(study_name, trials, pareto, chosen, version, pruned, round(time.time() - t0, 1),
                      asdict(settings))  # fmt: skip


def _trial(
    trial: Any,
    study: Any,
    name: str,
    training_data: Any,
    settings: TuneSettings,
    root: Path,
    manager: Any,
    user: str | None,
    progress: bool,
) -> tuple[Any, Any, float]:
    """One trial: settings drawn from `SPACE`, a LoRA run (pruned against the median trial), its
    version staged under `root` and the emotion agreement measured on it."""
    import optuna

    from models.training.lora import LoraSettings
    from models.training.personality import (
        PersonalityRun,
        fit_personality,
        plan_personality,
        write_personality_version,
    )

    r = trial.suggest_categorical("r", list(SPACE["r"]))
    alpha = r * trial.suggest_categorical("alpha_per_rank", list(SPACE["alpha_per_rank"]))
    lr = trial.suggest_float("lr", *SPACE["lr"], log=True)
    epochs = trial.suggest_int("epochs", 1, settings.epochs_max)
    rehearsal = trial.suggest_categorical("rehearsal", list(SPACE["rehearsal"]))
    run = PersonalityRun(lora=LoraSettings(r=r, alpha=alpha), lr=lr, rehearsal=rehearsal, seed=settings.seed)
    plan = plan_personality(name, training_data, epochs, "lora", run, manager, user)
    folder = root / f"trial-{trial.number:03d}"
    shutil.rmtree(folder, ignore_errors=True)
    fit = fit_personality(plan, folder / "run", resume=False, progress=False, on_eval=_pruner(study, trial))
    if trial.user_attrs.get("pruned_at_epoch"):
        raise optuna.TrialPruned(f"worse than the median trial at epoch {trial.user_attrs['pruned_at_epoch']}")
    stage = folder / "version"
    stage.mkdir(parents=True)
    write_personality_version(stage, plan, fit)
    agreement = _emotion_agreement(stage, name, settings.emotion_samples, settings.seed, manager)
    trial.set_user_attr("folder", str(stage))
    trial.set_user_attr("metrics", json.loads(json.dumps(fit.metrics, default=str)))
    if progress:
        ratio = fit.metrics["heldout_perplexity_ratio"]
        print(f"trial {trial.number}: r={r} alpha={alpha:g} lr={lr:.2g} epochs={epochs} rehearsal={rehearsal}: "
              f"perplexity x{ratio:.3f}, emotion agreement {agreement:.2f}")  # fmt: skip
    return plan, fit, agreement


def _publish(
    name: str, chosen: dict[str, Any], pareto: list[dict[str, Any]], study: str, plans: dict[int, Any],
    manager: Any, user: str | None,
) -> str:  # fmt: skip
    """The chosen trial's folder as a new version of `name`, the study in its lineage."""
    from models.training.personality import plan_personality
    from models.training.publish import publish_version

    plan_fit = plans.get(chosen["number"])
    if plan_fit is not None:
        plan, fit = plan_fit
        vc, model, lineage, metrics = plan.vc, plan.model, dict(fit.lineage), dict(fit.metrics)
    else:  # a trial of an earlier run of the study: its folder and recorded metrics
        from models.training.personality import PersonalityRun

        plan = plan_personality(name, SHIPPED_DATA, 1, "lora", PersonalityRun(), manager, user)
        vc, model, lineage, metrics = plan.vc, plan.model, {"recipe": "personality", "method": "lora"}, {}
    lineage["tuning"] = {
        "library": "optuna",
        "study": study,
        "storage": "the project database",
        "trial": chosen["number"],
        "params": chosen["params"],
        "objectives": {"perplexity_ratio": "minimize", "emotion_agreement": "maximize"},
        "pareto": [{k: t[k] for k in ("number", "params", "perplexity_ratio", "emotion_agreement")} for t in pareto],
    }
    metrics["emotion_agreement"] = chosen["emotion_agreement"]
    source = Path(chosen["folder"])

    def write(stage: Path) -> None:
        shutil.copytree(source, stage, dirs_exist_ok=True)

    why = (f"tuned with Optuna ({study}, trial {chosen['number']}): perplexity x{chosen['perplexity_ratio']:.3f}, "
           f"emotion agreement {chosen['emotion_agreement']:.2f}")  # fmt: skip
    return publish_version(vc, model, source.parent / "run", write, why, lineage, metrics)
