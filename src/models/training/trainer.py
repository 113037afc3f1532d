"""`ModelTrainer`: the seed's training front door, one method per recipe.

    trainer = ModelTrainer()
    trainer.train_personality_model(model_name="luna",
                                    training_data="models/training_data/personality_data", epochs=100)
    trainer.train_personalization_model(model_name="user_prefs",
                                        training_data="models/training_data/user_data", epochs=50)

Every recipe runs on the one loop in `models.training.loop` (accelerate; checkpoints, exact
resume, early stopping, progress bar, loss curve) and publishes a new version of the model with
its lineage through `ModelVersionControl`, so `ModelManager` serves it at once. `epochs` is a
maximum: early stopping on held-out perplexity (or, for the preference learner, held-out
accuracy) may end a run sooner, and the result says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.security import require
from models.training.base import EMBEDDED_SETTINGS, train_base
from models.training.personality import PersonalityRun, TrainedVersion, train_personality
from models.training.personalization import train_personalization

__all__ = ["ModelTrainer"]


class ModelTrainer:
    """Trains personality, personalization and base models and publishes them as versions.

    `progress=False` turns off the Rich progress bars (they go to stderr). `threads` sets
    torch's intra-op threads for the run (None: leave as is). `user` is who trains (None: the
    acting user, see `models.security`); every recipe requires the `train` level on the model
    before it reads any data, and publishing a version is checked again by version control.
    """

    def __init__(self, progress: bool = True, threads: int | None = None, user: str | None = None) -> None:
        self.progress = progress
        self.threads = threads
        self.user = user

    def _threads(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

    def train_personality_model(
        self,
        model_name: str,
        training_data: Any,
        epochs: int = 3,
        method: str = "lora",
        *,
        output_dir: str | Path | None = None,
        resume: bool = False,
        publish: bool = True,
        notes: str | None = None,
        **run_options: Any,
    ) -> TrainedVersion:
        """Tune personality `model_name` on its character's lines in `training_data` and publish
        a new version (LoRA adapter by default, or `method="full"`).

        `training_data`: a path (the seed's `models/training_data/personality_data`, a folder, a
        saved dataset), a configured data source name, or a `datasets.Dataset`. Extra keyword
        arguments are `PersonalityRun` fields (`lr`, `batch_size`, `heldout_fraction`, `lora`, ...).
        """

        self._threads()
        run = PersonalityRun(method=method, **run_options)
        return train_personality(
            model_name,
            training_data,
            epochs,
            method,
            run=run,
            output_dir=output_dir,
            resume=resume,
            progress=self.progress,
            publish=publish,
            notes=notes,
            user=self.user,
        )

    def train_personalization_model(
        self,
        model_name: str,
        training_data: Any,
        epochs: int = 50,
        *,
        output_dir: str | Path | None = None,
        resume: bool = False,
        publish: bool = True,
        **options: Any,
    ) -> TrainedVersion:
        """Fit user model `model_name` from `training_data` (a user-data folder such as the
        seed's `models/training_data/user_data`, or a user id whose feedback is in the
        database) and publish a new version: the preference learner, plus a style adapter when
        there is enough of the user's own writing."""

        self._threads()
        return train_personalization(
            model_name,
            training_data,
            epochs,
            output_dir=output_dir,
            resume=resume,
            progress=self.progress,
            publish=publish,
            user=self.user,
            **options,
        )

    def train_base_model(
        self,
        data_dir: str | Path,
        output_dir: str | Path,
        *,
        max_steps: int | None = None,
        resume: bool = False,
    ) -> Any:
        """The embedded model's recipe (`companion train base`): tokenizer + Llama from scratch."""

        require(self.user, "base/companion-base", "train", action="train")  # it retrains the embedded model
        self._threads()
        settings = EMBEDDED_SETTINGS
        if max_steps is not None:
            settings = settings.capped(max_steps)
        return train_base(data_dir, output_dir, settings=settings, resume=resume, progress=self.progress)
