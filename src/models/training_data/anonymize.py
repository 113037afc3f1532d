"""The anonymization hook: where personal data is removed before anything is written.

`DataCollector` and `DataPreprocessor` pass every text (and speaker name) through an
`Anonymizer` before it is stored or tokenized. Anything with a `name` attribute and an
`anonymize(text) -> str` method fits (pass it as `anonymizer=`); when none is passed,
`default_anonymizer()` builds Presidio-based `models.privacy.anonymizer.Anonymizer` at the level
`privacy.training_anonymization` in config.yaml names (default `medium`; docs/privacy.md), with
spaCy NER only if `privacy.training_ner` is on (the regex, checksum and chat recognizers always run).

Nothing un-anonymized reaches training unless someone opts out explicitly: pass
`PassThroughAnonymizer(reason=...)`, or set `privacy.training_anonymization: off`. Every report
then says `applied: false` with who opted out and why, and the opt-out is written to the audit
log (`companion audit show --model training-data`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Anonymizer",
    "PassThroughAnonymizer",
    "PrivacyAnonymizer",
    "anonymization_report",
    "default_anonymizer",
]


@runtime_checkable
class Anonymizer(Protocol):
    """Replaces personal data in a piece of text (names, e-mail addresses, phone numbers ...)."""

    name: str

    def anonymize(self, text: str) -> str: ...


class PassThroughAnonymizer:
    """Returns text unchanged: an explicit opt-out of anonymization, recorded wherever it is used."""

    name = "pass-through"
    applied = False

    def __init__(self, reason: str = "explicit opt-out (PassThroughAnonymizer)", user: str | None = None) -> None:
        self.reason = reason
        self.user = user

    def anonymize(self, text: str) -> str:
        return text


class PrivacyAnonymizer:
    """The pipeline's default: `models.privacy.anonymizer.Anonymizer` at a level, built on first use
    (so constructing a collector or preprocessor does not load Presidio or spaCy)."""

    applied = True

    def __init__(self, level: str = "medium", spacy_model: str = "auto") -> None:
        from models.privacy.settings import LEVELS

        if level not in LEVELS:
            from models.errors import PrivacyError

            raise PrivacyError(f"privacy.training_anonymization {level!r}: use one of {', '.join(LEVELS)} or off")
        self.level, self.spacy_model = level, spacy_model
        self.name = f"presidio-{level}"
        self._impl: Any = None

    @property
    def impl(self) -> Any:
        if self._impl is None:
            from models.privacy.anonymizer import Anonymizer as Impl

            self._impl = Impl(self.level, spacy_model=self.spacy_model, allow=_character_names())
        return self._impl

    def anonymize(self, text: str) -> str:
        return self.impl.anonymize(text) if text and not text.isspace() else text

    def anonymize_texts(self, texts: list[str]) -> list[str]:
        return self.impl.anonymize_texts(texts)


def _character_names() -> list[str]:
    """The configured personalities' names (Luna, Marlowe, Quill): characters, not people, kept."""
    from models.privacy.manager import PrivacyManager

    try:
        return PrivacyManager().character_names()
    except Exception:
        return []


def default_anonymizer() -> Anonymizer:
    """The anonymizer used when none is passed, from config.yaml's `privacy:` section."""
    from models.config import load_effective_config

    settings = load_effective_config().privacy
    if settings.training_anonymization == "off":
        return PassThroughAnonymizer(reason="config.yaml privacy.training_anonymization: off")
    spacy_model = settings.spacy_model if settings.training_ner else "none"
    return PrivacyAnonymizer(settings.training_anonymization, spacy_model)


def anonymization_report(anonymizer: Anonymizer) -> dict[str, Any]:
    """What a report says about the anonymization step; an opt-out is also audited."""
    applied = bool(getattr(anonymizer, "applied", True))
    if applied:
        impl = getattr(anonymizer, "impl", anonymizer)
        ner = getattr(impl, "ner_model", None)
        report = {
            "anonymizer": anonymizer.name,
            "applied": True,
            "level": getattr(anonymizer, "level", None),
            "ner": ner,
            "note": f"text passed through the {anonymizer.name!r} anonymizer",
        }
        if ner is None and getattr(anonymizer, "level", "low") != "low" and hasattr(impl, "ner_model"):
            from models.privacy.anonymizer import NO_NER, warn_no_ner

            warn_no_ner()
            report["warning"] = NO_NER
        return report
    from models.security.identity import current_user

    user = getattr(anonymizer, "user", None) or current_user()
    reason = str(getattr(anonymizer, "reason", "explicit opt-out"))
    _record_opt_out(user, anonymizer.name, reason)
    return {
        "anonymizer": anonymizer.name,
        "applied": False,
        "opted_out_by": user,
        "note": f"not anonymized: {reason} (recorded in the audit log)",
    }


def _record_opt_out(user: str, name: str, reason: str) -> None:
    from models.audit import AuditLog

    AuditLog().append(user, "training-data", "anonymization_opt_out", detail={"anonymizer": name, "reason": reason})
