"""Continuous batching on the fast engine (issue 21): every step runs all live requests; greedy
tokens match decoding alone; seeded rows reproduce; fair admission; a bounded queue; cancel."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from models.engines.base import SamplingParams
from models.engines.llama.engine import FastEngine
from models.engines.llama.numpy_row import NumpyRowStep
from models.engines.llama.scheduler import QueueFullError, Scheduler, requested_by

PROMPTS = [
    "The lighthouse keeper",
    "Once upon a time there was a dragon who lived by the sea and counted ships",
    "Tea",
    "In the morning the harbour was quiet, and the gulls",
]


@pytest.fixture
def engine(tiny_model_dir: Path) -> FastEngine:
    return FastEngine(tiny_model_dir, threads=1)


@contextlib.contextmanager
def _scheduler(engine: FastEngine, **settings: Any) -> Iterator[Scheduler]:
    sched = Scheduler(engine, **settings)
    try:
        yield sched
    finally:
        sched.close()


def _alone(engine: FastEngine, prompt: str, params: SamplingParams) -> str:
    return "".join(engine.stream(prompt, params))


def _batched(engine: FastEngine, prompts: list[str], params: list[SamplingParams]) -> list[str]:
    ids = [engine.codec.encode(p, add_bos=True) for p in prompts]
    tickets = [
        engine.scheduler.submit(i, p, suppress=engine.codec.chat_control_ids) for i, p in zip(ids, params, strict=True)
    ]
    return ["".join(t) for t in tickets]


def test_greedy_tokens_are_the_same_batched_and_alone(engine: FastEngine) -> None:
    # Rows end in a different order than they started (the last one first, then one in the
    # middle): each finished row's slot is taken by the last live row's cache.
    lengths = (20, 7, 33, 12, 16, 2)
    prompts = PROMPTS + PROMPTS[:2]
    params = [SamplingParams(max_new_tokens=n, temperature=0.0) for n in lengths]
    alone = [_alone(engine, p, q) for p, q in zip(prompts, params, strict=True)]
    engine.enable_batching(max_rows=8)
    try:
        assert _batched(engine, prompts, params) == alone
        assert engine.scheduler.steps < sum(q.max_new_tokens for q in params)  # rows shared steps
        if NumpyRowStep.fits(engine.weights):  # the longest row's last 13 tokens, alone, in NumPy
            assert engine.scheduler.alone_steps >= 13
    finally:
        engine.close()


def test_sampled_rows_reproduce_for_a_seed_and_streams_use_the_scheduler(engine: FastEngine) -> None:
    engine.enable_batching()
    try:
        params = [SamplingParams(max_new_tokens=16, temperature=0.9, seed=s) for s in (1, 2, 1, 2)]
        first = _batched(engine, PROMPTS[:1] * 4, params)
        assert first == _batched(engine, PROMPTS[:1] * 4, params)
        assert first[0] == first[2] and first[1] == first[3]
        text = "".join(engine.stream(PROMPTS[0], SamplingParams(max_new_tokens=5, temperature=0.0)))
        assert engine.last_stats.extra.get("batched") is True and engine.last_stats.completion_tokens == 5
        assert isinstance(text, str)
    finally:
        engine.close()


def test_a_shared_prompt_start_is_computed_once(engine: FastEngine) -> None:
    card = "You are Luna, a warm and literary companion who helps writers. " * 3
    engine.enable_batching(prefix_cache_mb=4)
    try:
        params = SamplingParams(max_new_tokens=6, temperature=0.0)
        with_cache = _batched(engine, [card + "Hello!"], [params]) + _batched(engine, [card + "Goodbye!"], [params])
        assert engine.scheduler.prefix_hits == 1
    finally:
        engine.close()
    assert with_cache == [_alone(engine, card + "Hello!", params), _alone(engine, card + "Goodbye!", params)]


def test_the_prefix_cache_keeps_recent_prompts_within_its_byte_budget(engine: FastEngine) -> None:
    params = SamplingParams(max_new_tokens=2, temperature=0.0)
    prompts = [f"{name} walked along the harbour wall at dawn and counted the boats" for name in ("Ann", "Bob", "Cy")]
    with _scheduler(engine) as sched:
        "".join(sched.submit(engine.codec.encode(prompts[0], add_bos=True), params))
        one = sched.prefixes.held
    assert one > 0
    with _scheduler(engine, prefix_cache_mb=2.5 * one / 2**20) as sched:
        for p in prompts:
            "".join(sched.submit(engine.codec.encode(p, add_bos=True), params))
        kept = sched.prefixes.keys()
        assert sched.prefixes.held <= sched.prefixes.max_bytes and len(kept) == 2
        # the oldest went first; a prompt is kept but for its last token, which a batch step computes
        assert kept[-1] == tuple(engine.codec.encode(prompts[-1], add_bos=True))[:-1]


def test_prompts_the_prefix_cache_holds_join_the_batch_together(engine: FastEngine) -> None:
    """Eight requests whose prompt the prefix cache holds take the steps one takes: they all join
    before the first step, not `admit_ahead` (2) a step."""
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    ids = engine.codec.encode(PROMPTS[1], add_bos=True)
    with _scheduler(engine, max_rows=16) as sched:
        alone = "".join(sched.submit(ids, params, user="warm"))  # its K/V now in the prefix cache
        one = sched.steps
        with sched._cond:  # the loop admits nothing until all eight are queued
            tickets = [sched.submit(ids, params, user=f"writer{i}") for i in range(8)]
        texts = ["".join(t) for t in tickets]
        assert texts == [alone] * 8
        assert sched.steps - one == one  # (with two admitted a step: three steps more)
        assert sched.admit_ahead == 2


def test_the_compiled_step_computes_what_step_rows_does(engine: FastEngine) -> None:
    from models.engines.llama.cache import KVCache, RopeTable
    from models.engines.llama.compiled import PlainStep
    from models.engines.llama.scheduler import step_rows

    spec, w = engine.spec, engine.weights
    plain = PlainStep.for_weights(w, spec)
    assert plain is not None  # plain float Llama weights: compiled
    rope = RopeTable(spec, 64, w.dtype)
    eager, compiled = KVCache(spec, 4, 64, w.dtype), KVCache(spec, 4, 64, w.dtype)
    eager.data.normal_()
    compiled.data.copy_(eager.data)
    tokens, positions = torch.tensor([5, 17, 3]), torch.tensor([9, 40, 0])
    with torch.inference_mode():
        want = step_rows(w, spec, rope, tokens, eager, positions)
        got = plain(rope, tokens, compiled, positions)
    assert torch.equal(want, got) and torch.equal(eager.data, compiled.data)  # the rows' K/V written alike


def test_the_compiled_int8_step_computes_what_step_rows_does(engine: FastEngine) -> None:
    from models.engines.llama.cache import KVCache, RopeTable
    from models.engines.llama.compiled import PlainStep
    from models.engines.llama.runtime import quantize_int8
    from models.engines.llama.scheduler import step_rows
    from models.engines.llama.weights import int8_available

    if not int8_available():
        pytest.skip("this torch build has no FBGEMM int8 kernels")
    quantize_int8(engine)
    spec, w = engine.spec, engine.weights
    plain = PlainStep.for_weights(w, spec)
    assert plain is not None and plain.prefill_fn is None  # the step compiled, the prefill eager
    assert engine._one_row.compiled is not None  # and one stream's steps take it too
    rope = RopeTable(spec, 128, torch.float32)
    eager, compiled = KVCache(spec, 4, 128, torch.float32), KVCache(spec, 4, 128, torch.float32)
    eager.data.normal_()
    eager.data[:, :, 1:, :, :70] = eager.data[:, :, :1, :, :70]
    compiled.data.copy_(eager.data)
    tokens, positions = torch.tensor([5, 17, 3]), torch.tensor([70, 99, 80])
    shared = eager.data[:, :, 0, :, :70].clone()
    with torch.inference_mode():
        for segment in (None, shared):
            want = step_rows(w, spec, rope, tokens, eager, positions, segment)
            got = plain(rope, tokens, compiled, positions, segment)
            assert torch.equal(want, got) and torch.equal(eager.data, compiled.data)


def test_a_prefix_read_once_for_all_rows_gives_each_rows_attention(engine: FastEngine) -> None:
    from models.engines.llama.cache import KVCache, RopeTable
    from models.engines.llama.compiled import PlainStep
    from models.engines.llama.scheduler import step_rows

    spec, w = engine.spec, engine.weights
    plain = PlainStep.for_weights(w, spec)
    assert plain is not None
    rope = RopeTable(spec, 128, w.dtype)
    cache = KVCache(spec, 4, 128, w.dtype)
    cache.data.normal_()
    n = 70
    cache.data[:, :, 1:, :, :n] = cache.data[:, :, :1, :, :n]  # every row starts with the same 70 positions
    shared = cache.data[:, :, 0, :, :n].clone()
    tokens, positions = torch.tensor([5, 17, 3]), torch.tensor([n, 99, 80])
    runs = {}
    with torch.inference_mode():
        cases = (("whole", step_rows, None), ("eager", step_rows, shared), ("compiled", None, shared))
        for name, step, segment in cases:
            c = KVCache(spec, 4, 128, w.dtype)
            c.data.copy_(cache.data)
            if step is None:
                runs[name] = (plain(rope, tokens, c, positions, segment), c.data)
            else:
                runs[name] = (step(w, spec, rope, tokens, c, positions, segment), c.data)
    assert torch.equal(runs["eager"][0], runs["compiled"][0])  # the compiled step is the eager one, op for op
    assert torch.allclose(runs["eager"][0], runs["whole"][0], atol=1e-4, rtol=1e-5)  # summed in two parts
    assert torch.allclose(runs["eager"][1], runs["whole"][1], atol=1e-5)  # the same K/V written, but for rounding
    empty = KVCache(spec, 4, 128, w.dtype)  # the shared positions matter: without them, other logits
    assert not torch.allclose(runs["eager"][0], step_rows(w, spec, rope, tokens, empty, positions))


def test_rows_with_one_card_read_its_prefix_once_and_decode_as_alone(engine: FastEngine) -> None:
    card = "You are Luna, a warm and literary companion who helps writers with their stories. " * 4
    asks = ["Hello there!", "Name a dragon.", "What is a sonnet?", "Tell me about tea."]
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    alone = [_alone(engine, card + a, params) for a in asks]
    engine.enable_batching(max_rows=8)
    try:
        _batched(engine, [card + "Hi."], [params])  # the card's K/V goes into the prefix cache
        assert _batched(engine, [card + a for a in asks], [params] * 4) == alone
        assert engine.scheduler.shared_steps > 0
    finally:
        engine.close()


@pytest.mark.parametrize(("start", "t"), [(0, 20), (20, 7), (27, 1)])
def test_the_compiled_prefill_computes_what_forward_does(engine: FastEngine, start: int, t: int) -> None:
    from models.engines.llama.block import forward
    from models.engines.llama.cache import KVCache, RopeTable
    from models.engines.llama.compiled import PlainStep

    spec, w = engine.spec, engine.weights
    plain = PlainStep.for_weights(w, spec)
    assert plain is not None
    rope = RopeTable(spec, 64, w.dtype)
    eager, compiled = KVCache(spec, 1, 64, w.dtype), KVCache(spec, 1, 64, w.dtype)
    eager.data.normal_()  # positions before `start` as an earlier chunk left them
    compiled.data.copy_(eager.data)
    ids = torch.randint(0, spec.vocab_size, (1, t))
    with torch.inference_mode():
        want = forward(w, spec, rope, ids, eager, start=start, last_only=True)
        got = plain.prefill(rope, ids, compiled, start)
    assert torch.equal(want, got) and torch.equal(eager.data, compiled.data)


def test_admission_is_round_robin_between_users(engine: FastEngine) -> None:
    with _scheduler(engine, max_rows=1) as sched:
        params = SamplingParams(max_new_tokens=6, temperature=0.0)
        ids = engine.codec.encode(PROMPTS[1], add_bos=True)
        with sched._cond:  # hold the loop while the queue fills, so arrival order is known
            tickets = [sched.submit(ids, params, user="ann") for _ in range(5)]
            with requested_by("bob"):
                tickets.append(sched.submit(ids, params))
        for t in tickets:
            "".join(t)
        order = list(sched.admitted)
        assert order.index("bob") <= 1, order  # bob's one request does not wait for ann's five


def test_while_another_user_waits_one_user_holds_at_most_user_rows(engine: FastEngine) -> None:
    with _scheduler(engine, max_rows=8, user_rows=2) as sched:
        params = SamplingParams(max_new_tokens=24, temperature=0.0)
        ids = engine.codec.encode(PROMPTS[1], add_bos=True)
        seen: list[int] = []
        step = sched._step

        def watched() -> None:  # at every step while bob's request is live: ann's rows
            if sched._live.get("bob"):
                seen.append(sched._live.get("ann", 0))
            step()

        sched._step = watched  # type: ignore[method-assign]
        with sched._cond:
            anns = [sched.submit(ids, params, user="ann") for _ in range(6)]
            bob = sched.submit(ids, params, user="bob")
        assert "".join(bob)
        assert seen and max(seen) <= 2, seen
        assert all("".join(t) for t in anns)  # ann's other requests ran after, none lost
        assert sched._live == {}


def test_a_light_users_request_steps_beside_an_equal_share_of_a_heavy_users_rows(engine: FastEngine) -> None:
    # ann's six rows are decoding when bob's one request arrives: while bob's row is live, only
    # ann's oldest row steps beside it (her others keep their cache and wait), and every answer
    # is still the same greedy text as alone
    params = SamplingParams(max_new_tokens=60, temperature=0.0)
    prompts = PROMPTS + PROMPTS[:2]
    alone = [_alone(engine, p, params) for p in prompts]
    with _scheduler(engine, max_rows=8, user_rows=2) as sched:
        stepping = sched._stepping
        seen: list[tuple[int, int]] = []

        def watched() -> list[int] | None:
            chosen = stepping()
            rows = range(len(sched._running)) if chosen is None else chosen
            users = [sched._running[i].user for i in rows]
            if "bob" in users:
                seen.append((users.count("ann"), sum(t.user == "ann" for t in sched._running)))
            return chosen

        sched._stepping = watched  # type: ignore[method-assign]
        anns = [sched.submit(engine.codec.encode(p, add_bos=True), params, user="ann") for p in prompts]
        deadline = time.monotonic() + 30
        while len(sched._running) < len(prompts):  # all six admitted and decoding
            assert time.monotonic() < deadline, "ann's rows were never all decoding at once"
            time.sleep(0.0005)
        bob = sched.submit(engine.codec.encode(PROMPTS[2], add_bos=True), params, user="bob")
        assert "".join(bob) == alone[2]
        assert ["".join(t) for t in anns] == alone
        assert seen and max(stepped for stepped, _ in seen) <= 1, seen
        assert any(held > 1 for _, held in seen), seen  # ann did hold more rows than she stepped
        assert sched._live == {}


def test_the_queue_is_bounded_and_a_cancelled_row_is_freed(engine: FastEngine) -> None:
    with _scheduler(engine, max_rows=1, max_waiting=2) as sched:
        params = SamplingParams(max_new_tokens=60, temperature=0.0)
        ids = engine.codec.encode(PROMPTS[0], add_bos=True)
        with sched._cond:
            accepted = [sched.submit(ids, params, user=f"u{i}") for i in range(2)]
            with pytest.raises(QueueFullError, match="already waiting"):
                sched.submit(ids, params, user="u9")
        first = iter(accepted[0])
        next(first, None)
        accepted[0].cancel()
        rest = "".join(first)
        assert accepted[0].row.tokens < 60 or rest == ""
        assert "".join(accepted[1]) != "" and sched.running == 0


@pytest.mark.parametrize("case", ["qwen2", "qwen3"])
def test_biases_and_head_norms_decode_the_same_batched(case: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.test_engine_architectures import CASES, _build

    engine = FastEngine(_build(tiny_model_dir, tmp_path / case, CASES[case]), threads=1)
    params = [SamplingParams(max_new_tokens=n, temperature=0.0) for n in (9, 5)]
    alone = [_alone(engine, p, q) for p, q in zip(PROMPTS[:2], params, strict=True)]
    engine.enable_batching()
    try:
        assert _batched(engine, PROMPTS[:2], params) == alone
    finally:
        engine.close()


def test_the_engine_is_not_free_while_its_scheduler_has_requests_in_flight(engine: FastEngine) -> None:
    """`hold_if_free` (a stream's best of N takes the engine only when nothing else decodes)."""
    sched = engine.enable_batching(max_rows=1)
    try:
        params = SamplingParams(max_new_tokens=20, temperature=0.0)
        ids = engine.codec.encode(PROMPTS[0], add_bos=True)
        with sched._cond:  # submitted, not yet admitted
            ticket = sched.submit(ids, params, user="u")
            assert len(sched._waiting) == 1  # in_flight takes this lock: read under it
            assert not engine.hold_if_free()
        assert "".join(ticket)
        deadline = time.monotonic() + 10
        while sched.in_flight and time.monotonic() < deadline:  # the row leaves the batch after its last piece
            time.sleep(0.01)
        assert sched.in_flight == 0
        assert engine.hold_if_free()
        engine.lock.release()
    finally:
        engine.close()
