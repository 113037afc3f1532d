"""One exception hierarchy for the whole model layer.

    CompanionError
    ├── ConfigError              a config file is malformed or has bad keys/values (lists every problem)
    ├── StoreError               the model store refused an operation
    │   ├── InvalidModelName     a name outside [a-z0-9][a-z0-9_.-]{0,63}
    │   ├── UnsafeFileError      a pickle / .bin / .pt / .pkl file where only safetensors are allowed
    │   └── IntegrityError       a file whose size or sha256 differs from manifest.json
    ├── ModelNotFoundError       a path or model that does not exist
    │   └── UnknownModelError    a model name that config does not know (lists close matches)
    ├── EngineError              a generation engine failed (HTTP error, bad weights, ...)
    │   ├── GenerationInputError the request's own input cannot be generated (bad option, token id, message)
    │   └── AdapterError         a LoRA adapter is malformed or does not fit its base
    ├── DataError                training data is missing, empty or malformed
    │   └── CardError            a character card is malformed (names the field, e.g. data.alternate_greetings[1])
    ├── TrainingError            a training run cannot start or continue
    ├── UnknownContextError      a `context=` (or emotion) key a personality does not define (lists valid ones)
    ├── PluginError              a framework plugin is unknown or failed to load (lists the known ones)
    ├── VersionError             a version or alias operation was refused (unknown version, bad alias)
    ├── UpdateError              an update could not be checked, downloaded, verified or installed
    │   └── CatalogError         a catalog was refused: bad signature, expired, older than one seen
    ├── AccessDenied             the security policy does not grant the user that level on that model
    ├── AuditError               the audit log could not be written or read (not: a broken chain, see verify)
    ├── ChatError                a saved conversation cannot do that (bad position, swipe, file)
    │   └── ChatNotFoundError    no chat with that id for that user
    └── PrivacyError             an anonymization, consent, export or erasure request was refused

Messages name the bad key, file or value and say how to fix it. Translation into exit codes
(CLI) and HTTP statuses (server) happens only at the edge.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AccessDenied",
    "AdapterError",
    "AuditError",
    "CardError",
    "CatalogError",
    "ChatError",
    "ChatNotFoundError",
    "CompanionError",
    "ConfigError",
    "DataError",
    "EngineError",
    "GenerationInputError",
    "IntegrityError",
    "InvalidModelName",
    "ModelNotFoundError",
    "PluginError",
    "PrivacyError",
    "StoreError",
    "TrainingError",
    "UnknownContextError",
    "UnknownModelError",
    "UnsafeFileError",
    "UpdateError",
    "VersionError",
]


class CompanionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(CompanionError):
    """A configuration file is invalid. `problems` holds one line per problem."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in config\n{lines}")


class StoreError(CompanionError):
    """The model store refused an operation."""


class InvalidModelName(StoreError, ValueError):
    """A model name that could escape the store or is not portable."""


class UnsafeFileError(StoreError):
    """A file format that could execute code when loaded (pickle and friends)."""


class IntegrityError(StoreError):
    """A file whose content does not match its manifest."""


class ModelNotFoundError(CompanionError, LookupError):
    """A model path or name that does not exist."""


class UnknownModelError(ModelNotFoundError):
    """A model name that no config knows; names the closest known ones."""

    def __init__(self, category: str, name: str, known: Iterable[str], what: str | None = None) -> None:
        import difflib

        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listed = ", ".join(known) if known else "none"
        what = what or (f"{category} model" if category != "model" else "model")
        super().__init__(f"unknown {what} {name!r}.{hint} Known: {listed}.")
        self.category, self.name, self.known, self.close = category, name, known, close


class EngineError(CompanionError):
    """A generation engine failed."""


class GenerationInputError(EngineError, ValueError):
    """A generation request the engine cannot honour as given: an unknown option, a token id
    outside the vocabulary, a prompt longer than the context, a malformed message. The caller's
    input (a 400 at the server), not a fault of the engine."""


class AdapterError(EngineError):
    """A LoRA adapter is malformed, unsupported, or does not fit the base model it is loaded on."""


class DataError(CompanionError, ValueError):
    """Training or evaluation data is missing, empty or malformed."""


class CardError(DataError):
    """A character card is malformed. `field` is the JSON path of the bad value."""

    def __init__(self, field: str, problem: str, source: str | None = None) -> None:
        self.field, self.problem, self.source = field, problem, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {problem}")


class TrainingError(CompanionError):
    """A training run cannot start or continue."""


class UnknownContextError(CompanionError, ValueError):
    """A `context=` key (scenario) that the character does not define; lists the valid ones."""

    def __init__(self, character: str, key: str, known: Iterable[str], what: str = "context") -> None:
        import difflib

        self.character, self.key, self.known = character, key, sorted(known)
        close = difflib.get_close_matches(str(key), self.known, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(self.known) or "none (define them under data.extensions.companion.scenarios)"
        super().__init__(f"{character} has no {what} {key!r}.{hint} Valid {what}s: {listed}.")


class PluginError(CompanionError, LookupError):
    """A framework plugin is unknown or failed to load."""


class VersionError(CompanionError):
    """A version or alias operation was refused (unknown version, invalid alias, ...)."""


class ExportTargetError(CompanionError):
    """A model cannot be exported (not local, unknown format or architecture)."""


class UpdateError(CompanionError):
    """An update could not be checked, downloaded, verified or installed."""


class CatalogError(UpdateError):
    """An update catalog was refused: bad signature, expired, or older than one already seen."""


class AccessDenied(CompanionError, PermissionError):
    """The security policy does not grant `user` the `level` on `model` (deny by default)."""

    def __init__(self, user: str, model: str, level: str, reason: str) -> None:
        self.user, self.model, self.level, self.reason = user, model, level, reason
        super().__init__(
            f"access denied: user {user!r} may not {level} model {model!r} ({reason}); "
            "an admin can grant it with `companion access grant` or in config.yaml's security: section"
        )


class AuditError(CompanionError):
    """The audit log could not be written or read."""


class QueueFullError(EngineError):
    """Too many requests are already waiting for this model: try again shortly (HTTP 429)."""


class ChatError(CompanionError, ValueError):
    """A saved conversation refused an operation (names the chat, the position or the line)."""


class ChatNotFoundError(ChatError, LookupError):
    """No chat with that id belongs to that user (another user's chat is not found either)."""


class PrivacyError(CompanionError, ValueError):
    """An anonymization, consent, export or erasure request was refused (names the bad value)."""
