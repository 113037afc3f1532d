"""The `fast` engine against llama.cpp on the same weights (issue 19), and memory at load.

Part of `python -m bench decode` (run after its transformers tables; knobs: BENCH_LC_TOKENS=128,
BENCH_LC_ROUNDS=3, BENCH_LC_QWEN=1; BENCH_LC=0 skips it).

Two models: the embedded chat model, and a random-weights model with Qwen2.5-0.5B's shape
(24 layers, hidden 896, 14 heads / 2 KV heads, vocab 151 936, tied embeddings, bfloat16 on
disk) built in a temporary folder. Each is exported to GGUF with `models.export` (f32 and
q8_0; bf16 for the Qwen shape) and loaded by llama.cpp (`llama-cpp-python`, in process).

Decode: batch 1, BENCH_LC_TOKENS greedy tokens (BENCH_LC_QWEN_TOKENS for the Qwen shape) after
the same prompt ids, at 1 and 2 threads.
Both sides run their bare loop: ours `prefill` then `step` with an argmax (`FastEngine`),
llama.cpp's `Llama.eval` then an argmax over its logits buffer (no copy). Pairs at equal
precision: our float32 vs llama.cpp f32, our int8 (FBGEMM dynamic) vs llama.cpp q8_0, and for
the Qwen shape our bfloat16 (`dtype: auto`) vs llama.cpp bf16. Paths take turns, best of
BENCH_LC_ROUNDS; the ratio is ours / llama.cpp tokens per second (> 1: we are faster). Each
row also says how many bytes a second llama.cpp reads (its GGUF's size times its tokens per
second) against what a plain sum streams from memory in the same run: batch-1 decoding reads
every weight once a token, so where the peer is near that bandwidth, no engine can be much
faster at the same precision.

Memory: peak resident memory of a fresh interpreter that imports torch and the engine, then
loads the Qwen shape with `FastEngine(folder, dtype=None)`; the increase over the interpreter
before the load is compared with the weights' size on disk (target ≤ 1.2×), and llama.cpp's
own load (memory mapped) in another fresh interpreter is shown beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

TOKENS = int(os.environ.get("BENCH_LC_TOKENS", "128"))
QWEN_TOKENS = int(os.environ.get("BENCH_LC_QWEN_TOKENS", "32"))
ROUNDS = int(os.environ.get("BENCH_LC_ROUNDS", "3"))
QWEN = os.environ.get("BENCH_LC_QWEN", "1") != "0"
PROMPT = "The old lighthouse keeper looked out over the grey sea and said to his daughter"
TARGET_SPEED = 1.2
TARGET_RSS = 1.2


def build_qwen_shape(folder: Path) -> Path:
    """A random-weights Qwen2.5-0.5B-shaped model (bfloat16) with the embedded tokenizer."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    from models.paths import builtin_dir

    cfg = AutoConfig.for_model(
        "qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=0, eos_token_id=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(folder, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(builtin_dir("companion-chat") / f, folder / f)
    return folder


def ours_loop(engine: Any, ids: list[int], tokens: int) -> Callable[[], None]:
    def run() -> None:
        logits = engine.prefill(ids)
        for _ in range(tokens - 1):
            logits = engine.step(int(torch.argmax(logits)))

    return run


def llama_loop(llm: Any, ids: list[int], tokens: int) -> Callable[[], None]:
    import llama_cpp

    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))

    def logits() -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))

    def run() -> None:
        llm.reset()
        llm.eval(ids)
        for _ in range(tokens - 1):
            llm.eval([int(logits().argmax())])

    return run


def race(paths: dict[str, Callable[[], None]], tokens: int) -> dict[str, float]:
    """Tokens per second of each path: warm-up, then BENCH_LC_ROUNDS rounds in turns, best kept."""
    for run in paths.values():
        run()
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(ROUNDS):
        for name, run in paths.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: tokens / s for name, s in best.items()}


def stream_bandwidth(threads: int) -> float:
    """Bytes per second that a plain sum over 512 MB of float32 reads at `threads` (best of 5):
    about what decoding can stream from memory when the weights do not fit in the caches."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = torch.ones(128 * 2**20)
        data.sum()
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            data.sum()
            best = min(best, time.perf_counter() - t)
        return data.numel() * 4 / best
    finally:
        torch.set_num_threads(before)


def decode_rows(
    label: str, folder: Path, ggufs: dict[str, Path], ours: dict[str, Any], tokens: int
) -> list[tuple[Any, ...]]:
    """(model, precision, threads, ours tok/s, llama.cpp tok/s, GGUF bytes) for each precision and
    thread count."""
    import llama_cpp

    from models.engines.llama import FastEngine

    rows = []
    for threads in (1, 2):
        for precision, gguf in ggufs.items():
            engine = FastEngine(folder, dtype=ours[precision]["dtype"], threads=threads)
            if ours[precision].get("int8"):
                from models.engines.llama.runtime import quantize_int8

                quantize_int8(engine)
            ids = engine.codec.encode(PROMPT, add_bos=True)
            llm = llama_cpp.Llama(
                model_path=str(gguf), n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False,
            )  # fmt: skip
            rates = race({"ours": ours_loop(engine, ids, tokens), "llama.cpp": llama_loop(llm, ids, tokens)}, tokens)
            rows.append(
                (label, f"{ours[precision]['name']} vs {precision}", threads, rates["ours"], rates["llama.cpp"],
                 gguf.stat().st_size)
            )  # fmt: skip
            llm.close()
            del engine
    return rows


_RSS_CHILD = """
import json, sys, torch
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
kind, path = sys.argv[1], sys.argv[2]
if kind == "fast":
    from models.engines.llama import FastEngine
