"""Federated personalization on Flower: the population prior learned from many instances'
feedback, while every user's data stays on their instance.

Each instance (`companion federate join`) is a Flower client. In every round it receives the
current population prior (the `PreferenceLearner` tensors that new users start from), replays
each local user's feedback events on a learner cold-started from it (exactly the online steps
a user's own learner takes: `PreferenceLearner.update`), averages the users' learners, clips
the difference from the prior to `clipping_norm` (Flower's `compute_clip_model_update`, the
FlatClip of McMahan et al. 2018) and sends that back. Nothing else leaves: no text, no user
ids, no features, no count of users when noise is on (each instance then weighs the same, as
the differential-privacy analysis assumes).

The server (`companion federate serve`) runs Flower's `FedAvg`, wrapped in
`DifferentialPrivacyClientSideFixedClipping` when `noise_multiplier > 0` (Gaussian noise of
standard deviation `noise_multiplier * clipping_norm / clients` on each round's average), and
publishes the result as a new version of the personalization model, with the rounds, clients,
noise and the privacy budget ε (for δ, by `dp_accounting`'s RDP accountant over the rounds) in
its lineage. New users of every instance that installs that version start from it.

Only the profile over measurable features is shared (`SHARED`: the ideal values `p`, their
weights `w_quad`, the linear weights and the bias); the hashed word-embedding weights stay at
the prior's value, since they are word-level and personal.

With `style=True` the server also federates the users' LoRA style adapters where instances have
them (`models.training.federated_style`): the arrays after `SHARED` are the population style
adapter's A and B matrices, averaged by how many users' adapters each instance holds. One
instance's update (learner and style together) is clipped as one vector, so the privacy
analysis covers both; the published version carries the population adapter, and a user's first
style adapter starts from it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import DataError, TrainingError
from models.personalization.events import FeedbackEvent
from models.personalization.learner import PreferenceLearner
from models.training.federated_style import StyleShape, initial_style, local_style_adapters, style_update
from models.training.flower import flower_log, require_flower, run_server, taking_turns, wait_for_port

__all__ = [
    "SHARED",
    "FederatedResult",
    "PersonalizationClient",
    "epsilon",
    "instance_users",
    "join",
    "learner_from_arrays",
    "local_update",
    "prior_arrays",
    "serve",
    "simulate",
    "strategy",
]

#: The learner tensors a client shares (see the module docstring).
SHARED = ("p", "w_quad", "w_lin", "b")
#: A user needs this many feedback events before their learner says anything about taste.
MIN_EVENTS = 3
DEFAULT_DELTA = 1e-5
DEFAULT_NOISE = 2.0
DEFAULT_CLIP = 0.5


def prior_arrays(learner: PreferenceLearner) -> list[np.ndarray]:
    """The shared tensors of `learner`, in `SHARED` order (float64)."""
    tensors, _meta = learner.state()
    return [np.asarray(tensors[name], dtype=np.float64).copy() for name in SHARED]


def learner_from_arrays(arrays: Sequence[np.ndarray], base: PreferenceLearner | None = None) -> PreferenceLearner:
    """A learner with `arrays` as its shared tensors and the rest (rates, `w_emb`) from `base`."""
    if len(arrays) != len(SHARED):
        raise DataError(f"federated prior: expected {len(SHARED)} arrays ({', '.join(SHARED)}), got {len(arrays)}")
    base = base or PreferenceLearner()
    p, w_quad, w_lin, b = (np.asarray(a, dtype=np.float64) for a in arrays)
    if b.shape != (1,):
        raise DataError(f"federated prior: b must hold one number, got shape {b.shape}")
    return PreferenceLearner(
        learning_rate=base.learning_rate, adaptation_rate=base.adaptation_rate,
        p=p, w_quad=w_quad, w_lin=w_lin, w_emb=base.w_emb, b=float(b[0]),
    )  # fmt: skip


def local_update(
    prior: PreferenceLearner, users: Mapping[str, Sequence[FeedbackEvent]], min_events: int = MIN_EVENTS
) -> tuple[list[np.ndarray], int]:
    """The mean of this instance's users' learners (each the prior plus their own feedback,
    replayed in order), and how many users took part. With none, the prior itself and 0."""
    learners = []
    for events in users.values():
        if len(events) < min_events:
            continue
        learner = PreferenceLearner.cold_start(None, 0, prior=prior)
        for event in events:
            learner.update(event)
        learners.append(prior_arrays(learner))
    if not learners:
        return prior_arrays(prior), 0
    return [np.mean([arrs[i] for arrs in learners], axis=0) for i in range(len(SHARED))], len(learners)


def instance_users(model: str | None = None, limit: int = 100_000) -> dict[str, list[FeedbackEvent]]:
    """Every user's recorded feedback on this instance, oldest first (from the project database)."""
    from models.personalization.storage import list_feedback

    users: dict[str, list[FeedbackEvent]] = {}
    for row in reversed(list_feedback(model=model, limit=limit)):
        if row.get("user_id"):
            users.setdefault(str(row["user_id"]), []).append(FeedbackEvent.parse(row["event"], f"feedback {row['id']}"))
    return users


