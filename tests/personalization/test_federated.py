"""Federated personalization over Flower (issue 23): a loopback federation of 10 instances
learns the population's taste, only clipped learner updates leave an instance, noise gives a
finite ε, and `serve` publishes the prior that new users then start from."""

from __future__ import annotations

import copy
import pickle  # only serialises what the test recorded; nothing is ever unpickled
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.personalization.events import FeedbackEvent
from models.personalization.learner import PreferenceLearner
from models.training.federated import (
    SHARED,
    PersonalizationClient,
    epsilon,
    instance_users,
    join,
    learner_from_arrays,
    local_update,
    prior_arrays,
    serve,
    simulate,
)

LIKED = ["Oh, I love that! 😊 What happens next?", "Yes!! 🎉 Tell me more?", "So fun 😄 and then?"]
DISLIKED = [
    "I would advise that you consider revising the chapter in its entirety before proceeding further.",
    "The structure of the narrative requires substantial and careful reconsideration.",
]


def _users(instance: int, n: int = 3, turns: int = 8) -> dict[str, list[FeedbackEvent]]:
    """Users who all like short, warm replies with an emoji and a question (a shared taste)."""
    rng = random.Random(instance)
    users = {}
    for u in range(n):
        events = []
        for _ in range(turns):
            if rng.random() < 0.5:
                text, stars = rng.choice(LIKED), rng.choice([4, 5])
            else:
                text, stars = rng.choice(DISLIKED), rng.choice([1, 2])
            events.append(FeedbackEvent(kind="rating", text=text, rating=stars, scale="stars", context="My chapter?"))
        users[f"writer-{instance}-{u}@example.com"] = events
    return users


def _prefers_liked(learner: PreferenceLearner) -> float:
    """How much more the learner scores the liked replies than the disliked ones."""
    return float(np.mean([learner.score(t) for t in LIKED]) - np.mean([learner.score(t) for t in DISLIKED]))


def test_the_arrays_round_trip_and_a_local_update_moves_toward_the_users() -> None:
    prior = PreferenceLearner()
    arrays = prior_arrays(prior)
    assert [a.shape for a in arrays] == [(9,), (9,), (9,), (1,)]
    again = learner_from_arrays(arrays)
    assert all(np.array_equal(a, b) for a, b in zip(prior_arrays(again), arrays, strict=True))
    update, n = local_update(prior, _users(0))
    assert n == 3
    assert _prefers_liked(learner_from_arrays(update)) > _prefers_liked(prior)
    same, none = local_update(prior, {"new": _users(0)["writer-0-0@example.com"][:2]})
    assert none == 0 and all(np.array_equal(a, b) for a, b in zip(same, arrays, strict=True))


def Recording(client: Any, sent: list[Any]) -> Any:
    """A Flower `Client` around `client` that keeps every result it hands Flower to send."""
    from flwr.client import Client

    class _Recording(Client):
        def _keep(self, result: Any) -> Any:
            sent.append(copy.deepcopy(result))  # as handed over: sending empties its parameters
            return result

        def get_properties(self, ins: Any) -> Any:
            return self._keep(client.get_properties(ins))

        def get_parameters(self, ins: Any) -> Any:
            return self._keep(client.get_parameters(ins))

        def fit(self, ins: Any) -> Any:
            return self._keep(client.fit(ins))

        def evaluate(self, ins: Any) -> Any:
            return self._keep(client.evaluate(ins))

    return _Recording()


def test_a_loopback_federation_of_ten_instances_learns_the_shared_taste_and_sends_only_updates() -> None:
    sent: list[Any] = []
    lock = threading.Lock()

    def wrap(client: Any) -> Any:
        with lock:
            return Recording(client, sent)

    data = [_users(i) for i in range(10)]
    clients = [PersonalizationClient(lambda users=users: users) for users in data]
    result = simulate(clients, rounds=3, noise_multiplier=0.0, wrap=wrap)
    assert result.rounds == 3 and result.clients == 10 and all(c.rounds == 3 for c in clients)
    assert result.epsilon == float("inf")
    # The prior a new user starts from now prefers what the population liked.
    assert _prefers_liked(result.learner) > _prefers_liked(PreferenceLearner()) + 0.05

    # Every message: the shared arrays (shapes of the prior) and nothing else.
    fits = [m for m in sent if type(m).__name__ == "FitRes"]
    assert len(fits) == 30
    from flwr.common import parameters_to_ndarrays

    for m in sent:
        kind = type(m).__name__
        assert kind in ("FitRes", "EvaluateRes", "GetParametersRes"), kind
        if kind == "FitRes":
            arrays = parameters_to_ndarrays(m.parameters)
            assert [a.shape for a in arrays] == [(9,), (9,), (9,), (1,)] and len(arrays) == len(SHARED)
            assert all(a.dtype == np.float64 for a in arrays)
            assert m.metrics == {} and m.num_examples == 3  # the users who took part, weights FedAvg
    wire = pickle.dumps(sent)
    secrets = [u for users in data for u in users] + LIKED + DISLIKED + ["My chapter?", "example.com", "writer"]
    for secret in secrets:
        assert secret.encode() not in wire, secret
        assert secret.encode("utf-16-le") not in wire


