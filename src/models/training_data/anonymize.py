"""The anonymization hook: where personal data is removed before anything is written.

Today's default is `PassThroughAnonymizer`, which changes nothing and says so: every
collection and preprocessing report carries `anonymization: {"applied": false, ...}` until the
privacy work (PII detection and replacement) provides a real `Anonymizer`. Anything with a
`name` attribute and an `anonymize(text) -> str` method fits; pass it to `DataCollector` and
`DataPreprocessor` as `anonymizer=`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Anonymizer", "PassThroughAnonymizer", "anonymization_report", "default_anonymizer"]


@runtime_checkable
class Anonymizer(Protocol):
    """Replaces personal data in a piece of text (names, e-mail addresses, phone numbers ...)."""

    name: str

    def anonymize(self, text: str) -> str: ...


class PassThroughAnonymizer:
    """Returns text unchanged. A placeholder: reports state that no anonymization was applied."""

    name = "pass-through"
    applied = False

    def anonymize(self, text: str) -> str:
        return text


def default_anonymizer() -> Anonymizer:
    """The anonymizer used when none is passed (the pass-through until the privacy work lands)."""
    return PassThroughAnonymizer()


def anonymization_report(anonymizer: Anonymizer) -> dict[str, Any]:
    """What a report says about the anonymization step."""
    applied = bool(getattr(anonymizer, "applied", True))
    note = (
        "pass-through: no personal data was removed (the anonymization hook is not filled yet)"
        if not applied
        else f"text passed through the {anonymizer.name!r} anonymizer"
    )
    return {"anonymizer": anonymizer.name, "applied": applied, "note": note}
