"""The cost of structured output (issue 24): tokens per second with a JSON schema vs without.

Ours: the embedded chat model on the fast engine, sampled (seeds 0..BENCH_SO_SEEDS-1, up to 128
tokens, 1 thread) with `response_format` (llguidance's mask, `models.engines.structured`) and
without. Peer, same run: llama.cpp on the same weights (exported to GGUF f32), its own grammar
sampler (`LlamaGrammar.from_json_schema`, GBNF) vs no grammar, through `create_chat_completion`.
Each figure is completion tokens over wall time, after one untimed warm-up answer per side (the
first JSON answer also compiles the schema and indexes the vocabulary, once per process, as
llama.cpp parses its grammar before the timing); the ratio is with-schema / without (target for
ours ≥ 0.8×). Both sides count every valid JSON answer too.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SEEDS = int(os.environ.get("BENCH_SO_SEEDS", "8"))
MAX_NEW = 128
TARGET = 0.8
ASK = [{"role": "user", "content": "Describe a lighthouse keeper as JSON with a name, an age and tags."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "keeper", "schema": SCHEMA, "strict": True}}


def _valid(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def ours(structured: bool) -> tuple[float, int]:
    from models.engines.base import SamplingParams
    from models.engines.llama import FastEngine
    from models.paths import builtin_dir

    engine = FastEngine(builtin_dir("companion-chat"), threads=1)
    warm = SamplingParams(max_new_tokens=MAX_NEW, seed=99, response_format=FORMAT if structured else None)
    "".join(engine.stream_chat(ASK, warm))
    tokens, valid, spent = 0, 0, 0.0
    for seed in range(SEEDS):
        params = SamplingParams(max_new_tokens=MAX_NEW, seed=seed, response_format=FORMAT if structured else None)
        t0 = time.perf_counter()
        text = "".join(engine.stream_chat(ASK, params))
        spent += time.perf_counter() - t0
        tokens += engine.last_stats.completion_tokens
        valid += _valid(text)
    return tokens / spent, valid


def peer(gguf: Path, structured: bool) -> tuple[float, int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=1, verbose=False)
    grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False) if structured else None
    llm.create_chat_completion(ASK, max_tokens=MAX_NEW, seed=99, grammar=grammar)
    tokens, valid, spent = 0, 0, 0.0
    for seed in range(SEEDS):
        t0 = time.perf_counter()
        out: Any = llm.create_chat_completion(ASK, max_tokens=MAX_NEW, seed=seed, grammar=grammar)
        spent += time.perf_counter() - t0
        tokens += out["usage"]["completion_tokens"]
        valid += _valid(out["choices"][0]["message"]["content"] or "")
    return tokens / spent, valid


def main() -> None:
    from models.engines.llamacpp import llama_cpp_available
    from models.export import export_gguf
    from models.paths import builtin_dir

    console = Console()
    table = Table(title=f"JSON schema vs free text: tokens/s, {SEEDS} answers of up to {MAX_NEW} tokens, 1 thread")
    for col in ("decoder", "free tok/s", "schema tok/s", "schema / free", "valid JSON"):
        table.add_column(col)
    free, _ = ours(False)
    schema, valid = ours(True)
    table.add_row("ours (fast engine + llguidance)", f"{free:.0f}", f"{schema:.0f}", f"{schema / free:.2f}×",
                  f"{valid}/{SEEDS}")  # fmt: skip
    if llama_cpp_available():
        with tempfile.TemporaryDirectory() as tmp:
            gguf = export_gguf(builtin_dir("companion-chat"), Path(tmp) / "chat.gguf")
            pfree, _ = peer(gguf, False)
            pschema, pvalid = peer(gguf, True)
        table.add_row("llama.cpp (GBNF grammar)", f"{pfree:.0f}", f"{pschema:.0f}", f"{pschema / pfree:.2f}×",
                      f"{pvalid}/{SEEDS}")  # fmt: skip
        table.caption = f"ours with a schema / llama.cpp with its grammar: {schema / pschema:.2f}×"
    console.print(table)
    verdict = "meets" if schema / free >= TARGET else "misses"
    console.print(f"ours: schema / free = {schema / free:.2f}× ({verdict} the ≥ {TARGET}× target)")


if __name__ == "__main__":
    main()
