"""Best-of-N replies (`emotion_rerank`): batched candidates on the `fast` engine against one by one.

`python -m bench rerank` (environment knobs: BENCH_RR_MESSAGES=6, BENCH_RR_ROUNDS=3,
BENCH_RR_N=4).

Builtin Luna (`luna` from the config, the embedded model), the same user messages and seeds for
every path. Three paths per message: `emotion_rerank=1` (one reply); `emotion_rerank=N` with the
N candidates decoded together (`TransformerModel.chat_many` → `FastEngine.sample_many`, one
prefill, batched steps); and `emotion_rerank=N` sequentially, the peer: the same personality
over a base without `chat_many`, so it falls back to N `chat` calls (the code path before
batching). Each path runs once to warm up; then the paths take turns, BENCH_RR_ROUNDS rounds,
and each keeps its best round (a burst of load from elsewhere hits all paths alike). Time per
reply is wall time of `generate_response` (prompt assembly, decode, the classifier's ranking of
the candidates), summed over the messages; ratios are against the sequential peer measured in
the same run. Both N-paths use seeds seed + i, so they draw the same candidates.

Also shown (BENCH_RR_INT8=0 to skip): the same two N-paths on an int8 engine
(`quant.quantize_int8`, as an optimized version loads), against their own sequential peer.
FBGEMM's int8 matmul costs about the same for 1 and 4 rows here, while MKL's fp32 one costs
about 2-4x more for 4 rows than for 1 (the 21 MB of weights sit in L3, so fp32 decode on this
CPU is bound by arithmetic as much as by memory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

MESSAGES = int(os.environ.get("BENCH_RR_MESSAGES", "6"))
ROUNDS = int(os.environ.get("BENCH_RR_ROUNDS", "3"))
N = int(os.environ.get("BENCH_RR_N", "4"))
INT8 = os.environ.get("BENCH_RR_INT8", "1") != "0"


class _OneByOne:
    """The base model without `chat_many`: PersonalityModel then loops over `chat`."""

    def __init__(self, base: Any) -> None:
        self._base = base

    def __getattr__(self, name: str) -> Any:
        if name == "chat_many":
            raise AttributeError(name)
        return getattr(self._base, name)


_INT8_BASES: dict[int, Any] = {}


def _int8_base(base: Any) -> Any:
    """A second copy of `base` (the manager shares the first) with int8 matrices."""
    if id(base) not in _INT8_BASES:
        from models.engines.llama.runtime import quantize_int8
        from models.transformer_model import TransformerModel

        copy = TransformerModel(base.model_path, ref=base.ref, name=base.name, **base.params.model_dump())
        quantize_int8(copy.engine)
        _INT8_BASES[id(base)] = copy
    return _INT8_BASES[id(base)]


def _personality(rerank: int, sequential: bool = False, int8: bool = False) -> Any:
    from models.model_manager import ModelManager
    from models.personality.model import PersonalityModel
    from models.personality.params import PersonalityParams

    model = ModelManager().load_model("personality", "luna")
    params = PersonalityParams(**{**model.params.model_dump(), "emotion_rerank": rerank})
    base = _int8_base(model.base) if int8 else model.base
    base = _OneByOne(base) if sequential else base
    clf = model.classifier
    return PersonalityModel(model.card, base, params=params, name=model.name, version=model.version, classifier=clf)


_ROWS: list[list[int]] = []  # per batched reply: tokens each candidate decoded


def _run(model: Any, messages: list[str]) -> tuple[float, list[str]]:
    texts = []
    t0 = time.perf_counter()
    for i, message in enumerate(messages):
        model.reset()
        texts.append(model.generate_response(message=message, history=[], seed=100 + i).text)
        rows = model.base.last_stats.extra.get("row_tokens")
        if rows and len(rows) > 1:
            _ROWS.append(rows)
    return time.perf_counter() - t0, texts


def _step_cost(engine: Any, rows: int, steps: int = 64) -> tuple[float, float]:
    """Seconds per decode step at batch 1 (`_step`) and with `rows` rows (`BatchDecoder.step`)."""
    from models.engines.llama.batch import BatchDecoder

    ids = engine.codec.encode("Hello, how are you?", add_bos=True)
    with engine.lock:
        engine.prefill(ids)
        t0 = time.perf_counter()
        for i in range(steps):
            engine.step(10 + i)
        one = (time.perf_counter() - t0) / steps
        dec = BatchDecoder(engine, ids, rows, steps)
        t0 = time.perf_counter()
        for i in range(steps):
            dec.step([10 + i] * rows)
        many = (time.perf_counter() - t0) / steps
    return one, many


def main() -> dict[str, Any]:
    from bench.emotion import PROMPTS

    messages = PROMPTS[:MESSAGES]
    paths: dict[str, Any] = {
        "rerank 1": _personality(1),
        f"rerank {N}, batched": _personality(N),
        f"rerank {N}, sequential (peer)": _personality(N, sequential=True),
    }
    peer = f"rerank {N}, sequential (peer)"
    int8_peer = f"int8: rerank {N}, sequential"
    if INT8:
        from models.engines.llama.runtime import int8_available

        if int8_available():
            paths[f"int8: rerank {N}, batched"] = _personality(N, int8=True)
            paths[int8_peer] = _personality(N, sequential=True, int8=True)
    one = paths["rerank 1"]
    engine = one.base.engine
    print(f"Luna on {one.base.name} ({engine.name} engine, {engine.threads} thread(s)), {len(messages)} messages, "
          f"max_length {one.params.max_length}, best of {ROUNDS} rounds")  # fmt: skip
    best: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    runs: list[tuple[str, Callable[[], tuple[float, list[str]]]]] = [
        (label, lambda m=model: _run(m, messages)) for label, model in paths.items()
    ]
    for _, run in runs:  # warm-up
        run()
    for _ in range(ROUNDS):
        for label, run in runs:
            seconds, out = run()
            best[label] = min(best.get(label, float("inf")), seconds)
            texts[label] = out
    same = texts[f"rerank {N}, batched"] == texts[peer]
    ratios = {k: v / best[int8_peer if k.startswith("int8") else peer] for k, v in best.items()}
    print(f"{'path':<32} {'ms/reply':>9} {'vs peer':>8}")
    for label, seconds in best.items():
        print(f"{label:<32} {1000 * seconds / len(messages):>9.1f} {ratios[label]:>7.2f}x")
    print("(int8 rows: against the int8 sequential peer)" if int8_peer in best else "")
    print(f"fp32 batched and sequential chose the same replies: {same}")
    if _ROWS:
        longest = sum(max(r) for r in _ROWS) / len(_ROWS)
        total = sum(sum(r) for r in _ROWS) / len(_ROWS)
        bound = longest / total
        print(f"candidates per reply: {total:.1f} tokens in all, the longest {longest:.1f}: a batch takes as many")
        print(f"steps as its longest row, so batched/sequential >= {bound:.2f} if {N} rows cost one row's step")
    for label in ("rerank 1", f"int8: rerank {N}, batched"):
        if label in paths:
            one_s, many_s = _step_cost(paths[label].base.engine, N)
            kind = "int8" if label.startswith("int8") else "fp32"
            print(f"{kind} step: {1e3 * one_s:.2f} ms at batch 1, {1e3 * many_s:.2f} ms for {N} rows "
                  f"({many_s / one_s:.2f}x)")  # fmt: skip
    return {
        "ms_per_reply": {k: round(1000 * v / len(messages), 1) for k, v in best.items()},
        "ratio_vs_peer": {k: round(v, 3) for k, v in ratios.items()},
        "same_replies": same,
    }


if __name__ == "__main__":
    main()