else:
    import llama_cpp
before = rss()  # the interpreter with torch and the engine's code imported
if kind == "fast":
    engine = FastEngine(path, dtype=None)
else:
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, verbose=False)
# VmHWM: this process's own high-water mark (ru_maxrss would carry the parent's over exec)
hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))
peak = int(hwm.split()[1]) * 1024
print(json.dumps({"before": before, "peak": peak, "after": rss()}))
"""


def load_memory(kind: str, path: Path) -> dict[str, int]:
    r = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, kind, str(path)], capture_output=True, text=True, check=True, env=os.environ
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    from models.export import export_gguf
    from models.paths import builtin_dir

    console = Console(width=130)
    try:
        import llama_cpp
    except ImportError:
        console.print("llama.cpp peer: skipped (llama-cpp-python is not installed: pip install '.[gguf]')")
        return
    console.print(
        f"llama-cpp-python {llama_cpp.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start; {TOKENS} greedy tokens ({QWEN_TOKENS} for the Qwen "
        f"shape), best of {ROUNDS}"
    )
    rows: list[tuple[Any, ...]] = []
    memory = None
    bandwidth = {threads: stream_bandwidth(threads) for threads in (1, 2)}
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as tmp:
        work = Path(tmp)
        chat = builtin_dir("companion-chat")
        ggufs = {q: export_gguf(chat, work / f"chat-{q}.gguf", quant=q) for q in ("f32", "q8_0")}
        ours = {
            "f32": {"name": "float32", "dtype": torch.float32},
            "q8_0": {"name": "int8", "dtype": torch.float32, "int8": True},
        }
        rows += decode_rows("embedded chat (5.3 M)", chat, ggufs, ours, TOKENS)
        if QWEN:
            qwen = build_qwen_shape(work / "qwen-shape")
            disk = (qwen / "model.safetensors").stat().st_size
            memory = {
                "disk": disk,
                "fast": load_memory("fast", qwen),
            }
            qggufs = {q: export_gguf(qwen, work / f"qwen-{q}.gguf", quant=q) for q in ("bf16", "f32", "q8_0")}
            memory["llama.cpp"] = load_memory("llama", qggufs["bf16"])
            qours = {
                "bf16": {"name": "bfloat16", "dtype": torch.bfloat16},
                "f32": {"name": "float32", "dtype": torch.float32},
                "q8_0": {"name": "int8", "dtype": torch.float32, "int8": True},
            }
            rows += decode_rows("Qwen2.5-0.5B shape (494 M)", qwen, qggufs, qours, QWEN_TOKENS)
    table = Table(title="Decode against llama.cpp, same weights (GGUF export), batch 1, greedy")
    for col in (
        "model",
        "precision (ours vs llama.cpp)",
        "threads",
        "ours tok/s",
        "llama.cpp tok/s",
        "ratio",
        "target",
        "llama.cpp reads",
    ):
        table.add_column(col)
    for model, precision, threads, a, b, size in rows:
        ok = a / b >= TARGET_SPEED
        verdict = f"[green]PASS[/] (≥ {TARGET_SPEED}×)" if ok else f"[red]FAIL[/] (≥ {TARGET_SPEED}×)"
        read = size * b  # every weight once a token (the GGUF's size: its tensors and a little metadata)
        table.add_row(model, precision, str(threads), f"{a:.0f}", f"{b:.0f}", f"{a / b:.2f}×", verdict,
                      f"{read / 1e9:.1f} GB/s ({read / bandwidth[threads]:.0%})")  # fmt: skip
    console.print(table)
    console.print(
        "llama.cpp reads: its weights' bytes times its tokens per second, and that as a share of what a plain sum "
        f"streams from memory here ({bandwidth[1] / 1e9:.1f} GB/s at 1 thread, {bandwidth[2] / 1e9:.1f} at 2). "
        "Near 100%, the peer decodes as fast as memory delivers its weights, and equal precision (equal bytes) "
        f"leaves no room for {TARGET_SPEED}×; above it, the weights partly sit in the caches."
    )
    if memory is not None:
        disk, fast, cpp = memory["disk"], memory["fast"], memory["llama.cpp"]
        grow = (fast["peak"] - fast["before"]) / disk
        mt = Table(title="Loading the Qwen2.5-0.5B-shaped model (bfloat16 safetensors, fresh interpreter)")
        for col in ("what", "GB", "× weights on disk", "target"):
            mt.add_column(col)
        mt.add_row("weights on disk", f"{disk / 1e9:.2f}", "1.00×", "")
        verdict = f"[green]PASS[/] (≤ {TARGET_RSS}×)" if grow <= TARGET_RSS else f"[red]FAIL[/] (≤ {TARGET_RSS}×)"
        mt.add_row(
            "fast: peak RSS growth during load", f"{(fast['peak'] - fast['before']) / 1e9:.2f}", f"{grow:.2f}×", verdict
        )
        mt.add_row(
            "fast: peak RSS, whole process (torch included)",
            f"{fast['peak'] / 1e9:.2f}",
            f"{fast['peak'] / disk:.2f}×",
            "",
        )
        mt.add_row(
            "llama.cpp (bf16 GGUF, mmap): peak RSS growth", f"{(cpp['peak'] - cpp['before']) / 1e9:.2f}",
            f"{(cpp['peak'] - cpp['before']) / disk:.2f}×", "",
        )  # fmt: skip
        console.print(mt)
    console.print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
