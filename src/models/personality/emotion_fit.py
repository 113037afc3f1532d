"""Fitting the emotion classifiers' weights: the components `emotion_training`'s recipe calls.

Each fitter takes the hashed features of the training texts (`features.featurize`), their
label indices and the recipe's `EmotionTrainSettings`, and returns numpy arrays that
`EmotionClassifier` loads:

* `fit_linear_classifier`: one-vs-rest logistic regression on TF-IDF weighted features with
  Adam (torch), the shipped classifier's fit;
* `fit_liblinear_classifier`: the same model fitted exactly per label by scikit-learn's
  liblinear, the listener's fit;
* `fit_ngram_classifier`: the older embedding kind (mean of n-gram embeddings → softmax).

Both linear fitters count documents once (`document_counts`) and can scale each label's
features by their naive-Bayes evidence (`nb_scale`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.personality.emotion_training import EmotionTrainSettings

__all__ = [
    "document_counts",
    "fit_liblinear_classifier",
    "fit_linear_classifier",
    "fit_ngram_classifier",
    "nb_scale",
    "tfidf_weights",
]


def _bags(feats: list[list[int]], idx: Sequence[int]) -> tuple[Any, Any]:
    import torch

    flat: list[int] = []
    offsets = []
    for i in idx:
        offsets.append(len(flat))
        flat += feats[i]
    return torch.tensor(flat), torch.tensor(offsets)


def _one_cycle(params: list[Any], n: int, s: EmotionTrainSettings, loss_of: Any) -> None:
    """Adam with a one-cycle schedule over `s.epochs` shuffled passes of `n` examples in batches
    of `s.batch_size`; `loss_of(batch indices)` gives each batch's loss."""
    import torch

    opt = torch.optim.Adam(params, lr=s.lr)
    steps_per_epoch = max(1, n // s.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.epochs * steps_per_epoch)
    rng = random.Random(s.seed)
    for _epoch in range(s.epochs):
        order = list(range(n))
        rng.shuffle(order)
        for k in range(steps_per_epoch):
            loss = loss_of(order[k * s.batch_size : (k + 1) * s.batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def fit_ngram_classifier(
    feats: list[list[int]], targets: list[list[int]], n_labels: int, s: EmotionTrainSettings
) -> Any:
    """Train embedding bag + linear head on hashed features (soft targets); numpy weights out."""
    import torch

    torch.manual_seed(s.seed)
    emb = torch.nn.EmbeddingBag(s.buckets, s.dim, mode="mean")
    torch.nn.init.uniform_(emb.weight, -0.05, 0.05)
    head = torch.nn.Linear(s.dim, n_labels)
    drop = torch.nn.Dropout(s.dropout)
    params = list(emb.parameters()) + list(head.parameters())

    def loss_of(idx: list[int]) -> Any:
        ids, offsets = _bags(feats, idx)
        target = torch.zeros(len(idx), n_labels)
        for r, i in enumerate(idx):
            target[r, targets[i]] = 1.0 / len(targets[i])
        return torch.nn.functional.cross_entropy(head(drop(emb(ids, offsets))), target)

    _one_cycle(params, len(feats), s, loss_of)
    return emb.weight.detach().numpy().copy(), head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()


def tfidf_weights(feats: Sequence[int], idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct features of one text and their L2-normalized (1 + log tf) * idf weights
    (what `EmotionClassifier.logits` computes for the linear kind)."""
    ids, counts = np.unique(np.asarray(feats), return_counts=True)
    w = (1.0 + np.log(counts)) * idf[ids]
    return ids, w / max(float(np.linalg.norm(w)), 1e-12)


def document_counts(
    feats: list[list[int]], targets: list[list[int]], n_labels: int, buckets: int, by_label: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Over the training texts: each feature's document frequency, with `by_label` how many
    texts of each label hold it (what `nb_scale` reads; else None), and the smoothed idf."""
    df = np.zeros(buckets, dtype=np.float64)
    present = np.zeros((buckets, n_labels), dtype=np.float64) if by_label else None
    for f, t in zip(feats, targets, strict=True):
        ids = np.unique(np.asarray(f))
        df[ids] += 1
        if present is not None:
            for j in t:
                present[ids, j] += 1
    idf = (np.log((1 + len(feats)) / (1 + df)) + 1).astype(np.float32)
    return df, present, idf


def fit_linear_classifier(
    feats: list[list[int]], targets: list[list[int]], n_labels: int, s: EmotionTrainSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-vs-rest logistic regression on TF-IDF weighted hashed features, trained with Adam on
    the summed binary cross-entropy, each label's features scaled by `nb_scale`; the (buckets,
    labels) table (scale folded in), the bias and the idf."""
    import torch

    df, present, idf = document_counts(feats, targets, n_labels, s.buckets, by_label=bool(s.nb_power))
    rows = [tfidf_weights(f, idf) for f in feats]
    y = torch.zeros(len(feats), n_labels)
    for i, t in enumerate(targets):
        y[i, t] = 1.0
    scale = torch.from_numpy(nb_scale(present, df, s.nb_power)) if present is not None else None
    torch.manual_seed(s.seed)
    weight = torch.nn.Parameter(torch.zeros(s.buckets, n_labels))
    bias = torch.nn.Parameter(torch.zeros(n_labels))

    def loss_of(idx: list[int]) -> Any:
        ids = torch.from_numpy(np.concatenate([rows[i][0] for i in idx]).astype(np.int64))
        weights = torch.from_numpy(np.concatenate([rows[i][1] for i in idx]).astype(np.float32))
        offsets = torch.tensor(np.cumsum([0] + [len(rows[i][0]) for i in idx[:-1]]), dtype=torch.long)
        table = weight if scale is None else weight * scale
        z = torch.nn.functional.embedding_bag(ids, table, offsets, mode="sum", per_sample_weights=weights)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z + bias, y[idx])
        return loss + s.weight_decay * weight.pow(2).sum()

    _one_cycle([weight, bias], len(feats), s, loss_of)
    table = weight.detach() if scale is None else weight.detach() * scale
    return table.numpy().copy(), bias.detach().numpy().copy(), idf


def fit_liblinear_classifier(
    feats: list[list[int]], targets: list[list[int]], n_labels: int, s: EmotionTrainSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`fit_linear_classifier`'s model (same TF-IDF, NB scaling and output), each label fitted
    exactly by scikit-learn's liblinear (L2, C 1, dual form), positives weighted by
    `s.positive_weight`."""
    import scipy.sparse as sparse
    from sklearn.linear_model import LogisticRegression

    df, present, idf = document_counts(feats, targets, n_labels, s.buckets, by_label=bool(s.nb_power))
    indptr, indices, data = [0], [], []
    for f in feats:
        ids, w = tfidf_weights(f, idf)
        indices.append(ids)
        data.append(w)
        indptr.append(indptr[-1] + len(ids))
    x = sparse.csr_matrix(
        (np.concatenate(data).astype(np.float32), np.concatenate(indices), np.asarray(indptr)),
        shape=(len(feats), s.buckets),
    )
    scale = nb_scale(present, df, s.nb_power) if present is not None else np.ones((s.buckets, n_labels), np.float32)
    table = np.zeros((s.buckets, n_labels), dtype=np.float32)
    bias = np.zeros(n_labels, dtype=np.float32)
    for j in range(n_labels):
        y = np.zeros(len(feats), dtype=np.int8)
        y[[i for i, t in enumerate(targets) if j in t]] = 1
        model = LogisticRegression(
            C=1.0,
            solver="liblinear",
            dual=True,
            max_iter=300,
            tol=1e-4,
            class_weight={0: 1.0, 1: s.positive_weight},
            random_state=s.seed,  # liblinear's dual solver shuffles: without a seed no two runs match
        ).fit(x @ sparse.diags(scale[:, j]), y)
        table[:, j] = model.coef_.ravel() * scale[:, j]
        bias[j] = model.intercept_[0]
    return table, bias, idf


def nb_scale(present: np.ndarray, df: np.ndarray, power: float) -> np.ndarray:
    """(buckets, labels) float32: |log-count ratio| ** power of each feature for each label, from
    `present[f, j]` (training texts of label j with feature f) and `df[f]` (all texts with f),
    add-one smoothed and normalized by each side's total (NBSVM's r); all ones at power 0."""
    if power == 0:
        return np.ones(present.shape, dtype=np.float32)
    pos = present + 1.0
    neg = np.maximum(df[:, None] - present, 0.0) + 1.0
    r = np.log((pos / pos.sum(axis=0)) / (neg / neg.sum(axis=0)))
    return (np.abs(r) ** power).astype(np.float32)
