"""Train the emotion classifier on GoEmotions: `companion train emotion` / `python -m ...`.

    python -m models.personality.emotion_training --data ../shared/data/goemotions \
        --output src/models/builtin/emotion

Reads `train.tsv` (and `dev.tsv` for the report) in GoEmotions' format: `text<TAB>ids<TAB>id`,
ids comma-separated indices into `emotions.txt` (the 28 names; built in when the file is
absent). Labels are mapped with `GOEMOTIONS_MAP`. The shipped `linear` kind is one-vs-rest
logistic regression on TF-IDF weighted hashed n-grams (a comment may carry several labels);
the `embedding` kind takes a comment's labels as a soft target (equal shares). 10% of train is
held out to pick the thresholds (per label for `linear`), or with `threshold_folds` they come
from out-of-fold scores over all of train; the dev split is only evaluated. `--listener` trains
the listener (`LISTENER_SETTINGS`: liblinear, richer features), which hears users' messages.
Output: `model.safetensors` (float16), `config.json`,
`report.json` (macro-F1 and per-label precision/recall/F1 on dev) and `manifest.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError
from models.personality.emotion import GOEMOTIONS_LABELS, GOEMOTIONS_MAP, EmotionClassifier
from models.personality.emotion_fit import (
    fit_liblinear_classifier,
    fit_linear_classifier,
    fit_ngram_classifier,
    nb_scale,
)
from models.personality.features import FeatureSpec, featurize
from models.tokens import EMOTIONS

__all__ = [
    "LISTENER_SETTINGS",
    "EmotionTrainSettings",
    "choose_thresholds",
    "evaluate_classifier",
    "evaluate_sets",
    "fit_liblinear_classifier",
    "fit_linear_classifier",
    "fit_ngram_classifier",
    "nb_scale",
    "read_goemotions",
    "train_emotion_classifier",
]


@dataclass
class EmotionTrainSettings:
    """Settings of the classifier recipe (saved in the report)."""

    kind: str = "linear"
    """`linear` (TF-IDF weighted n-grams → a sigmoid per label) or `embedding` (mean of
    `dim`-wide n-gram embeddings → softmax); see `EmotionClassifier`."""
    buckets: int = 1 << 18
    """Hash buckets of the feature table."""
    dim: int = 16
    """Embedding width (embedding kind)."""
    epochs: int = 6
    lr: float = 0.05
    """Peak learning rate of the one-cycle schedule (Adam)."""
    batch_size: int = 128
    weight_decay: float = 1e-6
    """L2 penalty on the linear table (summed over its entries)."""
    dropout: float = 0.2
    """Dropout on the pooled embedding (embedding kind)."""
    heldout_fraction: float = 0.1
    """Share of train used to choose the multi-label thresholds."""
    nb_power: float = 0.0
    """Naive-Bayes feature scaling (linear kind): each label's weights are learned on the
    features scaled by |log-count ratio|**nb_power, the feature's evidence for that label
    (Wang & Manning 2012, "Baselines and Bigrams", NBSVM); 0 (the shipped classifier) turns it
    off. The scale is folded into the table, so inference is unchanged. 0.5 detects better
    (GoEmotions dev macro-F1 0.607 against 0.597) but, as the scorer of best-of-N and the source
    of the steering table, it lowered emotion control by 3 to 5 points (docs/personality.md)."""
    solver: str = "adam"
    """How the linear kind is fitted: `adam` (one-cycle Adam on the summed cross-entropy, with
    torch) or `liblinear` (scikit-learn's exact L2-regularized logistic regression per label,
    `C` 1, in its dual form; the listener's recipe)."""
    positive_weight: float = 1.0
    """Weight of a label's positive examples in its loss (`liblinear`): GoEmotions' labels are
    rare, and 4 lets caring and surprise be found more often."""
    threshold_folds: int = 0
    """0: thresholds chosen on `heldout_fraction` of train. k >= 2: chosen on k-fold
    out-of-fold scores over all of train, then the model is refitted on all of it (steadier
    thresholds, no training text left out)."""
    negation: bool = False
    """Features: mark the words after a negation (`FeatureSpec.negation`)."""
    trigrams: bool = False
    """Features: add word trigrams (`FeatureSpec.trigrams`)."""
    shape: bool = False
    """Features: flags for all-caps words, "!!" and "??" (`FeatureSpec.shape`)."""
    seed: int = 0
    threads: int = 1

    def feature_spec(self) -> FeatureSpec:
        """The features these settings train on."""
        return FeatureSpec(buckets=self.buckets, negation=self.negation, trigrams=self.trigrams, shape=self.shape)


#: The listener's recipe (issue 18, session 14): it hears the user's message. The plain
#: classifier (the defaults) stays the scorer of best-of-N and the source of the steering table.
LISTENER_SETTINGS = EmotionTrainSettings(
    nb_power=0.5, solver="liblinear", positive_weight=4.0, threshold_folds=5, negation=True, trigrams=True, shape=True
)


def read_goemotions(path: str | Path, labels: Sequence[str] = EMOTIONS) -> tuple[list[str], list[list[int]]]:
    """Texts and their mapped label indices from a GoEmotions TSV file."""
    path = Path(path)
    names_file = path.parent / "emotions.txt"
    names = names_file.read_text(encoding="utf-8").split() if names_file.exists() else list(GOEMOTIONS_LABELS)
    index = {lab: i for i, lab in enumerate(labels)}
    texts: list[str] = []
    targets: list[list[int]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: not found (expected GoEmotions' train.tsv/dev.tsv)") from None
    for n, line in enumerate(lines, start=1):
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"{path}, line {n}: expected text<TAB>label ids<TAB>id")
        try:
            mapped = {GOEMOTIONS_MAP[names[int(i)]] for i in parts[1].split(",") if i.strip()}
        except (ValueError, IndexError, KeyError):
            raise DataError(f"{path}, line {n}: bad label ids {parts[1]!r}") from None
        ids = sorted(index[m] for m in mapped if m in index)
        if ids:
            texts.append(parts[0])
            targets.append(ids)
    if not texts:
        raise DataError(f"{path}: no usable examples")
    return texts, targets


def evaluate_sets(gold: Sequence[set[str]], pred: Sequence[set[str]], labels: Sequence[str]) -> dict[str, Any]:
    """Per-label precision/recall/F1/support and the macro-F1 of multi-label predictions."""
    per: dict[str, dict[str, float]] = {}
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if lab in g and lab in p)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if lab not in g and lab in p)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if lab in g and lab not in p)
        prec, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
        per[lab] = {
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4),
            "support": tp + fn,
        }
    macro = sum(v["f1"] for v in per.values()) / len(labels)
    return {"macro_f1": round(macro, 4), "per_label": per}