try:
    from flwr.client import NumPyClient as _Base
except ImportError:  # the `federated` extra is not installed: require_flower() says so
    _Base = object


#: The style adapters of an instance's users trained on the base with this weights hash.
Adapters = Callable[[str], Sequence[Mapping[str, np.ndarray]]]


class PersonalizationClient(_Base):  # type: ignore[misc,valid-type]
    """One instance in a federation: `users()` gives its users' feedback events each round,
    `adapters(base_sha256)` their style adapters (when the server federates style)."""

    def __init__(
        self,
        users: Callable[[], Mapping[str, Sequence[FeedbackEvent]]],
        min_events: int = MIN_EVENTS,
        adapters: Adapters | None = None,
    ) -> None:
        require_flower()
        self.users = users
        self.min_events = min_events
        self.adapters = adapters
        self.rounds = 0

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return prior_arrays(PreferenceLearner())

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update

        k = len(SHARED)
        prior = learner_from_arrays(parameters[:k])
        arrays, n = local_update(prior, self.users(), self.min_events)
        shape, styled = StyleShape.from_fit_config(config), 0
        if shape is not None and len(parameters) == k + len(shape.names):
            adapters = self.adapters(shape.base_sha256) if self.adapters else []
            style, styled = style_update(shape, parameters[k:], adapters)
            arrays += style
        elif len(parameters) != k:
            raise DataError(f"federated round: {len(parameters)} arrays and no style adapter shape in the config")
        private = KEY_CLIPPING_NORM in config
        if private:
            compute_clip_model_update(arrays, [np.asarray(a, np.float64) for a in parameters],
                                      float(config[KEY_CLIPPING_NORM]))  # fmt: skip
        self.rounds += 1
        # With noise every instance weighs the same (and says nothing about its size); without,
        # FedAvg weighs instances by how many users took part, and their style adapters by how
        # many users' adapters they hold. An instance with none sends the prior back unchanged.
        if private:
            return arrays, 1, {}
        return arrays, max(1, n), {"style_users": styled} if shape is not None else {}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict]:
        return 0.0, 1, {}


def epsilon(noise_multiplier: float, rounds: int, delta: float = DEFAULT_DELTA, sampling: float = 1.0) -> float:
    """ε of `rounds` Gaussian-mechanism rounds at this noise (each client's clipped update is
    the unit), by the RDP accountant of `dp_accounting`; infinite without noise."""
    if noise_multiplier <= 0:
        return float("inf")
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(sampling, event)
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))


@dataclass
class _Keep:
    """The global prior after each round (Flower hands it to the server-side evaluation)."""

    arrays: list[np.ndarray] | None = None
    rounds: int = 0
    on_round: Callable[[int, list[np.ndarray]], None] | None = None

    def __call__(self, server_round: int, arrays: list[np.ndarray], config: dict[str, Any]) -> None:
        if server_round > 0:
            self.arrays = [np.asarray(a, np.float64).copy() for a in arrays]
            self.rounds = server_round
            if self.on_round is not None:
                self.on_round(server_round, self.arrays)
        return None


