"""The emotional model: detect emotion in text, keep a character's emotional state.

**Labels.** The default set is `models.tokens.EMOTIONS` (neutral, joy, romantic, caring,
playful, curious, surprise, sadness, fear, anger), mapped from GoEmotions' 28 labels by
`GOEMOTIONS_MAP`: a refinement of the GoEmotions authors' own Ekman grouping
(`ekman_mapping.json`). Their "joy" group is split into what a companion must tell apart:
love/desire → romantic, caring → caring, amusement → playful, the rest (joy, excitement,
gratitude, optimism, pride, relief, admiration, approval) → joy; their "surprise" group into
curiosity/confusion → curious and surprise/realization → surprise; disgust joins anger (a
companion has no separate disgust register). Characters may use a subset or their own labels
(`label_map` sums classifier labels).

**Detection.** `EmotionClassifier`: hashed word, word-pair and character n-grams
(`features.py`), TF-IDF weighted → one linear layer → a sigmoid per label with per-label
thresholds; trained by `emotion_training.py` on GoEmotions, shipped as safetensors + JSON under
`builtin/emotion/` with its report (macro-F1 on GoEmotions dev beside a scikit-learn TF-IDF +
logistic-regression baseline: `python -m bench emotion`). Inference is numpy only (well under a
millisecond per message).

**State.** `EmotionalState`: a distribution over the character's labels. Each user message
moves it toward the character's *reaction* to the detected emotion, in proportion to the
message's intensity (1 − p(neutral)) and the character's `sensitivity`; each turn it decays a
share `decay` of the way back to the temperament (`baseline`). A caller's `emotional_state=`
overrides it for one turn without changing it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError, UnknownContextError
from models.personality.features import FeatureSpec, featurize
from models.tokens import EMOTIONS

__all__ = [
    "DEFAULT_REACTIONS",
    "GOEMOTIONS_LABELS",
    "GOEMOTIONS_MAP",
    "Detection",
    "EmotionClassifier",
    "EmotionalState",
    "default_classifier",
    "default_listener",
]

#: GoEmotions' labels in the order of its `emotions.txt` (ids 0..27).
GOEMOTIONS_LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip

#: GoEmotions label → our label (see the module docstring for the reasoning).
GOEMOTIONS_MAP: dict[str, str] = {
    "neutral": "neutral",
    **dict.fromkeys(("joy", "excitement", "gratitude", "optimism", "pride", "relief", "admiration", "approval"), "joy"),
    **dict.fromkeys(("love", "desire"), "romantic"),
    "caring": "caring",
    "amusement": "playful",
    **dict.fromkeys(("curiosity", "confusion"), "curious"),
    **dict.fromkeys(("surprise", "realization"), "surprise"),
    **dict.fromkeys(("sadness", "grief", "disappointment", "remorse", "embarrassment"), "sadness"),
    **dict.fromkeys(("fear", "nervousness"), "fear"),
    **dict.fromkeys(("anger", "annoyance", "disapproval", "disgust"), "anger"),
}

#: How a companion answers a user's emotion by default (others are mirrored).
DEFAULT_REACTIONS: dict[str, dict[str, float]] = {
    "sadness": {"caring": 0.7, "sadness": 0.3},
    "fear": {"caring": 0.8, "fear": 0.2},
    "anger": {"caring": 0.6, "sadness": 0.2, "anger": 0.2},
}

FORMAT = "companion-emotion-classifier/1"
KINDS = ("linear", "embedding")


@dataclass(frozen=True)
class Detection:
    """What the classifier found in one text."""

    label: str
    score: float
    distribution: dict[str, float]

    @property
    def intensity(self) -> float:
        """How emotional the text is: 1 − p(neutral) (or the top score without a neutral label)."""
        if "neutral" in self.distribution:
            return 1.0 - self.distribution["neutral"]
        return self.score


class EmotionClassifier:
    """Text → scores over emotion labels (numpy inference over saved weights).

    Two kinds read the same hashed features (`features.py`):

    * `linear` (shipped): each text's n-gram counts weighted TF-IDF style (1 + log tf, times
      the feature's idf, L2-normalized) → one linear layer → a sigmoid per label (one-vs-rest,
      so a comment can be several things at once). Per-label thresholds, chosen on a held-out
      share of the training data, decide the label sets.
    * `embedding`: the mean of D-dim embeddings of the n-grams → linear → softmax (the earlier
      shipped model; `bench/emotion.py` trains one as its independent judge).
    """

    def __init__(
        self,
        labels: Sequence[str],
        spec: FeatureSpec,
        embedding: np.ndarray,
        out_weight: np.ndarray | None,
        out_bias: np.ndarray,
        threshold: float = 0.3,
        meta: dict[str, Any] | None = None,
        *,
        kind: str = "embedding",
        idf: np.ndarray | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        n = len(labels)
        if kind not in KINDS:
            raise DataError(f"emotion classifier: kind {kind!r} is not one of {', '.join(KINDS)}")
        if kind == "embedding" and (out_weight is None or out_weight.shape != (n, embedding.shape[1])):
            raise DataError("emotion classifier: weight shapes do not match the labels")
        if kind == "linear" and (embedding.shape[1] != n or idf is None or idf.shape != (embedding.shape[0],)):
            raise DataError("emotion classifier: a linear table needs one column per label and one idf per row")
        if out_bias.shape != (n,):
            raise DataError("emotion classifier: weight shapes do not match the labels")
        if thresholds is not None and len(thresholds) != n:
            raise DataError(f"emotion classifier: {len(thresholds)} thresholds for {n} labels")
        self.labels = tuple(labels)
        self.spec = spec
        self.kind = kind
        self.embedding = embedding.astype(np.float32, copy=False)
        self.out_weight = out_weight.astype(np.float32, copy=False) if out_weight is not None else None
        self.out_bias = out_bias.astype(np.float32, copy=False)
        self.idf = idf.astype(np.float32, copy=False) if idf is not None else None
        self.threshold = threshold
        self.thresholds = np.asarray(thresholds, dtype=np.float32) if thresholds is not None else None
        self.meta = meta or {}

    @property
    def word_temperature(self) -> float:
        """What divides one word's logits in `steering` (a lone word's mean embedding is
        over-confident; a lone word's TF-IDF vector is normalized like a sentence's)."""
        return 4.0 if self.kind == "embedding" else 1.0

    # --- persistence -------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path) -> EmotionClassifier:
        """Load `config.json` + `model.safetensors` (manifest-verified when present)."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        cfg_path, weights = folder / "config.json", folder / "model.safetensors"
        if not cfg_path.exists() or not weights.exists():
            raise DataError(f"{folder}: not an emotion classifier (needs config.json and model.safetensors)")
        if (folder / "manifest.json").exists():
            from models.store import verify_manifest

            verify_manifest(folder)
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("format") != FORMAT:
            raise DataError(f"{cfg_path}: format {cfg.get('format')!r}, expected {FORMAT!r}")
        t = load_file(str(weights))
        kind = cfg.get("kind", "embedding")
        try:
            if kind == "linear":
                table, head, bias, idf = t["linear.weight"], None, t["linear.bias"], t["idf"]
            else:
                table, head, bias, idf = t["embedding.weight"], t["out.weight"], t["out.bias"], None
        except KeyError as exc:
            raise DataError(f"{weights}: lacks tensor {exc.args[0]!r} of a {kind} classifier") from None
        return cls(
            cfg["labels"],
            FeatureSpec.from_json(cfg["features"]),
            table,
            head,
            bias,
            threshold=float(cfg.get("threshold", 0.3)),
            meta=cfg,
            kind=kind,
            idf=idf,
            thresholds=cfg.get("thresholds"),
        )

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write `model.safetensors` (float16) and `config.json` into `folder`."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "linear":
            assert self.idf is not None  # checked in __init__
            tensors = {
                "linear.weight": self.embedding.astype(np.float16),
                "linear.bias": self.out_bias.astype(np.float16),
                "idf": self.idf.astype(np.float16),
            }
        else:
            assert self.out_weight is not None
            tensors = {
                "embedding.weight": self.embedding.astype(np.float16),
                "out.weight": self.out_weight.astype(np.float16),
                "out.bias": self.out_bias.astype(np.float16),
            }
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": FORMAT})
        cfg = {
            **(extra or {}),
            "format": FORMAT,
            "kind": self.kind,
            "labels": list(self.labels),
            "features": self.spec.to_json(),
            "dim": int(self.embedding.shape[1]),
            "threshold": self.threshold,
        }
        if self.thresholds is not None:
            cfg["thresholds"] = [round(float(x), 4) for x in self.thresholds]
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        return folder

    # --- inference ---------------------------------------------------------------------------

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, labels) raw scores before the softmax (embedding) or the sigmoids (linear)."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.kind == "embedding":
            assert self.out_weight is not None
            pooled = np.stack([self.embedding[featurize(t, self.spec)].mean(axis=0) for t in texts])
            return pooled @ self.out_weight.T + self.out_bias
        assert self.idf is not None
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for row, text in enumerate(texts):
            ids, counts = np.unique(featurize(text, self.spec), return_counts=True)
            weights = (1.0 + np.log(counts)) * self.idf[ids]
            weights /= max(float(np.linalg.norm(weights)), 1e-12)
            out[row] = weights @ self.embedding[ids]
        return out + self.out_bias

    def scores(self, texts: str | Sequence[str]) -> np.ndarray:
        """(n, labels) per-label scores the thresholds apply to: softmax (embedding) or one
        sigmoid per label (linear)."""
        z = self.logits([texts] if isinstance(texts, str) else list(texts))
        if self.kind == "linear":
            return 1.0 / (1.0 + np.exp(-z))
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """(n, labels) distributions (each row sums to 1); one row per text."""
        p = self.scores(texts)
        if self.kind == "linear":
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        return p

    def detect(self, text: str) -> Detection:
        p = self.predict_proba(text)[0]
        i = int(p.argmax())
        return Detection(self.labels[i], float(p[i]), {lab: float(v) for lab, v in zip(self.labels, p, strict=True)})

    def classify(self, texts: Sequence[str]) -> list[str]:
        """The most likely label of each text."""
        return [self.labels[i] for i in self.scores(texts).argmax(axis=1)]

    def predict_sets(self, texts: Sequence[str]) -> list[set[str]]:
        """Multi-label prediction. With per-label thresholds: every label at or above its own
        (the top label when none is); else the top label plus every label at or above `threshold`."""
        out = []
        for row in self.scores(texts):
            top = {self.labels[int(row.argmax())]}
            if self.thresholds is not None:
                found = {self.labels[i] for i in np.flatnonzero(row >= self.thresholds)}
                out.append(found or top)
            else:
                out.append(top | {self.labels[i] for i in np.flatnonzero(row >= self.threshold)})
        return out


