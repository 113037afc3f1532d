"""Train the built-in characters' LoRA adapters and ship them inside the package (maintainers).

    python tools/ship_personality_adapters.py [luna marlowe quill] [--epochs 60]

Runs the personality recipe (`ModelTrainer.train_personality_model`, the shipped character
data, the default settings) for each character in a scratch COMPANION_HOME, then copies the
published version's `adapter/`, `companion.json` and `training/` into
`src/models/builtin/<name>/` and rewrites its manifest. Re-run it whenever `companion-chat`
changes: each adapter records its base's weight hash and refuses to load on another base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["luna", "marlowe", "quill"])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["COMPANION_HOME"] = tempfile.mkdtemp(prefix="ship-adapters-")
    from models.store import write_manifest
    from models.training import ModelTrainer

    trainer = ModelTrainer(threads=args.threads)
    for name in args.names:
        result = trainer.train_personality_model(name, "models/training_data/personality_data", epochs=args.epochs)
        src = Path(os.environ["COMPANION_HOME"]) / "store" / "personality" / name / str(result.version)
        dest = ROOT / "src" / "models" / "builtin" / name
        for sub in ("adapter", "training"):
            if (dest / sub).exists():
                shutil.rmtree(dest / sub)
            shutil.copytree(src / sub, dest / sub)
        meta = json.loads((src / "companion.json").read_text())
        meta["version"] = json.loads((dest / "companion.json").read_text()).get("version", "1.0.0")
        (dest / "companion.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_manifest(dest)
        m = result.metrics
        print(
            f"{name}: held-out perplexity {m['heldout_perplexity_base']:.1f} → {m['heldout_perplexity']:.1f} "
            f"({m['heldout_perplexity_ratio']:.3f}×), {result.stop_reason}; shipped to {dest}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
