"""Privacy: `PrivacyManager` (the seed's import path), anonymization, consent and data-subject rights.

    from models.privacy import PrivacyManager
    privacy_manager = PrivacyManager()
    anonymized = privacy_manager.anonymize_data(raw_data=conversation_data, anonymization_level="high")
    status = privacy_manager.check_compliance(model_name="user_personalization", privacy_standards=["GDPR", "CCPA"])

Attributes load on first use (Presidio and spaCy are imported only when text is anonymized).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Anonymizer", "ComplianceReport", "PrivacyConfig", "PrivacyManager", "anonymize_data"]

_WHERE = {
    "PrivacyManager": "models.privacy.manager",
    "ComplianceReport": "models.privacy.compliance",
    "Anonymizer": "models.privacy.anonymizer",
    "anonymize_data": "models.privacy.anonymizer",
    "PrivacyConfig": "models.privacy.settings",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'models.privacy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
