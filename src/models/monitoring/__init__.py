"""Operations: generation events, the performance monitor, Prometheus metrics, charts.

The seed imports `ModelPerformanceMonitor` from `models.performance` (a re-export of this
package's public API); see docs/operations.md.
"""

from __future__ import annotations

from models.monitoring.events import (
    Clock,
    EventRecorder,
    GenerationEvent,
    generation_user,
    get_recorder,
    pseudonymize,
    set_recorder,
)
from models.monitoring.feedback import (
    FeedbackEvent,
    FeedbackSource,
    register_feedback_source,
    unregister_feedback_source,
)
from models.monitoring.instrument import attach
from models.monitoring.monitor import ModelPerformanceMonitor

__all__ = [
    "Clock",
    "EventRecorder",
    "FeedbackEvent",
    "FeedbackSource",
    "GenerationEvent",
    "ModelPerformanceMonitor",
    "attach",
    "generation_user",
    "get_recorder",
    "pseudonymize",
    "register_feedback_source",
    "set_recorder",
    "unregister_feedback_source",
]
