"""Model load time: ours (ModelManager, hash-verified) vs `transformers` `from_pretrained`.

Each cold measurement runs in a fresh Python process (nothing cached), best of 3; `torch` is
imported before the clock starts on both sides; the library's own import is timed separately. Warm = a cached
`load_model` call, median of 2,000. Targets (DESIGN §10): cold ≤ 1.1× `from_pretrained`,
warm ≤ 1 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OURS = """
import time, json, os
import torch  # imported by both sides before timing: it is the same fixed cost
t0 = time.perf_counter()
from models.model_manager import ModelManager
from models.engines import fast, codec  # the modules a load uses, as the peer's are
t1 = time.perf_counter()
m = ModelManager().load_model("base", "companion-base")
t2 = time.perf_counter()
print(json.dumps({"with_imports": t2 - t0, "load": t2 - t1, "engine": m.engine_name}))
"""

PEER = """
import time, json, sys
import torch
t0 = time.perf_counter()
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama import modeling_llama  # transformers imports lazily: do it here
t1 = time.perf_counter()
folder = sys.argv[1]
m = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, local_files_only=True)
tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
t2 = time.perf_counter()
print(json.dumps({"with_imports": t2 - t0, "load": t2 - t1}))
"""


def _run(code: str, *args: str, home: str) -> dict[str, float]:
    env = {**os.environ, "COMPANION_HOME": home, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(code: str, *args: str, home: str, n: int = 3) -> dict[str, float]:
    runs = [_run(code, *args, home=home) for _ in range(n)]
    return {k: min(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k] for k in runs[0]}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from models.paths import builtin_dir

    folder = builtin_dir("companion-base")
    console = Console()
    with tempfile.TemporaryDirectory() as home:
        ours = _best(OURS, home=home)
        peer = _best(PEER, str(folder), home=home)
        os.environ["COMPANION_HOME"] = home
        from models.model_manager import ModelManager

        mm = ModelManager()
        mm.load_model("base", "companion-base")
        samples = []
        for _ in range(2000):
            t = time.perf_counter()
            mm.load_model("base", "companion-base")
            samples.append(time.perf_counter() - t)
    warm_ms = statistics.median(samples) * 1000
    table = Table(title=f"model load: {Path(folder).name} (best of 3 fresh processes)")
    for col in ("measure", "ours", "transformers from_pretrained", "ratio (ours/peer)", "target"):
        table.add_column(col)
    r_load = ours["load"] / peer["load"]
    r_all = ours["with_imports"] / peer["with_imports"]
    table.add_row(
        "cold load (after imports)",
        f"{ours['load'] * 1000:.0f} ms",
        f"{peer['load'] * 1000:.0f} ms",
        f"{r_load:.2f}x",
        "≤ 1.10x " + ("PASS" if r_load <= 1.1 else "MISS"),
    )
    table.add_row(
        "cold: library import + load",
        f"{ours['with_imports'] * 1000:.0f} ms",
        f"{peer['with_imports'] * 1000:.0f} ms",
        f"{r_all:.2f}x",
        "",
    )
    table.add_row(
        "warm (cached) load_model",
        f"{warm_ms * 1000:.1f} µs",
        "-",
        "-",
        "≤ 1 ms " + ("PASS" if warm_ms <= 1 else "MISS"),
    )
    console.print(table)
    console.print(f"[dim]ours includes sha256 verification of every file and the tokenizer; engine {ours['engine']}[/]")


if __name__ == "__main__":
    main()
