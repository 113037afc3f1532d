"""`companion tune personality` (issue 23): Optuna trials of a LoRA on the tiny test model, a
Pareto front in the project database, pruning, resuming, the chosen trial published with the
study in its lineage."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from companion.cli import app

runner = CliRunner()


def test_tune_publishes_the_chosen_trial_and_the_study_resumes(ada: Path, ada_lines: Path) -> None:
    import optuna

    from models import db
    from models.lifecycle.version_control import ModelVersionControl
    from models.training.tune import TuneSettings, tune_personality

    settings = TuneSettings(trials=3, epochs_max=2, emotion_samples=2)
    result = tune_personality("ada", str(ada_lines), settings, progress=False)
    assert len(result.trials) == 3 and result.pareto and result.chosen in result.pareto
    done = [t for t in result.trials if t["state"] == "complete"]
    assert done and all(t["perplexity_ratio"] > 0 and 0 <= t["emotion_agreement"] <= 1 for t in done)
    assert result.version == "1.0.0"
    info = ModelVersionControl().show("ada", result.version, category="personality")
    tuning = info.lineage["tuning"]
    assert tuning["library"] == "optuna" and tuning["trial"] == result.chosen["number"] and tuning["pareto"]
    # the study is an Optuna storage in the project's own database: a second call adds to it
    url = db.connect().url.render_as_string(hide_password=False)
    assert len(optuna.load_study(study_name=result.study, storage=url).trials) == 3
    again = tune_personality("ada", str(ada_lines), TuneSettings(trials=2, epochs_max=2, emotion_samples=2),
                             progress=False, publish=False)  # fmt: skip
    assert len(again.trials) == 5 and again.version is None
    # each trial's agreement is measured on the trial as a personality (card + adapter)
    from models.training.tune import trial_personality

    trial = trial_personality(Path(done[0]["folder"]), "ada")
    assert trial.labels and hasattr(trial, "generate_response") and trial.classifier is not None


def test_a_bad_trial_is_pruned_by_the_median_rule() -> None:

    import optuna

    from models.training.tune import _pruner

    study = optuna.create_study(directions=["minimize", "maximize"])
    for ratio in (0.5, 0.6, 0.7):
        t = study.ask()
        t.set_user_attr("ratio_epoch_1", ratio)
        study.tell(t, [ratio, 0.5])
    trial = study.ask()
    prune = _pruner(study, trial)
    assert prune(10, {"eval_perplexity": 9.0}, 10.0) is True  # 0.9 > the median 0.6
    assert trial.user_attrs["pruned_at_epoch"] == 1
    good = study.ask()
    assert _pruner(study, good)(10, {"eval_perplexity": 5.0}, 10.0) is False


def test_the_cli_prints_the_front_and_json(ada: Path, ada_lines: Path) -> None:
    r = runner.invoke(app, ["tune", "personality", "ada", "--data", str(ada_lines), "--trials", "2",
                            "--epochs-max", "1", "--emotion-samples", "2", "--no-publish", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["study"] == "tune-personality-ada" and len(data["trials"]) == 2 and data["version"] is None
    r = runner.invoke(app, ["tune", "personality", "ada", "--trials", "0"])
    assert r.exit_code == 2
