"""Training: one loop (`loop.train`, on accelerate) and the recipes that use it.

    from models.training import ModelTrainer

    trainer = ModelTrainer()
    trainer.train_personality_model(model_name="luna",
                                    training_data="models/training_data/personality_data", epochs=100)

Recipes: `base` (the embedded model from scratch), `personality` (a character's LoRA or full
fine-tune), `personalization` (a user's preference learner and style adapter). Imports are lazy:
importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.training.loop import TrainResult, TrainSettings
    from models.training.lora import LoraSettings
    from models.training.personality import PersonalityRun, TrainedVersion
    from models.training.trainer import ModelTrainer

__all__ = ["LoraSettings", "ModelTrainer", "PersonalityRun", "TrainResult", "TrainSettings", "TrainedVersion"]

_WHERE = {
    "ModelTrainer": "models.training.trainer",
    "PersonalityRun": "models.training.personality",
    "TrainedVersion": "models.training.personality",
    "TrainSettings": "models.training.loop",
    "TrainResult": "models.training.loop",
    "LoraSettings": "models.training.lora",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'models.training' has no attribute {name!r}")
