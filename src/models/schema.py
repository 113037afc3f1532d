"""The database schema: the current tables (what queries use) and the frozen table definitions
the numbered migrations (`models.migrations`) create them from.

`models.db` re-exports every table and runs the migrations; import tables from there. Each
`*_table(s)(md)` function defines tables as the migration that first created them did. While a
table stays that way, one function builds it both for its migration and for `metadata`; when a
later migration changes a table, `metadata` gets the change and the function stays as it was.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["NAMING", "metadata"]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
_TS = 40  # length of an ISO-8601 timestamp column


# -- the current schema (what queries use) ----------------------------------------------------

metadata = MetaData(naming_convention=NAMING)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", String(_TS), nullable=False),
)


def operations_tables(md: MetaData) -> tuple[Table, Table]:
    """Frozen DDL of migration 3 (never edit: change these tables with a new migration).

    generation_events (one row per generation) and evaluation_runs (one per `companion eval`)."""
    events = Table(
        "generation_events",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64)),
        Column("engine", String(32), nullable=False),
        Column("user_hash", String(32)),
        Column("latency_s", Float, nullable=False),
        Column("ttft_s", Float),
        Column("prompt_tokens", Integer, nullable=False),
        Column("completion_tokens", Integer, nullable=False),
        Column("finish_reason", String(32), nullable=False),
        Column("error", String(200)),
        Index(None, "category", "name", "at"),
    )
    runs = Table(
        "evaluation_runs",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64)),
        Column("dataset", String(500), nullable=False),
        Column("dataset_sha256", String(64), nullable=False),
        Column("tokens", Integer, nullable=False),
        Column("loss", Float, nullable=False),
        Column("perplexity", Float, nullable=False),
        Column("next_token_accuracy", Float, nullable=False),
        Column("emotion_agreement", Float),
        Column("emotion_samples", Integer),
        Column("details", JSON),
        Index(None, "category", "name", "at"),
    )
    return events, runs


generation_events, evaluation_runs = operations_tables(metadata)


# -- migrations -------------------------------------------------------------------------------


def version_tables(md: MetaData) -> tuple[Table, Table, Table]:
    """model_versions, aliases and alias_history, as first shipped (frozen)."""
    model_versions = Table(
        "model_versions",
        md,
        Column("id", Integer, primary_key=True),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("path", Text, nullable=False),
        Column("created_at", String(_TS), nullable=False),
        Column("author", String(200)),
        Column("notes", Text),
        Column("manifest_sha256", String(64)),
        Column("lineage", JSON),
        UniqueConstraint("category", "name", "version"),
    )
    aliases = Table(
        "aliases",
        md,
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("alias", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        PrimaryKeyConstraint("category", "name", "alias"),
        ForeignKeyConstraint(
            ["category", "name", "version"],
            ["model_versions.category", "model_versions.name", "model_versions.version"],
        ),
    )
    alias_history = Table(
        "alias_history",
        md,
        Column("id", Integer, primary_key=True),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("alias", String(64), nullable=False),
        Column("from_version", String(64)),
        Column("to_version", String(64), nullable=False),
        Column("actor", String(200), nullable=False),
        Column("reason", Text),
        Column("at", String(_TS), nullable=False),
        Index(None, "category", "name", "alias"),
    )
    return model_versions, aliases, alias_history


def catalog_tables(md: MetaData) -> tuple[Table, Table]:
    """version_tags (key/value labels on a version) and update_sources (the newest catalog
    seen per update source, for rollback and freeze protection), as first shipped (frozen)."""
    version_tags = Table(
        "version_tags",
        md,
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("key", String(64), nullable=False),
        Column("value", Text, nullable=False),
        Column("actor", String(200), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        PrimaryKeyConstraint("category", "name", "version", "key"),
        ForeignKeyConstraint(
            ["category", "name", "version"],
            ["model_versions.category", "model_versions.name", "model_versions.version"],
        ),
    )
    update_sources = Table(
        "update_sources",
        md,
        Column("source", String(1000), primary_key=True),
        Column("catalog_version", BigInteger, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("expires", String(_TS), nullable=False),
        Column("seen_at", String(_TS), nullable=False),
    )
    return version_tags, update_sources


def security_tables(md: MetaData) -> list[Table]:
    """Frozen DDL of migration 4 (never edit: change these tables with a new migration).

    The audit chain, its signed checkpoints and subject map, database access rules, consent
    records and privacy bookkeeping (issue 9; see models.audit, models.security, models.privacy)."""
    return [
        Table(
            "audit_log",
            md,
            Column("seq", BigInteger, primary_key=True, autoincrement=False),
            Column("at", String(_TS), nullable=False),
            Column("subject", String(64), nullable=False),
            Column("model", String(200), nullable=False),
            Column("action", String(100), nullable=False),
            Column("level", String(16)),
            Column("allowed", Integer),
            Column("detail", Text, nullable=False),
            Column("prev_hash", String(64), nullable=False),
            Column("hash", String(64), nullable=False),
            Index(None, "subject"),
            Index(None, "model"),
        ),
        Table(
            "audit_checkpoints",
            md,
            Column("seq", BigInteger, primary_key=True, autoincrement=False),
            Column("hash", String(64), nullable=False),
            Column("at", String(_TS), nullable=False),
            Column("public_key", String(100), nullable=False),
            Column("signature", String(200), nullable=False),
        ),
        Table(
            "audit_subjects",
            md,
            Column("subject", String(64), primary_key=True),
            Column("user_id", String(200), nullable=False, unique=True),
            Column("created_at", String(_TS), nullable=False),
        ),
        Table(
            "access_rules",
            md,
            Column("id", Integer, primary_key=True),
            Column("effect", String(8), nullable=False),
            Column("user_id", String(200), nullable=False),
            Column("models", String(200), nullable=False),
            Column("level", String(16), nullable=False),
            Column("actor", String(200), nullable=False),
            Column("at", String(_TS), nullable=False),
            UniqueConstraint("effect", "user_id", "models", "level"),
        ),
        Table(
            "consents",
            md,
            Column("id", Integer, primary_key=True),
            Column("user_id", String(200), nullable=False),
            Column("purpose", String(100), nullable=False),
            Column("granted_at", String(_TS), nullable=False),
            Column("withdrawn_at", String(_TS)),
            Column("source", String(200), nullable=False),
            Index(None, "user_id"),
        ),
        Table(
            "privacy_state",
            md,
            Column("key", String(100), primary_key=True),
            Column("value", Text, nullable=False),
            Column("updated_at", String(_TS), nullable=False),
        ),
    ]


def personalization_tables(md: MetaData) -> tuple[Table, Table, Table, Table]:
    """user_preferences, user_memory, personalized_responses and feedback (models.personalization).

    `feedback` has the columns the monitor reads (`at`, `category`, `model`, `version`, `kind`,
    `value`, `user_hash`; see models.monitoring.feedback): `kind` is rating (1-5 stars), thumbs
    (+1/-1), choice, regenerate or edit (`value` = share of the reply changed).
    """
    prefs = Table(
        "user_preferences",
        md,
        Column("user_id", String(200), primary_key=True),
        Column("data", JSON, nullable=False),
        Column("updated_at", String(_TS), nullable=False),
    )
    memory = Table(
        "user_memory",
        md,
        Column("id", Integer, primary_key=True),
        Column("user_id", String(200), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("text", Text, nullable=False),
        Column("source", String(32), nullable=False),
        Column("created_at", String(_TS), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        Index(None, "user_id"),
    )
    responses = Table(
        "personalized_responses",
        md,
        Column("id", String(64), primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("user_id", String(200)),
        Column("category", String(64), nullable=False),
        Column("model", String(64), nullable=False),
        Column("version", String(64)),
        Column("personalization", String(64), nullable=False),
        Column("context", Text),
        Column("text", Text, nullable=False),
        Column("candidates", JSON, nullable=False),
        Column("scores", JSON, nullable=False),
        Column("chosen", Integer, nullable=False),
        Column("details", JSON),
        Index(None, "user_id", "at"),
    )
    feedback = Table(
        "feedback",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("model", String(64), nullable=False),
        Column("version", String(64)),
        Column("kind", String(16), nullable=False),
        Column("value", Float),
        Column("user_hash", String(32)),
        Column("user_id", String(200)),
        Column("response_id", String(64)),
        Column("personalization", String(64)),
        Column("event", JSON, nullable=False),
        Index(None, "model", "at"),
        Index(None, "user_id"),
        Index(None, "response_id"),
    )
    return prefs, memory, responses, feedback


def api_keys_table(md: MetaData) -> Table:
    """Frozen DDL of migration 6: the server's API keys (companion.server.keys).

    Only a key's SHA-256 is stored (`key_hash`), with its first characters (`prefix`) so a user
    can tell keys apart; `revoked_at` set = the key no longer works."""
    return Table(
        "api_keys",
        md,
        Column("id", Integer, primary_key=True),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("user_id", String(200), nullable=False),
        Column("name", String(100)),
        Column("created_at", String(_TS), nullable=False),
        Column("last_used_at", String(_TS)),
        Column("revoked_at", String(_TS)),
        Index(None, "user_id"),
    )


def chat_tables(md: MetaData) -> tuple[Table, Table]:
    """Frozen DDL of migration 8: saved conversations (models.chats).

    `chats`: one row per conversation of a user with a model (`model` is CATEGORY/NAME);
    `title` and `meta` are sealed at rest. `chat_messages`: its messages in order (`position`
    0, 1, ...); `swipes` (sealed) holds every alternative answer at that place, `swipe_id` the one
    shown, `details` (sealed) what else the message carries (emotion, a SillyTavern message's
    own fields). Each row repeats `user_id` so erasure is one delete per table."""
    chats = Table(
        "chats",
        md,
        Column("id", String(32), primary_key=True),
        Column("user_id", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("title", Text, nullable=False),
        Column("meta", JSON, nullable=False),
        Column("created_at", String(_TS), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        Index(None, "user_id", "updated_at"),
    )
    messages = Table(
        "chat_messages",
        md,
        Column("id", Integer, primary_key=True),
        Column("chat_id", String(32), nullable=False),
        Column("user_id", String(200), nullable=False),
        Column("position", Integer, nullable=False),
        Column("role", String(16), nullable=False),
        Column("swipes", JSON, nullable=False),
        Column("swipe_id", Integer, nullable=False),
        Column("details", JSON, nullable=False),
        Column("created_at", String(_TS), nullable=False),
        UniqueConstraint("chat_id", "position"),
        Index(None, "user_id"),
    )
    return chats, messages


def session_table(md: MetaData) -> Table:
    """Frozen DDL of migration 9: a personality's conversation state with one user (emotional
    state, scenario, turn count; `state` sealed at rest), shared by every server replica."""
    return Table(
        "personality_sessions",
        md,
        Column("user_id", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("state", JSON, nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        PrimaryKeyConstraint("user_id", "model"),
    )


# The current schema of migration 4's tables (frozen in `security_tables` until a migration changes one).
model_versions, aliases, alias_history = version_tables(metadata)
version_tags, update_sources = catalog_tables(metadata)
audit_log, audit_checkpoints, audit_subjects, access_rules, consents, privacy_state = security_tables(metadata)
# Migration 7 added a column to each of two of them.
audit_subjects.append_column(Column("salt", String(32)))
audit_checkpoints.append_column(Column("every", Integer))
# The current schema of migration 5's tables (frozen in `personalization_tables` likewise).
user_preferences, user_memory, personalized_responses, feedback = personalization_tables(metadata)
# The current schema of migration 6's table.
api_keys = api_keys_table(metadata)
# The current schema of migration 8's tables.
chats, chat_messages = chat_tables(metadata)
# The current schema of migration 9's table.
personality_sessions = session_table(metadata)
