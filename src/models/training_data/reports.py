"""What a collection or preprocessing run did: counts, files, problems and notes.

Problems are per file and never stop the other files: a malformed export is reported with its
file and position while the rest of the folder is still collected. `strict=True` on the
collector turns the first problem into a `DataError` instead.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CollectionReport", "PreprocessReport", "Problem"]

log = logging.getLogger("models.training_data")


@dataclass
class Problem:
    """One file (or part of one) that could not be read."""

    file: str
    position: str
    message: str

    def __str__(self) -> str:
        where = f" at {self.position}" if self.position else ""
        return f"{self.file}{where}: {self.message}"


@dataclass
class CollectionReport:
    """Counts and problems of one `DataCollector.collect_*` call."""

    kind: str
    source: str
    resolved: str = ""
    used_fallback: bool = False
    files_seen: int = 0
    files_read: int = 0
    records: int = 0
    bytes_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def problem(self, file: str, position: str, message: str) -> Problem:
        p = Problem(file, position, message)
        self.problems.append(p)
        log.warning("%s", p)
        return p

    def note(self, text: str, *, warn: bool = False) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.log(logging.WARNING if warn else logging.INFO, "%s", text)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = [str(p) for p in self.problems]
        return data


@dataclass
class PreprocessReport:
    """Counts of one `DataPreprocessor.preprocess_*` call."""

    kind: str
    records_in: int = 0
    records_out: int = 0
    tokens: int = 0
    tokenizer: str = ""
    max_length: int = 0
    stride: int = 0
    packing: bool = False
    truncated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    anonymization: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
