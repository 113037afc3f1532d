"""`/metrics` exposition (parsed by prometheus_client's own parser) and evaluation runs."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.monitoring import ModelPerformanceMonitor
from models.monitoring.prometheus import LATENCY_BUCKETS, exposition


def _buckets(text: str) -> dict[str, float]:
    hist = {f.name: f for f in text_string_to_metric_families(text)}["companion_generation_latency_seconds"]
    assert hist.type == "histogram"
    return {
        s.labels["le"]: s.value
        for s in hist.samples
        if s.name.endswith("_bucket")
        and (s.labels["category"], s.labels["model"], s.labels["engine"]) == ("base", "tiny", "scripted")
    }


def test_metrics_parse_with_prometheus_own_parser(scripted_model: Any) -> None:
    from models.monitoring import generation_user

    scripted_model.engine.plan = (0.0625, 0.125, 3)
    scripted_model.generate("warm up")  # the label set exists from here on
    before = _buckets(exposition().decode())
    with generation_user("carol"):
        scripted_model.generate("one two")  # 0.3125 s: lands in (0.25, 0.5]
    text = exposition().decode()
    after = _buckets(text)
    assert len(after) == len(LATENCY_BUCKETS) + 1  # and +Inf
    delta = {le: after[le] - before[le] for le in after}
    assert delta["0.25"] == 0 and delta["0.5"] == 1 and delta["+Inf"] == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["companion_generations"].type == "counter"
    assert any(s.name == "companion_generations_total" for s in families["companion_generations"].samples)
    assert "companion_time_to_first_token_seconds" in families
    for family in families.values():
        for sample in family.samples:
            assert not {"user", "user_id", "user_hash"} & set(sample.labels)
    assert "carol" not in text


def test_manager_models_record_real_generations(tiny_config: Any) -> None:
    from models.model_manager import ModelManager

    manager = ModelManager()
    model = manager.load_model("base", "tiny")
    model.generate("The lighthouse keeper", max_length=5, seed=1)
    m = ModelPerformanceMonitor(manager, feedback=[]).get_performance_metrics("tiny", "last_hour")
    assert m["requests"] == 1
    assert m["completion_tokens"] == model.last_stats.completion_tokens
    assert m["engines"] == {model.engine_name: 1}
    assert m["avg_response_time"] > 0


def test_evaluation_run_feeds_accuracy(tiny_config: Any, tmp_path: Any) -> None:
    from models.evaluation import evaluate_model, heldout_metrics, load_heldout
    from models.model_manager import ModelManager

    held = tmp_path / "held.txt"
    held.write_text("The lighthouse keeper wrote a letter every evening. " * 20)
    manager = ModelManager()
    result = evaluate_model("tiny", data=held, manager=manager, emotion_samples=0)
    assert result.id is not None and result.tokens > 0
    assert 0 <= result.next_token_accuracy <= 1 and result.perplexity == pytest.approx(2.718281828**result.loss)
    # Independent check: the loss equals the model's own score() over the same window.
    model = manager.load_model("base", "tiny")
    _, docs = load_heldout(held)
    again = heldout_metrics(model, docs, window=10_000)
    ids = model.engine.codec.encode(docs[0], add_bos=True)[: model.engine.context_length]
    assert again["loss"] == pytest.approx(
        -model.score(model.engine.codec.decode(ids[1:]))[0] / (len(ids) - 1), rel=0.05
    )
    m = ModelPerformanceMonitor(manager, feedback=[]).get_performance_metrics("tiny")
    assert m["accuracy"] == round(100 * result.next_token_accuracy, 2)
    assert m["perplexity"] == round(result.perplexity, 3)
    assert m["requests"] == 0  # evaluation is not traffic


def test_evaluation_refuses_bad_data(tiny_config: Any, tmp_path: Any) -> None:
    from models.errors import DataError
    from models.evaluation import evaluate_model

    with pytest.raises(DataError, match="does not exist"):
        evaluate_model("tiny", data=tmp_path / "nope.txt")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no text"):
        evaluate_model("tiny", data=empty)
