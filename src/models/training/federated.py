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
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError, TrainingError
from models.personalization.events import FeedbackEvent
from models.personalization.learner import PreferenceLearner

__all__ = [
    "SHARED",
    "FederatedResult",
    "PersonalizationClient",
    "epsilon",
    "flower_version",
    "instance_users",
    "join",
    "learner_from_arrays",
    "local_update",
    "prior_arrays",
    "require_flower",
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


class _FlowerLog(logging.Filter):
    """Drops Flower's notices that its `start_server`/`start_client` are deprecated (we use
    them on purpose: one address, no app bundle), and below `level` what a quiet run hides."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return False
        text = record.getMessage()
        return "deprecated" not in text and "flower-super" not in text


@contextlib.contextmanager
def flower_log(level: int = logging.INFO) -> Iterator[None]:
    """Flower's log, without its deprecation notices (and below `level`) while inside."""
    logger = logging.getLogger("flwr")
    f = _FlowerLog(level)
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


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


def flower_version() -> str | None:
    """Flower's version, or None without the `federated` extra (Flower and dp-accounting)."""
    from models.fileio import optional_version

    if optional_version("dp-accounting", "dp_accounting") is None:
        return None
    return optional_version("flwr", "flwr")


def require_flower() -> None:
    if flower_version() is None:
        raise TrainingError(
            "federated learning needs Flower and dp-accounting: pip install 'companion-models[federated]'"
        )


try:
    from flwr.client import NumPyClient as _Base
except ImportError:  # the `federated` extra is not installed: require_flower() says so
    _Base = object


class PersonalizationClient(_Base):  # type: ignore[misc,valid-type]
    """One instance in a federation: `users()` gives its users' feedback events each round."""

    def __init__(
        self, users: Callable[[], Mapping[str, Sequence[FeedbackEvent]]], min_events: int = MIN_EVENTS
    ) -> None:
        require_flower()
        self.users = users
        self.min_events = min_events
        self.rounds = 0

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return prior_arrays(PreferenceLearner())

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update

        prior = learner_from_arrays(parameters)
        arrays, n = local_update(prior, self.users(), self.min_events)
        private = KEY_CLIPPING_NORM in config
        if private:
            compute_clip_model_update(arrays, [np.asarray(a, np.float64) for a in parameters],
                                      float(config[KEY_CLIPPING_NORM]))  # fmt: skip
        self.rounds += 1
        # With noise every instance weighs the same (and says nothing about its size); without,
        # FedAvg weighs instances by how many users took part. An instance with no users yet
        # sends the prior back unchanged.
        return arrays, 1 if private else max(1, n), {}

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


def strategy(
    initial: PreferenceLearner, clients: int, noise_multiplier: float, clipping_norm: float, keep: _Keep
) -> Any:
    """Flower's FedAvg over every connected client, with client-side clipping and central
    Gaussian noise when `noise_multiplier > 0`."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

    fedavg = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_evaluate_clients=0,
        min_available_clients=clients, initial_parameters=ndarrays_to_parameters(prior_arrays(initial)),
        evaluate_fn=keep, fit_metrics_aggregation_fn=lambda _results: {},
    )  # fmt: skip
    if noise_multiplier <= 0:
        return fedavg
    return DifferentialPrivacyClientSideFixedClipping(fedavg, noise_multiplier, clipping_norm, clients)


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

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "rounds": self.rounds, "clients": self.clients,
            "noise_multiplier": self.noise_multiplier, "clipping_norm": self.clipping_norm, "delta": self.delta,
            "epsilon": None if self.epsilon == float("inf") else round(self.epsilon, 3),
            "seconds": round(self.seconds, 1), "profile": self.learner.profile(),
        }  # fmt: skip


def _check(rounds: int, clients: int, noise_multiplier: float, clipping_norm: float, delta: float) -> None:
    if rounds < 1 or clients < 1:
        raise TrainingError(f"rounds and clients must be at least 1 (got {rounds} and {clients})")
    if noise_multiplier < 0 or clipping_norm <= 0:
        raise TrainingError("noise multiplier must be >= 0 and the clipping norm > 0")
    if not 0 < delta < 1:
        raise TrainingError(f"delta must be between 0 and 1, got {delta}")


def _run_server(address: str, rounds: int, strat: Any, timeout: float | None, certificates: Any = None) -> None:
    from flwr.compat.server.app import start_server
    from flwr.server import ServerConfig

    start_server(server_address=address, config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
                 strategy=strat, certificates=certificates)  # fmt: skip


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
) -> FederatedResult:
    """Run the Flower server until `rounds` rounds with `clients` instances are done, and
    publish the prior as a new version of personalization model `model` (see the module doc)."""
    _check(rounds, clients, noise_multiplier, clipping_norm, delta)
    require_flower()
    vc, name, initial, prefs, meta = _target(model, user) if publish else (None, model, PreferenceLearner(), None, {})
    keep = _Keep()
    t0 = time.time()
    with flower_log():
        _run_server(address, rounds, strategy(initial, clients, noise_multiplier, clipping_norm, keep),
                    round_timeout, certificates)  # fmt: skip
    if keep.arrays is None:
        raise TrainingError(f"the federation at {address} finished no round (did {clients} clients join?)")
    result = FederatedResult(
        learner_from_arrays(keep.arrays, initial), keep.rounds, clients, noise_multiplier, clipping_norm, delta,
        epsilon(noise_multiplier, keep.rounds, delta), time.time() - t0, model=f"personalization/{name}",
    )  # fmt: skip
    if publish:
        result.version = _publish(vc, name, result, prefs, meta)
    return result


def _target(model: str, user: str | None) -> tuple[Any, str, PreferenceLearner, Any, dict[str, Any]]:
    from models.model_manager import ModelManager
    from models.personalization.model import read_personalization_folder
    from models.training.publish import resolve_target

    vc, name = resolve_target(model, "personalization", user, "federate")
    served = ModelManager().resolve("personalization", name)
    if served.folder is None:
        raise TrainingError(f"personalization/{name} has no folder to read its prior from")
    prefs, prior, meta = read_personalization_folder(served.folder)
    return vc, name, prior, prefs, meta


def _publish(vc: Any, name: str, result: FederatedResult, prefs: Any, meta: dict[str, Any]) -> str:
    from models.personalization.model import write_personalization_folder
    from models.training.publish import publish_version, run_folder

    info = result.to_json()
    lineage = {
        "recipe": "federated",
        "framework": "flwr",
        "strategy": "FedAvg" + (" + client-side clipping, central Gaussian noise" if result.noise_multiplier else ""),
        "rounds": result.rounds, "clients": result.clients, "shared": list(SHARED),
        "differential_privacy": {k: info[k] for k in ("noise_multiplier", "clipping_norm", "delta", "epsilon")},
        "previous": meta.get("version"),
        "data_subjects": [],
    }  # fmt: skip
    metrics = {"epsilon": info["epsilon"], "rounds": result.rounds, "clients": result.clients}
    extra = {k: meta[k] for k in ("description",) if k in meta}

    def write(stage: Path) -> None:
        write_personalization_folder(stage, prefs, result.learner, extra, manifest=False)

    run_dir = run_folder(None, f"federated-{name}", resume=False)
    why = f"federated prior: {result.rounds} rounds over {result.clients} instances, ε={info['epsilon']}"
    return publish_version(vc, f"personalization/{name}", run_dir, write, why, lineage, metrics)


def join(
    address: str,
    *,
    model: str | None = None,
    min_events: int = MIN_EVENTS,
    root_certificates: bytes | None = None,
    users: Callable[[], Mapping[str, Sequence[FeedbackEvent]]] | None = None,
) -> int:
    """Take part in the federation at `address` with this instance's users' feedback (for
    responses of `model`, or all); returns the rounds taken part in."""
    require_flower()
    from flwr.compat.client.app import start_client

    client = PersonalizationClient(users or (lambda: instance_users(model)), min_events)
    with flower_log():
        start_client(server_address=address, client=client.to_client(), insecure=root_certificates is None,
                     root_certificates=root_certificates, max_retries=30, max_wait_time=120.0)  # fmt: skip
    return client.rounds


def _wait_for_port(address: str, timeout: float = 60.0) -> None:
    """Until the server at `address` accepts connections (Flower's clients give up on a refused one)."""
    import socket

    host, port = address.rsplit(":", 1)
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.05)
    raise TrainingError(f"the Flower server at {address} did not start")


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
) -> FederatedResult:
    """A federation on loopback: a Flower server here and each client in its own thread, over
    gRPC as in real use. `wrap` may wrap each client's `Client` (tests record what it sends)."""
    import socket

    from flwr.compat.client.app import start_client

    _check(rounds, len(clients), noise_multiplier, clipping_norm, delta)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    initial = initial or PreferenceLearner()
    keep = _Keep()
    errors: list[BaseException] = []

    def run_client(c: PersonalizationClient) -> None:
        try:
            _wait_for_port(address)
            client = c.to_client()
            start_client(server_address=address, client=wrap(client) if wrap else client, insecure=True,
                         max_retries=100, max_wait_time=60.0)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_client, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    t0 = time.time()
    # The server runs here: Flower installs signal handlers, which only the main thread may.
    with flower_log(log_level):
        _run_server(address, rounds, strategy(initial, len(clients), noise_multiplier, clipping_norm, keep), 60.0)
        for t in threads:
            t.join(timeout=30)
    if errors:
        raise TrainingError(f"a simulated client failed: {errors[0]}") from errors[0]
    if keep.arrays is None:
        raise TrainingError("the simulated federation finished no round")
    return FederatedResult(
        learner_from_arrays(keep.arrays, initial), keep.rounds, len(clients), noise_multiplier, clipping_norm, delta,
        epsilon(noise_multiplier, keep.rounds, delta), time.time() - t0,
    )  # fmt: skip
