"""The seed's `from models.performance import ModelPerformanceMonitor` (see `models.monitoring`)."""

from __future__ import annotations

from models.monitoring import (
    Clock,
    EventRecorder,
    FeedbackEvent,
    FeedbackSource,
    GenerationEvent,
    ModelPerformanceMonitor,
    generation_user,
    get_recorder,
    register_feedback_source,
)

__all__ = [
    "Clock",
    "EventRecorder",
    "FeedbackEvent",
    "FeedbackSource",
    "GenerationEvent",
    "ModelPerformanceMonitor",
    "generation_user",
    "get_recorder",
    "register_feedback_source",
]
