"""The batching scheduler in a process of its own (`engine_process`, `serve --engine-process`):
it decodes what the in-process scheduler decodes (greedy, seeded, with logits guides), only
JSON crosses, a request's own error is that request's, a cancelled request is dropped,
the queue is bounded, and a stopped process fails its requests with a clear error."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from models.engines.base import SamplingParams
from models.engines.guides import GuideChain, NearBias, NearBoost, Tables, guide_from_spec, guide_spec
from models.engines.llama.engine import FastEngine
from models.engines.llama.engine_process import EngineProcess, params_from_data, params_to_data
from models.engines.llama.scheduler import Scheduler
from models.errors import EngineError, GenerationInputError, QueueFullError

PROMPTS = ["The lighthouse keeper", "Once upon a time there was a dragon who lived by the sea", "Tea"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> FastEngine:
    return FastEngine(tiny_model_dir, threads=1)


@pytest.fixture(scope="module")
def remote(engine: FastEngine) -> EngineProcess:
    process = EngineProcess(engine, max_rows=4, max_waiting=2)
    yield process
    process.close()


def _guide(vocab: int) -> GuideChain:
    g = torch.Generator().manual_seed(0)
    bias = torch.randn(vocab, generator=g).clamp(-3, 3)
    return GuideChain([NearBias(bias, 4.0, torch.tensor([0, 3]), key="t"), NearBoost(range(40, 90), 2.0, 3.0)])


def _ids(engine: FastEngine, prompt: str) -> list[int]:
    return engine.codec.encode(prompt, add_bos=True)


def test_guides_and_sampling_params_cross_as_json_and_adjust_to_the_same_numbers(engine: FastEngine) -> None:
    vocab = engine.spec.vocab_size
    guide = _guide(vocab)
    again = guide_from_spec(guide_spec(guide))
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(1)) * 4
    done = [[], [41, 42], [50]]
    want = GuideChain.adjust_rows([guide] * 3, logits, done)
    assert torch.equal(GuideChain.adjust_rows([again] * 3, logits, done), want)
    params = SamplingParams(max_new_tokens=9, temperature=0.7, seed=5, stop=("\n",), logit_bias={7: -100.0},
                            guide=guide, asked=frozenset({"top_k"}),
                            response_format={"type": "json_object"})  # fmt: skip
    data = json.loads(json.dumps(params_to_data(params)))  # what crosses is JSON, nothing else
    back = params_from_data(data)
    assert back.but(guide=None) == params.but(guide=None) and back.logit_bias == {7: -100.0}
    assert torch.equal(GuideChain.adjust_rows([back.guide] * 3, logits, done), want)
    with pytest.raises(EngineError, match="cannot run in an engine process"):
        params_to_data(params.but(guide=object()))


def test_it_decodes_what_the_in_process_scheduler_decodes(engine: FastEngine, remote: EngineProcess) -> None:
    guide = _guide(engine.spec.vocab_size)
    cases = [SamplingParams(max_new_tokens=12, temperature=0.0),
             SamplingParams(max_new_tokens=12, temperature=0.9, seed=3),
             SamplingParams(max_new_tokens=12, temperature=0.8, seed=4, guide=guide)]  # fmt: skip
    local = Scheduler(engine, max_rows=4)
    try:
        for prompt in PROMPTS:
            for params in cases:
                want = "".join(local.submit(_ids(engine, prompt), params, user="a"))
                ticket = remote.submit(_ids(engine, prompt), params, user="a")
                assert "".join(ticket) == want
                assert ticket.stats.completion_tokens > 0 and ticket.stats.extra.get("batched") is True
    finally:
        local.close()


def test_concurrent_requests_share_its_batch(engine: FastEngine, remote: EngineProcess) -> None:
    out: dict[int, str] = {}

    def one(i: int) -> None:
        greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
        out[i] = "".join(remote.submit(_ids(engine, PROMPTS[i % 3]), greedy))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(out) == list(range(6)) and out[0] == out[3] and out[1] == out[4]


def test_a_bias_crosses_once_then_by_number_and_both_sides_drop_the_same_tables(engine: FastEngine) -> None:
    vocab = engine.spec.vocab_size
    guide = _guide(vocab)
    sender, receiver = Tables(limit=2), Tables()

    def cross(g: GuideChain) -> tuple[str, GuideChain]:
        wire = json.dumps(guide_spec(g, sender))
        back = guide_from_spec(json.loads(wire), receiver)
        receiver.forget(sender.dropped())
        return wire, back

    first, back = cross(guide)
    again, back2 = cross(guide)
    assert '"values"' in first and '"values"' not in again  # the floats went the first time only
    assert torch.equal(back2.guides[0].bias, guide.guides[0].bias)
    others = [GuideChain([NearBias(torch.full((vocab,), float(i)), 4.0, torch.tensor([0]), key="t")]) for i in range(3)]
    for other in others:  # past the limit: the oldest table is dropped on both sides
        cross(other)
    assert set(receiver._held) == {n for _t, n in sender._sent.values()}
    wire, back = cross(guide)  # dropped, so sent again whole
    assert '"values"' in wire and torch.equal(back.guides[0].bias, guide.guides[0].bias)
    with pytest.raises(EngineError, match="never sent"):
        guide_from_spec(json.loads(json.dumps(guide_spec(guide, sender))), Tables())


def test_a_guide_that_cannot_cross_fails_in_the_caller_and_the_next_request_is_served(
    engine: FastEngine, remote: EngineProcess
) -> None:
    guide = _guide(engine.spec.vocab_size)
    params = SamplingParams(max_new_tokens=6, temperature=0.0, guide=guide)
    want = "".join(remote.submit(_ids(engine, "Tea"), params))
    with pytest.raises(EngineError, match="cannot run in an engine process"):
        remote.submit(_ids(engine, "Tea"), params.but(guide=GuideChain([guide.guides[0], object()])))
    assert "".join(remote.submit(_ids(engine, "Tea"), params)) == want  # its table was sent again


def test_a_requests_own_error_is_that_requests(engine: FastEngine, remote: EngineProcess) -> None:
    bad = remote.submit(_ids(engine, "Tea"), SamplingParams(max_new_tokens=4, logit_bias={10**7: 1.0}))
    with pytest.raises(GenerationInputError, match="outside the vocabulary"):
        "".join(bad)
    assert "".join(remote.submit(_ids(engine, "Tea"), SamplingParams(max_new_tokens=4, temperature=0.0)))


def test_a_cancelled_request_ends_and_the_queue_is_bounded(engine: FastEngine, remote: EngineProcess) -> None:
    never_ends = {t: -100.0 for t in engine.codec.stop_ids}  # each row runs to the context's end
    long = SamplingParams(max_new_tokens=400, temperature=0.9, seed=1, logit_bias=never_ends)
    full = remote.submit(_ids(engine, "Tea"), long)
    "".join(full)
    tickets = [remote.submit(_ids(engine, "Tea"), long, user=f"u{i}") for i in range(remote.max_pending)]
    with pytest.raises(QueueFullError):
        remote.submit(_ids(engine, "Tea"), long)
    for t in tickets:
        t.cancel()
    for t in tickets:
        "".join(t)  # each ends, cut short
    assert full.stats.completion_tokens == engine.spec.max_positions - len(_ids(engine, "Tea"))
    assert all(t.stats.completion_tokens < full.stats.completion_tokens for t in tickets)
    assert "".join(remote.submit(_ids(engine, "Tea"), SamplingParams(max_new_tokens=3, temperature=0.0)))


def test_a_stopped_engine_process_fails_its_requests_clearly(engine: FastEngine) -> None:
    process = EngineProcess(engine, max_rows=2)
    ticket = process.submit(_ids(engine, "Tea"), SamplingParams(max_new_tokens=400, temperature=0.9, seed=2))
    process.process.kill()
    with pytest.raises(EngineError, match="engine process stopped"):
        "".join(ticket)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            process.submit(_ids(engine, "Tea"), SamplingParams(max_new_tokens=3))
        except EngineError as exc:
            assert "stopped" in str(exc)
            break
        time.sleep(0.05)
    else:
        pytest.fail("submit kept accepting requests after the engine process stopped")
    process.close()


def test_the_engine_uses_it_for_streams(tiny_model_dir: Path) -> None:
    engine = FastEngine(tiny_model_dir, threads=1)
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    alone = "".join(engine.stream("The lighthouse", params))
    assert isinstance(engine.enable_batching(max_rows=2, process=True), EngineProcess)
    try:
        assert "".join(engine.stream("The lighthouse", params)) == alone
        assert engine.last_stats.completion_tokens == 6 and engine.last_stats.time_to_first_token_s is not None
    finally:
        engine.close()
    assert engine.scheduler is None
