"""What recording generation events costs (docs/operations.md).

Peer: the same `TransformerModel` on the embedded model, not instrumented. Ours: the same
model instance after `attach()` (what `ModelManager` does), recording every generation to a
temporary home's SQLite database through the background writer. Both generate the same
prompt, greedy, 100 tokens; they take turns for `ROUNDS` rounds of `CALLS` generations and
each keeps its best round. Also: the cost of one `record()` call on the caller's thread and
of writing one event (the writer thread's work, per event, in batches of 256).
"""

from __future__ import annotations

import os
import tempfile
import time
import types

from rich.console import Console
from rich.table import Table

PROMPT = "The old lighthouse keeper looked out over the grey sea and said to his daughter"
NEW_TOKENS = 100
CALLS = 10
ROUNDS = 5
TARGET = 1.02  # recording may cost at most 2% of a generation


def main() -> None:
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as home:
        os.environ["COMPANION_HOME"] = home
        from models.monitoring import GenerationEvent, attach, get_recorder
        from models.transformer_model import TransformerModel

        model = TransformerModel("builtin:companion-base", temperature=0.0)
        model.engine.codec.stop_ids = set()  # every call decodes exactly NEW_TOKENS
        bare = types.SimpleNamespace(generate=type(model).generate.__get__(model))
        attach(model, "base", "companion-base")
        recorded = model.generate
        best = {"bare": float("inf"), "recorded": float("inf")}
        for fn in (bare.generate, recorded):  # warm up
            fn(PROMPT, max_length=NEW_TOKENS)
        for _ in range(ROUNDS):
            for label, fn in (("bare", bare.generate), ("recorded", recorded)):
                t0 = time.perf_counter()
                for _ in range(CALLS):
                    fn(PROMPT, max_length=NEW_TOKENS)
                best[label] = min(best[label], (time.perf_counter() - t0) / CALLS)
        rec = get_recorder()
        rec.flush()
        written = rec.written

        event = GenerationEvent("base", "bench", "1.0.0", "fast", 0.1, 0.01, 10, 100)
        n = 20_000
        t0 = time.perf_counter()
        for _ in range(n):
            rec.record(event)
        record_us = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        rec.flush()
        write_us = (time.perf_counter() - t0) / n * 1e6

    ratio = best["recorded"] / best["bare"]
    table = Table(title=f"generate(), {NEW_TOKENS} tokens, best of {ROUNDS} rounds × {CALLS} calls")
    for col in ("path", "ms per generation", "ratio (ours/peer)", "target"):
        table.add_column(col)
    table.add_row("peer: not instrumented", f"{1000 * best['bare']:.2f}", "1.00", "")
    table.add_row(
        "ours: recorded (attach + writer)",
        f"{1000 * best['recorded']:.2f}",
        f"{ratio:.3f}",
        f"≤ {TARGET:.2f} {'met' if ratio <= TARGET else 'MISSED'}",
    )
    console.print(table)
    console.print(
        f"record() on the caller's thread: {record_us:.2f} µs per event; the writer: {write_us:.2f} µs per event "
        f"(SQLite, batches); {written} generation events written during the race"
    )