def _weighted_mean(arrays: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    total = float(sum(weights))
    return [sum(w * np.asarray(a[i], np.float64) for a, w in zip(arrays, weights, strict=True)) / total
            for i in range(len(arrays[0]))]  # fmt: skip


def _fedavg_class() -> type:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    class PersonalizationFedAvg(FedAvg):
        """FedAvg whose learner arrays are weighed by users with feedback (the clients'
        example counts) and whose style arrays by users with a style adapter (the clients'
        `style_users`; equal weights when noise is on). A round where no instance holds an
        adapter keeps the population adapter the server sent."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.sent: list[np.ndarray] = []
            self.style_users = 0

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            self.sent = parameters_to_ndarrays(parameters)  # the global model as it stands, noise included
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[Any, dict[str, Any]]:
            if not results or (failures and not self.accept_failures):
                return None, {}
            k = len(SHARED)
            decoded = [(parameters_to_ndarrays(r.parameters), r.num_examples, r.metrics) for _, r in results]
            out = _weighted_mean([a[:k] for a, _, _ in decoded], [n for _, n, _ in decoded])
            if len(self.sent) > k:
                weights = [float(m.get("style_users", n)) for _, n, m in decoded]
                styled = sum(weights) > 0
                out += _weighted_mean([a[k:] for a, _, _ in decoded], weights) if styled else self.sent[k:]
                self.style_users = max(self.style_users, int(sum(m.get("style_users", 0) for *_, m in decoded)))
            return ndarrays_to_parameters(out), {}

    return PersonalizationFedAvg


def strategy(
    initial: PreferenceLearner,
    clients: int,
    noise_multiplier: float,
    clipping_norm: float,
    keep: _Keep,
    style: tuple[StyleShape, list[np.ndarray]] | None = None,
) -> Any:
    """FedAvg (learner and, with `style`, style adapter arrays) over every connected client,
    with client-side clipping and central Gaussian noise when `noise_multiplier > 0`."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping

    arrays = prior_arrays(initial) + (list(style[1]) if style else [])
    config = style[0].to_fit_config() if style else {}
    fedavg = _fedavg_class()(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_evaluate_clients=0,
        min_available_clients=clients, initial_parameters=ndarrays_to_parameters(arrays),
        evaluate_fn=keep, on_fit_config_fn=lambda _round: dict(config),
    )  # fmt: skip
    if noise_multiplier <= 0:
        return fedavg
    return DifferentialPrivacyClientSideFixedClipping(fedavg, noise_multiplier, clipping_norm, clients)


def _style_users(strat: Any) -> int:
    inner = getattr(strat, "strategy", strat)  # the DP wrapper keeps FedAvg as `.strategy`
    return int(getattr(inner, "style_users", 0))


@dataclass
class FederatedResult:
    """What a federation produced: the prior, its privacy record, and the published version."""

    learner: PreferenceLearner
    rounds: int
    clients: int
    noise_multiplier: float
    clipping_norm: float
    delta: float
    epsilon: float
    seconds: float
    version: str | None = None
    model: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    style_shape: StyleShape | None = None
    style: list[np.ndarray] | None = None
    #: The most users' style adapters any round averaged (unknown, so 0, with noise on).
    style_users: int = 0

    def to_json(self) -> dict[str, Any]:
        style = None
        if self.style_shape is not None:
            style = {"base_model": self.style_shape.base_model, "tensors": len(self.style_shape.names),
                     "users": self.style_users if not self.noise_multiplier else None}  # fmt: skip
        return {
            "model": self.model, "version": self.version, "rounds": self.rounds, "clients": self.clients,
            "noise_multiplier": self.noise_multiplier, "clipping_norm": self.clipping_norm, "delta": self.delta,
            "epsilon": None if self.epsilon == float("inf") else round(self.epsilon, 3),
            "seconds": round(self.seconds, 1), "profile": self.learner.profile(), "style_adapter": style,
        }  # fmt: skip


def _check(rounds: int, clients: int, noise_multiplier: float, clipping_norm: float, delta: float) -> None:
    if rounds < 1 or clients < 1:
        raise TrainingError(f"rounds and clients must be at least 1 (got {rounds} and {clients})")
    if noise_multiplier < 0 or clipping_norm <= 0:
        raise TrainingError("noise multiplier must be >= 0 and the clipping norm > 0")
    if not 0 < delta < 1:
        raise TrainingError(f"delta must be between 0 and 1, got {delta}")


def serve(
    address: str = "0.0.0.0:8080",
    *,
    rounds: int = 5,
    clients: int = 2,
    noise_multiplier: float = DEFAULT_NOISE,
    clipping_norm: float = DEFAULT_CLIP,
    delta: float = DEFAULT_DELTA,
    model: str = "user_prefs",
    publish: bool = True,
    user: str | None = None,
    certificates: tuple[bytes, bytes, bytes] | None = None,
    round_timeout: float | None = 600.0,
    style: bool = False,
    style_base: str | None = None,
) -> FederatedResult:
    """Run the Flower server until `rounds` rounds with `clients` instances are done, and
    publish the prior as a new version of personalization model `model` (see the module doc).
    With `style`, the users' style adapters on `style_base` (default: the model's, else the
    embedded base) are federated too."""
    from models.training.federated_publish import publish_federated, read_target

    _check(rounds, clients, noise_multiplier, clipping_norm, delta)
    require_flower()
    if publish:
        vc, name, initial, prefs, meta, folder = read_target(model, user)
    else:
        vc, name, initial, prefs, meta, folder = None, model, PreferenceLearner(), None, {}, None
    styled = None
    if style:
        from models.training.personalization import DEFAULT_STYLE_BASE

        styled = initial_style(style_base or str(meta.get("style_base") or DEFAULT_STYLE_BASE), folder)
    keep = _Keep()
    strat = strategy(initial, clients, noise_multiplier, clipping_norm, keep, styled)
    t0 = time.time()
    with flower_log():
        run_server(address, rounds, strat, round_timeout, certificates)
    if keep.arrays is None:
        raise TrainingError(f"the federation at {address} finished no round (did {clients} clients join?)")
    result = _result(keep, initial, clients, noise_multiplier, clipping_norm, delta, t0, styled, strat)
    result.model = f"personalization/{name}"
    if publish:
        result.version = publish_federated(vc, name, result, prefs, meta, folder)
    return result


def _result(
    keep: _Keep,
    initial: PreferenceLearner,
    clients: int,
    noise_multiplier: float,
    clipping_norm: float,
    delta: float,
    t0: float,
    styled: tuple[StyleShape, list[np.ndarray]] | None,
    strat: Any,
) -> FederatedResult:
    assert keep.arrays is not None
    k = len(SHARED)
    return FederatedResult(
        learner_from_arrays(keep.arrays[:k], initial), keep.rounds, clients, noise_multiplier, clipping_norm, delta,
        epsilon(noise_multiplier, keep.rounds, delta), time.time() - t0,
        style_shape=styled[0] if styled else None, style=keep.arrays[k:] if styled else None,
        style_users=_style_users(strat),
    )  # fmt: skip


def join(
    address: str,
    *,
    model: str | None = None,
    min_events: int = MIN_EVENTS,
    root_certificates: bytes | None = None,
    users: Callable[[], Mapping[str, Sequence[FeedbackEvent]]] | None = None,
    adapters: Adapters | None = local_style_adapters,
) -> int:
    """Take part in the federation at `address` with this instance's users' feedback (for
    responses of `model`, or all) and, when the server asks, their style adapters (`adapters`;
    by default every user's personalization adapter in the store); returns the rounds taken
    part in."""
    require_flower()
    from flwr.compat.client.app import start_client

    client = PersonalizationClient(users or (lambda: instance_users(model)), min_events, adapters)
    with flower_log():
        start_client(server_address=address, client=client.to_client(), insecure=root_certificates is None,
                     root_certificates=root_certificates, max_retries=30, max_wait_time=120.0)  # fmt: skip
    return client.rounds


def simulate(
    clients: Sequence[PersonalizationClient],
    *,
    rounds: int = 5,
    noise_multiplier: float = 0.0,
    clipping_norm: float = DEFAULT_CLIP,
    delta: float = DEFAULT_DELTA,
    initial: PreferenceLearner | None = None,
    wrap: Callable[[Any], Any] | None = None,
    log_level: int = logging.WARNING,
    style: tuple[StyleShape, list[np.ndarray]] | None = None,
) -> FederatedResult:
    """A federation on loopback: a Flower server here and each client in its own thread, over
    gRPC as in real use, taking turns at their array work (`flower.taking_turns`). `wrap` may
    wrap each client's `Client` (tests record what it sends)."""
    import socket

    from flwr.compat.client.app import start_client

    _check(rounds, len(clients), noise_multiplier, clipping_norm, delta)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    initial = initial or PreferenceLearner()
    keep = _Keep()
    errors: list[BaseException] = []

    strat = strategy(initial, len(clients), noise_multiplier, clipping_norm, keep, style)
    flower = [wrap(c.to_client()) if wrap else c.to_client() for c in clients]
    served, flower = taking_turns(strat, flower)

    def run_client(client: Any) -> None:
        try:
            wait_for_port(address)
            start_client(server_address=address, client=client, insecure=True, max_retries=100, max_wait_time=60.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_client, args=(c,), daemon=True) for c in flower]
    for t in threads:
        t.start()
    t0 = time.time()
    # The server runs here: Flower installs signal handlers, which only the main thread may.
    with flower_log(log_level):
        run_server(address, rounds, served, 60.0)
        for t in threads:
            t.join(timeout=30)
    if errors:
        raise TrainingError(f"a simulated client failed: {errors[0]}") from errors[0]
    if keep.arrays is None:
        raise TrainingError("the simulated federation finished no round")
    return _result(keep, initial, len(clients), noise_multiplier, clipping_norm, delta, t0, style, strat)
