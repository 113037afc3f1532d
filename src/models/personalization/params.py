"""`parameters:` of `type: personalization`, `adaptive` and `hybrid` entries (light: pydantic only).

models:
  personalization:
    user_prefs:
      type: adaptive                     # or personalization
      path: "models/personalization/user_prefs"
      parameters:
        learning_rate: 0.001             # SGD step of the learner per feedback event
        adaptation_rate: 0.1             # how far the profile moves toward a liked reply
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HybridParams", "PersonalizationParams"]


class PersonalizationParams(BaseModel):
    """Parameters of `type: personalization` and `type: adaptive`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    learning_rate: float = Field(0.5, gt=0.0, le=10.0, description="Learner SGD step per feedback event.")
    adaptation_rate: float = Field(0.2, ge=0.0, le=1.0, description="How far the profile moves per event.")
    candidates: int = Field(1, ge=1, le=16, description="Generations per personalized reply (best of n).")
    rewriter: str | None = Field(
        None, description="A model (CATEGORY/NAME or path) that also proposes free rewrites; none by default."
    )
    rewrites: int = Field(2, ge=0, le=8, description="Free rewrites asked of the rewriter.")
    memory_tokens: int = Field(96, ge=0, le=4096, description="Prompt budget for what we remember about the user.")
    seed: int = Field(0, description="Seed of cold starts and rewrites.")
    log_responses: bool = Field(True, description="Record answers so feedback can refer to them.")


class HybridParams(PersonalizationParams):
    """Parameters of `type: hybrid` (its `path` is the personalization folder)."""

    personality: str = Field("luna", description="The personality model (a config name or CATEGORY/NAME).")
