"""Decode speed of the `fast` engine against `transformers` `generate()` (DESIGN §10).

One process, batch 1, the same prompt and weights for every path, 200 new tokens, a warm-up
then the best of 3. The peer is `model.generate(min_new_tokens=200)` at its best thread count
(it is measured at the torch default and at 1 thread; the faster one counts). Our engines run
through their public streaming path (`engine.stream`), sampler and detokenizer included; their
stop tokens are cleared for the bench so every path decodes exactly 200 tokens, as
`min_new_tokens` does for the peer. Also: the raw `_step` loop, and cold load time of
`FastEngine(folder)` against `LlamaForCausalLM.from_pretrained(folder)`.

Model: `$COMPANION_BENCH_MODEL`, else the embedded `builtin:companion-base`, else a
random-weights model of the embedded shape built in a temporary folder (the output says so).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from models.engines.base import LocalEngine, SamplingParams

NEW_TOKENS = 200
REPEATS = 3
TARGET_SPEEDUP = 5.0
TARGET_LOAD_RATIO = 1.1
PROMPT = "The old lighthouse keeper looked out over the grey sea and said to his daughter"
GREEDY = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
SAMPLED = SamplingParams(
    max_new_tokens=NEW_TOKENS, temperature=0.8, top_p=0.95, top_k=50, repetition_penalty=1.1, seed=0
)


def best_time(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with `n` intra-op threads (restored afterwards)."""

    def run() -> Any:
        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)

    return run


# --- the model under test --------------------------------------------------------------------


def resolve_model(workdir: Path) -> tuple[Path, str]:
    """The folder to benchmark and a line saying where it came from."""
    env = os.environ.get("COMPANION_BENCH_MODEL")
    if env:
        return Path(env), f"model from $COMPANION_BENCH_MODEL: {env}"
    from models.paths import builtin_dir

    folder = builtin_dir("companion-base")
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder, f"embedded model: {folder}"
    build_random_model(workdir / "random-embedded")
    return workdir / "random-embedded", (
        "embedded model not found: using RANDOM weights of the embedded shape "
        "(hidden 256, 4 layers, 4 heads, intermediate 704, vocab 8192, context 512)"
    )


def build_random_model(folder: Path) -> None:
    """A random-weights Llama with the embedded model's shape, plus a freshly trained tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.training.tokenizer import save_tokenizer_files, train_tokenizer

    rng = random.Random(0)
    words = ["".join(rng.choices("etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(1, 9))) for _ in range(6000)]
    texts = [" ".join(rng.choices(words, k=80)) for _ in range(3000)]
    save_tokenizer_files(train_tokenizer(texts, vocab_size=8192), folder, model_max_length=512)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)


# --- measurements ----------------------------------------------------------------------------


def generate_rate(model: Any, ids: list[int], sample: bool, threads: int) -> float:
    """Tokens/s of `model.generate()` producing exactly NEW_TOKENS tokens."""
    x = torch.tensor([ids])
    kwargs: dict[str, Any] = {"do_sample": False}
    if sample:
        kwargs = {
            "do_sample": True,
            "temperature": 0.8,
            "top_p": 0.95,
            "top_k": 50,
            "repetition_penalty": 1.1,
        }

    def run() -> None:
        torch.manual_seed(0)
        with torch.inference_mode():
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                pad_token_id=model.config.pad_token_id or 0,
                **kwargs,
            )
        if out.shape[1] - x.shape[1] != NEW_TOKENS:
            raise RuntimeError(f"generate() made {out.shape[1] - x.shape[1]} tokens, not {NEW_TOKENS}")

    return NEW_TOKENS / best_time(with_threads(threads, run))


def stream_rate(engine: LocalEngine, params: SamplingParams) -> float:
    """Tokens/s of the engine's public streaming path (sampling and detokenizing included)."""
    engine.codec.stop_ids = set()  # decode all NEW_TOKENS, like min_new_tokens for the peer

    def run() -> None:
        for _ in engine.stream(PROMPT, params):
            pass
        made = engine.last_stats.completion_tokens
        if made != NEW_TOKENS:
            raise RuntimeError(f"{engine.name} made {made} tokens, not {NEW_TOKENS}")

    return NEW_TOKENS / best_time(run)


def raw_step_rate(engine: LocalEngine, ids: list[int]) -> float:
    """Tokens/s of the bare `_prefill` + `_step` loop (greedy argmax, nothing else)."""

    def run() -> None:
        logits = engine._prefill(ids)
        for _ in range(NEW_TOKENS - 1):
            logits = engine._step(int(torch.argmax(logits)))

    return NEW_TOKENS / best_time(run)


