"""Evaluation runs: `companion eval MODEL` → held-out next-token accuracy and perplexity (and,
for personality models, emotion-control agreement), recorded for the monitor.

    result = evaluate_model("luna")            # loads through ModelManager, records the run
    result.next_token_accuracy, result.perplexity, result.emotion_agreement

**Held-out text.** By default the stories shipped in
`models/training_data/writing_assistant/writing_samples/` (original fiction written for this
project, which the embedded model never trained on: docs/embedded-model.md lists its data);
`data=` takes a `.txt`/`.md` file, a `.jsonl` file of `{"text": ...}` records, or a folder of
those. Each document is tokenized with a BOS and cut into windows of at most `window` tokens;
every position after the first of a window is a prediction target.

**Definitions** (the same as `models.training.loop.evaluate`): loss = mean cross-entropy (nats)
over all targets; perplexity = exp(loss); next-token accuracy = share of targets where the
model's most likely token (argmax of the logits) is the actual next token.

**Emotion agreement** (personality models only, `emotion_samples` > 0): the personality replies
to fixed everyday messages with each emotion label in turn (`emotional_state=`, greedy-free
seeded sampling), and the reply's emotion is read by the personality's own classifier;
agreement = share of replies whose detected emotion is the requested one. The classifier is the
judge, so this is agreement with it, not human judgement (docs/personality.md).

Evaluation generations are not recorded as traffic. The run is stored in `evaluation_runs`
with the model version the manager serves, which is what `get_performance_metrics` matches.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import db
from models.errors import DataError, EngineError
from models.monitoring.instrument import label_of, recording_suspended
from models.monitoring.monitor import ModelPerformanceMonitor
from models.training_data.locations import shipped_dir

__all__ = ["EvaluationResult", "default_heldout", "evaluate_model", "heldout_metrics", "load_heldout"]

EMOTION_MESSAGES = (
    "I finished the first chapter tonight.",
    "My editor wants the whole middle rewritten.",
    "Tell me about the place you'd most like to visit.",
    "I can't decide how the story should end.",
)


@dataclass
class EvaluationResult:
    category: str
    name: str
    version: str | None
    dataset: str
    dataset_sha256: str
    tokens: int
    loss: float
    perplexity: float
    next_token_accuracy: float
    emotion_agreement: float | None = None
    emotion_samples: int | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_heldout() -> Path:

    return shipped_dir("writing_samples")


def load_heldout(data: str | Path | None = None) -> tuple[str, list[str]]:
    """`(label, documents)` of a held-out set (see the module docstring for what `data` may be)."""
    path = Path(data).expanduser() if data is not None else default_heldout()
    if not path.exists():
        raise DataError(f"held-out data {str(path)!r} does not exist: give a .txt/.md/.jsonl file or a folder")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md", ".jsonl")) if path.is_dir() else [path]
    docs: list[str] = []
    for f in files:
        if f.suffix == ".jsonl":
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get("text")
                except (ValueError, AttributeError):
                    raise DataError(f"{f}:{i}: expected a JSON object with a 'text' field") from None
                if isinstance(text, str) and text.strip():
                    docs.append(text)
        elif f.suffix in (".txt", ".md"):
            text = f.read_text(encoding="utf-8")
            if f.suffix == ".md" and text.startswith("---\n") and "\n---\n" in text[4:]:
                text = text[4:].split("\n---\n", 1)[1]  # YAML front matter is metadata, not prose
            if text.strip():
                docs.append(text)
        else:
            raise DataError(f"{f}: held-out data must be .txt, .md or .jsonl")
    if not docs:
        raise DataError(f"held-out data {str(path)!r} holds no text")
    return str(path), docs


def _windows(codec: Any, docs: Sequence[str], window: int, max_tokens: int | None) -> list[list[int]]:
    out, total = [], 0
    for doc in docs:
        ids = codec.encode(doc, add_bos=True)
        for i in range(0, len(ids) - 1, window):
            chunk = ids[i : i + window]
            if len(chunk) >= 2:
                out.append(chunk)
                total += len(chunk) - 1
            if max_tokens is not None and total >= max_tokens:
                return out
    return out


@torch.inference_mode()
def heldout_metrics(
    generator: Any, docs: Sequence[str], *, window: int = 256, max_tokens: int | None = None
) -> dict[str, Any]:
    """Loss, perplexity and next-token accuracy of a local generator (a `TransformerModel` or
    an engine with `codec` and `forward_full`) on `docs`; plus the sha256 of the token stream."""
    engine = getattr(generator, "engine", generator)
    if not hasattr(engine, "forward_full") or not hasattr(engine, "codec"):
        raise EngineError(
            f"held-out evaluation needs logits: engine {getattr(engine, 'name', engine)!r} is remote "
            "(evaluate a local copy of the model instead)"
        )
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, not {window}")
    window = min(window, engine.context_length)
    chunks = _windows(engine.codec, docs, window, max_tokens)
    if not chunks:
        raise DataError("the held-out text is too short: it has no prediction targets")
    digest = hashlib.sha256()
    total, count, correct = 0.0, 0, 0
    for ids in chunks:
        digest.update(json.dumps(ids).encode())
        x = torch.tensor([ids])
        logits = engine.forward_full(x)[0, :-1].float()
        target = x[0, 1:]
        total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        count += int(target.numel())
    loss = total / count
    return {
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "next_token_accuracy": correct / count,
        "windows": len(chunks),
        "sha256": digest.hexdigest(),
    }


def _emotion_agreement(model: Any, samples: int, seed: int) -> tuple[float, int, dict[str, Any]] | None:
    labels = list(getattr(model, "labels", None) or [])
    if not labels or not callable(getattr(model, "generate_response", None)) or model.classifier is None:
        return None
    hits, n, per_label = 0, 0, {}
    for i in range(samples):
        label = labels[i % len(labels)]
        message = EMOTION_MESSAGES[(i // len(labels)) % len(EMOTION_MESSAGES)]
        # An explicit empty history: nothing is kept in any user's conversation.
        reply = model.generate_response(message=message, emotional_state=label, history=[], seed=seed + i)
        ok = getattr(reply, "detected_emotion", None) == getattr(reply, "emotion", label)
        hits += ok
        n += 1
        got = per_label.setdefault(label, [0, 0])
        got[0] += ok
        got[1] += 1
    return hits / n, n, {k: v[0] / v[1] for k, v in per_label.items()}


def _record(result: EvaluationResult) -> int:
    from sqlalchemy import insert

    row = result.to_json()
    row.pop("id")
    row.pop("seconds")
    row["details"] = {**row["details"], "seconds": result.seconds}
    row["at"] = db.utc_now()
    with db.connect().begin() as conn:
        return int(conn.execute(insert(db.evaluation_runs).values(**row)).inserted_primary_key[0])


def evaluate_model(
    model_name: str,
    data: str | Path | None = None,
    *,
    category: str | None = None,
    window: int = 256,
    max_tokens: int | None = 50_000,
    emotion_samples: int = 20,
    seed: int = 0,
    manager: Any = None,
    record: bool = True,
) -> EvaluationResult:
    """Evaluate `model_name` (as `ModelManager` serves it) and record the run."""
    import time

    if emotion_samples < 0:
        raise ValueError(f"emotion_samples must be >= 0, not {emotion_samples}")
    monitor = ModelPerformanceMonitor(manager)
    category, name = monitor.resolve(model_name, category)
    model = monitor.manager.load_model(category, name)
    label = label_of(model)
    version = label[2] if label else None
    generator = model if hasattr(model, "engine") else getattr(model, "base", None)
    if generator is None:
        raise EngineError(f"{category}/{name}: cannot find the generator to evaluate (no engine, no base)")
    dataset, docs = load_heldout(data)
    t0 = time.perf_counter()
    with recording_suspended():
        scores = heldout_metrics(generator, docs, window=window, max_tokens=max_tokens)
        emotion = _emotion_agreement(model, emotion_samples, seed) if emotion_samples else None
    result = EvaluationResult(
        category=category,
        name=name,
        version=version,
        dataset=dataset,
        dataset_sha256=scores["sha256"],
        tokens=scores["tokens"],
        loss=scores["loss"],
        perplexity=scores["perplexity"],
        next_token_accuracy=scores["next_token_accuracy"],
        emotion_agreement=emotion[0] if emotion else None,
        emotion_samples=emotion[1] if emotion else None,
        seconds=time.perf_counter() - t0,
        details={
            "window": window,
            "windows": scores["windows"],
            "engine": getattr(generator, "engine_name", None),
            "emotion_per_label": emotion[2] if emotion else None,
        },
    )
    if record:
        result.id = _record(result)
    return result
