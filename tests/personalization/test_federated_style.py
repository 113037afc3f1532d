"""Federated style adapters (issue 23): the users' LoRA style adapters where instances have them
are averaged over Flower into a population adapter (weighed by users, A and B separately),
published with the population prior, and a new user's style adapter starts from it."""

from __future__ import annotations

import copy
import json
import random
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.training import ModelTrainer
from models.training.federated import SHARED, PersonalizationClient, join, serve, simulate
from models.training.federated_style import initial_style, local_style_adapters, style_update
from models.training.flower import wait_for_port

pytest.importorskip("flwr")

#: The shared style: a lighthouse keeper's log in short, plain sentences.
SENTENCES = [
    "The lamp was lit at dusk and the keeper wrote the hour in the log.",
    "A gull sat on the rail and watched the grey water.",
    "She trimmed the wick and wiped the glass until it shone.",
    "The fog came in low and the horn sounded every minute.",
    "No ship passed that night, and the sea was calm by morning.",
    "He climbed the stairs with the oil can and counted the steps.",
    "The wind turned to the north and rattled the shutters.",
    "At dawn the keeper put out the lamp and slept until noon.",
]


def _writer(tmp_path: Path, name: str, seed: int, words: int = 400) -> Path:
    """A user folder with a few ratings and enough writing in the shared style for an adapter."""
    rng = random.Random(seed)
    folder = tmp_path / name
    (folder / "writing").mkdir(parents=True)
    rated = [("Shorter.", "accepted", 5), ("Add a page of weather.", "rejected", 1)] * 3
    rows = [{"id": f"{name}-{i}", "suggestion": s, "response": r, "rating": k} for i, (s, r, k) in enumerate(rated)]
    (folder / "feedback.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text, count = [], 0
    while count < words:
        sentence = rng.choice(SENTENCES)
        text.append(sentence)
        count += len(sentence.split())
    (folder / "writing" / "log.md").write_text(" ".join(text) + "\n")
    return folder


def _train(tmp_path: Path, name: str, seed: int, base: Path) -> Any:
    return ModelTrainer(progress=False).train_personalization_model(
        name, _writer(tmp_path, name, seed), epochs=3, style_min_words=300, style_base=str(base), style_epochs=2,
    )  # fmt: skip


@pytest.fixture
def writers(tmp_path: Path, tiny_model_dir: Path, companion_home: Path) -> dict[str, dict[str, np.ndarray]]:
    """Three users of this instance with a style adapter each, by name."""
    for seed, name in enumerate(("ann", "bob", "cat")):
        _train(tmp_path, name, seed, tiny_model_dir)
    shape, _ = initial_style(str(tiny_model_dir))
    found = local_style_adapters(shape.base_sha256)
    assert len(found) == 3
    from safetensors.numpy import load_file

    store = companion_home / "store" / "personalization"
    weights = "adapter/adapter_model.safetensors"
    return {n: load_file(next((store / n).iterdir()) / weights) for n in ("ann", "bob", "cat")}


def _sent(client: Any, sent: list[Any]) -> Any:
    from flwr.client import Client

    class _Recording(Client):
        def get_parameters(self, ins: Any) -> Any:
            return client.get_parameters(ins)

        def fit(self, ins: Any) -> Any:
            result = client.fit(ins)
            sent.append(copy.deepcopy(result))
            return result

        def evaluate(self, ins: Any) -> Any:
            return client.evaluate(ins)

    return _Recording()


def test_instances_average_their_users_adapters_weighed_by_users(writers: dict, tiny_model_dir: Path) -> None:
    from flwr.common import parameters_to_ndarrays

    shape, start = initial_style(str(tiny_model_dir))
    assert shape.names == sorted(writers["ann"]) and any("lora_A" in n for n in shape.names)
    # A fresh population adapter starts where a user's does: the same A, and B zero.
    assert all(not np.any(a) for n, a in zip(shape.names, start, strict=True) if "lora_B" in n)
    # Instance one holds ann's and bob's adapters, instance two cat's, instance three none.
    held = [[writers["ann"], writers["bob"]], [writers["cat"]], []]
    clients = [PersonalizationClient(lambda: {}, adapters=lambda _sha, h=h: h) for h in held]
    sent: list[Any] = []
    lock = threading.Lock()

    def wrap(c: Any) -> Any:
        with lock:
            return _sent(c, sent)

    result = simulate(clients, rounds=2, style=(shape, start), wrap=wrap)
    expected = [np.mean([writers[u][n] for u in ("ann", "bob", "cat")], axis=0) for n in shape.names]
    assert result.style is not None and result.style_users == 3
    for got, want in zip(result.style, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # What left each instance: the learner arrays, its users' mean adapter, how many users.
    counts = sorted(m.metrics["style_users"] for m in sent)
    assert counts == [0, 0, 1, 1, 2, 2]
    for m in sent:
        arrays = parameters_to_ndarrays(m.parameters)
        assert len(arrays) == len(SHARED) + len(shape.names) and set(m.metrics) == {"style_users"}


def test_with_noise_each_instance_update_is_clipped_as_one_vector(writers: dict, tiny_model_dir: Path) -> None:
    from flwr.common import parameters_to_ndarrays

    shape, start = initial_style(str(tiny_model_dir))
    sent: list[Any] = []
    clients = [PersonalizationClient(lambda: {}, adapters=lambda _sha, w=w: [w]) for w in writers.values()]
    result = simulate(clients, rounds=1, noise_multiplier=1.0, clipping_norm=0.5, style=(shape, start),
                      wrap=lambda c: _sent(c, sent))  # fmt: skip
    assert result.style is not None and np.isfinite(result.epsilon)
    from models.personalization.learner import PreferenceLearner
    from models.training.federated import prior_arrays

    sent_start = prior_arrays(PreferenceLearner()) + start
    for m in sent:
        arrays = parameters_to_ndarrays(m.parameters)
        norm = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(arrays, sent_start, strict=True)))
        assert norm <= 0.5 + 1e-6 and m.num_examples == 1 and m.metrics == {}