_DEFAULT: dict[str, EmotionClassifier] = {}
_DEFAULT_LOCK = threading.Lock()


def default_classifier(folder: str | Path | None = None) -> EmotionClassifier:
    """The shipped classifier (`builtin/emotion/`), or the one in `folder`; loaded once."""
    from models.paths import builtin_dir

    path = Path(folder) if folder else builtin_dir("emotion")
    key = str(path.resolve())
    with _DEFAULT_LOCK:
        if key not in _DEFAULT:
            _DEFAULT[key] = EmotionClassifier.load(path)
        return _DEFAULT[key]


def default_listener() -> EmotionClassifier:
    """The classifier that hears users' messages: `builtin/emotion-listener/` (trained by
    `companion train emotion --listener`, better at detection), or the shipped classifier where
    that folder is absent. Best-of-N ranking and steering keep `default_classifier`: a better
    detector as their scorer made the character's emotion weaker (docs/personality.md)."""
    from models.paths import builtin_dir

    folder = builtin_dir("emotion-listener")
    return default_classifier(folder if (folder / "config.json").exists() else None)


def project(distribution: dict[str, float], labels: Sequence[str], label_map: dict[str, list[str]]) -> dict[str, float]:
    """A classifier distribution on a character's labels (mapped labels sum their sources)."""
    out = {}
    for lab in labels:
        sources = label_map.get(lab, [lab])
        out[lab] = sum(distribution.get(s, 0.0) for s in sources)
    total = sum(out.values())
    if total <= 0:
        return {lab: 1.0 / len(labels) for lab in labels}
    return {k: v / total for k, v in out.items()}