def test_a_simulation_runs_its_clients_array_work_one_at_a_time() -> None:
    # CPython 3.11 fails two threads parsing array headers at once (gh-106905): the simulated
    # clients, all in this process, must take turns; without them these fits overlap.
    from flwr.client import Client

    state = {"active": 0, "most": 0, "fits": 0}
    guard = threading.Lock()

    def wrap(client: Any) -> Any:
        class _Slow(Client):
            def get_parameters(self, ins: Any) -> Any:
                return client.get_parameters(ins)

            def fit(self, ins: Any) -> Any:
                with guard:
                    state["active"] += 1
                    state["most"] = max(state["most"], state["active"])
                    state["fits"] += 1
                time.sleep(0.05)
                try:
                    return client.fit(ins)
                finally:
                    with guard:
                        state["active"] -= 1

            def evaluate(self, ins: Any) -> Any:
                return client.evaluate(ins)

        return _Slow()

    clients = [PersonalizationClient(lambda users=_users(i): users) for i in range(4)]
    simulate(clients, rounds=2, noise_multiplier=0.0, wrap=wrap)
    assert state["fits"] == 8 and state["most"] == 1


def test_with_noise_updates_are_clipped_instances_weigh_the_same_and_epsilon_is_finite() -> None:
    sent: list[Any] = []
    data = [_users(i) for i in range(10)]
    clients = [PersonalizationClient(lambda users=users: users) for users in data]
    np.random.seed(3)
    result = simulate(clients, rounds=2, noise_multiplier=2.0, clipping_norm=0.05,
                      wrap=lambda c: Recording(c, sent))  # fmt: skip
    from flwr.common import parameters_to_ndarrays

    prior = prior_arrays(PreferenceLearner())
    first = [m for m in sent if type(m).__name__ == "FitRes"][:10]  # round 1: all started from the prior
    for m in first:
        delta = [a - p for a, p in zip(parameters_to_ndarrays(m.parameters), prior, strict=True)]
        assert float(np.sqrt(sum(float((d * d).sum()) for d in delta))) <= 0.05 + 1e-9
        assert m.num_examples == 1
    assert result.epsilon == pytest.approx(epsilon(2.0, 2), rel=1e-9)
    assert 1.0 < result.epsilon < 10.0
    assert epsilon(4.0, 2) < result.epsilon < epsilon(1.0, 2)  # more noise, less privacy spent


def test_instance_users_reads_each_users_recorded_feedback() -> None:
    from models.personalization import load_personalization_model, record_feedback

    model = load_personalization_model("user_prefs")
    for user, stars in (("ana", 5), ("ben", 2)):
        r = model.adapt_response("Here is a short answer.", {"length": "short"}, user=user)
        record_feedback(r.response_id, rating=stars, scale="stars")
        record_feedback(r.response_id, rating=stars, scale="stars")
    users = instance_users()
    assert sorted(users) == ["ana", "ben"]
    assert [e.rating for e in users["ana"]] == [5, 5] and users["ben"][0].kind == "rating"


def test_serve_publishes_the_prior_and_new_users_start_from_it(context: Any) -> None:
    import socket

    from models.personalization import load_personalization_model
    from models.training.flower import wait_for_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    rounds: list[int] = []

    def member(i: int) -> None:
        wait_for_port(address)
        rounds.append(join(address, users=lambda: _users(i)))

    threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    before = load_personalization_model("user_prefs").prior
    result = serve(address, rounds=2, clients=2, noise_multiplier=1.0, clipping_norm=0.5)
    for t in threads:
        t.join(timeout=30)
    assert rounds == [2, 2] and result.version and result.model == "personalization/user_prefs"
    from models.lifecycle.version_control import ModelVersionControl

    info = ModelVersionControl().show("personalization/user_prefs", result.version)
    dp = info.lineage["differential_privacy"]
    assert info.lineage["recipe"] == "federated" and info.lineage["framework"] == "flwr"
    assert dp["noise_multiplier"] == 1.0 and dp["epsilon"] == pytest.approx(epsilon(1.0, 2), abs=1e-3)
    after = load_personalization_model("user_prefs")
    assert not np.array_equal(after.prior.p, before.p)
    fresh = after.learner_for("someone-new")
    assert np.array_equal(fresh.p, after.prior.p)


def test_bad_settings_are_refused_before_anything_starts() -> None:
    from models.errors import TrainingError

    with pytest.raises(TrainingError, match="noise multiplier"):
        serve("127.0.0.1:1", noise_multiplier=-1, publish=False)
    with pytest.raises(TrainingError, match="at least 1"):
        simulate([], rounds=1)


def test_the_cli_serves_a_federation_and_publishes(companion_home: Any) -> None:
    import json
    import os
    import socket
    import subprocess
    import sys

    from models.training.flower import wait_for_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    cmd = [str(Path(sys.executable).with_name("companion")), "federate", "serve", "--address", address,
           "--clients", "1", "--rounds", "1", "--noise", "0", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        wait_for_port(address)
        assert join(address, users=lambda: _users(5)) == 1
        out, errs = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, errs
    info = json.loads(out)
    assert info["rounds"] == 1 and info["epsilon"] is None and info["version"]
    assert "deprecated" not in errs
