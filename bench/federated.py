"""Federated personalization on Flower: does a federated prior make a new user happier sooner?

`python -m bench federated` (knobs: BENCH_FL_CLIENTS=12, BENCH_FL_USERS=5 per client,
BENCH_FL_HISTORY=10 rounds each, BENCH_FL_ROUNDS=5 federated rounds, BENCH_FL_NEW=200 new users,
BENCH_FL_NOISE=2.0, BENCH_FL_CLIP=0.5).

The personalization simulation of `bench/personalization.py`, with its simulated users (hidden
ideal values and weights over length, formality, emoji, questions and exclamation; 1-5 stars
from the hidden utility) drawn from a population: each hidden ideal is, with probability
`SHARE`, the population's taste (`TASTE`) moved by the user's instance's own lean and a
personal offset, and otherwise anything. That is the assumption a population prior rests on:
writers share some taste. Candidate replies are real: Luna on the embedded model answers
the simulation's messages through `HybridModel` (the reply and its rewrites).

1. Every instance's users chat for BENCH_FL_HISTORY rounds with learners that start from the
   shipped prior (the policy `record_feedback` trains in the product: rank the candidates,
   show the best, learn from the stars).
2. Those instances federate for BENCH_FL_ROUNDS rounds over Flower on loopback
   (`models.training.federated.simulate`: gRPC, FedAvg), without noise and with
   client-side clipping + central Gaussian noise (ε reported for δ = 1e-5).
3. New users from the same population (not from any instance) chat for 5 rounds starting from
   the shipped prior, the federated prior and the noised federated prior; satisfaction is the
   share of replies they rate 4-5 stars. Target: federated - shipped >= +10 points, with
   and without noise. A control run with no shared taste (SHARE = 0) is printed beside it.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from typing import Any

import numpy as np

from bench.personalization import HIDDEN, MESSAGES, SimulatedUser, _home, _hybrid

CLIENTS = int(os.environ.get("BENCH_FL_CLIENTS", "12"))
USERS = int(os.environ.get("BENCH_FL_USERS", "5"))
HISTORY = int(os.environ.get("BENCH_FL_HISTORY", "10"))
ROUNDS = int(os.environ.get("BENCH_FL_ROUNDS", "5"))
NEW = int(os.environ.get("BENCH_FL_NEW", "200"))
NOISE = float(os.environ.get("BENCH_FL_NOISE", "2.0"))
CLIP = float(os.environ.get("BENCH_FL_CLIP", "0.5"))
SEEDS = 4
SHARE = 0.7
#: The population's taste in the simulation: short, casual, warm replies that ask back.
TASTE = {"length": 0.15, "formality": 0.1, "emoji": 0.5, "questions": 0.9, "exclamation": 0.4}


class PopulationUser(SimulatedUser):
    """A simulated user whose hidden ideals follow the population with probability `share`
    (utility and stars as `bench.personalization.SimulatedUser`)."""

    def __init__(self, rng: random.Random, lean: dict[str, float], share: float) -> None:
        self.ideal = {}
        for k in HIDDEN:
            if rng.random() < share:
                self.ideal[k] = min(1.0, max(0.0, TASTE[k] + lean.get(k, 0.0) + rng.gauss(0.0, 0.08)))
            else:
                self.ideal[k] = rng.uniform(0.05, 0.6) if k == "length" else rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
        self.weight = {k: rng.uniform(0.2, 1.0) for k in HIDDEN}
        self.rng = rng


def candidate_pools(hybrid: Any, messages: list[str], seeds: int) -> list[tuple[str, list[str]]]:
    """(message, candidates) from the real personalization path: the reply and its rewrites."""
    pools = []
    for m, msg in enumerate(messages):
        for s in range(seeds):
            resp = hybrid.generate_personalized_response(message=msg, user="pool", seed=100 * m + s, remember=False)
            pools.append((msg, list(dict.fromkeys(resp.candidates))))
            hybrid.personality.reset("pool")
    return pools


def chat(user: PopulationUser, learner: Any, pools: list, rounds: int, rng: random.Random) -> tuple[list, list]:
    """`rounds` turns: the learner picks, the user rates, the learner learns. (events, stars)."""
    from models.personalization.events import FeedbackEvent

    events, stars = [], []
    for _ in range(rounds):
        msg, pool = pools[rng.randrange(len(pools))]
        pick = pool[learner.rank(pool, msg)[0][0]]
        given = user.stars(pick)
        event = FeedbackEvent(kind="rating", text=pick, rating=given, scale="stars", context=msg)
        learner.update(event)
        events.append(event)
        stars.append(given)
    return events, stars


def instances(pools: list, share: float, seed: int) -> list[dict[str, list]]:
    """Each instance's users' feedback after HISTORY rounds from the shipped prior."""
    from models.personalization.learner import PreferenceLearner

    rng = random.Random(seed)
    out = []
    for c in range(CLIENTS):
        lean = {k: rng.gauss(0.0, 0.08) for k in HIDDEN}  # each instance's own community
        users = {}
        for u in range(USERS):
            user = PopulationUser(random.Random(rng.random()), lean, share)
            events, _ = chat(user, PreferenceLearner.cold_start(None, u), pools, HISTORY, random.Random(rng.random()))
            users[f"i{c}-u{u}"] = events
        out.append(users)
    return out


def satisfaction(prior: Any, pools: list, share: float, seed: int) -> float:
    """% of 4-5 star ratings over the first 5 rounds of NEW new users starting from `prior`."""
    from models.personalization.learner import PreferenceLearner

    rng = random.Random(seed)
    good = []
    for u in range(NEW):
        user = PopulationUser(random.Random(rng.random()), {}, share)
        learner = PreferenceLearner.cold_start(None, u, prior=prior)
        _, stars = chat(user, learner, pools, 5, random.Random(rng.random()))
        good += [s >= 4 for s in stars]
    return 100.0 * statistics.fmean(good)


def run(pools: list, share: float) -> dict[str, Any]:
    from models.personalization.learner import PreferenceLearner
    from models.training.federated import PersonalizationClient, simulate

    data = instances(pools, share, seed=7)
    clients = [PersonalizationClient(lambda users=users: users) for users in data]
    shipped = PreferenceLearner()
    plain = simulate(clients, rounds=ROUNDS)
    np.random.seed(11)  # Flower's noise draws from numpy's global generator
    noised = simulate(clients, rounds=ROUNDS, noise_multiplier=NOISE, clipping_norm=CLIP)
    out = {"share": share}
    for name, prior in (("shipped", shipped), ("federated", plain.learner), ("federated+dp", noised.learner)):
        out[name] = satisfaction(prior, pools, share, seed=99)
    out["epsilon"] = noised.epsilon
    out["profile"] = plain.learner.profile()
    out["seconds"] = plain.seconds
    return out


def main() -> dict[str, Any]:
    _home()
    t0 = time.perf_counter()
    pools = candidate_pools(_hybrid("luna-sim"), MESSAGES, SEEDS)
    print(f"{len(pools)} candidate pools from Luna on the embedded model ({time.perf_counter() - t0:.0f} s)")
    results = [run(pools, SHARE), run(pools, 0.0)]
    print(f"\n{CLIENTS} instances x {USERS} users ({HISTORY} rounds of feedback each), {ROUNDS} Flower rounds; "
          f"{NEW} new users, first 5 rounds: % of replies rated 4-5 stars")  # fmt: skip
    print(f"{'shared taste':>12} {'shipped':>8} {'federated':>10} {'fed - shipped':>14} {'+ DP noise':>11} "
          f"{'DP - shipped':>13} {'ε (δ=1e-5)':>11}")  # fmt: skip
    for r in results:
        print(f"{r['share']:>12.0%} {r['shipped']:8.1f} {r['federated']:10.1f} {r['federated'] - r['shipped']:+14.1f} "
              f"{r['federated+dp']:11.1f} {r['federated+dp'] - r['shipped']:+13.1f} {r['epsilon']:11.2f}")  # fmt: skip
    main_run = results[0]
    gain, dp_gain = main_run["federated"] - main_run["shipped"], main_run["federated+dp"] - main_run["shipped"]
    ok = gain >= 10 and dp_gain >= 10
    verdict = "PASS" if ok else "MISS"
    print(f"target: federated and DP-federated prior >= shipped + 10 points with shared taste: {verdict} "
          f"({gain:+.1f}, {dp_gain:+.1f}; noise multiplier {NOISE}, clipping norm {CLIP})")  # fmt: skip
    print(f"federated profile (shared taste): {main_run['profile']}")
    return {"results": results, "pass": ok}


if __name__ == "__main__":
    main()