def choose_thresholds(scores: np.ndarray, gold: np.ndarray, passes: int = 2) -> np.ndarray:
    """Per-label thresholds that maximize macro-F1 of `predict_sets`' rule (labels at or above
    their threshold, the top label when none is) on held-out `scores` (n, labels) against the
    boolean `gold` (n, labels): coordinate ascent over a grid, `passes` rounds."""
    n_labels = scores.shape[1]
    th = np.full(n_labels, 0.3, dtype=np.float32)
    grid = np.arange(0.05, 0.9, 0.025, dtype=np.float32)
    top = np.zeros_like(gold)
    top[np.arange(len(scores)), scores.argmax(axis=1)] = True

    def macro(t: np.ndarray) -> float:
        pred = scores >= t
        pred = np.where(pred.any(axis=1, keepdims=True), pred, top)
        tp = (pred & gold).sum(axis=0)
        return float((2 * tp / np.maximum(1, pred.sum(axis=0) + gold.sum(axis=0))).mean())

    for _ in range(passes):
        for j in range(n_labels):
            best, best_t = -1.0, th[j]
            for t in grid:
                th[j] = t
                m = macro(th)
                if m > best:
                    best, best_t = m, t
            th[j] = best_t
    return th


def _best_threshold(clf: EmotionClassifier, texts: list[str], targets: list[list[int]]) -> float:
    gold = [{clf.labels[i] for i in t} for t in targets]
    best, best_t = -1.0, 0.3
    for t in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 1.01):
        clf.threshold = t
        score = evaluate_sets(gold, clf.predict_sets(texts), clf.labels)["macro_f1"]
        if score > best:
            best, best_t = score, t
    return best_t


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_emotion_classifier(
    data_dir: str | Path,
    output_dir: str | Path,
    settings: EmotionTrainSettings | None = None,
    labels: Sequence[str] = EMOTIONS,
) -> dict[str, Any]:
    """Train on `data_dir/train.tsv`, evaluate on `data_dir/dev.tsv` (if present), save; the report."""
    import torch

    s = settings or EmotionTrainSettings()
    torch.set_num_threads(s.threads)
    data_dir, out = Path(data_dir), Path(output_dir)
    t0 = time.perf_counter()
    texts, targets = read_goemotions(data_dir / "train.tsv", labels)
    spec = s.feature_spec()
    order = list(range(len(texts)))
    random.Random(s.seed).shuffle(order)
    n_held = 0 if s.threshold_folds >= 2 else int(len(order) * s.heldout_fraction)
    held, fit = order[:n_held], order[n_held:]
    feats = [featurize(texts[i], spec) for i in fit]
    t_feat = time.perf_counter() - t0
    clf = _fit_classifier(feats, texts, targets, fit, held, labels, spec, s)
    t_train = time.perf_counter() - t0 - t_feat
    report: dict[str, Any] = {
        "recipe": "companion train emotion",
        "data": "GoEmotions (Demszky et al., ACL 2020), Apache-2.0",
        "train_file_sha256": _sha256(data_dir / "train.tsv"),
        "train_examples": len(fit),
        "heldout_examples": len(held),
        "labels": list(labels),
        "mapping": GOEMOTIONS_MAP,
        "settings": asdict(s),
        "threshold": clf.threshold,
        "thresholds": dict(zip(labels, map(float, clf.thresholds), strict=True))
        if clf.thresholds is not None
        else None,
        "seconds": {"features": round(t_feat, 1), "training": round(t_train, 1)},
    }
    dev = data_dir / "dev.tsv"
    if dev.exists():
        report["dev_file_sha256"] = _sha256(dev)
    from models.fileio import atomic_folder
    from models.store import write_manifest

    # Written beside `out` and swapped in whole: retraining the shipped folder in place must not
    # leave new weights under the old manifest if anything fails before the end.
    with atomic_folder(out) as staging:
        # Save in float16 and evaluate what ships (the rounding must not move the score).
        clf.save(staging, extra={"recipe": "companion train emotion", "data": "GoEmotions"})
        if dev.exists():
            shipped = EmotionClassifier.load(staging)
            report["dev"] = evaluate_classifier(shipped, dev)
        report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
        (staging / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        write_manifest(staging)
    return report


def _fit_classifier(
    feats: list[list[int]],
    texts: list[str],
    targets: list[list[int]],
    fit: list[int],
    held: list[int],
    labels: Sequence[str],
    spec: FeatureSpec,
    s: EmotionTrainSettings,
) -> EmotionClassifier:
    """The classifier of kind `s.kind` fitted on the `fit` rows, its thresholds chosen on the
    `held` rows of the training file (never on dev)."""
    if s.kind == "linear":
        clf = _linear(feats, [targets[i] for i in fit], labels, spec, s)
        if s.threshold_folds >= 2:
            clf.thresholds = _out_of_fold_thresholds(feats, [targets[i] for i in fit], [texts[i] for i in fit],
                                                     labels, spec, s)  # fmt: skip
        elif held:
            gold = np.zeros((len(held), len(labels)), dtype=bool)
            for r, i in enumerate(held):
                gold[r, targets[i]] = True
            clf.thresholds = choose_thresholds(clf.scores([texts[i] for i in held]), gold)
        return clf
    emb, w, b = fit_ngram_classifier(feats, [targets[i] for i in fit], len(labels), s)
    clf = EmotionClassifier(labels, spec, emb, w, b)
    clf.threshold = _best_threshold(clf, [texts[i] for i in held], [targets[i] for i in held]) if held else 0.3
    return clf


def _linear(
    feats: list[list[int]], targets: list[list[int]], labels: Sequence[str], spec: FeatureSpec, s: EmotionTrainSettings
) -> EmotionClassifier:
    """A linear classifier fitted by `s.solver`."""
    if s.solver not in ("adam", "liblinear"):
        raise DataError(f"solver: 'adam' or 'liblinear', not {s.solver!r}")
    fit = fit_liblinear_classifier if s.solver == "liblinear" else fit_linear_classifier
    table, b, idf = fit(feats, targets, len(labels), s)
    return EmotionClassifier(labels, spec, table, None, b, kind="linear", idf=idf)


def _out_of_fold_thresholds(
    feats: list[list[int]],
    targets: list[list[int]],
    texts: list[str],
    labels: Sequence[str],
    spec: FeatureSpec,
    s: EmotionTrainSettings,
) -> np.ndarray:
    """Per-label thresholds chosen on `s.threshold_folds`-fold out-of-fold scores: every
    training text is scored once by a model that did not see it."""
    k, n = s.threshold_folds, len(feats)
    scores = np.zeros((n, len(labels)), dtype=np.float32)
    gold = np.zeros((n, len(labels)), dtype=bool)
    for i, t in enumerate(targets):
        gold[i, t] = True
    for fold in range(k):
        train = [i for i in range(n) if i % k != fold]
        score = [i for i in range(n) if i % k == fold]
        model = _linear([feats[i] for i in train], [targets[i] for i in train], labels, spec, s)
        scores[score] = model.scores([texts[i] for i in score])
    return choose_thresholds(scores, gold)


def evaluate_classifier(clf: EmotionClassifier, tsv: str | Path) -> dict[str, Any]:
    """Macro-F1 of `clf` on a GoEmotions TSV: multi-label (top + threshold) and top-label only."""
    texts, targets = read_goemotions(tsv, clf.labels)
    gold = [{clf.labels[i] for i in t} for t in targets]
    t0 = time.perf_counter()
    multi = evaluate_sets(gold, clf.predict_sets(texts), clf.labels)
    seconds = time.perf_counter() - t0
    top = evaluate_sets(gold, [{x} for x in clf.classify(texts)], clf.labels)
    return {
        "file": str(Path(tsv).name),
        "examples": len(texts),
        "macro_f1": multi["macro_f1"],
        "macro_f1_top_label": top["macro_f1"],
        "per_label": multi["per_label"],
        "per_label_top_label": {k: v["f1"] for k, v in top["per_label"].items()},
        "ms_per_text": round(1000 * seconds / max(1, len(texts)), 3),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/goemotions"))
    parser.add_argument("--output", type=Path, default=Path("src/models/builtin/emotion"))
    parser.add_argument("--epochs", type=int, default=EmotionTrainSettings.epochs)
    parser.add_argument("--kind", choices=("linear", "embedding"), default=EmotionTrainSettings.kind)
    parser.add_argument("--dim", type=int, default=EmotionTrainSettings.dim)
    parser.add_argument("--nb-power", type=float, default=EmotionTrainSettings.nb_power)
    parser.add_argument("--weight-decay", type=float, default=EmotionTrainSettings.weight_decay)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--listener", action="store_true", help="the listener's recipe (LISTENER_SETTINGS)")
    args = parser.parse_args(argv)
    settings = EmotionTrainSettings(
        kind=args.kind,
        epochs=args.epochs,
        dim=args.dim,
        threads=args.threads,
        nb_power=args.nb_power,
        weight_decay=args.weight_decay,
    )
    if args.listener:
        from dataclasses import replace

        settings = replace(LISTENER_SETTINGS, threads=args.threads)
    report = train_emotion_classifier(args.data, args.output, settings)
    dev = report.get("dev", {})
    print(json.dumps({"macro_f1": dev.get("macro_f1"), "per_label": dev.get("per_label_top_label")}, indent=1))


if __name__ == "__main__":
    main()
