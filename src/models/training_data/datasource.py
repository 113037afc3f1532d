"""The `data_sources:` section of the config: named training-data sources.

    data_sources:
      Book_Collection:
        type: writing
        path: "builtin:writing_assistant/writing_samples"
      discord_logs:
        type: conversations
        path: "home:data/discord"
        fallback: "builtin:writing_assistant/conversation_data"

Kept in its own small module (pydantic only) so `models.config` can import it without pulling
in the data pipeline. Path forms are resolved by `models.training_data.locations`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SOURCE_FORMATS", "SOURCE_TYPES", "DataSourceConfig"]

SOURCE_TYPES = ("writing", "conversations", "characters")
SOURCE_FORMATS = ("auto", "text", "epub", "html", "discord", "chatlog", "jsonl", "persona_chat", "cards")


class DataSourceConfig(BaseModel):
    """One named data source."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    type: Literal["writing", "conversations", "characters"] = Field(
        description="What the source holds: writing (books, stories), conversations (chat logs) or characters."
    )
    path: str = Field(
        description=(
            "A folder or file; `builtin:<rel>` (data shipped in models/training_data), `home:<rel>` "
            "(inside COMPANION_HOME) or `gutenberg:<id>`. Relative paths resolve against the config file."
        )
    )
    fallback: str | None = Field(
        None, description="Used (and reported) when `path` is missing or holds no readable files."
    )
    format: Literal["auto", "text", "epub", "html", "discord", "chatlog", "jsonl", "persona_chat", "cards"] = Field(
        "auto", description="File format; `auto` decides by extension and content."
    )
    description: str | None = None
    #: The folder of the config file that defined this source (set when layers merge; not YAML).
    base_dir: str | None = Field(None, exclude=True)