def load_times(folder: Path) -> tuple[float, float]:
    """Best in-process load seconds of FastEngine(folder) and from_pretrained(folder)."""
    from transformers import LlamaForCausalLM

    from models.engines.fast import FastEngine

    fast = best_time(lambda: FastEngine(folder))
    hf = best_time(lambda: LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32))
    return fast, hf


_FRESH = {
    "fast": "from models.engines.fast import FastEngine; FastEngine(sys.argv[1])",
    "hf": "import transformers as t; t.LlamaForCausalLM.from_pretrained(sys.argv[1])",
}


def fresh_load_time(kind: str, folder: Path) -> float:
    """Seconds to import and load in a new interpreter (what a user's first call pays)."""
    code = f"import sys, time; t0 = time.perf_counter(); {_FRESH[kind]}; print(time.perf_counter() - t0)"
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return (
        f"[green]PASS[/] ({'≥' if higher_is_better else '≤'} {target:g}×)"
        if ok
        else (f"[red]FAIL[/] ({'≥' if higher_is_better else '≤'} {target:g}×)")
    )


def decode_table(rows: list[tuple[str, str, int, float, float | None, bool]]) -> Table:
    table = Table(title=f"Decode, batch 1, {NEW_TOKENS} new tokens, best of {REPEATS}")
    for col in ("path", "decoding", "threads", "tokens/s", "× generate()", "target"):
        table.add_column(col, justify="right" if col in ("threads", "tokens/s", "× generate()") else "left")
    for path, mode, threads, rate, ratio, targeted in rows:
        ratio_s = "" if ratio is None else f"{ratio:.2f}×"
        target = verdict(ratio, TARGET_SPEEDUP) if targeted and ratio is not None else ""
        table.add_row(path, mode, str(threads), f"{rate:.0f}", ratio_s, target)
    return table


def measure_decode(folder: Path) -> list[tuple[str, str, int, float, float | None, bool]]:
    """Every decode path side by side; ratios against the best generate() of the same mode."""
    from models.engines.fast import DEFAULT_THREADS, FastEngine
    from models.engines.hf import HFEngine

    fast = FastEngine(folder)
    hf_engine = HFEngine(folder)
    model = hf_engine.model
    ids = fast.codec.encode(PROMPT, add_bos=True)
    peer_threads = sorted({torch.get_num_threads(), 1}, reverse=True)
    rows: list[tuple[str, str, int, float, float | None, bool]] = []
    for mode, params, sample in (("greedy", GREEDY, False), ("sampled", SAMPLED, True)):
        peers = {n: generate_rate(model, ids, sample, n) for n in peer_threads}
        base = max(peers.values())
        rows += [("transformers generate()", mode, n, r, r / base, False) for n, r in peers.items()]
        rate = stream_rate(fast, params)
        rows.append(("fast  engine.stream()", mode, fast.threads, rate, rate / base, True))
        if mode == "greedy":
            for n in sorted({DEFAULT_THREADS, torch.get_num_threads()} - {DEFAULT_THREADS}):
                other = FastEngine(folder, threads=n)
                r = stream_rate(other, params)
                rows.append(("fast  engine.stream()", mode, n, r, r / base, False))
            r = raw_step_rate(fast, ids)
            rows.append(("fast  raw _prefill/_step", mode, fast.threads, r, r / base, False))
        best_n = max(peers, key=lambda n: peers[n])
        r = with_threads(best_n, lambda p=params: stream_rate(hf_engine, p))()
        rows.append(("hf    engine.stream()", mode, best_n, r, r / base, False))
    return rows


def main() -> None:
    """Run the decode and load benchmarks and print the tables."""
    import transformers

    transformers.logging.set_verbosity_error()
    console = Console(width=110)
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        folder, origin = resolve_model(Path(tmp))
        console.print(origin)
        console.print(
            f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{os.cpu_count()} CPUs, torch default threads {torch.get_num_threads()}"
        )
        console.print(decode_table(measure_decode(folder)))
        fast_s, hf_s = load_times(folder)
        fresh_fast, fresh_hf = fresh_load_time("fast", folder), fresh_load_time("hf", folder)
    table = Table(title="Cold load")
    for col in ("what", "FastEngine(folder)", "from_pretrained(folder)", "ratio", "target"):
        table.add_column(col)
    ratio = fast_s / hf_s
    table.add_row(
        "in process, best of 3",
        f"{fast_s * 1e3:.0f} ms",
        f"{hf_s * 1e3:.0f} ms",
        f"{ratio:.2f}×",
        verdict(ratio, TARGET_LOAD_RATIO, higher_is_better=False),
    )
    table.add_row(
        "fresh interpreter, incl. imports",
        f"{fresh_fast * 1e3:.0f} ms",
        f"{fresh_hf * 1e3:.0f} ms",
        f"{fresh_fast / fresh_hf:.2f}×",
        "",
    )
    console.print(table)
