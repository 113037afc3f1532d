"""Federated style adapters: does a population style adapter help a new user's own adapter?

`python -m bench federated_style` (knobs: BENCH_FS_USERS=8, BENCH_FS_WORDS=1600 words each,
BENCH_FS_EPOCHS=20 for the users' adapters, BENCH_FS_NEW_EPOCHS=3 for the new user's).
Needs `../shared/data/books` (public-domain novels) or BENCH_BOOKS.

1. BENCH_FS_USERS users, spread over 4 instances, write in one author's style (each a different
   stretch of Austen's *Persuasion*) and train their style adapters on the embedded base the
   way `companion train personalization` does.
2. The instances federate those adapters over Flower on loopback (`simulate`, FedAvg on the A and
   B matrices, no noise) and the population adapter is published to `user_prefs`.
3. A new user writes in the same author's style from another book (*Northanger Abbey*) and a
   control user in another's (Stoker's *Dracula*). Each trains a style adapter for
   BENCH_FS_NEW_EPOCHS epochs twice on the same split: from a fresh start (the peer) and from the
   population adapter. Reported: held-out perplexity of their writing on the base, with the
   population adapter alone, and after training from each start; the ratio is population
   start / fresh start (lower is better).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

USERS = int(os.environ.get("BENCH_FS_USERS", "8"))
WORDS = int(os.environ.get("BENCH_FS_WORDS", "1600"))
EPOCHS = int(os.environ.get("BENCH_FS_EPOCHS", "20"))
NEW_EPOCHS = int(os.environ.get("BENCH_FS_NEW_EPOCHS", "3"))
BOOKS = Path(os.environ.get("BENCH_BOOKS", Path(__file__).resolve().parents[2] / "shared" / "data" / "books"))


def _words(book: str, start: int, count: int) -> str:
    text = next(BOOKS.glob(f"*{book}*.txt")).read_text(encoding="utf-8", errors="replace")
    words = text.split()
    body = words[len(words) // 10 :]  # past the front matter
    return " ".join(body[start : start + count])


def _writer(root: Path, name: str, text: str) -> Path:
    import json

    folder = root / name
    (folder / "writing").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"{name}-{i}", "suggestion": "Shorter.", "response": "accepted", "rating": 5} for i in range(3)]
    (folder / "feedback.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "writing" / "text.md").write_text(text + "\n", encoding="utf-8")
    return folder


def _train(root: Path, name: str, text: str, epochs: int) -> Any:
    from models.training import ModelTrainer

    return ModelTrainer(progress=False).train_personalization_model(
        name, _writer(root, name, text), epochs=3, style_min_words=min(1500, len(text.split())), style_epochs=epochs
    )


def main() -> dict[str, Any]:
    import tempfile

    if not BOOKS.is_dir():
        print(f"skipped: no books at {BOOKS} (set BENCH_BOOKS)")
        return {}
    home = Path(tempfile.mkdtemp(prefix="bench-fs-"))
    os.environ["COMPANION_HOME"] = str(home)
    from models.training.federated import PersonalizationClient, simulate
    from models.training.federated_publish import publish_federated, read_target
    from models.training.federated_style import _read_adapter, initial_style
    from models.training.personalization import DEFAULT_STYLE_BASE

    root = home / "writers"
    t0 = time.time()
    names = [f"writer{i}" for i in range(USERS)]
    for i, name in enumerate(names):
        _train(root, name, _words("persuasion", i * WORDS, WORDS), EPOCHS)
    trained = time.time() - t0
    new_users = (("same author (Northanger Abbey)", "northanger"), ("another author (Dracula)", "dracula"))
    # The fresh starts (the peer) train before any population adapter exists.
    fresh = {label: _train(root, f"fresh-{book}", _words(book, 0, 1500), NEW_EPOCHS).metrics
             for label, book in new_users}  # fmt: skip
    store = home / "store" / "personalization"
    adapters = {n: _read_adapter(next((store / n).iterdir()) / "adapter")[1] for n in names}
    shape, start = initial_style(DEFAULT_STYLE_BASE)
    held = [[adapters[n] for n in names[i::4]] for i in range(4)]
    clients = [PersonalizationClient(lambda: {}, adapters=lambda _sha, h=h: h) for h in held]
    result = simulate(clients, rounds=2, style=(shape, start))
    vc, name, prior, prefs, meta, folder = read_target("user_prefs", None)
    result.learner = prior  # no feedback was federated: the learner stays as shipped
    version = publish_federated(vc, name, result, prefs, meta, folder)
    print(f"{USERS} users' adapters ({EPOCHS} epochs on {WORDS} words each) trained in {trained:.0f} s; "
          f"federated over 4 instances: {result.style_users} adapters averaged, user_prefs {version}")  # fmt: skip
    rows = {}
    for label, book in new_users:
        warm = _train(root, f"warm-{book}", _words(book, 0, 1500), NEW_EPOCHS).metrics
        rows[label] = (fresh[label], warm)
    print(f"\nnew user's held-out perplexity ({NEW_EPOCHS} epochs on 1,500 words)")
    print(f"{'writing':32} {'base':>8} {'population':>11} {'fresh':>8} {'from pop.':>10} {'ratio':>7}")
    out = {}
    for label, (fresh, warm) in rows.items():
        base, pop = fresh["style_heldout_perplexity_base"], warm.get("style_heldout_perplexity_start", float("nan"))
        a, b = fresh["style_heldout_perplexity"], warm["style_heldout_perplexity"]
        print(f"{label:32} {base:8.2f} {pop:11.2f} {a:8.2f} {b:10.2f} {b / a:6.3f}x")
        out[label] = {"base": base, "population": pop, "fresh": a, "from_population": b}
    return out


if __name__ == "__main__":
    main()
