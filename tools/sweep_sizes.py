"""Issue 18, item 5: which size of embedded chat model pays on this machine (run it under `nohup`).

Three Llama shapes are trained from scratch with the same recipe (`train_chat`: whole
conversations, 15% fiction), the same data, the same seed and the same wall-clock budget on the
same number of threads. Steps are set per size from a measured rate so each cosine schedule ends
inside its budget. Each size checkpoints into RUNS/<size>/ and resumes exactly (the budget counts
the time before a resume). At the end, every finished model is measured on the dev splits with
`bench/replies.py`'s reply perplexity and positional perplexity, and the table goes to
RUNS/sweep.json.

    nohup .venv/bin/python tools/sweep_sizes.py --data ../shared/data --runs /work/runs/sweep &
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models.paths import builtin_dir
from models.training.base import BaseModelSpec, special_ids
from models.training.chat import ChatDataSettings, train_chat
from models.training.loop import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Size:
    name: str
    spec: BaseModelSpec


SIZES = (
    Size("small", BaseModelSpec(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=3,
                                num_key_value_heads=3)),
    Size("medium", BaseModelSpec()),  # the shipped shape: 256 wide, 4 layers
    Size("large", BaseModelSpec(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                                num_key_value_heads=6)),
)  # fmt: skip


def init_model(spec: BaseModelSpec, dest: Path, seed: int) -> int:
    """A randomly initialised model of `spec` with the shipped tokenizer; its parameter count."""
    import shutil

    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    src = builtin_dir("companion-chat")
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy2(src / f, dest / f)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(spec.llama_config(special_ids(tok)))
    model.save_pretrained(str(dest), safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def steps_per_minute(folder: Path, threads: int, seq_len: int = 512, batch: int = 16) -> float:
    """Measured optimizer steps per minute for this shape (a few steps on random tokens)."""
    from transformers import LlamaForCausalLM

    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(10, 8000, (batch, seq_len))
    times = []
    for _ in range(4):
        t = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return 60.0 / (sum(times[1:]) / 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=35.0, help="wall-clock budget per size")
    ap.add_argument("--only", nargs="*", default=None, help="size names to train (default: all)")
    a = ap.parse_args()
    table: dict[str, dict] = {}
    out = a.runs / "sweep.json"
    if out.exists():
        table = json.loads(out.read_text())
    for size in SIZES:
        if a.only and size.name not in a.only:
            continue
        run = a.runs / size.name
        init, final = run / "init", run / "model"
        row = table.setdefault(size.name, {})
        if not (init / "model.safetensors").exists():
            row["parameters"] = init_model(size.spec, init, seed=11)
            row["steps_per_minute"] = steps_per_minute(init, a.threads)
            out.write_text(json.dumps(table, indent=1))
        if not (final / "model.safetensors").exists():
            steps = max(20, int(row["steps_per_minute"] * a.minutes * 0.9))
            report = train_chat(
                init, final, run, a.data,
                settings=TrainSettings(
                    max_steps=steps, batch_size=16, micro_batch_size=16, lr=2e-3, min_lr_ratio=0.1,
                    warmup_steps=max(10, steps // 20), schedule="cosine", weight_decay=0.1, grad_clip=1.0,
                    eval_every=max(10, steps // 6), checkpoint_every=10, max_minutes=a.minutes, seed=7,
                    log_every=10,
                ),
                data_settings=ChatDataSettings(), threads=a.threads,
                resume=(run / "checkpoint" / "state.json").exists(), progress=False,
            )  # fmt: skip
            row["train"] = report["result"]
            row["planned_steps"] = steps
            out.write_text(json.dumps(table, indent=1))
    from bench.replies import SHARED, position_perplexity, reply_perplexity

    torch.set_num_threads(a.threads)
    shared = a.data if a.data.exists() else SHARED
    for size in SIZES:
        final = a.runs / size.name / "model"
        row = table.get(size.name, {})
        if (final / "model.safetensors").exists() and "reply_perplexity" not in row:
            row["reply_perplexity"] = reply_perplexity(final, shared)
            row["positions"] = position_perplexity(final, shared)
            out.write_text(json.dumps(table, indent=1))
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
