"""Run a training job in its own process, for the tests that kill one or launch several.

python run_recipe.py dist OUT                    # the loop on a tiny Llama (under accelerate launch)
python run_recipe.py personality OUT DATA KILL   # the personality recipe; SIGKILL at step KILL (0: never)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def dist(out: Path) -> None:
    import numpy as np
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.training.corpus import TokenWindows
    from models.training.loop import TrainSettings, train

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    rng = np.random.default_rng(0)
    ids = np.tile(np.arange(40) % 17, 50) + rng.integers(0, 3, 2000)
    data = TokenWindows(ids[:1600].astype(np.uint16), ids[1600:].astype(np.uint16), 16, seed=3)
    settings = TrainSettings(max_steps=6, batch_size=8, micro_batch_size=4, lr=3e-3, warmup_steps=2,
                             eval_every=3, checkpoint_every=3, seed=5)  # fmt: skip
    result = train(model, data, settings, out, progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(weights, str(out / "final.safetensors"))
        (out / "world.txt").write_text(os.environ.get("WORLD_SIZE", "1") + f" {result.best_eval_loss}")


def personality(out: Path, data: Path, kill_at: int) -> None:
    from models.training import LoraSettings, ModelTrainer
    from models.training.examples import ExampleBatches

    if kill_at:
        real = ExampleBatches.global_batch

        def global_batch(self, step: int, size: int):  # type: ignore[no-untyped-def]
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers: a real crash
            return real(self, step, size)

        ExampleBatches.global_batch = global_batch  # type: ignore[method-assign]
    ModelTrainer(progress=False).train_personality_model(
        "ada", data, epochs=3, publish=False, output_dir=out, patience=10, batch_size=8,
        lora=LoraSettings(r=4, alpha=8.0, dropout=0.1),
    )  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "dist":
        dist(Path(sys.argv[2]))
    else:
        personality(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
