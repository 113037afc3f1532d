"""Decode speed of the `fast` engine against `transformers` `generate()` (DESIGN §10), then
against llama.cpp on the same weights exported to GGUF (`bench/_llamacpp.py`).

One process, batch 1, the same prompt and weights for every path, 200 new tokens. Every path
runs once to warm up, then the paths take turns, 3 rounds, and each keeps its best round (so a
burst of load from elsewhere hits all paths alike). The peer is `model.generate(
min_new_tokens=200)` at torch's default thread count and at 1 thread; ratios are against the
faster of the two. Our engines run through their public streaming path (`engine.stream`),
sampler and incremental detokenizer included; their stop tokens are cleared for the bench so
every path decodes exactly 200 tokens, as `min_new_tokens` does for the peer. Also shown: the
bare `prefill`/`_step` loop, CPU time per token (less sensitive to other processes than wall
time), and cold load of `FastEngine(folder)` against `LlamaForCausalLM.from_pretrained`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from models.engines.base import LocalEngine, SamplingParams

NEW_TOKENS = 200
ROUNDS = 3
TARGET_SPEEDUP = 5.0
TARGET_LOAD_RATIO = 1.1
PROMPT = "The old lighthouse keeper looked out over the grey sea and said to his daughter"
GREEDY = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
SAMPLED = SamplingParams(
    max_new_tokens=NEW_TOKENS, temperature=0.8, top_p=0.95, top_k=50, repetition_penalty=1.1, seed=0
)
SAMPLED_HF = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.1}


@dataclass
class DecodePath:
    """One decode path: a label, its thread count, and a call that decodes NEW_TOKENS."""

    label: str
    threads: int
    run: Callable[[], Any]
    is_peer: bool = False
    targeted: bool = False
    wall_s: float = float("inf")
    cpu_s: float = float("inf")

    @property
    def rate(self) -> float:
        return NEW_TOKENS / self.wall_s


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with `n` intra-op threads (the previous count restored afterwards)."""

    def run() -> Any:
        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)

    return run


