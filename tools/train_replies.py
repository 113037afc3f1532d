"""Train the embedded models of issue 18 in two resumable stages (run it under `nohup`).

1. `extend_context`: companion-base continued on 512-token book windows -> RUNS/context/model
2. `train_chat`: that base fine-tuned on whole conversations -> RUNS/chat/model

Each stage checkpoints into its run folder (safetensors + JSON, a few tens of MB) and resumes
exactly from it when the script is started again; a stage whose model folder exists is skipped.
`--ship` copies the finished model folders into `src/models/builtin/` (with their training
reports and loss curves, and a new manifest); then re-run `tools/ship_personality_adapters.py`,
since each character's adapter is bound to its base's weights.

    nohup .venv/bin/python tools/train_replies.py --data ../shared/data --runs /work/runs/replies &
    .venv/bin/python tools/train_replies.py --data ../shared/data --runs /work/runs/replies --ship
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from models.paths import builtin_dir
from models.training.base import extend_context
from models.training.chat import ChatDataSettings, train_chat
from models.training.loop import TrainSettings

ROOT = Path(__file__).resolve().parents[1]


def ship(runs: Path, only: str | None = None) -> None:
    """Copy the finished models into the package (training reports included), new manifests."""
    from models.store import write_manifest

    for stage, name in (("context", "companion-base"), ("chat", "companion-chat")):
        if only is not None and stage != only:
            continue
        src, dest = runs / stage / "model", ROOT / "src" / "models" / "builtin" / name
        if not (src / "model.safetensors").exists():
            raise SystemExit(f"{src}: not finished")
        old_training = dest / "training"
        keep = {p.name: p.read_bytes() for p in old_training.glob("*")} if old_training.is_dir() else {}
        shutil.rmtree(dest)
        shutil.copytree(src, dest)
        (dest / "manifest.json").unlink(missing_ok=True)
        training = dest / "training"
        training.mkdir()
        if stage == "context":  # the base's own training record stays; the extension adds its own
            for fname, data in keep.items():
                (training / fname).write_bytes(data)
            prefix = "context_"
        else:
            prefix = ""
        for fname in ("report.json", "loss_curve.png"):
            if (runs / stage / fname).exists():
                shutil.copy2(runs / stage / fname, training / f"{prefix}{fname}")
        write_manifest(dest)
        print(f"shipped {src} -> {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a shared/data-shaped folder")
    ap.add_argument("--runs", type=Path, required=True, help="where checkpoints and outputs go")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context-minutes", type=float, default=22.0)
    ap.add_argument("--context-steps", type=int, default=220)
    ap.add_argument("--context-lr", type=float, default=6e-4)
    ap.add_argument("--only", choices=("context", "chat"), help="run one stage only")
    ap.add_argument("--chat-minutes", type=float, default=70.0)
    ap.add_argument("--chat-steps", type=int, default=700)
    ap.add_argument("--chat-lr", type=float, default=1e-3)
    ap.add_argument("--chat-warmup", type=int, default=40)
    ap.add_argument("--chat-from", type=Path, help="continue this chat model instead of RUNS/context/model")
    ap.add_argument("--grounded-weight", type=float, default=ChatDataSettings.grounded_weight)
    ap.add_argument("--emotion-examples", type=int, default=ChatDataSettings.goemotions_per_label,
                    help="GoEmotions comments per rarely seen label, as replies to chat turns")  # fmt: skip
    ap.add_argument("--repeated-facts", type=int, default=0, metavar="N",
                    help="Topical-Chat turns stating a fact said in >= N conversations: context only")  # fmt: skip
    ap.add_argument("--chat-seed", type=int, default=7, help="the chat stage's data and batch seed")
    ap.add_argument("--ship", action="store_true", help="copy the finished models into src/models/builtin")
    a = ap.parse_args()
    if a.ship:
        ship(a.runs, a.only)
        return
    ctx_run, chat_run = a.runs / "context", a.runs / "chat"
    if a.only != "chat" and not (ctx_run / "model" / "model.safetensors").exists():
        extend_context(
            builtin_dir("companion-base"), a.data, ctx_run, ctx_run / "model",
            settings=TrainSettings(
                max_steps=a.context_steps, batch_size=16, micro_batch_size=16, lr=a.context_lr, warmup_steps=20,
                eval_every=55,
                checkpoint_every=20, max_minutes=a.context_minutes, seed=4321, log_every=10,
            ),
            resume=(ctx_run / "checkpoint" / "state.json").exists(), threads=a.threads, progress=False,
        )  # fmt: skip
    if a.only != "context" and not (chat_run / "model" / "model.safetensors").exists():
        report = train_chat(
            a.chat_from or ctx_run / "model", chat_run / "model", chat_run, a.data,
            settings=TrainSettings(
                max_steps=a.chat_steps, batch_size=16, micro_batch_size=16, lr=a.chat_lr, warmup_steps=a.chat_warmup,
                eval_every=100, checkpoint_every=25, max_minutes=a.chat_minutes, seed=a.chat_seed, log_every=10,
            ),
            data_settings=ChatDataSettings(
                grounded_weight=a.grounded_weight, goemotions_per_label=a.emotion_examples, seed=a.chat_seed,
                repeated_fact_conversations=a.repeated_facts,
            ),
            threads=a.threads,
            resume=(chat_run / "checkpoint" / "state.json").exists(), progress=False,
        )  # fmt: skip
        print(json.dumps(report["result"], indent=1))


if __name__ == "__main__":
    main()
