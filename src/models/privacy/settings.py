"""The `privacy:` section of config.yaml.

    privacy:
      training_anonymization: medium    # low | medium | high | off (off: an explicit, recorded opt-out)
      spacy_model: auto                 # auto (the first installed of en_core_web_lg/md/sm), none, or a package
      training_ner: true                # NER in the data pipeline too: names, places, organisations (false: regex only)
      encrypt_at_rest: true             # user data (memory, preferences, chats) through models.privacy.crypto
      retention:                        # days kept per data category; absent = kept until erased
        generation_events: 90
        raw_data: 30
        audit_log: 730

Kept free of imports from the rest of the package so `models.config` can embed it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DATA_CATEGORIES", "LEVELS", "PrivacyConfig"]

LEVELS = ("low", "medium", "high")

#: Data categories retention can be set for, and where each lives (docs/privacy.md).
DATA_CATEGORIES = {
    "generation_events": "table generation_events (column `at`)",
    "evaluation_runs": "table evaluation_runs (column `at`)",
    "audit_log": "the audit chain: rows are pseudonymized (subject map deleted), never removed",
    "consents": "withdrawn consent records (column `withdrawn_at`)",
    "raw_data": "files under COMPANION_HOME/users/<user>/raw/ (modification time)",
}


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    training_anonymization: str = Field(
        "medium", description="Level the data pipeline anonymizes at: low | medium | high | off (opt-out)."
    )
    spacy_model: str = Field("auto", description="auto | none | an installed spaCy package name.")
    training_ner: bool = Field(
        True,
        description="Use spaCy NER in the data pipeline too, so training text loses names, places and "
        "organisations (a small model also tags some capitalised words, e.g. 'Draft', as people).",
    )
    encrypt_at_rest: bool = Field(True, description="Encrypt user data at rest (key outside the database).")
    retention: dict[str, int] = Field(default_factory=dict, description="Days kept per data category.")

    @field_validator("training_anonymization")
    @classmethod
    def _level(cls, v: str) -> str:
        if v not in (*LEVELS, "off"):
            raise ValueError(f"must be one of {', '.join((*LEVELS, 'off'))}")
        return v

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: dict[str, int]) -> dict[str, int]:
        for key, days in v.items():
            if key not in DATA_CATEGORIES:
                raise ValueError(f"unknown data category {key!r}; known: {', '.join(DATA_CATEGORIES)}")
            if days < 1:
                raise ValueError(f"{key}: keep data at least 1 day (got {days})")
        return v

    def merged(self, over: PrivacyConfig) -> PrivacyConfig:
        data = self.model_dump()
        for key in over.model_fields_set:
            data[key] = getattr(over, key) if key != "retention" else {**self.retention, **over.retention}
        return PrivacyConfig(**data)
