"""`PreferenceLearner`: an online model of one user's taste (response features → satisfaction).

Utility of a response with scalar features `x` (see `features.SCALAR_FEATURES`) and hashed
embedding `e`::

    u(x, e) = b + w_lin · x − Σ_i w_quad_i · (x_i − p_i)²  +  w_emb · e
    satisfaction = sigmoid(u)

`p` is the user's **profile**: the ideal value of each feature (short or long, formal or
casual, ...), `w_quad` how much they care about it. Cold start: `p` and `w_quad` come from the
explicit preferences where set (strength `EXPLICIT_STRENGTH`) and from the population prior
elsewhere. Each feedback event then takes one step:

* rating `r` (0–1): logistic-loss SGD on every parameter with `learning_rate`, and the profile
  moves by `adaptation_rate · (2r − 1)` toward the rated response (away from a disliked one);
* choice / edit: a Bradley–Terry step on the pair (chosen − rejected, edited − original; the
  edit's weight grows with the edit distance) and the profile moves toward the preferred text;
* regenerate: a mild negative rating.

State: `learner.safetensors` (float64 tensors `p`, `w_quad`, `w_lin`, `w_emb`, `b`) +
`learner.json` (format, feature names, rates, counts, package version). Never pickle.
Deterministic: no randomness except `seed`-driven initial noise and the shuffle in `fit`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError
from models.personalization.events import FeedbackEvent
from models.personalization.features import EMBED_DIM, SCALAR_FEATURES, features

__all__ = ["EXPLICIT_STRENGTH", "FORMAT", "PreferenceLearner"]

FORMAT = "companion-learner/1"
#: Weight of an explicitly stated preference: a reply 0.5 away from the ideal loses 1.0 utility.
EXPLICIT_STRENGTH = 4.0
_K = len(SCALAR_FEATURES)
#: The population prior when no trained prior is given: mid-length, neutral, no emoji, on-topic.
_PRIOR_P = {
    "length": 0.35,
    "formality": 0.5,
    "emoji": 0.05,
    "questions": 0.3,
    "exclamation": 0.15,
    "sentiment": 0.65,
    "reading_level": 0.4,
    "vocabulary": 0.4,
    "relevance": 1.0,
}
_PRIOR_STRENGTH = 0.5
#: The prior's bias `b = 1.0`: a reply that fits every ideal scores sigmoid(1) ≈ 0.73 before any feedback.
_TENSORS = ("p", "w_quad", "w_lin", "w_emb", "b")


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


class PreferenceLearner:
    """Online preference model of one user (see the module docstring)."""

    def __init__(
        self,
        *,
        learning_rate: float = 0.5,
        adaptation_rate: float = 0.2,
        p: np.ndarray | None = None,
        w_quad: np.ndarray | None = None,
        w_lin: np.ndarray | None = None,
        w_emb: np.ndarray | None = None,
        b: float = 1.0,
        seed: int = 0,
    ) -> None:
        if not 0 < learning_rate <= 10:
            raise DataError(f"learning_rate: expected 0 < value <= 10, got {learning_rate}")
        if not 0 <= adaptation_rate <= 1:
            raise DataError(f"adaptation_rate: expected 0 <= value <= 1, got {adaptation_rate}")
        self.learning_rate = float(learning_rate)
        self.adaptation_rate = float(adaptation_rate)
        self.seed = int(seed)
        self.p = np.array([_PRIOR_P[k] for k in SCALAR_FEATURES]) if p is None else np.asarray(p, np.float64).copy()
        self.w_quad = np.full(_K, _PRIOR_STRENGTH) if w_quad is None else np.asarray(w_quad, np.float64).copy()
        self.w_lin = np.zeros(_K) if w_lin is None else np.asarray(w_lin, np.float64).copy()
        self.w_emb = np.zeros(EMBED_DIM) if w_emb is None else np.asarray(w_emb, np.float64).copy()
        self.b = float(b)
        self.updates = 0
        self.counts: dict[str, int] = {}
        self._check_shapes()

    def _check_shapes(self) -> None:
        for name, n in (("p", _K), ("w_quad", _K), ("w_lin", _K), ("w_emb", EMBED_DIM)):
            arr = getattr(self, name)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise DataError(f"learner: {name} must be {n} finite numbers, got shape {arr.shape}")

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def cold_start(
        cls,
        preferences: Any = None,
        seed: int = 0,
        *,
        prior: PreferenceLearner | None = None,
        learning_rate: float | None = None,
        adaptation_rate: float | None = None,
    ) -> PreferenceLearner:
        """A learner for a new user: the population `prior` (or the built-in neutral one) with
        the explicit `preferences` (a `UserPreferences`, a dict or None) set as strong ideals.
        `seed` draws a tiny initial embedding weight noise (so different seeds break ties)."""
        from models.personalization.preferences import UserPreferences

        prefs = UserPreferences.coerce(preferences)
        base = prior or cls()
        learner = cls(
            learning_rate=learning_rate if learning_rate is not None else base.learning_rate,
            adaptation_rate=adaptation_rate if adaptation_rate is not None else base.adaptation_rate,
            p=base.p,
            w_quad=base.w_quad,
            w_lin=base.w_lin,
            w_emb=base.w_emb,
            b=base.b,
            seed=seed,
        )
        for key, value in prefs.learned.items():  # a profile learned earlier: the ideal, not the strength
            learner.p[SCALAR_FEATURES.index(key)] = value
        for key, value in prefs.targets().items():  # what the user says now wins
            i = SCALAR_FEATURES.index(key)
            learner.p[i] = value
            learner.w_quad[i] = max(learner.w_quad[i], EXPLICIT_STRENGTH)
        rng = np.random.default_rng(seed)
        learner.w_emb = learner.w_emb + rng.normal(0.0, 1e-3, EMBED_DIM)
        return learner

    def copy(self) -> PreferenceLearner:
        other = PreferenceLearner(
            learning_rate=self.learning_rate,
            adaptation_rate=self.adaptation_rate,
            p=self.p,
            w_quad=self.w_quad,
            w_lin=self.w_lin,
            w_emb=self.w_emb,
            b=self.b,
            seed=self.seed,
        )
        other.updates, other.counts = self.updates, dict(self.counts)
        return other

    # --- prediction --------------------------------------------------------------------------

    def utility(self, x: np.ndarray, e: np.ndarray) -> float:
        d = x - self.p
        return float(self.b + self.w_lin @ x - self.w_quad @ (d * d) + self.w_emb @ e)

    def score(self, text: str, context: str | None = None) -> float:
        """Predicted satisfaction with `text` (0–1) as an answer to `context`."""
        x, e = features(text, context)
        return _sigmoid(self.utility(x, e))

    def rank(self, texts: Sequence[str], context: str | None = None) -> list[tuple[int, float]]:
        """`(index, score)` of `texts`, best first (ties keep the given order)."""
        scored = [(i, self.score(t, context)) for i, t in enumerate(texts)]
        return sorted(scored, key=lambda item: (-item[1], item[0]))

    def profile(self) -> dict[str, float]:
        """The ideal value of each scalar feature (what `UserPreferences.learned` stores)."""
        return {k: round(float(np.clip(v, 0.0, 1.0)), 4) for k, v in zip(SCALAR_FEATURES, self.p, strict=True)}

    # --- learning ----------------------------------------------------------------------------

    def _grad(self, x: np.ndarray, e: np.ndarray) -> dict[str, Any]:
        d = x - self.p
        return {"b": 1.0, "w_lin": x, "w_quad": -(d * d), "p": 2.0 * self.w_quad * d, "w_emb": e}

    def _step(self, grads: dict[str, Any], g: float) -> None:
        lr = self.learning_rate
        self.b -= lr * g * grads["b"]
        self.w_lin -= lr * g * grads["w_lin"]
        self.w_quad = np.maximum(self.w_quad - lr * g * grads["w_quad"], 0.0)
        self.p = np.clip(self.p - lr * g * grads["p"], 0.0, 1.0)
        self.w_emb -= lr * g * grads["w_emb"]

    def _adapt(self, x: np.ndarray, amount: float) -> None:
        self.p = np.clip(self.p + self.adaptation_rate * amount * (x - self.p), 0.0, 1.0)

    def _rate(self, text: str, context: str | None, target: float, weight: float = 1.0) -> None:
        x, e = features(text, context)
        g = (_sigmoid(self.utility(x, e)) - target) * weight
        self._step(self._grad(x, e), g)
        self._adapt(x, weight * (2.0 * target - 1.0))

    def _prefer(self, better: str, worse: str, context: str | None, weight: float = 1.0) -> None:
        xb, eb = features(better, context)
        xw, ew = features(worse, context)
        gb, gw = self._grad(xb, eb), self._grad(xw, ew)
        prob = _sigmoid(self.utility(xb, eb) - self.utility(xw, ew))
        g = (prob - 1.0) * weight
        self._step({k: gb[k] - gw[k] for k in gb}, g)

    def update(self, event: FeedbackEvent | dict[str, Any]) -> float:
        """One online step on one event; returns the loss before the step (lower = predicted well)."""
        ev = FeedbackEvent.parse(event)
        loss = self.loss(ev)
        if ev.kind in ("rating", "regenerate"):
            self._rate(ev.text, ev.context, ev.value, 0.5 if ev.kind == "regenerate" else 1.0)
        elif ev.kind == "choice":
            for other in ev.rejected:
                self._prefer(ev.text, other, ev.context, 1.0 / len(ev.rejected))
            self._adapt(features(ev.text, ev.context)[0], 1.0)
        elif ev.kind == "edit":
            edited = ev.edited_text or ""  # FeedbackEvent requires it for edits
            weight = min(1.0, 0.5 + ev.edit_fraction)
            self._prefer(edited, ev.text, ev.context, weight)
            self._adapt(features(edited, ev.context)[0], weight)
        self.updates += 1
        self.counts[ev.kind] = self.counts.get(ev.kind, 0) + 1
        return loss

    def loss(self, event: FeedbackEvent) -> float:
        """Log-loss of the current model on `event` (ratings: cross-entropy; pairs: Bradley–Terry)."""
        eps = 1e-9
        if event.kind in ("rating", "regenerate"):
            s, r = self.score(event.text, event.context), event.value
            return -(r * math.log(s + eps) + (1 - r) * math.log(1 - s + eps))
        pairs = (
            [(event.text, o) for o in event.rejected]
            if event.kind == "choice"
            else [(event.edited_text or "", event.text)]
        )
        total = 0.0
        for better, worse in pairs:
            xb, eb = features(better, event.context)
            xw, ew = features(worse, event.context)
            total -= math.log(_sigmoid(self.utility(xb, eb) - self.utility(xw, ew)) + eps)
        return total / len(pairs)

    def correct(self, event: FeedbackEvent) -> bool | None:
        """Whether the model predicts `event` right (liked vs not; the preferred text ranked
        higher); None for a rating exactly in the middle (no side to predict)."""
        if event.kind in ("rating", "regenerate"):
            if event.value == 0.5:
                return None
            return (self.score(event.text, event.context) >= 0.5) == (event.value > 0.5)
        if event.kind == "choice":
            best = self.score(event.text, event.context)
            return all(best > self.score(o, event.context) for o in event.rejected)
        return self.score(event.edited_text or "", event.context) > self.score(event.text, event.context)

    def fit(
        self,
        events: Sequence[FeedbackEvent | dict[str, Any]],
        epochs: int,
        seed: int = 0,
        heldout_fraction: float = 0.2,
    ) -> dict[str, Any]:
        """Offline fitting: `epochs` passes of online steps over a seeded shuffle of the training
        part, keeping `heldout_fraction` apart for evaluation; stops early when the held-out loss
        has not improved for 3 epochs and restores the best state. Returns the metrics."""
        if epochs < 1:
            raise DataError(f"epochs: expected at least 1, got {epochs}")
        if not 0.0 <= heldout_fraction < 1.0:
            raise DataError(f"heldout_fraction: expected 0 <= value < 1, got {heldout_fraction}")
        parsed = [FeedbackEvent.parse(e, f"events[{i}]") for i, e in enumerate(events)]
        if not parsed:
            raise DataError("events: nothing to fit")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(parsed))
        n_held = round(len(parsed) * heldout_fraction)
        if heldout_fraction > 0 and len(parsed) >= 2:
            n_held = min(max(1, n_held), len(parsed) - 1)
        held = [parsed[i] for i in order[:n_held]]
        train = [parsed[i] for i in order[n_held:]]
        check = held or train
        history: list[dict[str, float]] = []
        best = (self._mean_loss(check), 0, self.copy())
        patience, since_best, run = 3, 0, 0
        for epoch in range(1, epochs + 1):
            for i in rng.permutation(len(train)):
                self.update(train[i])
            run = epoch
            loss = self._mean_loss(check)
            history.append({"epoch": epoch, "heldout_loss": round(loss, 6), "heldout_accuracy": self._accuracy(check)})
            if loss < best[0] - 1e-6:
                best, since_best = (loss, epoch, self.copy()), 0
            else:
                since_best += 1
                if since_best >= patience:
                    break
        kept = best[2]
        updates, counts = self.updates, self.counts
        self.__dict__.update(kept.__dict__)
        self.updates, self.counts = updates, counts
        return {
            "epochs_run": run,
            "best_epoch": best[1],
            "early_stopped": run < epochs,
            "train_events": len(train),
            "heldout_events": len(held),
            "heldout_loss": round(best[0], 6),
            "heldout_accuracy": self._accuracy(check),
            "evaluated_on": "heldout" if held else "train",
            "history": history,
            "seed": seed,
        }

    def _mean_loss(self, events: Sequence[FeedbackEvent]) -> float:
        return sum(self.loss(e) for e in events) / len(events)

    def _accuracy(self, events: Sequence[FeedbackEvent]) -> float:
        verdicts = [v for v in (self.correct(e) for e in events) if v is not None]
        return round(sum(verdicts) / len(verdicts), 4) if verdicts else float("nan")

    # --- persistence -------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The tensors and the JSON metadata that `save` writes."""
        from models.fileio import package_version

        tensors = {
            "p": self.p.copy(),
            "w_quad": self.w_quad.copy(),
            "w_lin": self.w_lin.copy(),
            "w_emb": self.w_emb.copy(),
            "b": np.array([self.b]),
        }
        meta = {
            "format": FORMAT,
            "features": list(SCALAR_FEATURES),
            "embed_dim": EMBED_DIM,
            "learning_rate": self.learning_rate,
            "adaptation_rate": self.adaptation_rate,
            "seed": self.seed,
            "updates": self.updates,
            "counts": self.counts,
            "profile": self.profile(),
            "package_version": package_version(),
        }
        return tensors, meta

    def save(self, folder: str | Path, user_data: bool = False) -> Path:
        """Write `learner.safetensors` + `learner.json` into `folder`, each atomically (JSON last:
        a crash between the two leaves tensors that still match the old JSON's shapes). A user's
        learner (`user_data`) is encrypted at rest while `privacy.encrypt_at_rest` is on."""
        from safetensors.numpy import save

        from models.fileio import atomic_write_bytes

        folder = Path(folder)
        tensors, meta = self.state()
        weights = save(tensors, metadata={"format": FORMAT})
        text = (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        if user_data:
            from models.privacy.crypto import write_user_file

            write_user_file(folder / "learner.safetensors", weights)
            write_user_file(folder / "learner.json", text)
        else:
            atomic_write_bytes(folder / "learner.safetensors", weights)
            atomic_write_bytes(folder / "learner.json", text)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PreferenceLearner:
        """Read a learner saved by `save` (safetensors only; names the bad file on any problem;
        encrypted files are decrypted with the home's data key)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        from models.privacy.crypto import read_user_file

        folder = Path(folder)
        meta_path, weights = folder / "learner.json", folder / "learner.safetensors"
        for path in (meta_path, weights):
            if not path.exists():
                raise DataError(f"{path}: missing (a learner folder has learner.json and learner.safetensors)")
        try:
            meta = json.loads(read_user_file(meta_path).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta_path}: not JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: format must be {FORMAT!r}, got {meta.get('format')!r}")
        if meta.get("features") != list(SCALAR_FEATURES) or meta.get("embed_dim") != EMBED_DIM:
            raise DataError(
                f"{meta_path}: saved for features {meta.get('features')} (embed {meta.get('embed_dim')}); "
                f"this version uses {list(SCALAR_FEATURES)} (embed {EMBED_DIM})"
            )
        try:
            tensors = load(read_user_file(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"{weights}: not a readable safetensors file ({exc})") from None
        missing = [k for k in _TENSORS if k not in tensors]
        if missing:
            raise DataError(f"{weights}: missing tensors {', '.join(missing)}")
        try:
            learner = cls(
                learning_rate=float(meta.get("learning_rate", 0.5)),
                adaptation_rate=float(meta.get("adaptation_rate", 0.2)),
                p=tensors["p"],
                w_quad=tensors["w_quad"],
                w_lin=tensors["w_lin"],
                w_emb=tensors["w_emb"],
                b=float(np.asarray(tensors["b"]).reshape(-1)[0]),
                seed=int(meta.get("seed", 0)),
            )
        except DataError as exc:
            raise DataError(f"{weights}: {exc}") from None
        learner.updates = int(meta.get("updates", 0))
        learner.counts = {str(k): int(v) for k, v in dict(meta.get("counts") or {}).items()}
        return learner

    def __repr__(self) -> str:
        return f"PreferenceLearner(updates={self.updates}, profile={self.profile()})"