def test_an_adapter_of_another_shape_is_left_out(writers: dict, tiny_model_dir: Path) -> None:
    shape, start = initial_style(str(tiny_model_dir))
    odd = {n: a[:1] for n, a in writers["ann"].items()}
    mean, n = style_update(shape, start, [odd, writers["bob"]])
    assert n == 1 and all(np.allclose(m, writers["bob"][k]) for m, k in zip(mean, shape.names, strict=True))
    same, none = style_update(shape, start, [odd])
    assert none == 0 and all(np.array_equal(a, b) for a, b in zip(same, start, strict=True))


def test_serve_publishes_the_population_adapter_and_a_new_user_starts_from_it(
    writers: dict, tmp_path: Path, tiny_model_dir: Path, companion_home: Path
) -> None:
    from models.lifecycle.version_control import ModelVersionControl
    from models.model_manager import resolve_path
    from models.transformer_model import TransformerModel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    rounds: list[int] = []

    def member() -> None:
        wait_for_port(address)
        rounds.append(join(address, users=lambda: {}))  # the adapters come from this instance's store

    thread = threading.Thread(target=member, daemon=True)
    thread.start()
    result = serve(address, rounds=1, clients=1, noise_multiplier=0.0, style=True, style_base=str(tiny_model_dir))
    thread.join(timeout=30)
    assert rounds == [1] and result.version and result.style_users == 3
    info = ModelVersionControl().show("personalization/user_prefs", result.version)
    assert info.lineage["style_adapter"]["users"] == 3 and "style adapter (LoRA A and B)" in info.lineage["shared"]
    folder = companion_home / "store" / "personalization" / "user_prefs" / result.version
    meta = json.loads((folder / "companion.json").read_text())
    assert meta["adapter"]["base_sha256"] == initial_style(str(tiny_model_dir))[0].base_sha256
    # The population adapter loads like any adapter...
    styled = TransformerModel(str(tiny_model_dir), ref=resolve_path(str(tiny_model_dir)), adapter=folder / "adapter")
    assert styled.engine.info()["adapter"]["modules"] == 2 * 7
    # ...is not taken for a user's own adapter in the next federation...
    assert len(local_style_adapters(meta["adapter"]["base_sha256"])) == 3
    # ...and a new user's style adapter starts from it, already closer to the shared style.
    new = _train(tmp_path, "dan", 9, tiny_model_dir)
    assert new.lineage["style_adapter"]["started_from"] == f"personalization/user_prefs@{result.version}"
    assert new.metrics["style_heldout_perplexity_start"] < new.metrics["style_heldout_perplexity_base"]


def test_the_cli_federates_style_when_asked(writers: dict, tiny_model_dir: Path) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    cmd = [str(Path(sys.executable).with_name("companion")), "federate", "serve", "--address", address,
           "--clients", "1", "--rounds", "1", "--noise", "0", "--json",
           "--style", "--style-base", str(tiny_model_dir)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        wait_for_port(address)
        assert join(address, users=lambda: {}) == 1
        out, errs = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, errs
    info = json.loads(out)
    assert info["style_adapter"]["users"] == 3 and info["style_adapter"]["tensors"] == len(writers["ann"])