class EmotionalState:
    """A character's mood: a distribution over its labels that moves and decays."""

    def __init__(
        self,
        labels: Sequence[str] = EMOTIONS,
        baseline: dict[str, float] | None = None,
        *,
        decay: float = 0.25,
        sensitivity: float = 0.6,
        reactions: dict[str, dict[str, float]] | None = None,
    ) -> None:
        self.labels = tuple(labels)
        base = baseline or {"neutral" if "neutral" in self.labels else self.labels[0]: 1.0}
        total = sum(base.values()) or 1.0
        self.baseline = {k: base.get(k, 0.0) / total for k in self.labels}
        self.decay, self.sensitivity = decay, sensitivity
        merged = {**DEFAULT_REACTIONS, **(reactions or {})}
        self.reactions = {
            src: {t: w for t, w in targets.items() if t in self.labels}
            for src, targets in merged.items()
            if any(t in self.labels for t in targets)
        }
        self.values = dict(self.baseline)

    @classmethod
    def from_settings(cls, settings: Any, baseline: dict[str, float]) -> EmotionalState:
        """Build from a card's `EmotionSettings` and its normalised baseline."""
        return cls(
            settings.labels,
            baseline,
            decay=settings.decay,
            sensitivity=settings.sensitivity,
            reactions=settings.reactions,
        )

    @property
    def dominant(self) -> tuple[str, float]:
        """`(label, weight)` of the strongest emotion now."""
        label = max(self.values, key=lambda k: self.values[k])
        return label, self.values[label]

    @property
    def emotion(self) -> str:
        return self.dominant[0]

    def reaction(self, detected: dict[str, float]) -> dict[str, float]:
        """The character's response emotions to a user's detected distribution."""
        target = dict.fromkeys(self.labels, 0.0)
        for src, p in detected.items():
            for t, w in self.reactions.get(src, {src: 1.0}).items():
                if t in target:
                    target[t] += p * w
        total = sum(target.values())
        return {k: v / total for k, v in target.items()} if total > 0 else dict(self.baseline)

    def observe(self, detected: dict[str, float], intensity: float | None = None) -> None:
        """Move toward the reaction to a user message (`detected`: label → probability)."""
        if intensity is None:
            intensity = 1.0 - detected.get("neutral", 0.0) if "neutral" in detected else max(detected.values())
        w = max(0.0, min(1.0, self.sensitivity * intensity))
        target = self.reaction(detected)
        self.values = {k: (1 - w) * self.values[k] + w * target[k] for k in self.labels}

    def relax(self, turns: float = 1.0) -> None:
        """Decay toward the temperament (`turns` may be fractional, e.g. for elapsed time)."""
        keep = (1.0 - self.decay) ** max(0.0, turns)
        self.values = {k: keep * self.values[k] + (1 - keep) * self.baseline[k] for k in self.labels}

    def step(self, detected: dict[str, float], intensity: float | None = None) -> None:
        """One user turn: decay, then react."""
        self.relax()
        self.observe(detected, intensity)

    def set(self, label: str, weight: float = 1.0) -> None:
        """Put the state mostly into `label` (the rest stays proportionally)."""
        if label not in self.labels:
            raise UnknownContextError("this character", label, self.labels, what="emotion")
        self.values = {k: (1 - weight) * v for k, v in self.values.items()}
        self.values[label] += weight

    def reset(self) -> None:
        self.values = dict(self.baseline)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in self.values.items()}
