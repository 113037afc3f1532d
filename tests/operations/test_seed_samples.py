"""The seed's "Performance Monitoring" and "Performance Optimization" samples, as written."""

from __future__ import annotations

import re
from typing import Any

import pytest

MONITORING = """
from models.performance import ModelPerformanceMonitor

monitor = ModelPerformanceMonitor()

# Monitor model performance
performance_metrics = monitor.get_performance_metrics(
    model_name="luna_personality",
    time_period="last_24_hours"
)

print(f"Response Time: {performance_metrics['avg_response_time']}ms")
print(f"Accuracy: {performance_metrics['accuracy']}%")
print(f"User Satisfaction: {performance_metrics['user_satisfaction']}%")
"""

OPTIMIZATION = """
from models.optimization import ModelOptimizer

optimizer = ModelOptimizer()

# Optimize model performance
optimization_result = optimizer.optimize_model(
    model_name="luna_personality",
    optimization_type="speed_accuracy_balance"
)

print(f"Performance improvement: {optimization_result['improvement']}%")
"""


@pytest.fixture
def luna(user_config: Any) -> Any:
    user_config("models:\n  personality:\n    luna: {type: transformer, path: '{tiny}'}\n")
    from models.model_manager import ModelManager

    return ModelManager().load_model("personality", "luna")


def test_monitoring_sample_prints_measured_figures(luna: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from models.evaluation import evaluate_model

    for seed in range(3):
        luna.generate("The lighthouse keeper", max_length=6, seed=seed)
    run = evaluate_model("luna", emotion_samples=0, max_tokens=300)
    exec(compile(MONITORING, "seed-monitoring", "exec"), {})
    printed = capsys.readouterr().out
    response = float(re.search(r"Response Time: ([\d.]+)ms", printed).group(1))
    assert response > 0
    assert f"Accuracy: {round(100 * run.next_token_accuracy, 2)}%" in printed
    assert "User Satisfaction: None%" in printed  # no feedback yet: no number is invented


def test_optimization_sample_runs(luna: Any, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(OPTIMIZATION, "seed-optimization", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"Performance improvement: -?[\d.]+%", printed)
