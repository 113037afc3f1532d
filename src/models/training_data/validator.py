"""`DataValidator`: score every record, drop low-quality and duplicate ones, report why.

    validator = DataValidator()
    result = validator.validate_writing_data(data=chunks, quality_threshold=0.8)
    kept, report = result            # or result.data, result.report, result.rejected

Each record gets a quality score in [0, 1] from the rules in `filters.py` (Gopher, C4 and
FineWeb heuristics adapted to fiction and to chat windows; the English check is one of them).
Records scoring at least `quality_threshold` take part in de-duplication (`dedup.py`): an
exact or MinHash near-duplicate of an earlier kept record is dropped, so the first good copy
stays. Conversation windows are compared on their assistant text (the part a model learns),
so two windows sharing context but imitating different speakers are not duplicates.

The report has counts, the pass rate, how many records each rule and each duplicate kind
removed, a histogram of scores, the rules with their thresholds and sources, and throughput.
Records are read a batch at a time; memory grows by about 200 bytes per record, never with text.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset

from models.errors import DataError
from models.training_data.dedup import DedupIndex, MinHasher
from models.training_data.filters import rules_for, score_stats
from models.training_data.inputs import as_dataset, batch_rows
from models.training_data.textstats import Tokens, text_stats

__all__ = ["DataValidator", "ValidationReport", "ValidationResult"]


@dataclass
class ValidationReport:
    """What validation kept and why it dropped the rest."""

    kind: str
    quality_threshold: float
    total: int = 0
    kept: int = 0
    rejected: int = 0
    pass_rate: float = 0.0
    removed: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    histogram: dict[str, Any] = field(default_factory=dict)
    mean_score: float = 0.0
    english_check: bool = True
    dedup: dict[str, Any] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    mb_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        removed = ", ".join(f"{k}: {v}" for k, v in self.removed.items() if v) or "nothing"
        return (
            f"{self.kind}: kept {self.kept} of {self.total} ({self.pass_rate:.1%}) at threshold "
            f"{self.quality_threshold}; removed {removed}"
        )


@dataclass
class ValidationResult:
    """The kept records (with `quality_score`), the report, and the rejected records with reasons."""

    data: Dataset
    report: ValidationReport
    rejected: Dataset

    def __iter__(self) -> Iterator[Any]:
        yield self.data
        yield self.report

    def __len__(self) -> int:
        return len(self.data)


def _texts(ds: Dataset, kind: str) -> Iterator[tuple[str, str | None]]:
    """(text to score, text for near-duplicates) per record, a batch at a time."""
    cols = ds.column_names
    rows = batch_rows(ds)
    if kind == "conversations" and "messages" in cols:
        for batch in ds.select_columns(["messages"]).iter(batch_size=rows):
            for msgs in batch["messages"]:
                body = "\n".join(m["content"] for m in msgs if m["role"] != "system")
                yield body, "\n".join(m["content"] for m in msgs if m["role"] == "assistant")
    elif "turns" in cols:
        for batch in ds.select_columns(["turns"]).iter(batch_size=rows):
            for turns in batch["turns"]:
                yield "\n".join(t["text"] for t in turns), None
    elif "text" in cols:
        for batch in ds.select_columns(["text"]).iter(batch_size=rows):
            for text in batch["text"]:
                yield str(text or ""), None
    else:
        raise DataError(f"{kind} data needs a 'text', 'messages' or 'turns' column; it has {', '.join(cols)}")


def _histogram(scores: np.ndarray) -> dict[str, Any]:
    counts, edges = np.histogram(scores, bins=10, range=(0.0, 1.0))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


class DataValidator:
    """Quality scoring, English check and de-duplication of collected or preprocessed data."""

    def __init__(
        self,
        *,
        english: bool = True,
        dedup: bool = True,
        near_duplicates: bool = True,
        minhash: MinHasher | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.english = english
        self.dedup = dedup
        self.near_duplicates = near_duplicates
        self.minhash = minhash or MinHasher()
        self.progress = progress
        self.last_report: ValidationReport | None = None

    def validate_writing_data(self, data: Any, quality_threshold: float = 0.8) -> ValidationResult:
        """Validate prose (collected documents or preprocessed chunks)."""
        return self._validate(data, "writing", quality_threshold)

    def validate_conversation_data(self, data: Any, quality_threshold: float = 0.7) -> ValidationResult:
        """Validate conversations (collected ones or preprocessed windows)."""
        return self._validate(data, "conversations", quality_threshold)

    def _validate(self, data: Any, kind: str, threshold: float) -> ValidationResult:
        if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise DataError(f"quality_threshold must be between 0 and 1, got {threshold!r}")
        started = time.perf_counter()
        ds = as_dataset(data, kind).with_format(None)
        rules = rules_for(kind)
        n = len(ds)
        scores = np.zeros(n, dtype=np.float32)
        reasons: list[list[str]] = []
        index = DedupIndex(self.minhash, near=self.dedup and self.near_duplicates)
        size = 0
        for i, (text, near_text) in enumerate(_texts(ds, kind)):
            size += len(text)
            tokens = Tokens.of(text)
            scores[i], why = score_stats(text_stats(text, near_text, tokens), rules, self.english)
            reasons.append(why)
            if self.dedup:
                index.add(text, near_text or None, tokens)
            if self.progress is not None and (i + 1) % 1000 == 0:
                self.progress(i + 1, n)
        if self.progress is not None:
            self.progress(n, n)
        passed = scores >= threshold
        exact, near = index.duplicates(passed) if self.dedup else (np.zeros(n, bool), np.zeros(n, bool))
        keep = passed & ~exact & ~near
        for i in np.nonzero(exact)[0]:
            reasons[i] = [*reasons[i], "exact_duplicate"]
        for i in np.nonzero(near)[0]:
            reasons[i] = [*reasons[i], "near_duplicate"]
        report = self._report(kind, threshold, scores, passed, exact, near, keep, reasons)
        report.bytes = size
        report.seconds = round(time.perf_counter() - started, 3)
        report.mb_per_s = round(size / 1e6 / max(report.seconds, 1e-9), 3)
        # Columns go onto the whole dataset, then `select` (an index mapping, no copy of the rows).
        scored = ds.add_column("quality_score", scores.tolist())
        kept = scored.select(np.nonzero(keep)[0])
        rejected = scored.add_column("rejection_reasons", reasons).select(np.nonzero(~keep)[0])
        self.last_report = report
        return ValidationResult(kept, report, rejected)

    def _report(
        self,
        kind: str,
        threshold: float,
        scores: np.ndarray,
        passed: np.ndarray,
        exact: np.ndarray,
        near: np.ndarray,
        keep: np.ndarray,
        reasons: list[list[str]],
    ) -> ValidationReport:
        n = len(scores)
        rejected_reasons = Counter(r for i in np.nonzero(~keep)[0] for r in reasons[i])
        m = self.minhash
        return ValidationReport(
            kind=kind,
            quality_threshold=float(threshold),
            total=n,
            kept=int(keep.sum()),
            rejected=int(n - keep.sum()),
            pass_rate=round(float(keep.mean()) if n else 0.0, 4),
            removed={
                "low_quality": int((~passed).sum()),
                "exact_duplicate": int(exact.sum()),
                "near_duplicate": int(near.sum()),
            },
            reasons=dict(rejected_reasons.most_common()),
            histogram=_histogram(scores),
            mean_score=round(float(scores.mean()) if n else 0.0, 4),
            english_check=self.english,
            dedup={
                "enabled": self.dedup,
                "near_duplicates": self.dedup and self.near_duplicates,
                "shingle_words": m.ngram,
                "num_perm": m.num_perm,
                "bands": m.bands,
                "rows_per_band": m.rows,
                "similarity_threshold": round((1 / m.bands) ** (1 / m.rows), 3),
                "compared_on": "assistant text" if kind == "conversations" else "text",
            },
            rules=[r.to_dict() for r in rules_for(kind) if self.english or r.name != "not_english"],
        )