def race(paths: list[DecodePath], rounds: int = ROUNDS) -> None:
    """Warm every path up, then time them in turns; each keeps its best wall and CPU time."""
    for path in paths:
        path.run()
    for _ in range(rounds):
        for path in paths:
            wall, cpu = time.perf_counter(), time.process_time()
            path.run()
            path.wall_s = min(path.wall_s, time.perf_counter() - wall)
            path.cpu_s = min(path.cpu_s, time.process_time() - cpu)


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
    from transformers import LlamaForCausalLM

    from models.training.base import BaseModelSpec, special_ids
    from models.training.tokenizer import save_tokenizer_files, train_tokenizer

    rng = random.Random(0)
    words = ["".join(rng.choices("etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(1, 9))) for _ in range(6000)]
    texts = [" ".join(rng.choices(words, k=80)) for _ in range(3000)]
    tok = train_tokenizer(texts, vocab_size=8192)
    save_tokenizer_files(tok, folder, model_max_length=512)
    torch.manual_seed(0)
    ids = special_ids(tok)
    config = BaseModelSpec(vocab_size=tok.get_vocab_size()).llama_config(ids)
    LlamaForCausalLM(config).save_pretrained(folder)


# --- decode paths ----------------------------------------------------------------------------


def generate_call(model: Any, ids: list[int], sample: bool) -> Callable[[], None]:
    """`model.generate()` producing exactly NEW_TOKENS tokens."""
    x = torch.tensor([ids])
    kwargs: dict[str, Any] = SAMPLED_HF if sample else {"do_sample": False}

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

    return run


def stream_call(engine: LocalEngine, params: SamplingParams) -> Callable[[], None]:
    """The engine's public streaming path (sampling and detokenizing included)."""
    engine.codec.stop_ids = set()  # decode all NEW_TOKENS, like min_new_tokens for the peer

    def run() -> None:
        for _ in engine.stream(PROMPT, params):
            pass
        made = engine.last_stats.completion_tokens
        if made != NEW_TOKENS:
            raise RuntimeError(f"{engine.name} made {made} tokens, not {NEW_TOKENS}")

    return run


def raw_step_call(engine: LocalEngine, ids: list[int]) -> Callable[[], None]:
    """The bare `prefill` + `_step` loop with an argmax: no sampler, no detokenizer."""

    def run() -> None:
        logits = engine.prefill(ids)
        for _ in range(NEW_TOKENS - 1):
            logits = engine.step(int(torch.argmax(logits)))

    return run


def decode_paths(folder: Path, sample: bool) -> list[DecodePath]:
    """Every path of one decoding mode, peers first."""
    from models.engines.hf import HFEngine
    from models.engines.llama import FastEngine

    fast = FastEngine(folder)
    hf = HFEngine(folder)
    ids = fast.codec.encode(PROMPT, add_bos=True)
    params = SAMPLED if sample else GREEDY
    gen = generate_call(hf.model, ids, sample)
    default = torch.get_num_threads()
    paths = [
        DecodePath("transformers generate()", n, with_threads(n, gen), is_peer=True)
        for n in sorted({default, 1}, reverse=True)
    ]
    paths.append(DecodePath("fast  engine.stream()", fast.threads, stream_call(fast, params), targeted=True))
    if not sample:
        for n in sorted({default, 1} - {fast.threads}):
            other = FastEngine(folder, threads=n)
            paths.append(DecodePath("fast  engine.stream()", n, stream_call(other, params)))
        paths.append(DecodePath("fast  raw prefill/step", fast.threads, raw_step_call(fast, ids)))
    paths.append(DecodePath("hf    engine.stream()", 1, with_threads(1, stream_call(hf, params))))
    return paths


# --- load ------------------------------------------------------------------------------------


def best_time(fn: Callable[[], Any], repeats: int = ROUNDS) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def load_rows(folder: Path) -> list[tuple[str, float, float, bool]]:
    """(what, ours s, peer s, targeted) for each way of counting a cold load, best of 3."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from models.engines.llama import FastEngine

    ids = [1, 2, 3, 4]

    def hf_model() -> Any:
        return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32)

    def hf_first_logits() -> None:
        with torch.inference_mode():
            hf_model()(torch.tensor([ids]))

    fast = best_time(lambda: FastEngine(folder))
    return [
        ("FastEngine(folder) vs from_pretrained(folder)", fast, best_time(hf_model), True),
        (
            "… vs from_pretrained + AutoTokenizer (same work)",
            fast,
            best_time(lambda: (hf_model(), AutoTokenizer.from_pretrained(str(folder)))),
            True,
        ),
        (
            "load + first logits (4-token prompt)",
            best_time(lambda: FastEngine(folder).prefill(ids)),
            best_time(hf_first_logits),
            False,
        ),
        ("fresh interpreter, incl. imports", fresh_load_time("fast", folder), fresh_load_time("hf", folder), False),
    ]


_FRESH = {
    "fast": "from models.engines.llama import FastEngine; FastEngine(sys.argv[1])",
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
    sign = "≥" if higher_is_better else "≤"
    return f"[green]PASS[/] ({sign} {target:g}×)" if ok else f"[red]FAIL[/] ({sign} {target:g}×)"


def decode_table(modes: dict[str, list[DecodePath]]) -> Table:
    table = Table(title=f"Decode, batch 1, {NEW_TOKENS} new tokens, best of {ROUNDS} rounds")
    for col in ("path", "decoding", "threads", "tokens/s", "CPU ms/token", "× generate()", "target"):
        table.add_column(col, justify="left" if col in ("path", "decoding", "target") else "right")
    for mode, paths in modes.items():
        base = max(p.rate for p in paths if p.is_peer)
        for p in paths:
            ratio = p.rate / base
            target = verdict(ratio, TARGET_SPEEDUP) if p.targeted else ""
            cpu_ms = p.cpu_s / NEW_TOKENS * 1e3
            row = (p.label, mode, str(p.threads), f"{p.rate:.0f}", f"{cpu_ms:.2f}", f"{ratio:.2f}×", target)
            table.add_row(*row)
    return table


def load_table(rows: list[tuple[str, float, float, bool]]) -> Table:
    table = Table(title=f"Cold load, best of {ROUNDS} (fresh interpreter: one run)")
    for col in ("what", "fast", "transformers", "ratio", "target"):
        table.add_column(col, justify="right" if col in ("fast", "transformers", "ratio") else "left")
    for what, ours, peer, targeted in rows:
        ratio = ours / peer
        target = verdict(ratio, TARGET_LOAD_RATIO, higher_is_better=False) if targeted else ""
        table.add_row(what, f"{ours * 1e3:.0f} ms", f"{peer * 1e3:.0f} ms", f"{ratio:.2f}×", target)
    return table


def main() -> None:
    """Run the decode and load benchmarks and print the tables."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        folder, origin = resolve_model(Path(tmp))
        console.print(origin)
        load1, _, _ = os.getloadavg()
        console.print(
            f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs, "
            f"torch default threads {torch.get_num_threads()}, load average {load1:.2f} at start"
        )
        modes = {}
        for mode, sample in (("greedy", False), ("sampled", True)):
            modes[mode] = decode_paths(folder, sample)
            race(modes[mode])
        console.print(decode_table(modes))
        console.print(load_table(load_rows(folder)))
        console.print(f"load average {os.getloadavg()[0]:.2f} at end (other processes share the CPUs)")
    if os.environ.get("BENCH_LC", "1") != "0":
        from bench._llamacpp import main as llamacpp_peer

        llamacpp_peer()  # the same weights through llama.cpp, and memory at load
