"""Personalization: the overhead per response, and a simulation that shows the learner learns.

`python -m bench personalization` (environment knobs: BENCH_PZ_USERS=100, BENCH_PZ_ROUNDS=30,
BENCH_PZ_TURNS=8, BENCH_PZ_MAX_LENGTH=48, BENCH_PZ_SKIP=overhead|simulation, BENCH_PZ_OUT=folder).

1. **Overhead** (DESIGN §10: personality + personalization ≤ 1.10× a bare engine generate).
   Luna on the embedded model, one user with preferences and remembered facts. Each turn:
   `HybridModel.generate_personalized_response(n=1)`, wall time; the engine call it made
   (messages, token budget, sampling options, seed) is recorded and replayed on the bare engine
   (`base.chat`), which produces the same tokens (checked). Turns alternate order; the ratio is
   the sum of medians. Also: our part of the time, and the cost of each extra candidate (n = 2, 4).
2. **Simulation**: BENCH_PZ_USERS simulated users, each with hidden preferences: an ideal value
   and a weight for five measurable features (length, formality, emoji, questions,
   exclamation). Each round the real `HybridModel` (Luna, embedded model, n = 1) answers the
   user; the candidates (the reply and its rewrites) are shown to three policies: **ours** (the
   user's `PreferenceLearner`, trained through `record_feedback`), **none** (the personality's
   reply as is) and **river** (`river.linear_model.LogisticRegression`, online, on the same
   25 features, liked = 4-5 stars). Each policy's pick is rated by the simulated user from its
   hidden utility (1-5 stars, with noise) and that rating is the policy's only feedback.
   Satisfaction = % of picked replies the user rates 4-5 stars (what the monitor reports as
   `user_satisfaction`); the mean hidden utility (0-100) is printed next to it, and an oracle
   (the best candidate by the hidden utility) shows the ceiling. Target: ours ≥ none + 25 points
   over the last 5 rounds. Prints the curve and saves `personalization.png`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

USERS = int(os.environ.get("BENCH_PZ_USERS", "100"))
ROUNDS = int(os.environ.get("BENCH_PZ_ROUNDS", "30"))
TURNS = int(os.environ.get("BENCH_PZ_TURNS", "8"))
MAX_LENGTH = int(os.environ.get("BENCH_PZ_MAX_LENGTH", "48"))
SKIP = set(filter(None, os.environ.get("BENCH_PZ_SKIP", "").split(",")))
HIDDEN = ("length", "formality", "emoji", "questions", "exclamation")
MESSAGES = [
    "I finished the first chapter of my novel today!",
    "My editor says the middle drags. What should I do?",
    "Can you help me name a lighthouse keeper?",
    "I wrote 300 words about the harbour at dawn.",
    "Tell me something to cheer me up.",
    "Should my detective have a secret?",
    "The rain won't stop and I can't write.",
    "What do you think of a villain who bakes bread?",
]
PREFS = {"length": "short", "formality": "casual", "tone": "warm", "emoji": "some"}
GRANT = 'security:\n  users:\n    "*":\n      grants: [{models: "*", level: generate}]\n'


def _home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="bench-pz-"))
    os.environ["COMPANION_HOME"] = str(home)
    (home / "config.yaml").write_text(
        GRANT + "models:\n  personality:\n    luna-sim:\n      type: personality\n      path: 'builtin:luna'\n"
        f"      parameters: {{max_length: {MAX_LENGTH}, temperature: 0.8}}\n",
        encoding="utf-8",
    )
    return home


def _hybrid(personality: str = "luna") -> Any:
    from models.hybrid_model import HybridModel
    from models.model_manager import ModelManager

    manager = ModelManager()
    persona = manager.load_model("personality", personality)
    return HybridModel(persona, "models/personalization/user_prefs", manager=manager)


# --- 1. overhead ---------------------------------------------------------------------------------


def overhead() -> dict[str, Any]:
    from models.personalization import UserMemory, save_preferences

    hybrid = _hybrid()
    luna = hybrid.personality
    base = luna.base
    save_preferences("bench-user", PREFS)
    UserMemory("bench-user").add("Their name is Sam.", kind="name")
    UserMemory("bench-user").add("They are writing a mystery set in a lighthouse.", kind="project")
    calls: list[tuple[Any, ...]] = []
    recording = [False]
    original = base.chat

    def spy(messages: Any, max_length: Any = None, **options: Any) -> str:
        out = original(messages, max_length, **options)
        if recording[0]:
            calls.append(([dict(m) for m in messages], max_length, dict(options), out))
        return out

    base.chat = spy
    for i in range(2):  # warm up
        hybrid.generate_personalized_response(message=MESSAGES[i], user="bench-user", seed=1)
    rows: list[dict[str, float]] = []
    ours_part: list[float] = []
    same = 0
    for i in range(TURNS):
        msg, seed = MESSAGES[i % len(MESSAGES)], 100 + i
        luna.reset("bench-user")
        recording[0] = True
        hybrid.generate_personalized_response(message=msg, user="bench-user", seed=seed)  # the call to replay
        recording[0] = False
        messages, budget, options, recorded = calls[-1]
        times: dict[str, list[float]] = {"ours": [], "bare": []}
        for rep in range(3):
            for which in ("ours", "bare") if (i + rep) % 2 == 0 else ("bare", "ours"):
                luna.reset("bench-user")
                t0 = time.perf_counter()
                if which == "ours":
                    resp = hybrid.generate_personalized_response(message=msg, user="bench-user", seed=seed)
                else:
                    text = original(messages, budget, **options)
                times[which].append(time.perf_counter() - t0)
                if which == "ours":
                    ours_part.append(resp.timings["personalization_ms"])
        same += text == recorded
        rows.append({k: statistics.median(v) for k, v in times.items()})
    extra = {}
    for n in (1, 2, 4):
        spent = []
        for i in range(min(TURNS, 4)):
            luna.reset("bench-user")
            t0 = time.perf_counter()
            hybrid.generate_personalized_response(message=MESSAGES[i], user="bench-user", seed=200 + i, n=n)
            spent.append(time.perf_counter() - t0)
        extra[n] = statistics.median(spent)
    base.chat = original
    bare_ms = sum(r["bare"] for r in rows) / TURNS * 1000
    ours_ms = sum(r["ours"] for r in rows) / TURNS * 1000
    ratio = ours_ms / bare_ms
    part = statistics.median(ours_part)
    per_candidate = (extra[4] - extra[1]) / 3 * 1000
    verdict = "PASS" if ratio <= 1.10 else "MISS"
    print(f"overhead: {TURNS} turns, Luna as configured (max_length {luna.params.max_length}), medians of 3")
    print(f"  bare engine chat, the same messages and sampling ({same}/{TURNS} identical replies): {bare_ms:7.1f} ms")
    print(f"  personality + personalization, n=1:                                   {ours_ms:7.1f} ms")
    print(f"    of which personalization (prefs, memory, learner, rewrites, ranking): {part:7.1f} ms (median)")
    print(f"  ratio vs the bare engine: {ratio:.3f}x (target <= 1.10x) {verdict}")
    print(f"  n=1 {extra[1] * 1000:.0f} ms, n=2 {extra[2] * 1000:.0f} ms, n=4 {extra[4] * 1000:.0f} ms")
    print(f"  each extra candidate: {per_candidate:.0f} ms (one more generation)")
    return {
        "ratio": ratio,
        "same_replies": same,
        "turns": TURNS,
        "bare_ms": bare_ms,
        "ours_ms": ours_ms,
        "personalization_ms": part,
        "per_extra_candidate_ms": per_candidate,
        "n_ms": {n: v * 1000 for n, v in extra.items()},
    }


# --- 2. simulation -------------------------------------------------------------------------------


class SimulatedUser:
    """Hidden ideal values and weights over measurable features; rates 1-5 stars from utility."""

    def __init__(self, rng: random.Random) -> None:
        self.ideal = {k: rng.choice([0.0, 0.1, 0.5, 0.9, 1.0]) if k != "length" else rng.uniform(0.05, 0.6)
                      for k in HIDDEN}  # fmt: skip
        self.weight = {k: rng.uniform(0.2, 1.0) for k in HIDDEN}
        self.rng = rng

    def utility(self, text: str) -> float:
        from models.personalization.features import measure

        m = measure(text)
        span = {"length": 0.6}
        loss = sum(self.weight[k] * min(1.0, abs(m[k] - self.ideal[k]) / span.get(k, 1.0)) for k in HIDDEN)
        return 1.0 - loss / sum(self.weight.values())

    def stars(self, text: str) -> int:
        u = self.utility(text) + self.rng.gauss(0.0, 0.05)
        return max(1, min(5, 1 + round(4 * u)))


class RiverPolicy:
    """`river`'s online logistic regression on the learner's 25 features (liked = 4-5 stars)."""

    def __init__(self) -> None:
        from river import linear_model, optim

        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(0.1))

    @staticmethod
    def _x(text: str) -> dict[str, float]:
        from models.personalization.features import SCALAR_FEATURES, features

        x, e = features(text)
        return {**dict(zip(SCALAR_FEATURES, x.tolist(), strict=True)), **{f"e{i}": float(v) for i, v in enumerate(e)}}

    def pick(self, texts: list[str]) -> int:
        probs = [self.model.predict_proba_one(self._x(t)).get(True, 0.5) for t in texts]
        return max(range(len(texts)), key=lambda i: (probs[i], -i))

    def learn(self, text: str, stars: int) -> None:
        self.model.learn_one(self._x(text), stars >= 4)


def simulation() -> dict[str, Any]:
    from models.personalization import record_feedback

    try:
        import river  # noqa: F401
    except ImportError:
        river_ok = False
        print("river is not installed (pip install river): the river column is skipped")
    else:
        river_ok = True
    hybrid = _hybrid("luna-sim")
    arms = ("ours", "none", "river", "oracle")
    utility: dict[str, list[list[float]]] = {k: [[] for _ in range(ROUNDS)] for k in arms}
    satisfied: dict[str, list[list[float]]] = {k: [[] for _ in range(ROUNDS)] for k in arms}
    t0 = time.perf_counter()
    for u in range(USERS):
        sim = SimulatedUser(random.Random(1000 + u))
        river_policy = RiverPolicy() if river_ok else None
        user = f"sim-{u:03d}"
        for r in range(ROUNDS):
            msg = MESSAGES[(u + r) % len(MESSAGES)]
            resp = hybrid.generate_personalized_response(message=msg, user=user, seed=u * 1000 + r, remember=False)
            pool = resp.candidates
            stars = sim.stars(resp.text)
            record_feedback(resp.response_id, rating=stars, scale="stars")
            picks = {"ours": (resp.text, stars), "none": (str(resp.response), None)}
            if river_policy is not None:
                pick = pool[river_policy.pick(pool)]
                river_stars = sim.stars(pick)
                river_policy.learn(pick, river_stars)
                picks["river"] = (pick, river_stars)
            picks["oracle"] = (max(pool, key=sim.utility), None)
            for arm, (text, given) in picks.items():
                utility[arm][r].append(100 * sim.utility(text))
                satisfied[arm][r].append(100.0 * ((given if given is not None else sim.stars(text)) >= 4))
            hybrid.personality.reset(user)
        if (u + 1) % 10 == 0:
            print(f"  {u + 1}/{USERS} users ({time.perf_counter() - t0:.0f} s)", flush=True)
    sat = {k: [statistics.fmean(v) if v else float("nan") for v in rows] for k, rows in satisfied.items()}
    util = {k: [statistics.fmean(v) if v else float("nan") for v in rows] for k, rows in utility.items()}
    print(f"\nsatisfaction by round, {USERS} simulated users: % of replies rated 4-5 stars (the monitor's")
    print("user_satisfaction), and in brackets the mean hidden utility (0-100); oracle = the best candidate")
    print(f"{'round':>5} {'ours':>13} {'none':>13} {'river':>13} {'oracle':>13} {'ours-none':>10}")
    for r in range(ROUNDS):
        if r < 5 or (r + 1) % 5 == 0:
            cells = " ".join(f"{sat[k][r]:6.1f} ({util[k][r]:4.1f})" for k in arms)
            print(f"{r + 1:>5} {cells} {sat['ours'][r] - sat['none'][r]:10.1f}")
    last = slice(max(0, ROUNDS - 5), ROUNDS)

    def tail(curve: list[float]) -> float:
        return statistics.fmean(curve[last])

    gain = tail(sat["ours"]) - tail(sat["none"])
    print(
        f"last 5 rounds: ours - none = {gain:+.1f} points satisfied (target >= +25) "
        f"{'PASS' if gain >= 25 else 'MISS'}; "
        f"utility {tail(util['ours']) - tail(util['none']):+.1f}; "
        f"river - none = {tail(sat['river']) - tail(sat['none']):+.1f} points; "
        f"oracle - none = {tail(sat['oracle']) - tail(sat['none']):+.1f} points"
    )
    _plot(sat)
    return {"users": USERS, "rounds": ROUNDS, "satisfied": sat, "utility": util, "gain_last5": gain}


def _plot(mean: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(os.environ.get("BENCH_PZ_OUT", "bench/results"))
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = {"ours": "ours (PreferenceLearner)", "river": "river LogisticRegression", "none": "no adaptation"}
    labels["oracle"] = "oracle (best candidate)"
    for key, label in labels.items():
        ax.plot(range(1, len(mean[key]) + 1), mean[key], label=label, linestyle=":" if key == "oracle" else "-")
    ax.set_xlabel("round")
    ax.set_ylabel("% of replies rated 4-5 stars")
    ax.set_title(f"Personalization, {USERS} simulated users")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "personalization.png", dpi=120)
    (out / "personalization.json").write_text(json.dumps(mean, indent=1))
    print(f"saved {out / 'personalization.png'}")


def main() -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    _home()
    out: dict[str, Any] = {}
    if "overhead" not in SKIP:
        out["overhead"] = overhead()
    if "simulation" not in SKIP:
        out["simulation"] = simulation()
    return out


if __name__ == "__main__":
    main()
