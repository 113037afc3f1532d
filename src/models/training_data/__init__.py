"""Training data: collect, preprocess and validate (DESIGN §7; docs/data.md).

    from models.training_data import DataCollector, DataPreprocessor, DataValidator

    writing = DataCollector().collect_writing_samples(source="Book_Collection", genres=["fantasy"])
    chunks = DataPreprocessor().preprocess_writing_data(raw_data=writing, tokenization="gpt2", max_length=512)
    result = DataValidator().validate_writing_data(data=chunks, quality_threshold=0.8)

Names load lazily (PEP 562), so importing `models.config`, which needs only the small
`datasource` module, does not import `datasets`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Anonymizer",
    "CollectionReport",
    "DataCollector",
    "DataPreprocessor",
    "DataSourceConfig",
    "DataValidator",
    "PassThroughAnonymizer",
    "PreprocessReport",
    "ResolvedData",
    "TimeRange",
    "ValidationReport",
    "ValidationResult",
    "content_hash",
    "load_character_sheets",
    "load_dataset",
    "load_training_data",
    "parse_time_period",
    "resolve_training_data",
    "save_dataset",
]

_WHERE = {
    "Anonymizer": "anonymize",
    "PassThroughAnonymizer": "anonymize",
    "CollectionReport": "reports",
    "PreprocessReport": "reports",
    "DataCollector": "collector",
    "load_training_data": "collector",
    "DataPreprocessor": "preprocessor",
    "DataValidator": "validator",
    "ValidationReport": "validator",
    "ValidationResult": "validator",
    "DataSourceConfig": "datasource",
    "ResolvedData": "locations",
    "resolve_training_data": "locations",
    "TimeRange": "timeperiod",
    "parse_time_period": "timeperiod",
    "content_hash": "dataset_io",
    "load_dataset": "dataset_io",
    "save_dataset": "dataset_io",
    "load_character_sheets": "sources.cards",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from models.training_data.anonymize import Anonymizer, PassThroughAnonymizer
    from models.training_data.collector import DataCollector, load_training_data
    from models.training_data.dataset_io import content_hash, load_dataset, save_dataset
    from models.training_data.datasource import DataSourceConfig
    from models.training_data.locations import ResolvedData, resolve_training_data
    from models.training_data.preprocessor import DataPreprocessor
    from models.training_data.reports import CollectionReport, PreprocessReport
    from models.training_data.sources.cards import load_character_sheets
    from models.training_data.timeperiod import TimeRange, parse_time_period
    from models.training_data.validator import DataValidator, ValidationReport, ValidationResult


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'models.training_data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.training_data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
